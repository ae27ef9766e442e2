import Foundation
import TestSupport
import Testing

/// Issue 15, point 3 (connection hygiene), against a real `vmswarm` on loopback, a few seconds
/// each: the half-open cap (the oldest idle connection makes room, so a flood cannot keep an honest
/// peer out), the `--max-peers` limit on handshaken peers, and bounded, timed-out outgoing dials.
/// The per-address cap and the handshake deadline are in `AttackTests`.
@Suite struct ConnectionHygieneTests {
    /// A 1 MiB image, its torrent (no tracker) and its info hash.
    static func smallTorrent(in folder: TemporaryFolder) throws -> (image: String, torrent: String, hash: String) {
        let image = folder.file("image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(1 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        try #require(try runProcess(vmswarmBinary, ["create", image, "-o", torrent]).status == 0)
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        return (image, torrent, try #require(report["info_hash"] as? String))
    }

    static func startSeed(_ folder: TemporaryFolder, _ extra: [String] = []) throws -> (BackgroundProcess, port: Int, hash: String) {
        let (image, torrent, hash) = try smallTorrent(in: folder)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"] + extra,
            logTo: folder.file("seed.log"))
        // Its first status line (with --json, a "seeding" progress object) comes once it listens.
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") || seeder.output.contains("\"task\":\"seeding\"") },
            "\(seeder.output)")
        return (seeder, port, hash)
    }

    /// Shared by the scripts: whether a socket has been closed by the other side (reading what
    /// it sent meanwhile), and a BitTorrent handshake.
    static let common = """
        import select, socket, sys, time
        def is_closed(s):
            while True:
                readable, _, _ = select.select([s], [], [], 0)
                if not readable: return False
                try:
                    if s.recv(65536) == b"": return True
                except (ConnectionResetError, BlockingIOError): return True
        def handshake(info_hash, peer_id):
            return b"\\x13BitTorrent protocol" + bytes(8) + info_hash + peer_id

        """

    /// COUNT connections from COUNT addresses that never send a byte, 20 ms apart; a second
    /// later, which were closed; then an honest peer's handshake, and whether it is answered.
    static let halfOpenFlood = common + """
        port = int(sys.argv[1]); count = int(sys.argv[2]); info_hash = bytes.fromhex(sys.argv[3])
        conns = []
        for i in range(count):
            s = socket.socket(); s.bind(("127.0.1.%d" % (i + 1), 0)); s.connect(("127.0.0.1", port)); conns.append(s)
            time.sleep(0.02)
        time.sleep(1)
        closed = [i for i, s in enumerate(conns) if is_closed(s)]
        h = socket.socket(); h.bind(("127.0.2.1", 0)); h.settimeout(5); h.connect(("127.0.0.1", port))
        h.sendall(handshake(info_hash, b"-TS0001-honestpeer01"))
        reply = b""
        try:
            while len(reply) < 68:
                chunk = h.recv(68 - len(reply))
                if not chunk: break
                reply += chunk
        except socket.timeout: pass
        print("closed %s; honest peer answered %s" % (",".join(map(str, closed)), reply[28:48] == info_hash), flush=True)
        """

    /// 40 idle connections against the cap of 32 half-open: the 8 oldest are closed at once (not
    /// the newcomers), the 32 others stay until their handshake deadline, and a peer that
    /// handshakes after the flood is answered. Before the cap, none was closed within the 10 s
    /// deadline (nor at all, before the deadline), and enough of them exhaust descriptors.
    @Test func halfOpenConnectionsBeyondThirtyTwoCloseTheOldestAndAnHonestPeerGetsIn() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (seeder, port, hash) = try Self.startSeed(folder, ["--json"])
        defer { seeder.stop() }
        let flood = try runProcess(try #require(which("/usr/bin/python3")), ["-c", Self.halfOpenFlood, "\(port)", "40", hash])
        #expect(flood.stdout.contains("closed 0,1,2,3,4,5,6,7; honest peer answered True"), "\(flood.stdout) \(flood.stderr.suffix(400))")
        // The seed counts them (its status line, once a second).
        #expect(eventually(3) { seeder.output.contains("\"refused_half_open_limit\":9") || seeder.output.contains("\"refused_half_open_limit\":8") },
            "\(seeder.output.suffix(600))")
        #expect(seeder.process.isRunning)
    }

    /// COUNT peers from COUNT addresses that handshake, 300 ms apart; a second later, which of
    /// them the seed has closed.
    static let handshakingPeers = common + """
        port = int(sys.argv[1]); count = int(sys.argv[2]); info_hash = bytes.fromhex(sys.argv[3])
        conns = []
        for i in range(count):
            s = socket.socket(); s.bind(("127.0.3.%d" % (i + 1), 0)); s.connect(("127.0.0.1", port))
            s.sendall(handshake(info_hash, b"-TS0001-%012d" % i)); conns.append(s)
            time.sleep(0.3)
        time.sleep(1)
        print(" ".join("closed" if is_closed(s) else "open" for s in conns), flush=True)
        """

    /// `--max-peers 2`: the third peer to complete a handshake is closed, the first two stay.
    @Test func aPeerBeyondMaxPeersIsClosedAfterItsHandshake() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (seeder, port, hash) = try Self.startSeed(folder, ["--max-peers", "2", "--json"])
        defer { seeder.stop() }
        let peers = try runProcess(try #require(which("/usr/bin/python3")), ["-c", Self.handshakingPeers, "\(port)", "3", hash])
        #expect(peers.stdout.hasPrefix("open open closed"), "\(peers.stdout) \(peers.stderr.suffix(400))")
        #expect(eventually(3) { seeder.output.contains("\"refused_peer_limit\":1") }, "\(seeder.output.suffix(600))")
    }

    /// COUNT black holes on loopback (listeners with a full accept queue: the kernel drops further
    /// SYNs, so a connect hangs as to a host that is gone), then `vmswarm get` told to dial all of
    /// them (`--peer`); every 250 ms, how many of its connects to them are in SYN-SENT. Prints the
    /// most seen at once within 4 s of the first, and how many are left 6.5 s after the first.
    static let blackHoles = """
        import socket, subprocess, sys, time
        vmswarm, torrent, output, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        listeners, fillers, ports = [], [], set()
        for _ in range(count):
            l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(0); listeners.append(l)
            f = socket.socket(); f.connect(l.getsockname()); fillers.append(f)
            ports.add(l.getsockname()[1])
        def syn_sent():
            n = 0
            for line in open("/proc/net/tcp").read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "02" and int(fields[2].split(":")[1], 16) in ports: n += 1
            return n
        peers = sum((["--peer", "127.0.0.1:%d" % p] for p in sorted(ports)), [])
        get = subprocess.Popen([vmswarm, "get", torrent, "--output", output, "--port", "0"] + peers,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = None; most = 0; left = None; start = time.time()
        while time.time() - start < 20:
            now = time.time(); n = syn_sent()
            if first is None and n > 0: first = now
            if first is not None:
                if now - first <= 4: most = max(most, n)
                if now - first >= 6.5: left = n; break
            time.sleep(0.25)
        get.terminate(); get.wait()
        print("most dialling at once %d; left after 6.5 s %s" % (most, left), flush=True)
        """

    /// 20 peers that never answer: at most 16 dials are in flight at once (`maxDialing`), and each
    /// is given up after 5 s (the connect timeout), where the kernel alone would keep trying for
    /// about two minutes.
    @Test func outgoingDialsAreCappedAtSixteenAndTimeOutAfterFiveSeconds() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (_, torrent, _) = try Self.smallTorrent(in: folder)
        let dials = try runProcess(try #require(which("/usr/bin/python3")),
            ["-c", Self.blackHoles, vmswarmBinary, torrent, folder.file("out"), "20"])
        #expect(dials.stdout.contains("most dialling at once 16; left after 6.5 s 0"), "\(dials.stdout) \(dials.stderr.suffix(400))")
    }
}
