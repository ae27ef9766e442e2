import Foundation
import Metainfo
import TestSupport
import Testing

/// Real torrent makers and readers from Debian, against vmswarm, both ways. A missing tool fails the
/// test (tools/test installs them); nothing here is ever skipped.
@Suite struct InteropTests {
    static let tracker = "http://tracker.example:6969/announce"
    static let payloads = fixturesURL.appendingPathComponent("payloads").path

    struct Case: Sendable, CustomStringConvertible {
        let maker: String
        let payload: String
        let isPrivate: Bool
        var description: String { "\(maker) \(payload)\(isPrivate ? " private" : "")" }
    }

    static let cases: [Case] = ["mktorrent", "transmission", "libtorrent", "ctorrent"].flatMap { maker in
        ["vm-small.img", "image-bundle"].flatMap { payload in
            (maker == "ctorrent" ? [false] : [false, true]).map { Case(maker: maker, payload: payload, isPrivate: $0) }
        }
    }

    func tool(_ name: String) throws -> String {
        try #require(which(name), "\(name) is not installed: run tools/test, which installs it")
    }

    func libtorrentHash(_ torrent: String) throws -> String {
        let result = try runProcess(try tool("/usr/bin/python3"), [
            "-c", "import sys, libtorrent as lt; print(lt.torrent_info(sys.argv[1]).info_hashes().v1)", torrent,
        ])
        try #require(result.status == 0, "libtorrent could not read \(torrent): \(result.stderr)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func transmissionHash(_ torrent: String) throws -> String {
        let result = try runProcess(try tool("transmission-show"), [torrent])
        try #require(result.status == 0, "transmission-show failed: \(result.stderr)")
        let line = try #require(result.stdout.split(separator: "\n").first { $0.contains("Hash") })
        return String(line.split(separator: " ").last ?? "")
    }

    func aria2Hash(_ torrent: String) throws -> String {
        let result = try runProcess(try tool("aria2c"), ["--show-files=true", torrent])
        try #require(result.status == 0, "aria2c -S failed: \(result.stdout)")
        let line = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("Info Hash") })
        return String(line.split(separator: " ").last ?? "")
    }

    /// The tool makes a torrent now; vmswarm makes one of the same data with the same parameters.
    @Test(arguments: cases)
    func vmswarmCreateMatchesEachToolsInfoHash(_ c: Case) throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let source = "\(Self.payloads)/\(c.payload)"
        let theirs = folder.file("theirs.torrent")
        let result: ProcessResult
        switch c.maker {
        case "mktorrent":
            result = try runProcess(try tool("mktorrent"), ["-l", "16", "-a", Self.tracker, "-o", theirs] + (c.isPrivate ? ["-p"] : []) + [source])
        case "transmission":
            result = try runProcess(try tool("transmission-create"), ["-s", "64", "-t", Self.tracker, "-o", theirs] + (c.isPrivate ? ["-p"] : []) + [source])
        case "libtorrent":
            result = try runProcess(try tool("/usr/bin/python3"), ["-c", """
                import os, sys, libtorrent as lt
                fs = lt.file_storage(); lt.add_files(fs, sys.argv[1])
                t = lt.create_torrent(fs, 65536, flags=lt.create_torrent.v1_only)
                t.add_tracker(sys.argv[3]); t.set_priv(sys.argv[4] == "1")
                lt.set_piece_hashes(t, os.path.dirname(sys.argv[1]))
                open(sys.argv[2], "wb").write(lt.bencode(t.generate()))
                """, source, theirs, Self.tracker, c.isPrivate ? "1" : "0"])
        default:
            result = try runProcess(try tool("ctorrent"), ["-t", "-u", Self.tracker, "-l", "65536", "-s", theirs, c.payload], in: Self.payloads)
        }
        try #require(result.status == 0, "\(c.maker) failed: \(result.stdout) \(result.stderr)")
        let theirHash = c.maker == "transmission" ? try transmissionHash(theirs) : try libtorrentHash(theirs)

        // Same name, piece size, tracker and private flag; Transmission's explicit `private 0` is
        // --public, and tools that list a folder in readdir order get that order with --files-from.
        let parsed = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: theirs)))
        var arguments = ["create", source, "--piece-size", "64K", "--tracker", Self.tracker, "--output", folder.file("ours.torrent"), "--json"]
        if c.isPrivate { arguments.append("--private") }
        if parsed.info.privacy == .explicitlyPublic { arguments.append("--public") }
        if parsed.info.isMultiFile {
            let list = parsed.info.files.map { $0.path.joined(separator: "/") }.joined(separator: "\n")
            try list.write(toFile: folder.file("order.txt"), atomically: true, encoding: .utf8)
            arguments += ["--files-from", folder.file("order.txt")]
        }
        let ours = try runProcess(vmswarmBinary, arguments)
        try #require(ours.status == 0, "vmswarm create failed: \(ours.stderr)")
        let created = try #require(ours.stdout.split(separator: "\n").last { $0.contains("\"created\"") })
        let event = try JSONSerialization.jsonObject(with: Data(created.utf8)) as? [String: Any]
        let ourHash = (event?["torrent"] as? [String: Any])?["info_hash"] as? String
        #expect(ourHash == theirHash)
    }

    /// libtorrent, Transmission and aria2 read vmswarm's torrents and compute vmswarm's info-hash.
    @Test(arguments: ["vm-small.img", "image-bundle"])
    func realClientsReadVmswarmTorrents(_ payload: String) throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let torrent = folder.file("made.torrent")
        let made = try runProcess(vmswarmBinary, [
            "create", "\(Self.payloads)/\(payload)", "-t", Self.tracker, "-t", "http://backup.example/announce",
            "--web-seed", "http://seed.example/\(payload)", "--comment", "interop", "--private", "-o", torrent,
        ])
        try #require(made.status == 0, "\(made.stderr)")
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any]
        let ourHash = try #require(report?["info_hash"] as? String)
        #expect(try libtorrentHash(torrent) == ourHash)
        #expect(try transmissionHash(torrent) == ourHash)
        #expect(try aria2Hash(torrent) == ourHash)
    }
}
