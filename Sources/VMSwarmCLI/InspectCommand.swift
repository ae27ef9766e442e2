import ArgumentParser
import Bencode
import Foundation
import Metainfo

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a .torrent file holds: name, size, pieces, files, trackers, info-hash, magnet.",
        discussion: "A corrupt torrent gets a one-line error naming the byte offset at fault, and exit code 1.")

    @Argument(help: "The .torrent file.", completion: .file(extensions: ["torrent"]))
    var torrent: String

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Flag(help: "Also refuse non-canonical bencode (unsorted keys, leading zeros), as a torrent maker must not write it.")
    var strict = false

    /// Torrent files larger than this are refused before reading: no real torrent comes close.
    static let maxTorrentSize = 128 << 20

    func run() throws {
        let report = try TorrentReport.read(torrent, strict: strict)
        print(json ? try JSONLine.encode(report) : report.summary)
    }

    static func readTorrent(_ path: String) throws(CLIError) -> [UInt8] {
        let attributes = try CLIError.wrap("cannot read \(path)") { try FileManager.default.attributesOfItem(atPath: path) }
        if let size = attributes[.size] as? Int, size > maxTorrentSize {
            throw CLIError("\(path): \(size) bytes is too large for a torrent file (limit \(maxTorrentSize))")
        }
        return try CLIError.wrap("cannot read \(path)") { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    }
}
