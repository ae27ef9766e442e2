import ArgumentParser
import Foundation

/// The `vmswarm` command: a BitTorrent-compatible node for moving VM images to many machines.
public struct VMSwarm: AsyncParsableCommand {
    public static let version = "0.1.0"

    public static let configuration = CommandConfiguration(
        commandName: "vmswarm",
        abstract: "Distribute large VM images to many nodes, BitTorrent-compatible.",
        discussion: """
            Start with `vmswarm demo`, which makes a sample image, its torrent, and shows it.
            Torrents made here are ordinary v1 torrents: libtorrent, Transmission, aria2 and CTorrent
            read them and compute the same info-hash.
            """,
        version: version,
        subcommands: [CreateCommand.self, InspectCommand.self, SeedCommand.self, GetCommand.self, PoolCommand.self, TrackerCommand.self, KeygenCommand.self, ConfigCommand.self, DemoCommand.self]
    )

    public init() {}
}

extension VMSwarm {
    /// Runs the command line. (Called through a generic so that AsyncParsableCommand's entry point
    /// is chosen over ParsableCommand's synchronous one.)
    /// The settings file, if there is one, comes in front of the command's own arguments.
    public static func runFromCommandLine() async {
        switch NodeConfig.apply(to: Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment) {
        case .success(let arguments): await runAsync(VMSwarm.self, arguments)
        case .failure(let error): VMSwarm.exit(withError: error)
        }
    }

    private static func runAsync<Command: AsyncParsableCommand>(_ command: Command.Type, _ arguments: [String]) async {
        await command.main(arguments)
    }
}
