import Foundation
import TestSupport
import Testing

/// Distribution on an emulated LAN (tools/testbed: network namespaces on a bridge, 100 Mbit/s per
/// host, addresses 10.77.x inside them only). Needs root, as the tracker interop test does.
@Suite(.serialized) struct TestbedTests {
    static let repository = fixturesURL.deletingLastPathComponent().path
    static let testbed = repository + "/tools/testbed"

    /// Brings up a testbed of `hosts` hosts under `prefix`; `down` takes it away.
    static func up(_ prefix: String, hosts: Int, loss: String? = nil) throws {
        let arguments = ["--prefix", prefix, "--hosts", "\(hosts)"] + (loss.map { ["--loss", $0] } ?? []) + ["up"]
        let up = try runProcess(testbed, arguments)
        try #require(up.status == 0, "\(up.stderr)")
    }

    static func down(_ prefix: String) { _ = try? runProcess(testbed, ["--prefix", prefix, "down"]) }

    /// A testbed with the given `tools/testbed` options before `up`.
    static func up(_ prefix: String, _ options: [String]) throws {
        let up = try runProcess(testbed, ["--prefix", prefix] + options + ["up"])
        try #require(up.status == 0, "\(up.stderr)")
    }

    /// `disk.img` of random bytes in `folder`, and its sha256.
    static func randomImage(in folder: TemporaryFolder, mebibytes: Int) throws -> (path: String, sha: String) {
        let image = folder.file("disk.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(mebibytes << 20) /dev/urandom > '\(image)'"]).status == 0)
        return (image, try sha256(image))
    }

    /// The small version of the distribution benchmark: 4 hosts, 16 MiB, a vmswarm swarm; it exits
    /// non-zero unless every receiver holds the image with the right checksum.
    @Test func aSwarmOfFourHostsDeliversTheExactImage() throws {
        setenv("VMSWARM", vmswarmBinary, 1)
        let run = try runProcess(Self.repository + "/tools/bench-distribution", ["--ci"])
        #expect(run.status == 0, "\(run.stdout.suffix(600)) \(run.stderr.suffix(1200))")
        #expect(run.stdout.contains("| vmswarm |") || run.stderr.contains("vmswarm"), "\(run.stdout)")
    }

    /// The multicast booster: one sender, four receivers, two of them losing 5 % of their packets
    /// each way. Every receiver ends with the exact image; the sender reports its repair traffic.
    @Test func multicastBoosterWithTwoLossyReceivers() throws {
        let prefix = "vmt"
        try Self.up(prefix, hosts: 5, loss: "h4:5,h5:5")
        defer { Self.down(prefix) }
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, sha) = try Self.randomImage(in: folder, mebibytes: 16)
        let torrent = folder.file("disk.torrent")
        let group = "239.255.42.1:7000"
        let seeder = try BackgroundProcess(Self.testbed, [
            "--prefix", prefix, "exec", "h1", vmswarmBinary, "seed", image, "--tracker-port", "6969", "--announce-host", "10.77.1.1",
            "-o", torrent, "--port", "6881", "--multicast", group, "--rate", "90mbit", "--min-receivers", "4",
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(60) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
        // h2 stays 20 s after it completes, so its booster bytes are scraped from the real process.
        let receivers = try (2...5).map { host in
            try BackgroundProcess(Self.testbed, [
                "--prefix", prefix, "exec", "h\(host)", vmswarmBinary, "get", torrent, "--output", folder.file("h\(host)"),
                "--port", "6881", "--multicast", group, "--json",
            ] + (host == 2 ? ["--metrics-listen", "127.0.0.1:9300", "--seed-after", "20s"] : []), logTo: folder.file("h\(host).log"))
        }
        defer { receivers.forEach { $0.stop() } }
        try #require(eventually(120) { receivers[0].output.contains(#""event":"complete""#) }, "\(receivers[0].output.suffix(500))")
        let scraped = try runProcess(Self.testbed, ["--prefix", prefix, "exec", "h2", "/usr/bin/curl", "-s", "-m", "5", "http://127.0.0.1:9300/metrics"])
        func sample(_ name: String) -> Double? {
            scraped.stdout.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        let multicastBytes = try #require(sample(#"vmswarm_downloaded_bytes_total{source="multicast"}"#), "\(scraped.stdout) \(scraped.stderr)")
        let peerBytes = try #require(sample(#"vmswarm_downloaded_bytes_total{source="peer"}"#))
        #expect(multicastBytes > 0 && multicastBytes <= Double(16 << 20), "\(scraped.stdout)")
        #expect(multicastBytes + peerBytes >= Double(16 << 20), "every byte came from the group or a peer: \(scraped.stdout)")
        for (index, receiver) in receivers.enumerated() {
            #expect(receiver.wait(seconds: 120) && receiver.process.terminationStatus == 0, "h\(index + 2): \(receiver.output.suffix(500))")
            #expect(try sha256(folder.file("h\(index + 2)/disk.img")) == sha, "h\(index + 2) holds the exact image")
        }
        // The receivers without loss took the image from the group, not from peers.
        for host in [2, 3] {
            let complete = try #require(receivers[host - 2].output.split(separator: "\n").last { $0.contains(#""event":"complete""#) })
            #expect(complete.contains(#""multicast_pieces":"#) && !complete.contains(#""multicast_pieces":0,"#), "\(complete)")
        }
        #expect(eventually(30) { seeder.output.contains("repair packets") }, "the sender reports its repair traffic: \(seeder.output.suffix(400))")
    }

    /// `--method auto` chooses as docs/tree.md says on each topology of the testbed: a flat LAN
    /// whose group reaches everyone (multicast), the same LAN with multicast blocked (the tree,
    /// since the seed's tracker places trees), and two racks whose core does not forward multicast
    /// (the seed's rack-mate hears the group; the other rack's nodes take the tree, entering
    /// their rack once). Every node ends with the exact image.
    /// Links of 20 Mbit/s, so that a download outlasts the 2 s a node listens for a sender before
    /// it chooses (a node that completes first has nothing to choose); the carousel sends at
    /// 8 Mbit/s, leaving the source's link room for the TCP that feeds the other rack (UDP at
    /// nearly the link's rate would starve it).
    @Test(arguments: [
        ("flat", ["--hosts", "4", "--rate", "20mbit"], ["multicast", "multicast", "multicast"]),
        ("blocked", ["--hosts", "4", "--rate", "20mbit", "--block-multicast"], ["tree", "tree", "tree"]),
        ("racks", ["--hosts", "4", "--rate", "20mbit", "--racks", "2", "--uplink", "10mbit"], ["multicast", "tree", "tree"]),
    ])
    func methodAutoChoosesAsDocumentedOnEachTopology(topology: String, options: [String], expected: [String]) throws {
        let prefix = "vmm"
        try Self.up(prefix, options)
        defer { Self.down(prefix) }
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, sha) = try Self.randomImage(in: folder, mebibytes: 8)
        let torrent = folder.file("disk.torrent")
        let group = "239.255.42.1:7000"
        let seeder = try BackgroundProcess(Self.testbed, [
            "--prefix", prefix, "exec", "h1", vmswarmBinary, "seed", image, "--tracker-port", "6969", "--announce-host", "10.77.1.1",
            "-o", torrent, "--port", "6881", "--method", "auto", "--multicast", group, "--rate", "8mbit", "--carousel", "--config", "none",
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(60) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
        let receivers = try (2...4).map { host in
            try BackgroundProcess(Self.testbed, [
                "--prefix", prefix, "exec", "h\(host)", vmswarmBinary, "get", torrent, "--output", folder.file("h\(host)"),
                "--port", "6881", "--method", "auto", "--multicast", group, "--json", "--config", "none",
            ], logTo: folder.file("h\(host).log"))
        }
        defer { receivers.forEach { $0.stop() } }
        for (index, receiver) in receivers.enumerated() {
            let host = "h\(index + 2)"
            #expect(receiver.wait(seconds: 90) && receiver.process.terminationStatus == 0, "\(topology) \(host): \(receiver.output.suffix(500))")
            #expect(try sha256(folder.file("\(host)/disk.img")) == sha, "\(topology): \(host) holds the exact image")
            let chosen = receiver.output.split(separator: "\n").first { $0.contains(#""event":"method""#) } ?? ""
            #expect(chosen.contains(#""method":"\#(expected[index])""#), "\(topology) \(host): \(chosen)")
        }
    }

    /// A sealed image over the booster, which needs no change for it: it carries the ciphertext the
    /// torrent's hashes cover. Two receivers with the key end with the exact plaintext; a relay
    /// without it (`--relay-only`) keeps the verified ciphertext. All of it came from the group.
    @Test func multicastBoosterCarriesASealedImage() throws {
        let prefix = "vms"
        try Self.up(prefix, hosts: 4)
        defer { Self.down(prefix) }
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, sha) = try Self.randomImage(in: folder, mebibytes: 8)
        let torrent = folder.file("disk.torrent")
        let key = folder.file("content")
        try #require(try runProcess(vmswarmBinary, ["keygen", key, "--kind", "content"]).status == 0)
        let create = try runProcess(vmswarmBinary, [
            "create", image, "-t", "http://10.77.1.1:6969/announce", "-o", torrent, "--key", key + ".key",
        ])
        try #require(create.status == 0, "\(create.stderr)")
        let tracker = try BackgroundProcess(Self.testbed, [
            "--prefix", prefix, "exec", "h1", vmswarmBinary, "tracker", "--listen", "10.77.1.1:6969", "--interval", "10",
        ], logTo: folder.file("tracker.log"))
        defer { tracker.stop() }
        let group = "239.255.42.1:7000"
        let seeder = try BackgroundProcess(Self.testbed, [
            "--prefix", prefix, "exec", "h1", vmswarmBinary, "seed", torrent, "--data", image, "--key", key + ".key",
            "--port", "6881", "--multicast", group, "--rate", "90mbit", "--min-receivers", "3",
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(60) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
        let receivers = try [(2, true), (3, true), (4, false)].map { host, keyed in
            try BackgroundProcess(Self.testbed, [
                "--prefix", prefix, "exec", "h\(host)", vmswarmBinary, "get", torrent, "--output", folder.file("h\(host)"),
                "--port", "6881", "--multicast", group, "--json",
            ] + (keyed ? ["--key", key + ".key"] : ["--relay-only"]), logTo: folder.file("h\(host).log"))
        }
        defer { receivers.forEach { $0.stop() } }
        for (index, receiver) in receivers.enumerated() {
            let host = index + 2
            #expect(receiver.wait(seconds: 120) && receiver.process.terminationStatus == 0, "h\(host): \(receiver.output.suffix(500))")
            let complete = receiver.output.split(separator: "\n").last { $0.contains(#""event":"complete""#) } ?? ""
            #expect(complete.contains(#""multicast_pieces":"#) && !complete.contains(#""multicast_pieces":0,"#), "h\(host): \(complete)")
        }
        for host in [2, 3] {
            #expect(try sha256(folder.file("h\(host)/disk.img")) == sha, "h\(host) holds the exact plaintext")
        }
        let relayed = try FileManager.default.contentsOfDirectory(atPath: folder.file("h4"))
        #expect(relayed.contains("disk.img.sealed") && !relayed.contains("disk.img"), "the relay keeps the ciphertext only: \(relayed)")
    }

    /// A hostile host on the LAN while the booster sends 32 MiB to three receivers
    /// (tools/testbed.d/mcast-attacker.py: a forged sender announcing every piece ahead, a flood of
    /// forged sender instances, forged DONEs for the real sender, NACKs from 50 made-up receivers
    /// naming the whole image, the byte 0xD2). Every receiver completes with the exact image and
    /// no peer is banned; most of the image still comes from the group; and the attacked session
    /// takes at most 20 % longer than the quiet one (issue 15). On this shared 2-core machine one
    /// quiet run of a debug build varies by half (6 to 10 s), so runs alternate quiet, attacked,
    /// attacked, quiet, and each side's best run is compared: the machine's noise then hits both
    /// sides alike. tools/bench-attack measures the same with a release build and more runs.
    @Test func multicastBoosterUnderAttack() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, sha) = try Self.randomImage(in: folder, mebibytes: 32)
        func distribute(attacked: Bool, run number: Int) throws -> Double {
            let prefix = attacked ? "vma" : "vmb"
            try Self.up(prefix, hosts: 5)
            defer { Self.down(prefix) }
            let run = folder.file("\(prefix)\(number)")
            try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
            let torrent = run + "/disk.torrent"
            let group = "239.255.42.1:7000"
            let seeder = try BackgroundProcess(Self.testbed, [
                "--prefix", prefix, "exec", "h1", vmswarmBinary, "seed", image, "--tracker-port", "6969",
                "--announce-host", "10.77.1.1", "-o", torrent, "--port", "6881", "--multicast", group, "--rate", "90mbit",
                "--min-receivers", "3", "--log-level", "info",
            ], logTo: run + "/seed.log")
            defer { seeder.stop() }
            try #require(eventually(60) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
            let start = Date()
            let receivers = try (2...4).map { host in
                try BackgroundProcess(Self.testbed, [
                    "--prefix", prefix, "exec", "h\(host)", vmswarmBinary, "get", torrent, "--output", run + "/h\(host)",
                    "--port", "6881", "--multicast", group, "--json", "--log-level", "info",
                ], logTo: run + "/h\(host).log")
            }
            defer { receivers.forEach { $0.stop() } }
            // The attacker starts once the receivers have joined (a host that joins a plain session
            // as made-up receivers can start a --min-receivers pass early: docs/multicast.md).
            var attacker: BackgroundProcess?
            if attacked {
                Thread.sleep(forTimeInterval: 1)
                attacker = try BackgroundProcess(Self.testbed, [
                    "--prefix", prefix, "exec", "h5", "/usr/bin/python3", Self.repository + "/tools/testbed.d/mcast-attacker.py",
                    torrent, group, "120",
                ], logTo: run + "/attacker.log")
            }
            defer { attacker?.stop() }
            for (index, receiver) in receivers.enumerated() {
                let host = index + 2
                #expect(receiver.wait(seconds: 120) && receiver.process.terminationStatus == 0, "h\(host): \(receiver.output.suffix(500))")
            }
            let elapsed = Date().timeIntervalSince(start)
            for host in 2...4 {
                #expect(try sha256(run + "/h\(host)/disk.img") == sha, "h\(host) holds the exact image")
                let log = try String(contentsOfFile: run + "/h\(host).log", encoding: .utf8)
                #expect(!log.contains("failed the hash"), "h\(host) banned a peer: \(log.suffix(800))")
            }
            if let attacker {
                #expect(attacker.process.isRunning, "the attacker ran throughout: \(attacker.output)")
            }
            for receiver in receivers {
                // The group still carried most of the image (half of its pieces at least).
                let complete = receiver.output.split(separator: "\n").last { $0.contains(#""event":"complete""#) } ?? ""
                let pieces = complete.split(separator: ",").first { $0.hasPrefix(#""multicast_pieces":"#) }
                    .flatMap { Int($0.split(separator: ":").last ?? "") } ?? 0
                #expect(pieces >= 64, "\(complete)")
            }
            return elapsed
        }
        var quiet: [Double] = [], attacked: [Double] = []
        for (number, attack) in [false, true, true, false].enumerated() {
            let elapsed = try distribute(attacked: attack, run: number)
            if attack { attacked.append(elapsed) } else { quiet.append(elapsed) }
        }
        let figures = "attacked \(attacked.map { String(format: "%.2f", $0) }) s, quiet \(quiet.map { String(format: "%.2f", $0) }) s"
        print("multicast under attack: \(figures)")
        let best = (quiet: try #require(quiet.min()), attacked: try #require(attacked.min()))
        #expect(best.attacked <= best.quiet * 1.2, "\(figures)")
    }

    /// Two sites (`--private`, issue 18): a compute node of the private site reaches its LAN and a
    /// pool host's site side, and nothing beyond: neither the source h1 nor the pool host's WAN
    /// side. Each such attempt is a packet the trap counts (`escapes`, with its source and
    /// destination), not a local error nobody sees. The dual-homed pool host reaches both sites;
    /// the source reaches the pool host's WAN side and finds no route into the private LAN.
    @Test func aPrivateNodeReachesItsSiteOnlyAndTheTrapCountsEachAttemptOut() throws {
        let prefix = "vmp"
        try Self.up(prefix, ["--hosts", "1", "--pools", "1", "--private", "2", "--uplink", "20mbit"])
        defer { Self.down(prefix) }
        let hosts = try runProcess(Self.testbed, ["--prefix", prefix, "hosts"])
        #expect(hosts.stdout == """
            h1 vmp-h1 eth0 10.77.1.1 1
            h2 vmp-h2 eth0 10.77.2.2 2
            h2 vmp-h2 eth1 10.77.100.2 100
            h3 vmp-h3 eth0 10.77.100.3 100
            h4 vmp-h4 eth0 10.77.100.4 100

            """, "\(hosts.stderr)")
        /// A TCP connection from `host` to port 9 of `address`, where nothing listens: "reached" if
        /// refused there, "unreachable" if a router said so, "timeout" if it vanished (into the trap).
        /// A socket timeout rather than timeout(1), whose SIGTERM did not end the connect under the test
        /// runner (it ran to TCP's own 2-minute timeout).
        func connect(_ host: String, _ address: String) throws -> String {
            let script = """
                import socket, sys
                s = socket.socket()
                s.settimeout(2)
                try:
                    s.connect((sys.argv[1], 9))
                    print("connected")
                except ConnectionRefusedError:
                    print("reached")
                except socket.timeout:
                    print("timeout")
                except OSError as e:
                    print("unreachable" if "unreachable" in str(e) else str(e))
                """
            let run = try runProcess(Self.testbed, ["--prefix", prefix, "exec", host, "/usr/bin/python3", "-c", script, address])
            return run.stdout.trimmingCharacters(in: .whitespacesAndNewlines) + run.stderr
        }
        func escapes() throws -> [String] {
            let run = try runProcess(Self.testbed, ["--prefix", prefix, "escapes"])
            try #require(run.status == 0, "\(run.stderr)")
            return run.stdout.split(separator: "\n").map(String.init)
        }
        #expect(try connect("h3", "10.77.100.2") == "reached", "a compute node reaches its pool host's site side")
        #expect(try connect("h3", "10.77.100.4") == "reached", "and the other compute node")
        #expect(try connect("h2", "10.77.1.1") == "reached", "the pool host reaches the source over the WAN")
        #expect(try connect("h1", "10.77.2.2") == "reached", "the source reaches the pool host's WAN side")
        #expect(try connect("h1", "10.77.100.3") == "unreachable", "the core has no route into the private LAN")
        #expect(try escapes() == ["0 0"])
        #expect(try connect("h3", "10.77.1.1") == "timeout", "the source is beyond the private site")
        #expect(try connect("h4", "10.77.2.2") == "timeout", "so is the pool host's WAN side")
        let counted = try escapes()
        #expect(counted.count == 3 && (Int(counted[0].split(separator: " ")[0]) ?? 0) >= 2, "\(counted)")
        #expect(counted.contains { $0.hasPrefix("10.77.100.3 10.77.1.1 ") }, "\(counted)")
        #expect(counted.contains { $0.hasPrefix("10.77.100.4 10.77.2.2 ") }, "\(counted)")
    }
}
