import Foundation
import Logging
import Metainfo
import TestSupport
import Testing
import Tracker

/// Real clients meet through a vmswarm tracker: libtorrent seeds, aria2 and Transmission learn of it
/// from the tracker alone (DHT, local discovery and PEX are off) and download the image.
@Suite(.serialized) struct TrackerInteropTests {
    static let payloads = fixturesURL.appendingPathComponent("payloads").path

    /// Runs in a network namespace of its own with a 10.x address, because Transmission refuses
    /// loopback peers; nothing leaves the namespace.
    @Test func libtorrentAria2AndTransmissionMeetThroughTheTracker() throws {
        let namespace = try TestNamespace()
        let folder = try TemporaryFolder()
        var running: [BackgroundProcess] = []
        defer {
            running.forEach { $0.stop() }
            namespace.remove()
            folder.cleanUp()
        }
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        let aria2 = try #require(which("aria2c"), "aria2 is needed: run tools/test")
        let transmission = try #require(which("transmission-cli"), "transmission-cli is needed: run tools/test")
        let host = namespace.address
        func start(_ executable: String, _ arguments: [String], log: String) throws -> BackgroundProcess {
            let (wrapper, wrapped) = namespace.command(executable, arguments)
            let process = try BackgroundProcess(wrapper, wrapped, logTo: folder.file(log))
            running.append(process)
            return process
        }
        func stats() -> String {
            let (wrapper, wrapped) = namespace.command("/usr/bin/curl", ["-s", "http://\(host):6969/stats?format=json"])
            return (try? runProcess(wrapper, wrapped).stdout) ?? ""
        }

        let tracker = try start(vmswarmBinary, ["tracker", "--listen", "\(host):6969", "--interval", "10", "--min-interval", "1"], log: "tracker.log")
        try #require(eventually(10) { stats().contains("\"torrents\"") }, "tracker did not start: \(tracker.output)")

        let torrent = folder.file("vm-small.torrent")
        let made = try runProcess(vmswarmBinary, [
            "create", "\(Self.payloads)/vm-small.img", "--piece-size", "64K", "-t", "http://\(host):6969/announce", "-o", torrent,
        ])
        try #require(made.status == 0, "\(made.stderr)")
        let expected = try sha256("\(Self.payloads)/vm-small.img")

        // libtorrent seeds the fixture payload.
        let seeder = try start(python, ["-c", """
            import sys, time, libtorrent as lt
            s = lt.session({"listen_interfaces": sys.argv[3] + ":6881", "enable_dht": False, "enable_lsd": False,
                            "enable_upnp": False, "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
                            "alert_mask": lt.alert.category_t.all_categories})
            h = s.add_torrent({"ti": lt.torrent_info(sys.argv[1]), "save_path": sys.argv[2]})
            while True:
                for a in s.pop_alerts():
                    if isinstance(a, lt.tracker_reply_alert): print("tracker reply peers=%d" % a.num_peers, flush=True)
                st = h.status()
                print("state=%s seeding=%s peers=%d" % (st.state, st.is_seeding, st.num_peers), flush=True)
                time.sleep(0.5)
            """, torrent, Self.payloads, host], log: "libtorrent.log")
        try #require(eventually(30) { stats().contains("\"seeders\":1") }, "libtorrent never announced: \(seeder.output.suffix(500))")

        // aria2 downloads, knowing only the tracker.
        let aria2Dir = folder.file("aria2")
        let aria2Run = try start(aria2, [
            "--dir", aria2Dir, "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--seed-time=0", "--listen-port=6882", "--bt-stop-timeout=90",
            "--summary-interval=0", "--console-log-level=warn", torrent,
        ], log: "aria2.log")

        // Transmission downloads, with DHT, LPD and PEX switched off in its settings.
        let config = folder.file("transmission-config")
        try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        try #"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false, "utp-enabled": false}"#
            .write(toFile: config + "/settings.json", atomically: true, encoding: .utf8)
        let transmissionDir = folder.file("transmission")
        try FileManager.default.createDirectory(atPath: transmissionDir, withIntermediateDirectories: true)
        let transmissionRun = try start(transmission, ["-g", config, "-w", transmissionDir, "-p", "6883", torrent], log: "transmission.log")

        #expect(aria2Run.wait(seconds: 90), "aria2 did not finish: \(aria2Run.output.suffix(800))")
        #expect(aria2Run.process.terminationStatus == 0)
        #expect(try sha256(aria2Dir + "/vm-small.img") == expected)

        let transmissionDone = eventually(90) {
            (try? sha256(transmissionDir + "/vm-small.img")) == expected
        }
        #expect(transmissionDone, "Transmission did not finish: \(transmissionRun.output.suffix(400))")

        // Transmission, now seeding, reports completion (aria2 with --seed-time=0 just stops); and
        // libtorrent heard back from the tracker.
        #expect(eventually(20) { stats().contains("\"seeders\":2") && stats().contains("\"completed\":1") }, "\(stats())")
        #expect(seeder.output.contains("tracker reply"))
    }

    @Test func trackerCommandReloadsItsAllowlistOnSIGHUP() async throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let list = folder.file("allow.txt")
        let a = String(repeating: "aa", count: 20)
        let b = String(repeating: "bb", count: 20)
        try "# allowed torrents\n\(a)\n".write(toFile: list, atomically: true, encoding: .utf8)
        let port = freePort()
        let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(port)", "--allow", list],
            logTo: folder.file("tracker.log"))
        defer { tracker.stop() }
        let announceB = "/announce?info_hash=" + String(repeating: "%BB", count: 20) + "&peer_id=-TT0001-abcdefghijkl&port=5"
        try #require(eventually(10) { tracker.output.contains("tracker listening") }, "\(tracker.output)")
        #expect(httpGet(port: port, announceB).contains("unregistered torrent"))
        try "\(a)\n\(b)\n".write(toFile: list, atomically: true, encoding: .utf8)
        kill(tracker.process.processIdentifier, SIGHUP)
        #expect(eventually(5) { httpGet(port: port, announceB).contains("8:interval") }, "\(tracker.output)")
        kill(tracker.process.processIdentifier, SIGTERM)
        #expect(tracker.wait(seconds: 10))
        #expect(tracker.process.terminationStatus == 0)
        #expect(tracker.output.contains("shutting down"))

        try "not-a-hash\n".write(toFile: list, atomically: true, encoding: .utf8)
        let bad = try runProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(port)", "--allow", list])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("allow.txt:1"))
    }

    func httpGet(port: Int, _ target: String) -> String {
        (try? runProcess("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)\(target)"]).stdout) ?? ""
    }

    /// `vmswarm tracker --max-peers-per-ip N --cap-loopback` stores at most N peers of a torrent
    /// from one address; without `--cap-loopback`, loopback peers are not capped.
    @Test func thePerAddressCapIsSetFromTheCommandLine() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let curl = try #require(which("curl"), "curl is needed: run tools/test")
        let hash = String(repeating: "%aa", count: 20)
        for (flags, expected) in [(["--max-peers-per-ip", "3", "--cap-loopback"], 3), (["--max-peers-per-ip", "3"], 10)] {
            let port = freePort()
            let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(port)"] + flags, logTo: folder.file("tracker-\(port).log"))
            defer { tracker.stop() }
            let base = "http://127.0.0.1:\(port)"
            try #require(eventually(10) { (try? runProcess(curl, ["-s", base + "/stats?format=json"]))?.stdout.contains("torrents") == true },
                "\(tracker.output)")
            for n in 0..<10 {
                let answer = try runProcess(curl, ["-s", base + "/announce?info_hash=\(hash)&peer_id=-FK0001-\(String(format: "%012d", n))&port=6881&left=0"])
                #expect(answer.stdout.contains("8:interval"), "\(answer.stdout)")
            }
            let stats = try runProcess(curl, ["-s", base + "/stats?format=json"]).stdout
            #expect(stats.contains("\"seeders\":\(expected),"), "\(flags): \(stats)")
        }
    }
}
