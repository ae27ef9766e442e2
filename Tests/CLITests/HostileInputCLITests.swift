import Bencode
import Foundation
import TestSupport
import Testing

/// Hostile inputs through the built binary (issue 15): each must end in exit status 1 and one line
/// on stderr that names what was wrong, never in a trap (a signal: status 4 or 5 from Foundation's
/// `Process`) or a partial output.
@Suite struct HostileInputCLITests {
    static func key(_ text: String) -> [UInt8] { Array(text.utf8) }

    static func torrent(_ info: [String: BencodeValue]) -> [UInt8] {
        BencodeValue.dictionary([key("info"): .dictionary(Dictionary(uniqueKeysWithValues: info.map { (key($0), $1) }))])
            .encoded()
    }

    static func single(length: Int64, pieceLength: Int64) -> [UInt8] {
        torrent([
            "name": "disk.img", "piece length": .integer(pieceLength), "length": .integer(length),
            "pieces": .bytes([UInt8](repeating: 7, count: 20)),
        ])
    }

    static func multi(_ paths: [[String]]) -> [UInt8] {
        torrent([
            "name": "bundle", "piece length": 16384, "pieces": .bytes([UInt8](repeating: 7, count: 20)),
            "files": .list(paths.map { .dictionary([key("path"): .list($0.map(BencodeValue.string)), key("length"): 10]) }),
        ])
    }

    /// Runs `vmswarm inspect` on `bytes` and checks the one-line refusal.
    func expectRefused(_ bytes: [UInt8], saying expected: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Data(bytes).write(to: URL(fileURLWithPath: folder.file("hostile.torrent")))
        let result = try runProcess(vmswarmBinary, ["inspect", folder.file("hostile.torrent")])
        #expect(result.status == 1, "exit status \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stdout.isEmpty, sourceLocation: sourceLocation)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains("at byte"), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(expected), "\(result.stderr)", sourceLocation: sourceLocation)
    }

    /// These two trapped with "arithmetic overflow" (SIGILL) before issue 15.
    @Test func inspectRefusesLengthsThatUsedToTrap() throws {
        try expectRefused(Self.single(length: .max, pieceLength: 16384), saying: "'info.length'")
        try expectRefused(Self.single(length: 1_000_000_000_000_000_000, pieceLength: 1), saying: "'info.length'")
        try expectRefused(Self.single(length: .max - 1, pieceLength: 1 << 28), saying: "more than 4194304")
    }

    /// The same parse runs for `get` and for the tracker's allowlist folder, which trapped at start
    /// (and would have on SIGHUP) when the folder held one such torrent.
    @Test func getAndTheTrackerAllowlistRefuseThemToo() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let hostile = folder.file("allow/huge.torrent")
        try FileManager.default.createDirectory(atPath: folder.file("allow"), withIntermediateDirectories: true)
        try Data(Self.single(length: 1_000_000_000_000_000_000, pieceLength: 1)).write(to: URL(fileURLWithPath: hostile))

        let get = try runProcess(vmswarmBinary, ["get", hostile, "--output", folder.file("out"), "--peer", "127.0.0.1:1", "--port", "0"])
        #expect(get.status == 1, "\(get.stderr)")
        #expect(get.stderr.split(separator: "\n").count == 1, "\(get.stderr)")
        #expect(get.stderr.contains("huge.torrent: invalid torrent at byte 16: 'info.length'"), "\(get.stderr)")

        let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:0", "--allow", folder.file("allow")],
            logTo: folder.file("tracker.log"))
        defer { tracker.stop() }
        try #require(tracker.wait(seconds: 30), "the tracker did not exit: \(tracker.output)")
        #expect(tracker.process.terminationStatus == 1, "\(tracker.output)")
        #expect(tracker.output.contains("huge.torrent: invalid torrent at byte 16: 'info.length'"), "\(tracker.output)")
    }

    @Test func inspectRefusesConflictingPaths() throws {
        try expectRefused(Self.multi([["a"], ["a"]]), saying: "'info.files[1].path' (\"a\") collides with 'info.files[0].path'")
        try expectRefused(Self.multi([["a"], ["a", "b"]]), saying: "collides with 'info.files[0].path'")
    }

    @Test func createRefusesASymbolicLinkInTheFolder() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try FileManager.default.createDirectory(atPath: folder.file("image"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder.file("image/disk.img")))
        try FileManager.default.createSymbolicLink(atPath: folder.file("image/passwd"), withDestinationPath: "/etc/passwd")
        let result = try runProcess(vmswarmBinary, ["create", folder.file("image"), "-o", folder.file("image.torrent")])
        #expect(result.status == 1)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("image/passwd: is a symbolic link (to /etc/passwd)"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.file("image.torrent")))
    }
}
