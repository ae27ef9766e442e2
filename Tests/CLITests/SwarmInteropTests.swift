import Foundation
import TestSupport
import Testing

/// vmswarm's swarm against real clients, both ways, with a 32 MiB image and sha256 compared.
@Suite(.serialized) struct SwarmInteropTests {
    static let libtorrentSession = """
        import sys, time, libtorrent as lt
        s = lt.session({"listen_interfaces": "127.0.0.1:%s" % sys.argv[3], "enable_dht": False, "enable_lsd": False,
                        "enable_upnp": False, "enable_natpmp": False, "allow_multiple_connections_per_ip": True})
        h = s.add_torrent({"ti": lt.torrent_info(sys.argv[1]), "save_path": sys.argv[2]})
        if len(sys.argv) > 4: h.connect_peer(("127.0.0.1", int(sys.argv[4])))
        t0 = time.time()
        while time.time() - t0 < 90:
            st = h.status()
            print("progress=%.3f seeding=%s peers=%d" % (st.progress, st.is_seeding, st.num_peers), flush=True)
            if len(sys.argv) > 4 and st.is_seeding: break
            time.sleep(0.3)
        """

    func makeImage(_ folder: TemporaryFolder) throws -> (image: String, torrent: String, sha: String) {
        let image = folder.file("image.img")
        let result = try runProcess("/bin/sh", ["-c", "head -c \(32 << 20) /dev/urandom > '\(image)'"])
        try #require(result.status == 0)
        let torrent = folder.file("image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K"])
        try #require(created.status == 0, "\(created.stderr)")
        return (image, torrent, try sha256(image))
    }

    @Test func vmswarmSeedsAndLibtorrentDownloads() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try makeImage(folder)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        try FileManager.default.createDirectory(atPath: folder.file("lt"), withIntermediateDirectories: true)
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        let leecher = try runProcess(python, ["-c", Self.libtorrentSession, torrent, folder.file("lt"), "\(freePort())", "\(port)"])
        #expect(leecher.stdout.contains("seeding=True"), "\(leecher.stdout.suffix(300)) \(leecher.stderr)")
        #expect(try sha256(folder.file("lt/image.img")) == sha)
    }

    @Test func libtorrentSeedsAndVmswarmDownloads() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (_, torrent, sha) = try makeImage(folder)
        let port = freePort()
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        let seeder = try BackgroundProcess(python, ["-c", Self.libtorrentSession, torrent, folder.path, "\(port)"], logTo: folder.file("lt.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding=True") }, "\(seeder.output)")
        let get = try runProcess(vmswarmBinary, ["get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(port)", "--port", "0"])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(get.stdout.contains("complete: \(folder.file("out"))/image.img"))
        #expect(try sha256(folder.file("out/image.img")) == sha)
        #expect(!FileManager.default.fileExists(atPath: folder.file("out/image.img.part")))
        // A second run finds the image complete on disk and fetches nothing.
        let again = try runProcess(vmswarmBinary, ["get", torrent, "--output", folder.file("out"), "--port", "0"])
        #expect(again.status == 0, "\(again.stderr)")
    }

    /// `get` also takes the torrent's http:// URL.
    @Test func getFetchesTheTorrentFromAURL() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try makeImage(folder)
        let (seedPort, webPort) = (freePort(), freePort())
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(seedPort)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        let web = try BackgroundProcess(try #require(which("/usr/bin/python3")), ["-m", "http.server", "\(webPort)", "--bind", "127.0.0.1", "--directory", folder.path],
            logTo: folder.file("web.log"))
        defer { web.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") && web.output.contains("Serving") })
        let get = try runProcess(vmswarmBinary, [
            "get", "http://127.0.0.1:\(webPort)/image.torrent", "--output", folder.file("out"), "--peer", "127.0.0.1:\(seedPort)", "--port", "0",
        ])
        #expect(get.status == 0, "\(get.stderr.suffix(300))")
        #expect(try sha256(folder.file("out/image.img")) == sha)
        let missing = try runProcess(vmswarmBinary, ["get", "http://127.0.0.1:\(webPort)/nothing.torrent", "--output", folder.file("x")])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("HTTP status 404"))
    }

    /// `vmswarm seed IMAGE` is a whole swarm in one command: torrent, embedded tracker, seeder.
    /// aria2 knows only the torrent, so it finds the seeder through the embedded tracker.
    @Test func oneCommandSwarmServesAria2() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, _, sha) = try makeImage(folder)
        let trackerPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, [
            "seed", image, "--tracker-port", "\(trackerPort)", "--port", "\(freePort())", "--output", folder.file("swarm.torrent"),
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let aria2 = try #require(which("aria2c"), "aria2 is needed: run tools/test")
        let get = try runProcess(aria2, [
            "--dir", folder.file("aria2"), "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--seed-time=0", "--listen-port=\(freePort())", "--bt-stop-timeout=60",
            "--summary-interval=0", "--console-log-level=warn", folder.file("swarm.torrent"),
        ])
        #expect(get.status == 0, "\(get.stdout.suffix(500))")
        #expect(try sha256(folder.file("aria2/image.img")) == sha)
    }
}

/// Faults: a download killed with SIGKILL resumes without fetching its verified pieces again.
@Suite(.serialized) struct SwarmFaultTests {
    @Test func killedDownloadResumesWithoutRefetching() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")

        // 4 MiB/s for a 32 MiB image: killed about half-way.
        let first = try BackgroundProcess(vmswarmBinary, [
            "get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(port)", "--port", "0", "--max-down", "4M",
        ], logTo: folder.file("get1.log"))
        Thread.sleep(forTimeInterval: 4)
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: folder.file("out/image.img.part")))
        #expect(!FileManager.default.fileExists(atPath: folder.file("out/image.img")), "no final name before every piece verified")

        let second = try runProcess(vmswarmBinary, ["get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(port)", "--port", "0", "--json"])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(try sha256(folder.file("out/image.img")) == sha)
        let line = try #require(second.stdout.split(separator: "\n").last { $0.contains("\"complete\"") })
        let event = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        let fetched = try #require(event?["downloaded"] as? Int)
        // Roughly 16 MiB was verified before the kill; the rerun fetched only the rest.
        #expect(fetched < (32 << 20) - (6 << 20), "the rerun downloaded \(fetched) bytes")
        #expect(fetched > 0)
    }
}

@Suite(.serialized) struct SwarmMixedTests {
    /// One vmswarm seeder with its embedded tracker; a libtorrent leecher and a vmswarm leecher
    /// find it (and each other) through the tracker, and both end with the exact image.
    @Test func mixedSwarmCompletes() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, _, sha) = try SwarmInteropTests().makeImage(folder)
        let trackerPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, [
            "seed", image, "--tracker-port", "\(trackerPort)", "--port", "\(freePort())", "--output", folder.file("swarm.torrent"), "--max-up", "16M",
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        try FileManager.default.createDirectory(atPath: folder.file("lt"), withIntermediateDirectories: true)
        let libtorrent = try BackgroundProcess(python, ["-c", SwarmInteropTests.libtorrentSession,
            folder.file("swarm.torrent"), folder.file("lt"), "\(freePort())"], logTo: folder.file("lt.log"))
        defer { libtorrent.stop() }
        let get = try runProcess(vmswarmBinary, ["get", folder.file("swarm.torrent"), "--output", folder.file("vs"), "--port", "\(freePort())"])
        #expect(get.status == 0, "\(get.stderr.suffix(300))")
        #expect(try sha256(folder.file("vs/image.img")) == sha)
        #expect(eventually(60) { libtorrent.output.contains("seeding=True") }, "\(libtorrent.output.suffix(300))")
        #expect(try sha256(folder.file("lt/image.img")) == sha)
    }

    /// Two leechers that know only the (slow) seeder find each other by peer exchange and trade;
    /// with `--seed-after done` the first to finish stays until the other is complete, then exits.
    @Test func peerExchangeAndSeedingUntilTheSwarmIsDone() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let seedPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(seedPort)", "--max-up", "4M"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        func leecher(_ name: String) throws -> BackgroundProcess {
            try BackgroundProcess(vmswarmBinary, [
                "get", torrent, "--output", folder.file(name), "--peer", "127.0.0.1:\(seedPort)", "--port", "\(freePort())",
                "--seed-after", "done", "--json",
            ], logTo: folder.file("\(name).log"))
        }
        let first = try leecher("a")
        defer { first.stop() }
        Thread.sleep(forTimeInterval: 2)
        let second = try leecher("b")
        defer { second.stop() }
        #expect(second.wait(seconds: 90) && second.process.terminationStatus == 0, "\(second.output.suffix(400))")
        // The first leecher reports "complete" as it exits, which may come a moment after the second
        // (both wait out the same quiet swarm), so it is looked for only once the first has exited.
        #expect(first.wait(seconds: 40) && first.process.terminationStatus == 0,
            "the first leecher exits once the swarm is done: \(first.output.suffix(400))")
        #expect(first.output.contains(#""event":"complete""#))
        #expect(try sha256(folder.file("a/image.img")) == sha)
        #expect(try sha256(folder.file("b/image.img")) == sha)
        // Each leecher served the other, which it could only have learned of by peer exchange.
        func uploaded(_ process: BackgroundProcess) -> Int {
            let last = process.output.split(separator: "\n").last { $0.contains(#""uploaded""#) } ?? ""
            return Int(last.split(separator: #""uploaded":"#).last?.prefix { $0.isNumber } ?? "") ?? 0
        }
        #expect(uploaded(first) + uploaded(second) > 4 << 20, "a: \(uploaded(first)) b: \(uploaded(second))")
    }

    /// Two seeders; one is killed mid-transfer; the download completes from the other.
    @Test func losingASeederMidTransferIsSurvived() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let (portA, portB) = (freePort(), freePort())
        let seederA = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(portA)", "--max-up", "4M"], logTo: folder.file("a.log"))
        let seederB = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(portB)", "--max-up", "4M"], logTo: folder.file("b.log"))
        defer {
            seederA.stop()
            seederB.stop()
        }
        try #require(eventually(20) { seederA.output.contains("seeding") && seederB.output.contains("seeding image.img on port") })
        let get = try BackgroundProcess(vmswarmBinary, [
            "get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(portA)", "--peer", "127.0.0.1:\(portB)", "--port", "0",
        ], logTo: folder.file("get.log"))
        Thread.sleep(forTimeInterval: 1.5)
        kill(seederA.process.processIdentifier, SIGKILL)
        #expect(get.wait(seconds: 60), "\(get.output.suffix(300))")
        #expect(get.process.terminationStatus == 0)
        #expect(try sha256(folder.file("out/image.img")) == sha)
    }

    /// aria2 seeds (it finds nobody by itself: no tracker answers it); vmswarm downloads from it directly.
    @Test func aria2SeedsAndVmswarmDownloads() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (_, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let port = freePort()
        let aria2 = try #require(which("aria2c"), "aria2 is needed: run tools/test")
        let seeder = try BackgroundProcess(aria2, [
            "--dir", folder.path, "--check-integrity=true", "--seed-ratio=0.0", "--bt-seed-unverified=false",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
            "--listen-port=\(port)", "--summary-interval=0", "--console-log-level=warn", "--bt-tracker-connect-timeout=1",
            "--seed-time=120", torrent,
        ], logTo: folder.file("aria2.log"))
        defer { seeder.stop() }
        Thread.sleep(forTimeInterval: 2)
        let get = try runProcess(vmswarmBinary, ["get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(port)", "--port", "0"])
        #expect(get.status == 0, "\(get.stderr.suffix(300)) aria2: \(seeder.output.suffix(300))")
        #expect(try sha256(folder.file("out/image.img")) == sha)
    }
}

@Suite(.serialized) struct MaliciousPeerTests {
    /// A peer that claims every piece and answers every request with random bytes.
    static let liar = """
        import os, socket, struct, sys, threading
        info_hash, pieces, port = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        def serve(conn):
            try:
                hs = b""
                while len(hs) < 68:
                    chunk = conn.recv(68 - len(hs))
                    if not chunk: return
                    hs += chunk
                conn.sendall(bytes([19]) + b"BitTorrent protocol" + bytes(8) + info_hash + b"-XX0000-liarliarliar")
                field = bytearray((pieces + 7) // 8)
                for i in range(pieces): field[i // 8] |= 0x80 >> (i % 8)
                conn.sendall(struct.pack(">IB", 1 + len(field), 5) + bytes(field) + struct.pack(">IB", 1, 1))
                buf = b""
                while True:
                    data = conn.recv(65536)
                    if not data: return
                    buf += data
                    while len(buf) >= 4:
                        (length,) = struct.unpack(">I", buf[:4])
                        if len(buf) < 4 + length: break
                        message, buf = buf[4:4 + length], buf[4 + length:]
                        if length == 13 and message[0] == 6:
                            index, begin, size = struct.unpack(">III", message[1:])
                            conn.sendall(struct.pack(">IBII", 9 + size, 7, index, begin) + os.urandom(size))
            except OSError:
                pass
        server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port)); server.listen(8)
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        """

    @Test func aPeerSendingCorruptPiecesIsBannedAndTheDownloadCompletes() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        let (liarPort, honestPort) = (freePort(), freePort())
        let liar = try BackgroundProcess(try #require(which("/usr/bin/python3")), [
            "-c", Self.liar, try #require(report["info_hash"] as? String), "\(try #require(report["piece_count"] as? Int))", "\(liarPort)",
        ], logTo: folder.file("liar.log"))
        defer { liar.stop() }
        let honest = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(honestPort)", "--max-up", "8M"],
            logTo: folder.file("honest.log"))
        defer { honest.stop() }
        try #require(eventually(20) { liar.output.contains("listening") && honest.output.contains("seeding image.img on port") })
        let get = try runProcess(vmswarmBinary, [
            "get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(liarPort)", "--peer", "127.0.0.1:\(honestPort)",
            "--port", "0", "--log-level", "info",
        ])
        #expect(get.status == 0, "\(get.stderr.suffix(500))")
        #expect(try sha256(folder.file("out/image.img")) == sha)
        #expect(get.stderr.contains("sent data that failed the hash"), "the liar was banned")
    }
}
