import Foundation
import TestSupport
import Testing

/// Sealed images end to end: keys, signed torrents, a relay that has no key, and tampering.
@Suite(.serialized) struct SealedSwarmTests {
    struct Published {
        let folder: TemporaryFolder
        let image: String
        let torrent: String
        let sha: String
        func file(_ name: String) -> String { folder.file(name) }
    }

    /// A 32 MiB image (plus an odd tail) sealed for one site and signed by one publisher.
    func publish() throws -> Published {
        let folder = try TemporaryFolder()
        let image = folder.file("disk.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \((32 << 20) + 4097) /dev/urandom > '\(image)'"]).status == 0)
        for (name, kind) in [("site", "site"), ("publisher", "publisher"), ("stranger", "publisher")] {
            let made = try runProcess(vmswarmBinary, ["keygen", folder.file(name), "--kind", kind])
            try #require(made.status == 0, "\(made.stderr)")
        }
        let created = try runProcess(vmswarmBinary, [
            "create", image, "-o", folder.file("disk.torrent"), "--piece-size", "256K",
            "--seal-for", folder.file("site.pub"), "--sign", folder.file("publisher.key"),
        ])
        try #require(created.status == 0, "\(created.stderr)")
        #expect(created.stderr.contains("content key written to \(folder.file("disk.torrent.key"))"))
        let mode = try FileManager.default.attributesOfItem(atPath: folder.file("disk.torrent.key"))[.posixPermissions] as? Int
        #expect(mode == 0o600)
        return Published(folder: folder, image: image, torrent: folder.file("disk.torrent"), sha: try sha256(image))
    }

    /// The publisher seeds the plain image with the content key `create` wrote, on a free port.
    func seed(_ published: Published) throws -> (process: BackgroundProcess, port: Int) {
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, [
            "seed", published.torrent, "--data", published.image, "--key", published.file("disk.torrent.key"), "--port", "\(port)",
        ], logTo: published.file("seed.log"))
        try #require(eventually(30) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
        return (seeder, port)
    }

    /// vmswarm seeds the plain image with the key (sealing pieces as they are asked for); libtorrent,
    /// which has no key, downloads the sealed image; the vmswarm seeder leaves; a vmswarm node with the
    /// site key gets everything from libtorrent and ends with the exact plaintext.
    @Test func libtorrentRelaysASealedImageItCannotRead() throws {
        let published = try publish()
        defer { published.folder.cleanUp() }
        let (seeder, seedPort) = try seed(published)
        defer { seeder.stop() }

        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        try FileManager.default.createDirectory(atPath: published.file("relay"), withIntermediateDirectories: true)
        let relayPort = freePort()
        let relay = try BackgroundProcess(python, ["-c", Self.relaySession, published.torrent, published.file("relay"), "\(relayPort)", "\(seedPort)"],
            logTo: published.file("relay.log"))
        defer { relay.stop() }
        try #require(eventually(90) { relay.output.contains("seeding=True") }, "\(relay.output.suffix(300))")
        seeder.stop()
        // The relay holds ciphertext: not the image.
        #expect(try sha256(published.file("relay/disk.img")) != published.sha)

        let get = try runProcess(vmswarmBinary, [
            "get", published.torrent, "--identity", published.file("site.key"), "--trust", published.file("publisher.pub"),
            "--output", published.file("node"), "--peer", "127.0.0.1:\(relayPort)", "--port", "0",
        ])
        #expect(get.status == 0, "\(get.stderr.suffix(400))")
        #expect(try sha256(published.file("node/disk.img")) == published.sha)
    }

    /// libtorrent downloads from the peer in argv[4], then keeps seeding until it is stopped.
    static let relaySession = """
        import sys, time, libtorrent as lt
        s = lt.session({"listen_interfaces": "127.0.0.1:%s" % sys.argv[3], "enable_dht": False, "enable_lsd": False,
                        "enable_upnp": False, "enable_natpmp": False, "allow_multiple_connections_per_ip": True})
        h = s.add_torrent({"ti": lt.torrent_info(sys.argv[1]), "save_path": sys.argv[2]})
        h.connect_peer(("127.0.0.1", int(sys.argv[4])))
        while True:
            st = h.status()
            print("progress=%.3f seeding=%s peers=%d" % (st.progress, st.is_seeding, st.num_peers), flush=True)
            time.sleep(0.3)
        """

    @Test func keysAndSignaturesAreChecked() throws {
        let published = try publish()
        defer { published.folder.cleanUp() }
        let (seeder, port) = try seed(published)
        defer { seeder.stop() }
        func get(_ flags: [String], into name: String) throws -> ProcessResult {
            try runProcess(vmswarmBinary, ["get", published.torrent, "--output", published.file(name), "--peer", "127.0.0.1:\(port)", "--port", "0"] + flags)
        }
        let stranger = try get(["--identity", published.file("site.key"), "--trust", published.file("stranger.pub")], into: "a")
        #expect(stranger.status != 0 && stranger.stderr.contains("not a trusted publisher"), "\(stranger.stderr)")
        let keyless = try get([], into: "b")
        #expect(keyless.status != 0 && keyless.stderr.contains("is sealed"), "\(keyless.stderr)")
        try #require(try runProcess(vmswarmBinary, ["keygen", published.file("other"), "--kind", "site"]).status == 0)
        let notForUs = try get(["--identity", published.file("other.key")], into: "c")
        #expect(notForUs.status != 0, "\(notForUs.stderr)")
        for name in ["a", "b", "c"] {
            #expect(!FileManager.default.fileExists(atPath: published.file("\(name)/disk.img")))
        }
        // A node without the key keeps the ciphertext, under a name of its own.
        let relay = try get(["--relay-only"], into: "relay")
        #expect(relay.status == 0, "\(relay.stderr)")
        #expect(FileManager.default.fileExists(atPath: published.file("relay/disk.img.sealed")))
        // A plain torrent offered with a key is refused: ciphertext must not pass for an image.
        try #require(try runProcess(vmswarmBinary, ["create", published.image, "-o", published.file("plain.torrent")]).status == 0)
        let plain = try runProcess(vmswarmBinary, ["get", published.file("plain.torrent"), "--key", published.file("disk.torrent.key"),
            "--output", published.file("d"), "--port", "0"])
        #expect(plain.status != 0 && plain.stderr.contains("not sealed"), "\(plain.stderr)")
    }

    /// The forgery of the two tests below: a relay copy of the sealed image with a bit flipped in
    /// piece 3, a torrent whose hash for piece 3 is forged to match, and a seed of both.
    func forgedSwarm() throws -> (published: Published, evil: BackgroundProcess, port: Int) {
        let published = try publish()
        let (seeder, port) = try seed(published)
        defer { seeder.stop() }
        let relay = try runProcess(vmswarmBinary, ["get", published.torrent, "--relay-only", "--output", published.file("relay"),
            "--peer", "127.0.0.1:\(port)", "--port", "0"])
        try #require(relay.status == 0, "\(relay.stderr)")
        seeder.stop()
        let forge = """
            import hashlib, sys
            torrent, sealed, out = sys.argv[1], sys.argv[2], sys.argv[3]
            piece, index = 256 * 1024, 3
            data = bytearray(open(sealed, "rb").read())
            data[index * piece + 100] ^= 1
            open(sealed, "wb").write(data)
            raw = open(torrent, "rb").read()
            marker = b"6:pieces"
            at = raw.index(marker) + len(marker)
            colon = raw.index(b":", at)
            start = colon + 1 + 20 * index
            digest = hashlib.sha1(bytes(data[index * piece:(index + 1) * piece])).digest()
            open(out, "wb").write(raw[:start] + digest + raw[start + 20:])
            """
        let forged = try runProcess("/usr/bin/python3", ["-c", forge, published.torrent, published.file("relay/disk.img.sealed"), published.file("forged.torrent")])
        try #require(forged.status == 0, "\(forged.stderr)")
        let evilPort = freePort()
        let evil = try BackgroundProcess(vmswarmBinary, ["seed", published.file("forged.torrent"), "--data", published.file("relay/disk.img.sealed"),
            "--port", "\(evilPort)"], logTo: published.file("evil.log"))
        try #require(eventually(30) { evil.output.contains("seeding disk.img on port") }, "\(evil.output)")
        return (published, evil, evilPort)
    }

    /// Served while it downloads, the forged image gives readers no byte of piece 3: the piece
    /// never authenticates, so a read that needs it waits and then fails with the download.
    @Test func aPieceThatDoesNotAuthenticateIsNeverServed() throws {
        let (published, evil, evilPort) = try forgedSwarm()
        defer { published.folder.cleanUp() }
        defer { evil.stop() }
        let port = freePort()
        let url = "http://127.0.0.1:\(port)/disk.img"
        let get = try BackgroundProcess(vmswarmBinary, ["get", published.file("forged.torrent"), "--key", published.file("disk.torrent.key"),
            "--output", published.file("node"), "--peer", "127.0.0.1:\(evilPort)", "--port", "0", "--max-down", "4M",
            "--serve", "http://127.0.0.1:\(port)"], logTo: published.file("get.log"))
        defer { get.stop() }
        try #require(eventually(20) { get.output.contains("serving disk.img read-only at \(url)") }, "\(get.output)")
        // Piece 3's plaintext: 256 KiB pieces carry 256 KiB - 16 bytes of it (the GCM tag).
        let chunk = 256 * 1024 - 16
        let body = published.file("piece3.bin")
        let read = try runProcess(try #require(which("curl")), ["-sS", "-o", body, "-w", "%{http_code}", "--max-time", "60",
            "-r", "\(3 * chunk)-\(3 * chunk + 4095)", url])
        // 503 when the download stops with the read waiting, or no answer if it stopped before.
        #expect(read.stdout == "503" || read.stdout == "000", "\(read.stdout) \(read.stderr)")
        let served = (try? Data(contentsOf: URL(fileURLWithPath: body))) ?? Data()
        let original = try #require(FileHandle(forReadingAtPath: published.image))
        try original.seek(toOffset: UInt64(3 * chunk))
        let plaintext = original.readData(ofLength: 4096)
        #expect(served.count < 64 || served.range(of: plaintext.prefix(64)) == nil, "plaintext of piece 3 was served")
        #expect(get.wait(seconds: 60))
        #expect(get.process.terminationStatus != 0)
        #expect(get.output.contains("piece 3") && get.output.contains("refused"), "\(get.output.suffix(400))")
    }

    /// A relay flips a bit in piece 3 and forges the torrent's hash to match. The node, which holds
    /// the key, fails on that piece, exits non-zero, and never writes its plaintext.
    @Test func aTamperedPieceWithAForgedHashIsRefused() throws {
        let (published, evil, evilPort) = try forgedSwarm()
        defer { published.folder.cleanUp() }
        defer { evil.stop() }
        let get = try runProcess(vmswarmBinary, ["get", published.file("forged.torrent"), "--key", published.file("disk.torrent.key"),
            "--output", published.file("node"), "--peer", "127.0.0.1:\(evilPort)", "--port", "0"])
        #expect(get.status != 0)
        #expect(get.stderr.contains("piece 3") && get.stderr.contains("refused"), "\(get.stderr.suffix(400))")
        #expect(!FileManager.default.fileExists(atPath: published.file("node/disk.img")))
        // Piece 3's plaintext range of the working file was never written: still zeros.
        let part = try #require(FileHandle(forReadingAtPath: published.file("node/disk.img.part")))
        let chunk = 256 * 1024 - 16
        try part.seek(toOffset: UInt64(3 * chunk))
        let bytes = try #require(try part.read(upToCount: chunk))
        #expect(bytes.allSatisfy { $0 == 0 })
        // The signature would have caught the forgery before any transfer.
        let trusted = try runProcess(vmswarmBinary, ["get", published.file("forged.torrent"), "--key", published.file("disk.torrent.key"),
            "--trust", published.file("publisher.pub"), "--output", published.file("node2"), "--peer", "127.0.0.1:\(evilPort)", "--port", "0"])
        #expect(trusted.status != 0, "\(trusted.stderr)")
    }
}
