import Foundation
import TestSupport
import Testing

/// BEP 15 against other implementations, on loopback: libtorrent announces to `vmswarm tracker
/// --udp-listen`, and `vmswarm seed` and `get` meet through Debian's opentracker over UDP.
@Suite(.serialized) struct UDPTrackerInteropTests {
    static let image = fixturesURL.appendingPathComponent("payloads/vm-small.img").path

    func makeTorrent(_ folder: TemporaryFolder, tracker: String) throws -> String {
        let torrent = folder.file("vm-small.torrent")
        let made = try runProcess(vmswarmBinary, ["create", Self.image, "--piece-size", "64K", "-t", tracker, "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        return torrent
    }

    /// libtorrent seeds and announces over UDP only; the tracker's HTTP stats count it, and
    /// `vmswarm get`, knowing only the udp:// URL, finds it there and downloads the image.
    @Test func libtorrentAnnouncesToTheUDPTrackerAndVmswarmFindsItThere() throws {
        let folder = try TemporaryFolder()
        var running: [BackgroundProcess] = []
        defer {
            running.forEach { $0.stop() }
            folder.cleanUp()
        }
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        let curl = try #require(which("curl"), "curl is needed: run tools/test")
        let httpPort = freePort()
        let udpPort = freePort()
        let tracker = try BackgroundProcess(vmswarmBinary, [
            "tracker", "--listen", "127.0.0.1:\(httpPort)", "--udp-listen", "127.0.0.1:\(udpPort)", "--interval", "10", "--min-interval", "1",
        ], logTo: folder.file("tracker.log"))
        running.append(tracker)
        func stats() -> String { (try? runProcess(curl, ["-s", "http://127.0.0.1:\(httpPort)/stats?format=json"]).stdout) ?? "" }
        try #require(eventually(10) { tracker.output.contains("UDP tracker listening") }, "\(tracker.output)")
        let torrent = try makeTorrent(folder, tracker: "udp://127.0.0.1:\(udpPort)/announce")

        let seeder = try BackgroundProcess(python, ["-c", """
            import sys, time, libtorrent as lt
            s = lt.session({"listen_interfaces": "127.0.0.1:" + sys.argv[3], "enable_dht": False, "enable_lsd": False,
                            "enable_upnp": False, "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
                            "alert_mask": lt.alert.category_t.all_categories})
            h = s.add_torrent({"ti": lt.torrent_info(sys.argv[1]), "save_path": sys.argv[2]})
            while True:
                for a in s.pop_alerts():
                    if isinstance(a, lt.tracker_reply_alert): print("tracker reply peers=%d" % a.num_peers, flush=True)
                    if isinstance(a, lt.tracker_error_alert): print("tracker error %s" % a.message(), flush=True)
                time.sleep(0.2)
            """, torrent, fixturesURL.appendingPathComponent("payloads").path, "\(freePort())"], logTo: folder.file("libtorrent.log"))
        running.append(seeder)
        try #require(eventually(30) { seeder.output.contains("tracker reply") }, "libtorrent got no UDP answer: \(seeder.output.suffix(500))")
        #expect(eventually(10) { stats().contains("\"seeders\":1") }, "\(stats())")

        let output = folder.file("out")
        let get = try BackgroundProcess(vmswarmBinary, ["get", torrent, "--output", output, "--port", "0"], logTo: folder.file("get.log"))
        running.append(get)
        #expect(get.wait(seconds: 90), "get did not finish: \(get.output.suffix(800))")
        #expect(get.process.terminationStatus == 0, "\(get.output.suffix(800))")
        #expect(try sha256(output + "/vm-small.img") == sha256(Self.image))
        let metrics = (try? runProcess(curl, ["-s", "http://127.0.0.1:\(httpPort)/metrics"]).stdout) ?? ""
        #expect(!metrics.contains("vmswarm_tracker_udp_errors_total"), "\(metrics)")
    }

    /// `vmswarm seed` and `vmswarm get` announce to opentracker over UDP (its TCP port is another
    /// one, -p, so HTTP could not have served them; -P is its UDP port) and the download completes.
    @Test func vmswarmSeedsAndGetsThroughOpentrackerOverUDP() throws {
        let folder = try TemporaryFolder()
        var running: [BackgroundProcess] = []
        defer {
            running.forEach { $0.stop() }
            folder.cleanUp()
        }
        let opentracker = try #require(which("opentracker"), "opentracker is needed: apt-get install opentracker")
        let udpPort = freePort()
        let tcpPort = freePort()
        let torrent = try makeTorrent(folder, tracker: "udp://127.0.0.1:\(udpPort)/announce")
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        let hash = try #require(report["info_hash"] as? String)
        // Debian's opentracker serves listed torrents only, and reads the list as user nobody.
        let list = folder.file("hashes.txt")
        try "\(hash)\n".write(toFile: list, atomically: true, encoding: .utf8)
        chmod(folder.path, 0o755)
        chmod(list, 0o644)
        let tracker = try BackgroundProcess(opentracker, ["-i", "127.0.0.1", "-p", "\(tcpPort)", "-P", "\(udpPort)", "-d", "/", "-w", list],
            logTo: folder.file("opentracker.log"))
        running.append(tracker)
        Thread.sleep(forTimeInterval: 0.5)

        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", Self.image, "--port", "\(freePort())", "--log-level", "debug"],
            logTo: folder.file("seed.log"))
        running.append(seeder)
        try #require(eventually(20) { seeder.output.contains("seeding vm-small.img on port") }, "\(seeder.output)")
        let output = folder.file("out")
        // The seeder's first announce may still be on its way: get retries its tracker as it goes.
        // `--method auto` asks for a place in a tree, which a UDP tracker has no room to give: it
        // chooses the mesh (docs/tree.md), and says so.
        let get = try BackgroundProcess(vmswarmBinary, ["get", torrent, "--output", output, "--port", "0", "--log-level", "debug", "--method", "auto"],
            logTo: folder.file("get.log"))
        running.append(get)
        #expect(get.wait(seconds: 90), "get did not finish: \(get.output.suffix(1500))")
        #expect(get.process.terminationStatus == 0, "\(get.output.suffix(1500))")
        #expect(try sha256(output + "/vm-small.img") == sha256(Self.image))
        #expect(!seeder.output.contains("announce failed"), "\(seeder.output.suffix(1500))")
        #expect(get.output.contains("method auto: mesh (the tracker does not place tree nodes)"), "\(get.output.suffix(1500))")
    }
}
