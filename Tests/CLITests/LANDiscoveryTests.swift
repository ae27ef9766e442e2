import Foundation
import TestSupport
import Testing

/// Local Service Discovery (BEP 14, issue 21 point 7) with libtorrent, both ways, on a testbed of two
/// hosts (network namespaces on a bridge, 10.79.x): no tracker and no --peer, only the LAN group.
/// Each side announces when it starts, so the one that starts second is heard and dialled by the
/// other: the first case proves vmswarm's announce, the second its listening.
@Suite(.serialized) struct LANDiscoveryTests {
    static let lt = TestbedTests.repository + "/tools/testbed.d/lt-client.py"

    func testbed(_ body: (String, TemporaryFolder, _ image: String, _ torrent: String, _ sha: String) throws -> Void) throws {
        let prefix = "vld"
        let up = try runProcess(TestbedTests.testbed, ["--prefix", prefix, "--hosts", "2", "--net", "10.79", "up"])
        try #require(up.status == 0, "\(up.stderr)")
        defer { _ = try? runProcess(TestbedTests.testbed, ["--prefix", prefix, "down"]) }
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, sha) = try TestbedTests.randomImage(in: folder, mebibytes: 8)
        let torrent = folder.file("disk.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K", "--config", "none"])
        try #require(created.status == 0, "\(created.stderr)")
        try body(prefix, folder, image, torrent, sha)
    }

    func libtorrent(_ prefix: String, host: String, _ arguments: [String], log: String) throws -> BackgroundProcess {
        setenv("LT_LSD", "1", 1)
        setenv("LT_TRANSPORT", "tcp", 1)
        defer { unsetenv("LT_LSD"); unsetenv("LT_TRANSPORT") }
        return try BackgroundProcess(TestbedTests.testbed, ["--prefix", prefix, "exec", host, "/usr/bin/python3", Self.lt] + arguments, logTo: log)
    }

    @Test func vmswarmGetsFromALibtorrentSeederItFoundOnTheLAN() throws {
        try testbed { prefix, folder, image, torrent, sha in
            let seeder = try libtorrent(prefix, host: "h1", ["seed", torrent, folder.path, "10.79.1.1", "6881"], log: folder.file("lt.log"))
            defer { seeder.stop() }
            Thread.sleep(forTimeInterval: 2)
            let getter = try BackgroundProcess(TestbedTests.testbed, [
                "--prefix", prefix, "exec", "h2", vmswarmBinary, "get", torrent, "--output", folder.file("h2"), "--port", "6881",
                "--lan-discovery", "--json", "--config", "none",
            ], logTo: folder.file("get.log"))
            defer { getter.stop() }
            #expect(getter.wait(seconds: 60) && getter.process.terminationStatus == 0, "\(getter.output.suffix(600))")
            #expect(try sha256(folder.file("h2/disk.img")) == sha)
        }
    }

    @Test func libtorrentGetsFromAVmswarmSeederItAnnouncedTo() throws {
        try testbed { prefix, folder, image, torrent, sha in
            let seeder = try BackgroundProcess(TestbedTests.testbed, [
                "--prefix", prefix, "exec", "h1", vmswarmBinary, "seed", torrent, "--data", image, "--port", "6881", "--lan-discovery",
                "--config", "none",
            ], logTo: folder.file("seed.log"))
            defer { seeder.stop() }
            try #require(eventually(20) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
            let done = folder.file("h2.done")
            let getter = try libtorrent(prefix, host: "h2", ["get", torrent, folder.file("h2"), "10.79.1.2", "6881", done], log: folder.file("lt.log"))
            defer { getter.stop() }
            #expect(eventually(60) { FileManager.default.fileExists(atPath: done) }, "\(getter.output.suffix(600)) \(seeder.output.suffix(600))")
            #expect(try sha256(folder.file("h2/disk.img")) == sha)
        }
    }
}
