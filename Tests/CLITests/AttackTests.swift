import Foundation
import TestSupport
import Testing

/// A seeder under attack by real processes (issue 15): peers that ask and never read, and idle
/// connections that never handshake, while libtorrent downloads the image.
@Suite(.serialized) struct AttackTests {
    /// The attacker and the honest downloader (tools/testbed.d/seed-attack.py, shared with
    /// tools/bench-attack): peers that ask and never read plus idle connections, and libtorrent
    /// timing its download from the moment it connected.
    static let seedAttack = TestbedTests.repository + "/tools/testbed.d/seed-attack.py"

    static func peakRSS(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") })
        return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])) << 10
    }

    /// User plus system CPU seconds a process has used so far (/proc/PID/stat, clock ticks of 1/100 s).
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields = try #require(stat.split(separator: ")").last).split(separator: " ")
        return Double((Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)) / 100
    }

    /// A testbed of two hosts (tools/testbed, prefix `vat`, 10.79.1.x so that no address is the
    /// other testbeds'), each capped with tbf at 100 Mbit/s each way: the seeder and the attackers
    /// on h1 (the attackers on its loopback, so their traffic never touches the link), the honest
    /// peer on h2. The honest peer's rate is then set by the link, not by how fast this machine's
    /// two shared cores run loopback TCP, and the attack can cost it only through the seeder.
    struct ShapedLink {
        static let prefix = "vat"
        let seedAddress = "10.79.1.1"
        let peerAddress = "10.79.1.2"

        init(rate: String) throws {
            remove()  // what an interrupted run may have left
            let up = try runProcess(TestbedTests.testbed, ["--prefix", Self.prefix, "--hosts", "2", "--rate", rate, "--net", "10.79", "up"])
            try #require(up.status == 0, "\(up.stderr)")
        }

        /// `executable arguments` on HOST; `ip netns exec` replaces itself with the program, so
        /// the process's pid is the program's (its /proc entries are the seeder's).
        func command(on host: String, _ executable: String, _ arguments: [String]) -> (String, [String]) {
            (TestbedTests.testbed, ["--prefix", Self.prefix, "exec", host, executable] + arguments)
        }

        func remove() { _ = try? runProcess(TestbedTests.testbed, ["--prefix", Self.prefix, "down"]) }
    }

    /// The peer count of the seeder's latest progress line ("... 12 peers, up 2.80 MiB ...").
    static func peers(in output: String) -> Int {
        guard let line = output.split(separator: "\n").last(where: { $0.contains(" peers, up ") }) else { return 0 }
        let words = line.split(separator: " ")
        guard let at = words.firstIndex(of: "peers,"), at > 0 else { return 0 }
        return Int(words[at - 1]) ?? 0
    }

    /// How many peers the seeder has unchoked so far (its debug log's "peer=N ... unchoking peer").
    static func triedPeers(in output: String) -> Int {
        Set(output.split(separator: "\n").filter { $0.hasSuffix("unchoking peer") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("peer=") }.flatMap { Int($0.dropFirst(5)) }
        }).count
    }

    /// One libtorrent download through the shaped link: seconds from its connection to the whole
    /// image, and to the first verified piece (how long it waited for an upload slot, mostly).
    func download(_ python: String, _ torrent: String, into folder: String, over link: ShapedLink, port: Int) throws -> Transfer {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let (ip, arguments) = link.command(on: "h2", python, [
            Self.seedAttack, "honest", torrent, folder, link.peerAddress, "\(freePort())", link.seedAddress, "\(port)",
        ])
        let run = try runProcess(ip, arguments)
        let line = try #require(run.stdout.split(separator: "\n").first { $0.hasPrefix("done in") }, "\(run.stdout) \(run.stderr.suffix(300))")
        let words = line.split(separator: " ")
        return Transfer(seconds: try #require(Double(words[2])), firstPiece: try #require(Double(words[words.count - 4])))
    }

    struct Transfer {
        let seconds: Double
        let firstPiece: Double
    }

    /// 50 peers that never read and 200 idle connections, against a seeder whose honest peer,
    /// libtorrent, sits behind a 100 Mbit/s link: once the seeder has tried each non-reader,
    /// libtorrent gets the exact image at 80 % of its unloaded rate at least (issue 15), and the
    /// seeder's peak RSS stays under 150 MiB.
    /// The image (64 MiB) takes about 5.5 s over the link, so the rate is the link's, not the
    /// machine's: on unshaped loopback a transfer took about a second and varied 0.4 to 1.1 s with
    /// the neighbours' load, and the test could only hold 40 %.
    @Test func aSeederFacingNonReadersAndIdleConnectionsStaysBoundedAndServesAnHonestPeer() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = folder.file("image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(64 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K"])
        try #require(created.status == 0, "\(created.stderr)")
        let sha = try sha256(image)
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        let link = try ShapedLink(rate: "100mbit")
        defer { link.remove() }

        let port = freePort()
        // Debug logging: its "unchoking peer" lines tell when every non-reader has had its try.
        let (ip, seedArguments) = link.command(on: "h1", vmswarmBinary, [
            "seed", torrent, "--data", image, "--port", "\(port)", "--log-level", "debug",
        ])
        let seeder = try BackgroundProcess(ip, seedArguments, logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let pid = seeder.process.processIdentifier

        // The unloaded rate is the better of two downloads: the link sets the pace, but this
        // machine is shared, and libtorrent's own start takes CPU too. (Over the link a transfer
        // varied by 1 % in ten release runs, 5.62 to 5.75 s.)
        var calm: [Transfer] = []
        let calmCPU0 = try Self.cpuSeconds(pid)
        for run in 1...2 {
            calm.append(try download(python, torrent, into: folder.file("calm\(run)"), over: link, port: port))
            #expect(try sha256(folder.file("calm\(run)/image.img")) == sha)
        }
        let calmCPU = try Self.cpuSeconds(pid) - calmCPU0
        let calmRSS = try Self.peakRSS(pid)

        let (attackIP, attackArguments) = link.command(on: "h1", python, [
            Self.seedAttack, "attack", try #require(report["info_hash"] as? String), "\(try #require(report["piece_count"] as? Int))",
            "\(256 << 10)", "\(port)", "50", "200",
        ])
        let attack = try BackgroundProcess(attackIP, attackArguments, logTo: folder.file("attack.log"))
        defer { attack.stop() }
        try #require(eventually(20) { attack.output.contains("attacking") }, "\(attack.output)")
        // The honest peer is timed against the attack's steady state: every non-reader connected
        // and found out, and the idle connections churning. A non-reader is found out within
        // about 4 s of connecting without ever holding a slot: the rejects answering its requests
        // while it is choked fill its receive buffer, and its kernel acknowledges nothing more for
        // 0.5 s (TCP_INFO). One that gets a slot first is caught the same way. (Before, each had
        // its try at a slot, 8 at a time, and an honest newcomer waited for them; tools/bench-attack
        // measures a download that starts with the attack too.) Non-readers are dropped 30 s after
        // they stopped reading; the seeder's peer count after the download shows they were all
        // still there.
        let attackStart = Date()
        try #require(eventually(40) { Self.peers(in: seeder.output) >= 50 }, "\(seeder.output.suffix(400))")
        Thread.sleep(forTimeInterval: 6)
        let allTried = -attackStart.timeIntervalSinceNow
        let attackedCPU0 = try Self.cpuSeconds(pid)
        let attacked = [try download(python, torrent, into: folder.file("attacked"), over: link, port: port)]
        #expect(try sha256(folder.file("attacked/image.img")) == sha)
        let peersAfter = Self.peers(in: seeder.output)
        let attackedCPU = try Self.cpuSeconds(pid) - attackedCPU0
        Thread.sleep(forTimeInterval: 2)
        let peak = try Self.peakRSS(pid)
        #expect(seeder.process.isRunning)
        let unloaded = try #require(calm.map(\.seconds).min()), loaded = try #require(attacked.map(\.seconds).min())
        func shown(_ transfers: [Transfer]) -> String {
            transfers.map { String(format: "%.2f s (first piece %.2f s)", $0.seconds, $0.firstPiece) }.joined(separator: ", ")
        }
        let figures = "unloaded \(shown(calm)), attacked \(shown(attacked)): \(Int(100 * unloaded / loaded)) % of the rate; "
            + String(format: "download started %.1f s into the attack (%d tried with a slot), %d peers after it; ", allTried,
                Self.triedPeers(in: seeder.output), peersAfter)
            + String(format: "seeder CPU %.1f s calm, %.1f s attacked, peak RSS %d MiB calm, %d MiB attacked",
                     calmCPU, attackedCPU, calmRSS >> 20, peak >> 20)
        print("attack figures: \(figures); attacker: \(attack.output.split(separator: "\n").last ?? "")")
        // The link, not the machine, set the unloaded pace: 64 MiB at 100 Mbit/s is 5.4 s.
        #expect(unloaded > 5, "\(figures)")
        #expect(peak < 150 << 20, "\(figures)")
        #expect(peersAfter >= 50, "the attack was on throughout: \(figures)")
        #expect(loaded <= unloaded / 0.8, "\(figures)")
    }

    /// A raw fast-extension peer: handshake, have-none, interested; on unchoke it asks for the first
    /// block of PIECE and prints what answers it (a reject, a piece, or the connection closing).
    static let askOnce = """
        import os, socket, struct, sys, time
        ih = bytes.fromhex(sys.argv[1]); port = int(sys.argv[2]); piece = int(sys.argv[3])
        s = socket.create_connection(("127.0.0.1", port)); s.settimeout(15)
        s.sendall(bytes([19]) + b"BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0, 0, 4]) + ih + ("-TR0000-%012d" % os.getpid()).encode())
        buf = b""
        def take(n):
            global buf
            while len(buf) < n:
                d = s.recv(65536)
                if not d: print("closed", flush=True); sys.exit(0)
                buf += d
            out = buf[:n]; buf = buf[n:]; return out
        take(68)
        s.sendall(struct.pack(">IB", 1, 0x0f) + struct.pack(">IB", 1, 2))
        t0 = time.time(); asked = False
        while True:
            n = struct.unpack(">I", take(4))[0]
            if n == 0: continue
            msg = take(n)
            if msg[0] == 1 and not asked:
                s.sendall(struct.pack(">IBIII", 13, 6, piece, 0, 16384)); asked = True; t0 = time.time()
            elif msg[0] == 16:
                print("rejected %d after %.2f s" % (struct.unpack(">I", msg[1:5])[0], time.time() - t0), flush=True); break
            elif msg[0] == 7:
                print("piece", flush=True); break
        """

    /// The seeded file became short after the seed started: a request for a piece past its end is
    /// rejected at once (BEP 6) and the seed says so once, instead of leaving the peer waiting.
    @Test func aSeedWhoseFileBecameShortRejectsInsteadOfStalling() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = folder.file("image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(4 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        try #require(try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K"]).status == 0)
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        let hash = try #require(report["info_hash"] as? String)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        try #require(try runProcess("/usr/bin/truncate", ["-s", "1M", image]).status == 0)
        let python = try #require(which("/usr/bin/python3"))
        for _ in 1...2 {
            let asked = try runProcess(python, ["-c", Self.askOnce, hash, "\(port)", "15"])
            #expect(asked.stdout.hasPrefix("rejected 15 after"), "\(asked.stdout) \(asked.stderr.suffix(300))")
        }
        // A piece still on disk is served as before.
        let served = try runProcess(python, ["-c", Self.askOnce, hash, "\(port)", "1"])
        #expect(served.stdout.hasPrefix("piece"), "\(served.stdout) \(served.stderr.suffix(300))")
        #expect(seeder.output.components(separatedBy: "cannot read a piece for peers").count == 2, "logged once: \(seeder.output.suffix(600))")
        #expect(seeder.process.isRunning)
    }

    /// COUNT connections from ADDRESS that never send a byte: how many the seed closed within a
    /// second, and how many more within the next 11 s.
    static let idleFromOneAddress = """
        import select, socket, sys, time
        port = int(sys.argv[1]); address = sys.argv[2]; count = int(sys.argv[3])
        conns = []
        for i in range(count):
            s = socket.socket(); s.bind((address, 0)); s.connect(("127.0.0.1", port)); conns.append(s)
        def closed():
            readable, _, _ = select.select(conns, [], [], 0)
            return sum(1 for s in readable if s.recv(1) == b"")
        time.sleep(1); first = closed(); conns = [s for s in conns if s.fileno() >= 0]
        open_ = [s for s in conns if not select.select([s], [], [], 0)[0]]
        conns = open_; time.sleep(11); print("closed at once %d, after the deadline %d" % (first, closed()), flush=True)
        """

    /// At most 16 connections per address; one that does not complete its handshake within 10 s
    /// is closed (on main neither limit existed: 20 idle connections stayed open).
    @Test func connectionsPerAddressAreCappedAndHandshakesHaveADeadline() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = folder.file("image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(1 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        try #require(try runProcess(vmswarmBinary, ["create", image, "-o", torrent]).status == 0)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let idle = try runProcess(try #require(which("/usr/bin/python3")), ["-c", Self.idleFromOneAddress, "\(port)", "127.0.0.50", "20"])
        #expect(idle.stdout.contains("closed at once 4, after the deadline 16"), "\(idle.stdout) \(idle.stderr.suffix(300))")
    }
}
