import Foundation
import TestSupport
import Testing

/// Layered images (`create --align-files`) against libtorrent, and `get --cache`/`--reuse`
/// fetching only what the node does not hold, counted in bytes from peers.
@Suite(.serialized) struct LayeredReuseTests {
    static let pieceSize = 256 << 10

    /// Writes `layers` (name, bytes, seed) into `folder/name` and returns its path.
    func makeLayers(_ folder: TemporaryFolder, _ name: String, _ layers: [(String, Int, Int)]) throws -> String {
        let path = folder.file(name)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for (file, bytes, seed) in layers {
            // A seeded generator: the same (bytes, seed) is the same layer in every image.
            var random = SplitMix64(seed: UInt64(seed))
            var data = [UInt8](repeating: 0, count: bytes)
            for index in data.indices { data[index] = UInt8(truncatingIfNeeded: random.next()) }
            try Data(data).write(to: URL(fileURLWithPath: path + "/" + file))
        }
        return path
    }

    func create(_ path: String, _ torrent: String) throws {
        let created = try runProcess(vmswarmBinary, ["create", path, "-o", torrent, "--piece-size", "256K", "--align-files", "--no-date"])
        try #require(created.status == 0, "\(created.stderr)")
    }

    /// libtorrent's own canonical layout (files sorted, pad files after each, the last too) with the
    /// same per-file SHA-1s gives the same info-hash, and libtorrent reads our pad files as pads.
    @Test func libtorrentMakesTheSameLayeredTorrent() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = try makeLayers(folder, "image", [("base.qcow2", 700_001, 1), ("site.qcow2", 3_000, 2), ("user.qcow2", Self.pieceSize, 3)])
        try create(path, folder.file("image.torrent"))
        let script = """
            import sys, hashlib, libtorrent as lt
            ours = lt.torrent_info(sys.argv[1])
            fs = lt.file_storage()
            for name in ["base.qcow2", "site.qcow2", "user.qcow2"]:
                fs.add_file("image/" + name, len(open(sys.argv[2] + "/image/" + name, "rb").read()))
            ct = lt.create_torrent(fs, 262144, flags=lt.create_torrent.v1_only | lt.create_torrent.canonical_files)
            lt.set_piece_hashes(ct, sys.argv[2])
            files = ct.files()
            for i in range(files.num_files()):
                if not files.file_flags(i) & lt.file_storage.flag_pad_file:
                    ct.set_file_hash(i, hashlib.sha1(open(sys.argv[2] + "/" + files.file_path(i), "rb").read()).digest())
            theirs = lt.torrent_info(ct.generate())
            print("ours", ours.info_hash())
            print("theirs", theirs.info_hash())
            print("pads", [ours.files().file_path(i) for i in range(ours.num_files()) if ours.files().file_flags(i) & lt.file_storage.flag_pad_file])
            """
        let result = try runProcess(try #require(which("/usr/bin/python3")), ["-c", script, folder.file("image.torrent"), folder.path])
        try #require(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let ours = lines.first { $0.hasPrefix("ours ") }?.dropFirst(5), theirs = lines.first { $0.hasPrefix("theirs ") }?.dropFirst(7)
        #expect(ours != nil && ours == theirs, "\(result.stdout)")
        #expect(lines.contains("pads ['image/.pad/86431', 'image/.pad/259144']"), "\(result.stdout)")
        // inspect shows each layer's digest.
        let inspected = try runProcess(vmswarmBinary, ["inspect", folder.file("image.torrent"), "--json"])
        let digest = try runProcess("/usr/bin/sha1sum", [path + "/site.qcow2"]).stdout.prefix(40)
        #expect(inspected.stdout.contains(#""sha1":"\#(digest)""#), "\(inspected.stdout)")
    }

    @Test func libtorrentDownloadsALayeredTorrentExactly() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = try makeLayers(folder, "image", [("1-base", 3_000_123, 4), ("2-site", 10_000, 5), ("3-user", 1_000_000, 6)])
        try create(path, folder.file("image.torrent"))
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", folder.file("image.torrent"), "--data", path, "--port", "\(port)"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image on port") }, "\(seeder.output)")
        try FileManager.default.createDirectory(atPath: folder.file("lt"), withIntermediateDirectories: true)
        let leecher = try runProcess(try #require(which("/usr/bin/python3")),
            ["-c", SwarmInteropTests.libtorrentSession, folder.file("image.torrent"), folder.file("lt"), "\(freePort())", "\(port)"])
        #expect(leecher.stdout.contains("seeding=True"), "\(leecher.stdout.suffix(300)) \(leecher.stderr)")
        for layer in ["1-base", "2-site", "3-user"] {
            #expect(try sha256(folder.file("lt/image/\(layer)")) == (try sha256(path + "/" + layer)), "\(layer)")
        }
    }

    /// The JSON `complete` event of a `get --json`.
    func completion(_ output: String) throws -> [String: Any] {
        let line = try #require(output.split(separator: "\n").last { $0.contains(#""event":"complete""#) }, "\(output.suffix(500))")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    /// Seeds `torrent` from `data` and runs `get` with `arguments` against it; returns get's output.
    func fetch(_ folder: TemporaryFolder, _ torrent: String, data: String, _ arguments: [String]) throws -> ProcessResult {
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", data, "--port", "\(port)"],
            logTo: folder.file("seed-\(port).log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("on port") }, "\(seeder.output)")
        return try runProcess(vmswarmBinary, ["get", torrent, "--peer", "127.0.0.1:\(port)", "--port", "0", "--json"] + arguments)
    }

    /// A node holding the base (from an earlier image) fetches only the new user layer; with the
    /// cached base corrupted and cut short, the bad pieces are fetched from peers and the output
    /// is exact anyway.
    @Test func aCachedLayerIsNotFetchedAgainAndABadCopyIsNotTrusted() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let base = ("base", 4 * Self.pieceSize + 5_000, 7)
        let first = try makeLayers(folder, "v1", [base, ("site", 20_000, 8)])
        let second = try makeLayers(folder, "v2", [base, ("user", 2 * Self.pieceSize + 1, 9)])
        try create(first, folder.file("v1.torrent"))
        try create(second, folder.file("v2.torrent"))
        let cache = folder.file("cache")

        let v1 = try fetch(folder, folder.file("v1.torrent"), data: first, ["--output", cache, "--cache", cache])
        try #require(v1.status == 0, "\(v1.stderr)")
        #expect(try completion(v1.stdout)["reused"] as? Int == 0)

        let v2 = try fetch(folder, folder.file("v2.torrent"), data: second, ["--output", folder.file("out"), "--cache", cache])
        try #require(v2.status == 0, "\(v2.stderr)")
        let done = try completion(v2.stdout)
        #expect(done["reused"] as? Int == 5 * Self.pieceSize, "\(done)")
        // The user layer is 3 pieces (the last padded): only they come from the peer.
        let fetched = try #require(done["downloaded"] as? Int)
        #expect(fetched >= 3 * Self.pieceSize && fetched <= 3 * Self.pieceSize * 105 / 100, "\(done)")
        for layer in ["base", "user"] { #expect(try sha256(folder.file("out/v2/\(layer)")) == (try sha256(second + "/" + layer))) }

        // The image just fetched is in the index too: without it, only the first image's copy of
        // the base is left, with one byte of its piece 1 flipped and the file cut inside piece 3.
        try FileManager.default.removeItem(atPath: folder.file("out"))
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: cache + "/v1/base"))
        try handle.seek(toOffset: UInt64(Self.pieceSize + 12_345))
        let byte = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: UInt64(Self.pieceSize + 12_345))
        try handle.write(contentsOf: [byte[0] ^ 0x01])
        try handle.truncate(atOffset: UInt64(3 * Self.pieceSize + 100))
        try handle.close()
        let again = try fetch(folder, folder.file("v2.torrent"), data: second, ["--output", folder.file("out2"), "--cache", cache])
        try #require(again.status == 0, "\(again.stderr)")
        let redone = try completion(again.stdout)
        #expect(redone["reused"] as? Int == 2 * Self.pieceSize, "\(redone)")  // pieces 0 and 2
        #expect((redone["downloaded"] as? Int ?? 0) >= 6 * Self.pieceSize, "\(redone)")
        #expect(again.stdout.contains(#""event":"reused""#) && again.stdout.contains(#""rejected":"#))
        for layer in ["base", "user"] { #expect(try sha256(folder.file("out2/v2/\(layer)")) == (try sha256(second + "/" + layer))) }
    }

    /// `seed --cache DIR` records what a node seeds: its next `get --cache DIR` takes those pieces.
    @Test func whatANodeSeedsIsInItsContentStore() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let base = ("base", 3 * Self.pieceSize + 10, 11)
        let first = try makeLayers(folder, "v1", [base])
        let second = try makeLayers(folder, "v2", [base, ("user", Self.pieceSize, 12)])
        try create(first, folder.file("v1.torrent"))
        try create(second, folder.file("v2.torrent"))
        let cache = folder.file("cache")
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", folder.file("v1.torrent"), "--data", first, "--port", "0", "--cache", cache],
            logTo: folder.file("seed-v1.log"))
        try #require(eventually(20) { seeder.output.contains("on port") }, "\(seeder.output)")
        seeder.stop()
        let get = try fetch(folder, folder.file("v2.torrent"), data: second, ["--output", folder.file("out"), "--cache", cache])
        try #require(get.status == 0, "\(get.stderr)")
        let done = try completion(get.stdout)
        #expect(done["reused"] as? Int == 4 * Self.pieceSize, "\(done)")
        #expect(done["downloaded"] as? Int == Self.pieceSize, "\(done)")
    }

    /// `get --reuse OLD`: pieces of an earlier version that did not change are not fetched.
    @Test func anEarlierVersionGivesItsUnchangedPieces() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let old = try makeLayers(folder, "old", [("disk.img", 8 * Self.pieceSize, 10)])
        let new = try makeLayers(folder, "new", [("disk.img", 8 * Self.pieceSize, 10)])
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: new + "/disk.img"))
        try handle.seek(toOffset: UInt64(5 * Self.pieceSize + 77))
        try handle.write(contentsOf: Data("changed".utf8))
        try handle.close()
        let torrent = folder.file("disk.torrent")
        let created = try runProcess(vmswarmBinary, ["create", new + "/disk.img", "-o", torrent, "--piece-size", "256K"])
        try #require(created.status == 0, "\(created.stderr)")
        let get = try fetch(folder, torrent, data: new + "/disk.img", ["--output", folder.file("out"), "--reuse", old + "/disk.img"])
        try #require(get.status == 0, "\(get.stderr)")
        let done = try completion(get.stdout)
        #expect(done["reused"] as? Int == 7 * Self.pieceSize, "\(done)")
        #expect((done["downloaded"] as? Int ?? 0) <= Self.pieceSize * 105 / 100, "\(done)")
        #expect(try sha256(folder.file("out/disk.img")) == (try sha256(new + "/disk.img")))
    }

    /// `create --rolling-checksums` and `get --reuse OLD`: data that moved by a number of bytes
    /// that is no multiple of the piece size (37 bytes inserted near the start, as a grown header
    /// would) is found in the old version; only the piece holding the insertion is fetched.
    /// Without the checksums the same update costs nearly the whole image.
    /// A node whose cache is also its output folder (the `cache` setting) fetches a new version
    /// of an image under the same name: the old one stays as it is (a VM may run on it), the new
    /// one lands beside it as disk.1.img, built from the old one but for the piece that changed,
    /// and a rerun finds it there instead of making a third copy.
    @Test func aNewVersionLandsBesideTheOldOneInTheCacheFolder() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let old = try makeLayers(folder, "old", [("disk.img", 8 * Self.pieceSize, 30)])
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: old + "/disk.img")))
        bytes[3 * Self.pieceSize + 17] ^= 0xff
        let new = folder.file("new")
        try FileManager.default.createDirectory(atPath: new, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: new + "/disk.img"))
        let (v1, v2) = (folder.file("v1.torrent"), folder.file("v2.torrent"))
        try #require(try runProcess(vmswarmBinary, ["create", old + "/disk.img", "-o", v1, "--piece-size", "256K"]).status == 0)
        try #require(try runProcess(vmswarmBinary, ["create", new + "/disk.img", "-o", v2, "--piece-size", "256K"]).status == 0)
        let cache = folder.file("cache")
        try #require(try fetch(folder, v1, data: old + "/disk.img", ["--output", cache, "--cache", cache]).status == 0)
        let oldSum = try sha256(cache + "/disk.img")

        let update = try fetch(folder, v2, data: new + "/disk.img", ["--output", cache, "--cache", cache])
        try #require(update.status == 0, "\(update.stderr)")
        #expect(update.stdout.contains(#"{"event":"renamed","path":"\#(cache)/disk.1.img"}"#), "\(update.stdout.prefix(500))")
        #expect(try completion(update.stdout)["reused"] as? Int == 7 * Self.pieceSize)
        #expect(try sha256(cache + "/disk.1.img") == (try sha256(new + "/disk.img")))
        #expect(try sha256(cache + "/disk.img") == oldSum, "the old version is untouched")

        let again = try runProcess(vmswarmBinary, ["get", v2, "--output", cache, "--port", "0", "--json", "--seed-after", "none"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: cache + "/disk.2.img"))
        #expect(again.stdout.contains("disk.1.img"), "\(again.stdout.suffix(400))")
    }

    @Test func dataThatMovedIsFoundByTheTorrentsRollingChecksums() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let old = try makeLayers(folder, "old", [("disk.img", 8 * Self.pieceSize, 20)])
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: old + "/disk.img")))
        bytes.insert(contentsOf: [UInt8](repeating: 0xa5, count: 37), at: Self.pieceSize / 2)
        bytes.removeLast(37)
        let new = folder.file("new")
        try FileManager.default.createDirectory(atPath: new, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: new + "/disk.img"))
        let torrent = folder.file("disk.torrent")
        let created = try runProcess(vmswarmBinary, ["create", new + "/disk.img", "-o", torrent, "--piece-size", "256K", "--rolling-checksums"])
        try #require(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("rolling sums"), "\(created.stdout)")
        let get = try fetch(folder, torrent, data: new + "/disk.img", ["--output", folder.file("out"), "--reuse", old + "/disk.img"])
        try #require(get.status == 0, "\(get.stderr)")
        let reused = try #require(get.stdout.split(separator: "\n").first { $0.contains(#""event":"reused""#) })
        // Pieces 1...7 moved by 37 bytes; piece 0 holds the insertion.
        #expect(reused.contains(#""moved":7,"#), "\(reused)")
        let done = try completion(get.stdout)
        #expect(done["reused"] as? Int == 7 * Self.pieceSize, "\(done)")
        #expect((done["downloaded"] as? Int ?? 0) <= Self.pieceSize * 105 / 100, "\(done)")
        #expect(try sha256(folder.file("out/disk.img")) == (try sha256(new + "/disk.img")))

        // A node whose store holds the old version (fetched earlier) finds the moved data there,
        // by the file's name, without being told where it is.
        let oldTorrent = folder.file("old.torrent")
        try #require(try runProcess(vmswarmBinary, ["create", old + "/disk.img", "-o", oldTorrent, "--piece-size", "256K"]).status == 0)
        let cache = folder.file("cache")
        let earlier = try fetch(folder, oldTorrent, data: old + "/disk.img", ["--output", cache, "--cache", cache])
        try #require(earlier.status == 0, "\(earlier.stderr)")
        let stored = try fetch(folder, torrent, data: new + "/disk.img", ["--output", folder.file("out3"), "--cache", cache])
        try #require(stored.status == 0, "\(stored.stderr)")
        #expect(stored.stdout.contains(#""moved":7,"#), "\(stored.stdout.prefix(600))")
        #expect(try completion(stored.stdout)["reused"] as? Int == 7 * Self.pieceSize)
        #expect(try sha256(folder.file("out3/disk.img")) == (try sha256(new + "/disk.img")))

        // The same torrent without its checksums (another client's, or an older vmswarm's):
        // nothing is at its old offset, so nothing is reused.
        let plain = folder.file("plain.torrent")
        let remade = try runProcess(vmswarmBinary, ["create", new + "/disk.img", "-o", plain, "--piece-size", "256K"])
        try #require(remade.status == 0, "\(remade.stderr)")
        let full = try fetch(folder, plain, data: new + "/disk.img", ["--output", folder.file("out2"), "--reuse", old + "/disk.img"])
        try #require(full.status == 0, "\(full.stderr)")
        #expect(try completion(full.stdout)["reused"] as? Int == 0)
    }
}

/// `create --align-files TOP.qcow2` of a real chain made by qemu-img: the torrent carries the
/// chain base first, and after `get` qemu opens it (backing names resolve) and finds it identical.
@Suite(.serialized) struct QCOW2ChainTests {
    @Test func aBackingChainTravelsAsOneTorrentAndQemuOpensIt() throws {
        try travel(base: "base.qcow2", site: "site.qcow2", user: "user.qcow2")
    }

    /// A chain whose layers sit in folders of their own, named by relative paths (`../base/...`):
    /// the torrent keeps the folders, so the names resolve after `get` too.
    @Test func aChainNamedByRelativePathsKeepsItsFolders() throws {
        try travel(base: "base/base.qcow2", site: "vm/site.qcow2", user: "vm/user.qcow2", siteBacking: "../base/base.qcow2")
    }

    /// Builds base, site and user layers with qemu-img at these paths below a folder, makes the
    /// user layer's torrent, fetches it from a seeder and has qemu open and compare the result.
    func travel(base: String, site: String, user: String, siteBacking: String? = nil) throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let qemuImg = try #require(which("qemu-img"), "qemu-utils is needed: run tools/test")
        let qemuIO = try #require(which("qemu-io"), "qemu-utils is needed: run tools/test")
        let images = folder.file("images")
        for path in [base, site, user] {
            let parent = (images + "/" + path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        }
        func run(_ tool: String, _ arguments: [String]) throws {
            let result = try runProcess(tool, arguments, in: images)
            try #require(result.status == 0, "\(tool) \(arguments): \(result.stderr)")
        }
        let userBacking = (site as NSString).lastPathComponent
        try run(qemuImg, ["create", "-q", "-f", "qcow2", base, "16M"])
        try run(qemuIO, ["-c", "write -P 0x11 0 5M", base])
        try run(qemuImg, ["create", "-q", "-f", "qcow2", "-b", siteBacking ?? base, "-F", "qcow2", site])
        try run(qemuIO, ["-c", "write -P 0x22 1M 64k", site])
        try run(qemuImg, ["create", "-q", "-f", "qcow2", "-b", userBacking, "-F", "qcow2", user])
        try run(qemuIO, ["-c", "write -P 0x33 6M 2M", user])
        try Data("not a layer".utf8).write(to: URL(fileURLWithPath: images + "/notes.txt"))

        let torrent = folder.file("user.torrent")
        let created = try runProcess(vmswarmBinary, ["create", images + "/" + user, "--align-files", "-o", torrent, "--json"])
        try #require(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains(#""name":"user""#), "\(created.stdout)")
        let inspected = try runProcess(vmswarmBinary, ["inspect", torrent])
        let order = [base, site, user].map { inspected.stdout.range(of: $0)?.lowerBound }
        #expect(order.allSatisfy { $0 != nil } && order[0]! < order[1]! && order[1]! < order[2]!, "\(inspected.stdout)")
        #expect(!inspected.stdout.contains("notes.txt"))

        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", images, "--port", "\(port)"], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("on port") }, "\(seeder.output)")
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--peer", "127.0.0.1:\(port)", "--port", "0"])
        try #require(get.status == 0, "\(get.stderr)")
        let top = folder.file("out/user/" + user)
        let check = try runProcess(qemuImg, ["check", top])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        let chain = try runProcess(qemuImg, ["info", "--backing-chain", top])
        // Three images, every one of them below the download (qemu prints `vm/../base` unresolved).
        let opened = chain.stdout.split(separator: "\n").filter { $0.hasPrefix("image: ") }
        #expect(chain.status == 0 && opened.count == 3 && opened.allSatisfy { $0.contains(folder.file("out/user/")) }
            && opened.last?.hasSuffix((base as NSString).lastPathComponent) == true, "\(chain.stdout) \(chain.stderr)")
        let compare = try runProcess(qemuImg, ["compare", images + "/" + user, top])
        #expect(compare.status == 0, "\(compare.stdout) \(compare.stderr)")
    }
}
