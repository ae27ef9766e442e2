import Foundation
import Metainfo
import TestSupport
import Testing

/// `vmswarm pool` end to end on loopback (docs/pool.md). The WAN is 127.0.1.1 (the torrent's
/// tracker and the source); the site is 127.0.0.0/24: the pool node's site tracker on 127.0.0.1
/// and nodes bound to 127.0.0.1x, confined to the site with --site-network.
@Suite(.serialized) struct PoolTests {
    static func killHard(_ pid: Int32) { _ = Foundation.kill(pid, SIGKILL) }

    struct Sites {
        let folder: TemporaryFolder
        let torrent: String
        let sha: String
        let size: Int
        /// Sealed for a site (`create --seal-for`): the source and the nodes hold the content key, the pool node does not.
        let sealed: Bool
        let siteTracker = "127.0.0.1:\(freePort())"
        /// The WAN tracker the torrent names.
        let trackerURL: String
        var running: [BackgroundProcess] = []

        init(size: Int, sealed: Bool = false) throws {
            folder = try TemporaryFolder()
            self.size = size
            self.sealed = sealed
            let image = folder.file("image.img")
            try #require(try runProcess("/bin/sh", ["-c", "head -c \(size) /dev/urandom > '\(image)'"]).status == 0)
            sha = try sha256(image)
            torrent = folder.file("image.torrent")
            let trackerPort = freePort()
            trackerURL = "http://127.0.1.1:\(trackerPort)/announce"
            var sealing: [String] = []
            if sealed {
                try #require(try runProcess(vmswarmBinary, ["keygen", folder.file("site"), "--kind", "site"]).status == 0)
                sealing = ["--seal-for", folder.file("site.pub")]
            }
            let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K",
                "-t", "http://127.0.1.1:\(trackerPort)/announce"] + sealing)
            try #require(created.status == 0, "\(created.stderr)")
            let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.1.1:\(trackerPort)", "--config", "none"],
                logTo: folder.file("tracker.log"))
            running.append(tracker)
            try #require(eventually(20) { (try? runProcess("/usr/bin/curl", ["-sf", "http://127.0.1.1:\(trackerPort)/stats"]).status) == 0 },
                "\(tracker.output)")
        }

        /// The source, on the WAN; debug lines name every peer it connects with.
        mutating func source(_ extra: [String] = []) throws -> BackgroundProcess {
            let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", folder.file("image.img"), "--bind", "127.0.1.1",
                "--port", "\(freePort())", "--config", "none", "--json", "--log-level", "debug"] + key + extra, logTo: folder.file("seed.log"))
            running.append(seeder)
            try #require(eventually(20) { seeder.output.contains("\"event\"") }, "\(seeder.output)")
            return seeder
        }

        mutating func pool(_ extra: [String] = [], log: String = "pool.log") throws -> BackgroundProcess {
            let pool = try BackgroundProcess(vmswarmBinary, ["pool", "-o", folder.file("cache"), "--site-network", "127.0.0.0/24",
                "--site-tracker-listen", siteTracker, "--port", "0", "--config", "none", "--json"] + extra, logTo: folder.file(log))
            running.append(pool)
            try #require(eventually(20) { pool.output.contains(#""event":"image""#) }, "\(pool.output)")
            return pool
        }

        /// A node of the site: it knows only the site tracker, and connects only inside the site.
        mutating func node(_ name: String, address: String) throws -> BackgroundProcess {
            let node = try BackgroundProcess(vmswarmBinary, ["get", torrent, "--output", folder.file(name), "--bind", address, "--port", "0",
                "--site-tracker", "http://\(siteTracker)/announce", "--site-network", "127.0.0.0/24", "--config", "none", "--json"] + key,
                logTo: folder.file("\(name).log"))
            running.append(node)
            return node
        }

        var key: [String] { sealed ? ["--key", folder.file("image.torrent.key")] : [] }

        func completed(_ name: String) -> Bool { (try? sha256(folder.file("\(name)/image.img"))) == sha }

        /// The last figure a process's JSON lines gave for `field`.
        static func last(_ field: String, in process: BackgroundProcess) -> Int64? { TreeModeTests.Swarm.last(field, in: process) }

        func stop() {
            for process in running.reversed() { process.stop() }
            folder.cleanUp()
        }
    }

    @Test func theSiteFetchesThroughThePoolNodeAndTheWANCarriesOneCopy() throws {
        var sites = try Sites(size: 12 << 20)
        defer { sites.stop() }
        let source = try sites.source()
        let pool = try sites.pool([sites.torrent])
        let nodes = try [("n1", "127.0.0.11"), ("n2", "127.0.0.12")].map { try sites.node($0.0, address: $0.1) }
        #expect(eventually(60) { sites.completed("n1") && sites.completed("n2") }, "\(nodes.map { $0.output.suffix(400) }) \(pool.output.suffix(600))")
        #expect(eventually(10) { (Sites.last("site_uploaded", in: pool) ?? 0) > 0 })
        let wan = Sites.last("wan_downloaded", in: pool) ?? 0
        #expect(wan >= Int64(sites.size) && Double(wan) <= 1.05 * Double(sites.size), "the WAN carried \(wan) bytes")
        let sent = Sites.last("uploaded", in: source) ?? 0
        #expect(Double(sent) <= 1.05 * Double(sites.size), "the source sent \(sent) bytes")
        // The source met the pool node only: no node of the site connected with it.
        #expect(!source.output.contains("127.0.0.11") && !source.output.contains("127.0.0.12"), "\(source.output.suffix(800))")
    }

    /// Two pool nodes, 127.0.0.1 and 127.0.0.2, each listing the other: the WAN (a source held to
    /// 2 MiB/s) carries about one copy; with `kill`, the first is killed half-way and the other
    /// takes its share, and every node of the site completes.
    func twoPoolNodes(kill: Bool) throws {
        var sites = try Sites(size: 8 << 20)
        defer { sites.stop() }
        let source = try sites.source(["--max-up", "2M"])
        let second = "127.0.0.2:\(freePort())"
        let a = try sites.pool([sites.torrent, "--bind", "127.0.0.1", "--pool-peer", "127.0.0.2", "--site-tracker", "http://\(second)/announce"])
        let b = try sites.pool([sites.torrent, "--bind", "127.0.0.2", "--pool-peer", "127.0.0.1", "--site-tracker", "http://\(sites.siteTracker)/announce",
            "--site-tracker-listen", second, "-o", sites.folder.file("cache2")], log: "pool2.log")
        _ = try [("n1", "127.0.0.11"), ("n2", "127.0.0.12")].map { try sites.node($0.0, address: $0.1) }
        if kill {
            #expect(eventually(30) { (Sites.last("uploaded", in: source) ?? 0) >= Int64(sites.size / 2) })
            Self.killHard(a.process.processIdentifier)
        }
        #expect(eventually(60) { sites.completed("n1") && sites.completed("n2") }, "\(a.output.suffix(400)) \(b.output.suffix(400))")
        let sent = Double(Sites.last("uploaded", in: source) ?? 0) / Double(sites.size)
        #expect(sent <= (kill ? 1.35 : 1.1), "the source sent \(sent) copies")
        if !kill {
            // Both fetched over the WAN, together about one copy. (Not half each: the first to
            // start asks the source for whatever it likes until its sibling appears.)
            #expect(eventually(10) { [a, b].allSatisfy { Sites.last("pieces_have", in: $0) == 32 } })
            let wan = [a, b].map { Double(Sites.last("wan_downloaded", in: $0) ?? 0) / Double(sites.size) }
            #expect(wan.allSatisfy { $0 > 0.05 } && wan.reduce(0, +) <= 1.1, "the pool nodes fetched \(wan) of the image over the WAN")
        }
    }

    /// The site's nodes know only the first pool node, the second's announce to its tracker having
    /// failed (started before it): when the first dies, they stop having sources, ask their
    /// trackers again at once, find the second through its own tracker, and complete.
    @Test func nodesWhosePoolNodeDiesFindTheOtherWithinSeconds() throws {
        var sites = try Sites(size: 8 << 20)
        defer { sites.stop() }
        let source = try sites.source(["--max-up", "2M"])
        let second = "127.0.0.2:\(freePort())"
        let b = try sites.pool([sites.torrent, "--bind", "127.0.0.2", "--pool-peer", "127.0.0.1", "--site-tracker", "http://\(sites.siteTracker)/announce",
            "--site-tracker-listen", second, "-o", sites.folder.file("cache2")], log: "pool2.log")
        Thread.sleep(forTimeInterval: 1)  // its announce to the first's tracker has failed, and backs off
        let a = try sites.pool([sites.torrent, "--bind", "127.0.0.1", "--pool-peer", "127.0.0.2", "--site-tracker", "http://\(second)/announce"])
        let nodes = try [("n1", "127.0.0.11"), ("n2", "127.0.0.12")].map { name, address in
            let node = try BackgroundProcess(vmswarmBinary, ["get", sites.torrent, "--output", sites.folder.file(name), "--bind", address, "--port", "0",
                "--site-tracker", "http://\(sites.siteTracker)/announce", "--site-tracker", "http://\(second)/announce",
                "--site-network", "127.0.0.0/24", "--config", "none", "--json"], logTo: sites.folder.file("\(name).log"))
            sites.running.append(node)
            return node
        }
        #expect(eventually(30) { (Sites.last("uploaded", in: source) ?? 0) >= Int64(sites.size / 2) })
        Self.killHard(a.process.processIdentifier)
        #expect(eventually(40) { sites.completed("n1") && sites.completed("n2") },
            "\(nodes.map { $0.output.suffix(300) }) \(b.output.suffix(400))")
    }

    @Test func twoPoolNodesSplitTheWAN() throws { try twoPoolNodes(kill: false) }

    @Test func whenAPoolNodeDiesTheOtherTakesItsShare() throws { try twoPoolNodes(kill: true) }

    /// A sealed image passes through as ciphertext: the pool node, which has no key, never holds
    /// the plain image, and the site's nodes open it.
    @Test func aSealedImagePassesThroughThePoolNodeAsCiphertext() throws {
        var sites = try Sites(size: 8 << 20, sealed: true)
        defer { sites.stop() }
        _ = try sites.source()
        let pool = try sites.pool([sites.torrent])
        _ = try sites.node("n1", address: "127.0.0.11")
        #expect(eventually(60) { sites.completed("n1") }, "\(pool.output.suffix(600))")
        let cached = try FileManager.default.contentsOfDirectory(atPath: sites.folder.file("cache")).filter { !$0.hasPrefix(".") }
        #expect(cached == ["image.img.sealed"], "\(cached)")
        #expect(try sha256(sites.folder.file("cache/image.img.sealed")) != sites.sha)
        // Not a byte of the plain image's first block is in the cached file.
        let plain = try #require(FileHandle(forReadingAtPath: sites.folder.file("image.img"))?.readData(ofLength: 4096))
        let stored = try Data(contentsOf: URL(fileURLWithPath: sites.folder.file("cache/image.img.sealed")))
        #expect(stored.range(of: plain) == nil)
    }

    /// --max-down and --max-up limit a pool node's WAN side; the site's LAN is not limited.
    @Test func thePoolNodesLimitsHoldOnTheWANAndNotInTheSite() throws {
        var sites = try Sites(size: 4 << 20)
        defer { sites.stop() }
        _ = try sites.source()
        let started = Date()
        let pool = try sites.pool([sites.torrent, "--max-down", "1M", "--max-up", "256K"])
        _ = try sites.node("n1", address: "127.0.0.11")
        #expect(eventually(60) { sites.completed("n1") }, "\(pool.output.suffix(600))")
        let took = -started.timeIntervalSinceNow
        // 4 MiB at 1 MiB/s from the WAN: at least about 3 s. Through a 256 KiB/s upload the node
        // would need 16 s; the site is not limited, so it ends with the pool node.
        #expect(took > 2.5 && took < 12, "\(took) s")
    }

    /// A pool node restarted on its cache serves the image with the WAN gone: no image byte crosses it.
    @Test func aCachedImageIsServedAgainWithoutTheWAN() throws {
        var sites = try Sites(size: 4 << 20)
        defer { sites.stop() }
        let source = try sites.source()
        let first = try sites.pool([sites.torrent])
        #expect(eventually(30) { Sites.last("pieces_have", in: first) == 16 }, "\(first.output.suffix(600))")
        first.stop()
        source.stop()
        let again = try sites.pool(log: "pool-again.log")  // no torrent given: what the cache holds
        #expect(again.output.contains(#""cached_pieces":16"#), "\(again.output.suffix(400))")
        _ = try sites.node("n3", address: "127.0.0.13")
        #expect(eventually(30) { sites.completed("n3") })
        #expect(eventually(10) { (Sites.last("site_uploaded", in: again) ?? 0) >= Int64(sites.size) })
        #expect(Sites.last("wan_downloaded", in: again) == 0)
    }

    /// The admin endpoint adds an image and shows it, in the page and the metrics.
    @Test func anImageAddedAtTheAdminEndpointIsRelayedAndShown() throws {
        var sites = try Sites(size: 2 << 20)
        defer { sites.stop() }
        _ = try sites.source()
        let admin = "127.0.0.1:\(freePort())"
        let pool = try BackgroundProcess(vmswarmBinary, ["pool", "-o", sites.folder.file("cache"), "--site-network", "127.0.0.0/24",
            "--site-tracker-listen", sites.siteTracker, "--admin-listen", admin, "--port", "0", "--config", "none", "--json"],
            logTo: sites.folder.file("pool.log"))
        sites.running.append(pool)
        let curl = { (arguments: [String]) in try runProcess("/usr/bin/curl", ["-s", "-w", "\n%{http_code}"] + arguments) }
        #expect(eventually(20) { (try? curl(["http://\(admin)/"]))?.stdout.hasSuffix("200") == true }, "\(pool.output)")
        let added = try curl(["-X", "POST", "--data-binary", sites.torrent, "http://\(admin)/images"])
        #expect(added.stdout.contains("relaying image.img") && added.stdout.hasSuffix("200"), "\(added.stdout)")
        let bad = try curl(["-X", "POST", "--data-binary", "/nonexistent.torrent", "http://\(admin)/images"])
        #expect(bad.stdout.hasSuffix("422"), "\(bad.stdout)")
        #expect(try curl(["-X", "PUT", "http://\(admin)/images"]).stdout.hasSuffix("405"))
        #expect(eventually(30) { (try? curl(["http://\(admin)/"]))?.stdout.contains("2.00 MiB/2.00 MiB") == true }, "\(pool.output.suffix(500))")
        let metrics = try curl(["http://\(admin)/metrics"]).stdout
        #expect(metrics.contains("vmswarm_pool_images 1") && metrics.contains(#"side="wan",direction="in"}"#), "\(metrics)")
    }

    /// `pool --metrics-listen` shows per image what seed and get show (bytes by source, pieces,
    /// peers, bans, rates), scraped from the running process; SIGHUP (`systemctl reload
    /// vmswarm-pool`) applies the settings file's rate limits anew and the pool goes on.
    @Test func aPoolNodesMetricsAreScrapedAndSIGHUPReloadsItsLimits() throws {
        var sites = try Sites(size: 2 << 20)
        defer { sites.stop() }
        _ = try sites.source()
        let settings = sites.folder.file("node.yaml")
        try "limits:\n  up: 64K\n".write(toFile: settings, atomically: true, encoding: .utf8)
        let metricsPort = freePort()
        let pool = try BackgroundProcess(vmswarmBinary, ["pool", sites.torrent, "-o", sites.folder.file("cache"), "--site-network", "127.0.0.0/24",
            "--site-tracker-listen", sites.siteTracker, "--metrics-listen", "127.0.0.1:\(metricsPort)", "--port", "0", "--config", settings],
            logTo: sites.folder.file("pool.log"))
        sites.running.append(pool)
        func scrape() -> [String: Double] {
            guard let text = try? runProcess("/usr/bin/curl", ["-s", "-m", "5", "http://127.0.0.1:\(metricsPort)/metrics"]).stdout else { return [:] }
            var samples: [String: Double] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
                samples[String(line[..<space])] = value
            }
            return samples
        }
        let inspected = try runProcess(vmswarmBinary, ["inspect", sites.torrent]).stdout
        let hash = try #require(inspected.range(of: #"[0-9a-f]{40}"#, options: .regularExpression).map { String(inspected[$0]) }, "\(inspected)")
        let image = #"info_hash="\#(hash)""#
        #expect(eventually(60) { scrape()["vmswarm_pool_image_held_bytes{\(image),name=\"image.img\"}"] == Double(2 << 20) }, "\(pool.output.suffix(800))")
        let s = scrape()
        let peerBytes = try #require(s["vmswarm_pool_downloaded_bytes_total{\(image),source=\"peer\"}"], "\(s)")
        #expect(peerBytes - (s["vmswarm_pool_wasted_bytes_total{\(image)}"] ?? -1) == Double(2 << 20), "\(s)")
        #expect(s["vmswarm_pool_downloaded_bytes_total{\(image),source=\"web_seed\"}"] == 0)
        #expect(s["vmswarm_pool_pieces_verified_total{\(image)}"] == 8, "\(s)")
        #expect(s["vmswarm_pool_pieces_failed_total{\(image)}"] == 0)
        #expect((s["vmswarm_pool_peers_connected{\(image)}"] ?? 0) >= 1, "\(s)")
        #expect(s["vmswarm_pool_peers_banned{\(image)}"] == 0)
        #expect(s["vmswarm_pool_download_rate_bytes_per_second{\(image)}"] != nil && s["vmswarm_pool_upload_rate_bytes_per_second{\(image)}"] != nil)

        try "limits:\n  up: 1M\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(pool.process.processIdentifier, SIGHUP)
        #expect(eventually(10) { pool.output.contains("SIGHUP: rate limits from \(settings): up 1.00 MiB/s, down none") }, "\(pool.output.suffix(500))")
        try "limits:\n  up: lots\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(pool.process.processIdentifier, SIGHUP)
        #expect(eventually(10) { pool.output.contains("the settings in use stay") }, "\(pool.output.suffix(500))")
        #expect(!pool.wait(seconds: 1), "the pool node goes on after SIGHUP")
        #expect(scrape()["vmswarm_pool_images"] == 1)
    }

    /// A pool node's cache is a content store (docs/reuse.md): a new version of an image it holds
    /// (one piece of 16 changed, another torrent) takes the 15 unchanged pieces from the old one
    /// and crosses the WAN for one piece only.
    @Test func aNewVersionCrossesTheWANOnlyForWhatChanged() throws {
        var sites = try Sites(size: 4 << 20)
        defer { sites.stop() }
        _ = try sites.source()
        let v2 = sites.folder.file("image-v2.img")
        try FileManager.default.copyItem(atPath: sites.folder.file("image.img"), toPath: v2)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: v2))
        try handle.seek(toOffset: UInt64(5 * (256 << 10) + 10))
        try handle.write(contentsOf: Data("version 2".utf8))
        try handle.close()
        let v2Torrent = sites.folder.file("image-v2.torrent")
        let created = try runProcess(vmswarmBinary, ["create", v2, "-o", v2Torrent, "--piece-size", "256K", "-t", sites.trackerURL])
        try #require(created.status == 0, "\(created.stderr)")
        let seeder2 = try BackgroundProcess(vmswarmBinary, ["seed", v2Torrent, "--data", v2, "--bind", "127.0.1.1", "--port", "\(freePort())",
            "--config", "none"], logTo: sites.folder.file("seed-v2.log"))
        sites.running.append(seeder2)
        let watch = sites.folder.file("incoming")
        try FileManager.default.createDirectory(atPath: watch, withIntermediateDirectories: true)
        let metricsPort = freePort()
        let pool = try sites.pool(["--watch", watch, "--metrics-listen", "127.0.0.1:\(metricsPort)", sites.torrent])
        func status(_ name: String, _ field: String) -> Int? {
            pool.output.split(separator: "\n").reversed().lazy.compactMap { line -> Int? in
                guard line.contains(#""event":"status""#), line.contains(#""name":"\#(name)""#),
                    let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
                return (object[field] as? NSNumber)?.intValue
            }.first
        }
        try #require(eventually(60) { status("image.img", "pieces_have") == 16 }, "\(pool.output.suffix(600))")
        try FileManager.default.copyItem(atPath: v2Torrent, toPath: watch + "/image-v2.torrent")
        #expect(eventually(60) { status("image-v2.img", "pieces_have") == 16 }, "\(pool.output.suffix(600))")
        #expect(pool.output.contains(#""reused_pieces":15"#), "\(pool.output.suffix(600))")
        // Its metrics name the cache as the source of those 15 pieces.
        let metrics = try runProcess("/usr/bin/curl", ["-s", "-m", "5", "http://127.0.0.1:\(metricsPort)/metrics"]).stdout
        let v2Hash = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: v2Torrent))).infoHash.hex
        #expect(metrics.contains(#"vmswarm_pool_downloaded_bytes_total{info_hash="\#(v2Hash)",source="cache"} \#(15 * (256 << 10))"#),
            "\(metrics.prefix(3000))")
        let wan = try #require(status("image-v2.img", "wan_downloaded"))
        #expect(wan >= 256 << 10 && wan <= (256 << 10) * 105 / 100, "one piece over the WAN, not \(wan) bytes")
        #expect(try sha256(sites.folder.file("cache/image-v2.img")) == (try sha256(v2)))
    }

    @Test func aPoolNodeWithoutItsSiteIsRefusedClearly() throws {
        let missing = try runProcess(vmswarmBinary, ["pool", "/nonexistent.torrent", "--site-tracker-listen", "10.2.0.1:6969", "--config", "none"])
        #expect(missing.status != 0 && missing.stderr.contains("--site-network is needed"), "\(missing.stderr)")
        let outside = try runProcess(vmswarmBinary, ["pool", "/nonexistent.torrent", "--site-network", "10.2.0.0/16",
            "--site-tracker-listen", "10.3.0.1:6969", "--config", "none"])
        #expect(outside.status != 0 && outside.stderr.contains("must be an IP address inside --site-network"), "\(outside.stderr)")
        let hostBits = try runProcess(vmswarmBinary, ["get", "/nonexistent.torrent", "--site-network", "10.2.0.1/16", "--config", "none"])
        #expect(hostBits.status != 0 && hostBits.stderr.contains("--site-network must be an address block"), "\(hostBits.stderr)")
    }
}
