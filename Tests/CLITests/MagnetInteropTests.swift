import Foundation
import Metainfo
import TestSupport
import Testing

/// `get magnet:` against real clients (BEP 9 ut_metadata): vmswarm fetches the info dictionary
/// from libtorrent and from Transmission, then the image; libtorrent fetches a magnet from a
/// vmswarm seeder, which proves vmswarm serves the dictionary.
@Suite(.serialized) struct MagnetInteropTests {
    /// A small image (4 MiB, 64 KiB pieces: an info dictionary of 1.3 KiB plus the name) and its torrent.
    func makeImage(_ folder: TemporaryFolder, size: Int = 4 << 20, pieceSize: String = "64K") throws -> (image: String, torrent: String, sha: String, magnet: String) {
        let image = folder.file("image.img")
        let result = try runProcess("/bin/sh", ["-c", "head -c \(size) /dev/urandom > '\(image)'"])
        try #require(result.status == 0)
        let torrent = folder.file("image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", pieceSize])
        try #require(created.status == 0, "\(created.stderr)")
        let metainfo = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: torrent)))
        return (image, torrent, try sha256(image), metainfo.magnetURI)
    }

    @Test func vmswarmGetsAMagnetFromLibtorrent() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        // Several metadata pieces (a 50 KiB dictionary), so the last-piece arithmetic is exercised.
        let (_, torrent, sha, magnet) = try makeImage(folder, size: (40 << 20) + 12345, pieceSize: "16K")
        let port = freePort()
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        let seeder = try BackgroundProcess(python, ["-c", SwarmInteropTests.libtorrentSession, torrent, folder.path, "\(port)"], logTo: folder.file("lt.log"))
        defer { seeder.stop() }
        try #require(eventually(60) { seeder.output.contains("seeding=True") }, "\(seeder.output.suffix(300))")
        let out = folder.file("out")
        let get = try runProcess(vmswarmBinary, ["get", magnet + "&x.pe=127.0.0.1:\(port)", "--output", out, "--port", "0"])
        #expect(get.status == 0, "\(get.stderr.suffix(800))")
        #expect(get.stdout.contains("complete: \(out)/image.img"))
        #expect(try sha256(out + "/image.img") == sha)
        // The torrent written beside the download is the original's info dictionary, so a later
        // `seed` of it joins the same swarm.
        let written = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: out + "/image.img.torrent")))
        let original = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: torrent)))
        #expect(written.infoHash == original.infoHash)
        #expect(written.infoBytes == original.infoBytes)
    }

    @Test func libtorrentGetsAMagnetFromVmswarm() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha, magnet) = try makeImage(folder)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        try FileManager.default.createDirectory(atPath: folder.file("lt"), withIntermediateDirectories: true)
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        // libtorrent knows only the link, with vmswarm as its x.pe peer: no .torrent at all.
        let leecher = try runProcess(python, ["-c", """
            import sys, time, libtorrent as lt
            s = lt.session({"listen_interfaces": "127.0.0.1:%s" % sys.argv[3], "enable_dht": False, "enable_lsd": False,
                            "enable_upnp": False, "enable_natpmp": False, "allow_multiple_connections_per_ip": True})
            p = lt.parse_magnet_uri(sys.argv[1])
            p.save_path = sys.argv[2]
            h = s.add_torrent(p)
            t0 = time.time()
            while time.time() - t0 < 60:
                st = h.status()
                print("metadata=%s progress=%.3f seeding=%s peers=%d" % (st.has_metadata, st.progress, st.is_seeding, st.num_peers), flush=True)
                if st.is_seeding: break
                time.sleep(0.3)
            """, magnet + "&x.pe=127.0.0.1:\(port)", folder.file("lt"), "\(freePort())"])
        #expect(leecher.stdout.contains("metadata=True"), "\(leecher.stdout.suffix(300)) \(leecher.stderr)")
        #expect(leecher.stdout.contains("seeding=True"), "\(leecher.stdout.suffix(300)) \(leecher.stderr)")
        #expect(try sha256(folder.file("lt/image.img")) == sha)
    }

    /// A link with only a tracker (`tr`): get announces to it, learns the vmswarm seeder and fetches
    /// the dictionary and the image from it.
    @Test func vmswarmGetsAMagnetThroughItsTracker() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let trackerPort = freePort()
        let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(trackerPort)", "--interval", "10", "--min-interval", "1"],
            logTo: folder.file("tracker.log"))
        defer { tracker.stop() }
        let image = folder.file("image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(2 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "64K", "-t", "http://127.0.0.1:\(trackerPort)/announce"])
        try #require(created.status == 0, "\(created.stderr)")
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let magnet = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: torrent))).magnetURI
        #expect(magnet.contains("&tr=") && !magnet.contains("x.pe"))
        let get = try BackgroundProcess(vmswarmBinary, ["get", magnet, "--output", folder.file("out"), "--port", "0"], logTo: folder.file("get.log"))
        defer { get.stop() }
        try #require(get.wait(seconds: 60), "get did not finish: \(get.output.suffix(800))")
        #expect(get.process.terminationStatus == 0, "\(get.output.suffix(800))")
        #expect(try sha256(folder.file("out/image.img")) == (try sha256(image)))
    }

    /// In a network namespace with a 10.x address, because Transmission refuses loopback peers.
    @Test func vmswarmGetsAMagnetFromTransmission() throws {
        let namespace = try TestNamespace(address: "10.77.9.1")
        let folder = try TemporaryFolder()
        var running: [BackgroundProcess] = []
        defer {
            running.forEach { $0.stop() }
            namespace.remove()
            folder.cleanUp()
        }
        let transmission = try #require(which("transmission-cli"), "transmission-cli is needed: run tools/test")
        let (_, torrent, sha, magnet) = try makeImage(folder)
        let config = folder.file("transmission-config")
        try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        try #"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false, "utp-enabled": false}"#
            .write(toFile: config + "/settings.json", atomically: true, encoding: .utf8)
        // Transmission seeds the image in the folder (it checks it first).
        let (wrapper, wrapped) = namespace.command(transmission, ["-g", config, "-w", folder.path, "-p", "6881", torrent])
        let seeder = try BackgroundProcess(wrapper, wrapped, logTo: folder.file("transmission.log"))
        running.append(seeder)
        try #require(eventually(60) { seeder.output.contains("Seeding") }, "Transmission did not seed: \(seeder.output.suffix(400))")
        let out = folder.file("out")
        let (getWrapper, getArguments) = namespace.command(vmswarmBinary, [
            "get", magnet + "&x.pe=\(namespace.address):6881", "--output", out, "--port", "0", "--bind", namespace.address,
        ])
        // In the background with a deadline: a download that found no peer would wait forever.
        let get = try BackgroundProcess(getWrapper, getArguments, logTo: folder.file("get.log"))
        running.append(get)
        try #require(get.wait(seconds: 120), "get did not finish: \(get.output.suffix(800))")
        #expect(get.process.terminationStatus == 0, "\(get.output.suffix(800))")
        #expect(try sha256(out + "/image.img") == sha)
    }

    /// A sealed image's recipients and signature are outside the info dictionary, so a magnet link
    /// cannot carry them: the vmswarm seeder serves the dictionary, and get refuses it clearly.
    @Test func aSealedImagesMagnetIsRefused() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = folder.file("disk.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(1 << 20) /dev/urandom > '\(image)'"]).status == 0)
        for (name, kind) in [("site", "site"), ("publisher", "publisher")] {
            try #require(try runProcess(vmswarmBinary, ["keygen", folder.file(name), "--kind", kind]).status == 0)
        }
        let torrent = folder.file("disk.torrent")
        let created = try runProcess(vmswarmBinary, [
            "create", image, "-o", torrent, "--piece-size", "64K", "--seal-for", folder.file("site.pub"), "--sign", folder.file("publisher.key"),
        ])
        try #require(created.status == 0, "\(created.stderr)")
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, [
            "seed", torrent, "--data", image, "--key", folder.file("disk.torrent.key"), "--port", "\(port)",
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding disk.img on port") }, "\(seeder.output)")
        let magnet = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: torrent))).magnetURI
        let get = try runProcess(vmswarmBinary, [
            "get", magnet + "&x.pe=127.0.0.1:\(port)", "--output", folder.file("out"), "--port", "0", "--key", folder.file("site.key"),
        ])
        #expect(get.status == 1)
        #expect(get.stderr.contains("is a sealed image: its recipients and signature are not in the info dictionary"), "\(get.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.file("out/disk.img.part")))
    }

    /// A node confined to its site (`--site-network`, `--site-tracker`) fetches the info
    /// dictionary as it fetches the image: from its site's tracker and peers only.
    @Test func aSiteNodesMagnetStaysInsideItsSite() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha, _) = try makeImage(folder, size: 1 << 20)
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("on port") }, "\(seeder.output)")
        let infoHash = try Metainfo(parsing: Data(contentsOf: URL(fileURLWithPath: torrent))).infoHash.hex
        // The link names a peer on loopback; the node's site is 10.99.0.0/16: nothing to dial.
        let link = "magnet:?xt=urn:btih:\(infoHash)&x.pe=127.0.0.1:\(port)"
        let outside = try runProcess(vmswarmBinary, ["get", link, "--output", folder.file("out1"), "--port", "0", "--site-network", "10.99.0.0/16"])
        #expect(outside.status == 1)
        #expect(outside.stderr.contains("outside the site's networks"), "\(outside.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.file("out1/image.img")))

        // The link's tracker is not asked when the node has a site tracker: the seeder is
        // registered only with the site's, and the link's tracker never hears of the node.
        let wanPort = freePort(), sitePort = freePort()
        let wan = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(wanPort)", "--interval", "10", "--min-interval", "1"], logTo: folder.file("wan.log"))
        defer { wan.stop() }
        let site = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(sitePort)", "--interval", "10", "--min-interval", "1"], logTo: folder.file("site.log"))
        defer { site.stop() }
        try #require(eventually(20) { wan.output.contains("tracker listening") && site.output.contains("tracker listening") }, "\(wan.output) \(site.output)")
        let siteURL = "http://127.0.0.1:\(sitePort)/announce"
        let siteSeeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "0", "--site-tracker", siteURL],
            logTo: folder.file("site-seed.log"))
        defer { siteSeeder.stop() }
        try #require(eventually(20) { siteSeeder.output.contains("on port") }, "\(siteSeeder.output)")
        let viaSite = "magnet:?xt=urn:btih:\(infoHash)&tr=" + "http://127.0.0.1:\(wanPort)/announce".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let inside = try runProcess(vmswarmBinary, ["get", viaSite, "--output", folder.file("out2"), "--port", "0",
            "--site-tracker", siteURL, "--site-network", "127.0.0.0/8"])
        #expect(inside.status == 0, "\(inside.stderr.suffix(800))")
        #expect(try sha256(folder.file("out2/image.img")) == sha)
        let curl = try #require(which("curl"))
        let stats = try runProcess(curl, ["-s", "http://127.0.0.1:\(wanPort)/stats?format=json"]).stdout
        #expect(stats.contains(#""torrents":0"#), "\(stats)")
    }

    @Test func aBadMagnetIsOneClearLine() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let bad = try runProcess(vmswarmBinary, ["get", "magnet:?xt=urn:btih:abc", "--output", folder.path, "--port", "0"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("info-hash 'abc' is neither 40 hex nor 32 base32 characters"), "\(bad.stderr)")
        let nowhere = try runProcess(vmswarmBinary, ["get", "magnet:?xt=urn:btih:\(String(repeating: "ab", count: 20))", "--output", folder.path, "--port", "0"])
        #expect(nowhere.status == 1)
        #expect(nowhere.stderr.contains("names no tracker (tr) and no peer (x.pe)"), "\(nowhere.stderr)")
    }
}
