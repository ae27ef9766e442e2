import Foundation
import TestSupport
import Testing

/// Issue 15, point 2 (backpressure and bounded memory), for `--max-up`: requests the upload limit
/// holds back wait as requests, not as piece data read for them, and a peer may have at most 500
/// of them waiting (the queue we advertise, `reqq`); the 501st is a protocol violation and closes
/// its connection. Before 547ab71 each request was read at once and its block waited in a queue
/// of its own (`heldPieces`), pinning its piece: under a low limit that queue, and the memory of
/// the pieces it held, grew with every request a peer sent.
@Suite struct UploadQueueTests {
    /// A peer that handshakes, says it is interested and, once unchoked, asks for one block of
    /// each piece in turn (FIRST requests), measuring the seed's resident memory before and 2 s
    /// after; then asks for MORE further blocks, and tells whether the seed closed it.
    static let requestsUnderMaxUp = """
        import select, socket, struct, sys, time
        port = int(sys.argv[1]); info_hash = bytes.fromhex(sys.argv[2]); pieces = int(sys.argv[3]); pid = int(sys.argv[4])
        first = int(sys.argv[5]); more = int(sys.argv[6])
        def rss():
            for line in open("/proc/%d/status" % pid):
                if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024
        s = socket.socket(); s.connect(("127.0.0.1", port)); s.settimeout(10)
        s.sendall(b"\\x13BitTorrent protocol" + bytes(8) + info_hash + b"-TS0001-maxupqueue01")
        buf = b""
        def need(n):
            global buf
            while len(buf) < n:
                chunk = s.recv(65536)
                if not chunk: raise SystemExit("closed before unchoke")
                buf += chunk
        need(68); buf = buf[68:]
        s.sendall(struct.pack(">IB", 1, 2))  # interested
        while True:
            need(4); (length,) = struct.unpack(">I", buf[:4]); need(4 + length)
            message = buf[4:4 + length]; buf = buf[4 + length:]
            if length and message[0] == 1: break  # unchoke
        def requests(numbers):
            return b"".join(struct.pack(">IBIII", 13, 6, i % pieces, (i // pieces) * 16384, 16384) for i in numbers)
        def closed():
            s.setblocking(False)
            try:
                while True:
                    readable, _, _ = select.select([s], [], [], 0)
                    if not readable: return False
                    if s.recv(65536) == b"": return True
            except (ConnectionResetError, BlockingIOError): return True
        before = rss()
        s.sendall(requests(range(first)))
        time.sleep(2)
        grew = (rss() - before) / 2**20
        open_then = not closed()
        s.setblocking(True)
        try: s.sendall(requests(range(first, first + more)))
        except (BrokenPipeError, ConnectionResetError): pass
        deadline = time.time() + 5
        while time.time() < deadline and not closed(): time.sleep(0.1)
        print("after %d requests open %s, memory grew %.1f MiB; after %d more closed %s" % (first, open_then, grew, more, closed()), flush=True)
        """

    /// A 32 MiB image in 64 pieces, seeded at 16 KiB/s. 450 requests spread over every piece:
    /// the connection stays, and the seed's memory grows by far less than the 32 MiB the old
    /// queue pinned (only the pieces at the head of the queue are read). 60 more, past 500
    /// waiting: the seed closes the connection.
    @Test func requestsHeldBackByMaxUpWaitAsRequestsAndAreCappedAt500() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = folder.file("image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(32 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        try #require(try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "512K"]).status == 0)
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        let hash = try #require(report["info_hash"] as? String)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)", "--max-up", "16K"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let python = try #require(which("/usr/bin/python3"))
        let run = try runProcess(python, ["-c", Self.requestsUnderMaxUp, "\(port)", hash, "64", "\(seeder.process.processIdentifier)", "450", "60"])
        let line = run.stdout
        #expect(line.contains("after 450 requests open True"), "\(line) \(run.stderr.suffix(400))")
        #expect(line.contains("after 60 more closed True"), "\(line) \(run.stderr.suffix(400))")
        let grew = line.split(separator: " ").firstIndex(of: "grew").flatMap { Double(line.split(separator: " ")[$0 + 1]) }
        #expect((grew ?? .infinity) < 16, "the seed's memory grew \(grew ?? -1) MiB: \(line)")
        #expect(seeder.process.isRunning)
    }
}
