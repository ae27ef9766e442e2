import ArgumentParser
import Foundation
import NodeConfiguration
import SwarmRuntime
import Synchronization
import Units

/// `--config FILE` on the commands a file configures. The file is read before the command line is
/// parsed (`NodeConfig.apply`); this option only shows in `--help` and accepts the argument.
struct ConfigOption: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Settings file (YAML; default: $VMSWARM_CONFIG, else /etc/vmswarm/vmswarm.yaml if it exists; 'none' for none). Options given here win over it.",
        valueName: "FILE"))
    var config: String?
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check a node's settings file.",
        discussion: """
            A node's settings live in one YAML file (docs/configuration.md lists every setting). Each \
            setting is a default for an option of create, seed, get or tracker; what the command line \
            gives wins.
            """,
        subcommands: [Check.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say what is wrong in a settings file, and where; or what each command takes from it.",
            discussion: """
                Every problem is printed as FILE:LINE:COLUMN: SETTING: what is wrong, and the exit status \
                is 1 if there is any. Values are checked by the same parser as the options they stand for, \
                and key files and allowlists must exist.
                """)

        @Argument(help: "The file (default: $VMSWARM_CONFIG, else /etc/vmswarm/vmswarm.yaml).")
        var file: String?

        func run() throws {
            let path = file ?? ProcessInfo.processInfo.environment[ConfigSource.environmentVariable] ?? ConfigSource.defaultPath
            let config = try NodeConfig.read(path)
            // A setting several commands take, refused by each for the same reason, is said once.
            var problems = config.problems
            var commands: [String: [String]] = [:]
            for command in ConfigSchema.commands {
                for problem in NodeConfig.problems(in: config, for: command) {
                    if commands[problem.description] == nil { problems.append(problem) }
                    commands[problem.description, default: []].append(command)
                }
            }
            for problem in problems {
                print(commands[problem.description].map { "\(problem) (\($0.joined(separator: ", ")))" } ?? "\(problem)")
            }
            if !problems.isEmpty {
                print("\(path): \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                throw ExitCode.failure
            }
            print("\(path): ok, \(config.settings.count) setting\(config.settings.count == 1 ? "" : "s")")
            for command in ConfigSchema.commands {
                let arguments = config.arguments(for: command, given: [])
                if !arguments.isEmpty { print("  vmswarm \(command) " + arguments.map(Self.quoted).joined(separator: " ") + " …") }
            }
        }

        static func quoted(_ argument: String) -> String {
            argument.contains(where: { " '\"$\\".contains($0) }) ? "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'" : argument
        }
    }
}

/// Reading the settings file and putting its settings in front of a command line.
enum NodeConfig {
    static func read(_ path: String) throws(CLIError) -> ConfigFile {
        let data = try CLIError.wrap("cannot read the settings file \(path)") {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            // One byte over the limit is enough to know it is too big.
            return try handle.read(upToCount: ConfigFile.maxSize + 1) ?? Data()
        }
        guard let text = String(data: data, encoding: .utf8) else { throw CLIError("\(path): not UTF-8 text") }
        return ConfigFile(path: path, text: text)
    }

    /// Problems with the settings `command` takes: each setting's arguments are parsed by the
    /// command's own parser (with placeholders for what it requires), so a value is refused here
    /// exactly as it would be on the command line, but said with where it was written.
    static func problems(in file: ConfigFile, for command: String) -> [ConfigProblem] {
        guard let parse = parsers[command] else { return [] }
        var problems = file.missingPaths(for: command) { FileManager.default.isReadableFile(atPath: $0) }
        for setting in file.settings(for: command) {
            var arguments = file.arguments(of: setting, for: command)
            guard !arguments.isEmpty else { continue }
            for companion in file.settings where setting.key.companions.contains(companion.key.name) {
                arguments += file.arguments(of: companion, for: command)
            }
            if let message = parse(arguments) {
                problems.append(ConfigProblem(file: file.path, location: setting.location, key: setting.key.name, message: message))
            }
        }
        return problems
    }

    /// Each configurable command's parser: nil when the arguments parse, else why not.
    private static let parsers: [String: @Sendable ([String]) -> String?] = [
        "create": { check(CreateCommand.self, $0 + ["IMAGE"]) },
        "seed": { check(SeedCommand.self, $0 + ["IMAGE"]) },
        "get": { check(GetCommand.self, $0 + ["IMAGE.torrent"]) },
        "tracker": { check(TrackerCommand.self, $0) },
    ]

    private static func check<Command: ParsableCommand>(_ command: Command.Type, _ arguments: [String]) -> String? {
        do {
            _ = try command.parse(arguments)
            return nil
        } catch {
            return command.message(for: error)
        }
    }

    /// `arguments` (without the program name) with the settings file's arguments put after the
    /// command's name, or the problems that keep the file from being used.
    static func apply(to arguments: [String], environment: [String: String]) -> Result<[String], CLIError> {
        guard let command = arguments.first, ConfigSchema.commands.contains(command) else { return .success(arguments) }
        let given = Array(arguments.dropFirst())
        let source = ConfigSource.locate(arguments: given, environment: environment) { FileManager.default.fileExists(atPath: $0) }
        guard case .file(let path, _) = source else { return .success(arguments) }
        let file: ConfigFile
        do {
            file = try read(path)
        } catch {
            return .failure(error)
        }
        let problems = file.problems + problems(in: file, for: command)
        guard problems.isEmpty else {
            return .failure(CLIError(problems.map(\.description).joined(separator: "\n") + "\n(vmswarm config check \(path) lists them all; --config none reads no file)"))
        }
        loaded.withLock { $0 = Loaded(path: path, command: command, given: given) }
        return .success([command] + file.arguments(for: command, given: given) + given)
    }

    /// The settings file the running command read, and the command's own arguments: what SIGHUP
    /// reads again.
    struct Loaded: Sendable {
        let path: String
        let command: String
        let given: [String]
    }
    static let loaded = Mutex<Loaded?>(nil)

    /// SIGHUP on `seed`, `get` or `pool`: the settings file is read again and its rate limits
    /// applied by `apply` (the command line's `--max-up` and `--max-down` still win; a pool node's
    /// are its WAN's). Other settings need a restart. A file that has become wrong changes
    /// nothing, and says why.
    static func reload(apply: (_ up: Double?, _ down: Double?) async -> Void) async {
        func say(_ line: String) { FileHandle.standardError.write(Data("SIGHUP: \(line)\n".utf8)) }
        guard let loaded = loaded.withLock({ $0 }) else { return say("no settings file was read, nothing to reload") }
        let peer: PeerOptions
        do {
            let file = try read(loaded.path)
            let problems = file.problems + problems(in: file, for: loaded.command)
            guard problems.isEmpty else { throw CLIError(problems.map(\.description).joined(separator: "; ")) }
            let arguments = file.arguments(for: loaded.command, given: loaded.given) + loaded.given
            peer = try CLIError.wrap {
                switch loaded.command {
                case "seed": try SeedCommand.parse(arguments).peer
                case "pool": try PoolCommand.parse(arguments).peer
                default: try GetCommand.parse(arguments).peer
                }
            }
        } catch {
            return say("\(error); the settings in use stay")
        }
        let options = peer.runtimeOptions()
        await apply(options.maxUp, options.maxDown)
        let rate = { (limit: Double?) in limit.map { Format.bytes(Int64($0)) + "/s" } ?? "none" }
        say("rate limits from \(loaded.path): up \(rate(options.maxUp)), down \(rate(options.maxDown)); other settings apply at the next start")
    }

    /// SIGHUP on `seed` or `get`: `reload(apply:)` for its one swarm.
    static func reload(_ runtime: SwarmRuntime) async {
        await reload { up, down in await runtime.setRateLimits(up: up, down: down) }
    }
}
