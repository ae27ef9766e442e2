import Foundation
import TestSupport
import Testing

/// The `vmswarm` binary as a user meets it: output, errors, exit codes.
@Suite struct CommandTests {
    static let torrents = fixturesURL.appendingPathComponent("torrents").path

    @Test func inspectPrintsASummary() throws {
        let result = try runProcess(vmswarmBinary, ["inspect", "\(Self.torrents)/image-bundle.mktorrent.torrent"])
        #expect(result.status == 0)
        for expected in ["name:       image-bundle", "info-hash:  366afd0de5edda59aa92f0eba8f1bf0f80dacbdd",
            "magnet:     magnet:?xt=urn:btih:366afd0de5edda59aa92f0eba8f1bf0f80dacbdd", "pieces:     4 x 64.00 KiB",
            "tier 1: http://tracker.example:6969/announce", "files (6):", "config/nested/seed.iso"] {
            #expect(result.stdout.contains(expected), "missing \(expected)")
        }
    }

    @Test func inspectJSON() throws {
        let result = try runProcess(vmswarmBinary, ["inspect", "--json", "\(Self.torrents)/vm-small.libtorrent-private.torrent"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(json["info_hash"] as? String == "d11b380166d4a6e7ef9d73664bf4ad8e3792bd88")
        #expect(json["private"] as? Bool == true)
        #expect(json["piece_count"] as? Int == 5)
        #expect(json["total_length"] as? Int == 300_003)
    }

    @Test func corruptTorrentGivesOneLineWithTheOffset() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(Self.torrents)/vm-small.mktorrent.torrent")))
        bytes.removeLast(7)
        try Data(bytes).write(to: URL(fileURLWithPath: folder.file("cut.torrent")))
        let result = try runProcess(vmswarmBinary, ["inspect", folder.file("cut.torrent")])
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(result.stderr.contains("at byte"))

        try Data("d4:infod4:name2:..6:lengthi1e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".utf8)
            .write(to: URL(fileURLWithPath: folder.file("escape.torrent")))
        let escape = try runProcess(vmswarmBinary, ["inspect", folder.file("escape.torrent")])
        #expect(escape.status == 1)
        #expect(escape.stderr.contains("outside the download folder"))

        let missing = try runProcess(vmswarmBinary, ["inspect", folder.file("absent.torrent")])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("absent.torrent"))
    }

    /// A seeder whose port is taken exits 1 with one line; it used to die on a trap in NIO (the
    /// runtime's completion promise was left pending when the bind failed).
    @Test func aPortInUseIsAnErrorNotATrap() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = fixturesURL.appendingPathComponent("payloads/vm-small.img").path
        let torrent = folder.file("x.torrent")
        #expect(try runProcess(vmswarmBinary, ["create", image, "-o", torrent]).status == 0)
        // Hold a port: a listening socket on loopback.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(holder >= 0)
        defer { close(holder) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(bound == 0 && listen(holder, 1) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(holder, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let result = try runProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--listen", "127.0.0.1:\(port)"])
        #expect(result.status == 1, "\(result.stderr)")
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error") }
        #expect(errors.count == 1, "\(result.stderr)")
        #expect(errors.first?.contains("cannot listen on 127.0.0.1:\(port)") == true, "\(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"))
    }

    @Test func createRefusesToOverwriteAndValidatesFlags() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = fixturesURL.appendingPathComponent("payloads/vm-small.img").path
        let out = folder.file("x.torrent")
        #expect(try runProcess(vmswarmBinary, ["create", image, "-o", out]).status == 0)
        let again = try runProcess(vmswarmBinary, ["create", image, "-o", out])
        #expect(again.status == 1)
        #expect(again.stderr.contains("--force"))
        #expect(try runProcess(vmswarmBinary, ["create", image, "-o", out, "--force"]).status == 0)
        #expect(try runProcess(vmswarmBinary, ["create", image, "--private", "--public", "-o", folder.file("y")]).status != 0)
        #expect(try runProcess(vmswarmBinary, ["create", image, "--piece-size", "lots", "-o", folder.file("y")]).status != 0)
        #expect(try runProcess(vmswarmBinary, ["create", image, "--piece-size", "100000", "-o", folder.file("y")]).status == 1)
        #expect(try runProcess(vmswarmBinary, ["create", image, "-t", "not a url", "-o", folder.file("y")]).status != 0)
        #expect(!FileManager.default.fileExists(atPath: folder.file("y")))
    }

    @Test func createDefaultsToNameDotTorrentAndAutoPieces() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = fixturesURL.appendingPathComponent("payloads/vm-small.img").path
        let result = try runProcess(vmswarmBinary, ["create", image, "--name", "renamed.img"], in: folder.path)
        #expect(result.status == 0, "\(result.stderr)")
        let inspected = try runProcess(vmswarmBinary, ["inspect", "--json", folder.file("renamed.img.torrent")])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        #expect(json["name"] as? String == "renamed.img")
        #expect(json["piece_length"] as? Int == 256 << 10)
        #expect(result.stderr.contains("hashing"), "progress is shown on standard error")
    }

    @Test func demoRunsEndToEnd() throws {
        let result = try runProcess(vmswarmBinary, ["demo", "--size", "8M", "--leechers", "3"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("ok: 3 leechers got 8.00 MiB each"), "\(result.stdout)")
        #expect(result.stdout.components(separatedBy: "    ok   ").count == 4, "every copy matches the original")
    }

    @Test func helpExplainsEachCommand() throws {
        let result = try runProcess(vmswarmBinary, ["create", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("--piece-size"))
        #expect(result.stdout.contains("2,048 pieces"))
    }
}
