import Foundation
import TestSupport
import Testing

/// `get` with web seeds (BEP 19, issue 21 point 5), against a small Range-capable server
/// (tools/webseed-server.py; python3 -m http.server does not do ranges) that can also misbehave.
@Suite(.serialized) struct WebSeedTests {
    static let repository = fixturesURL.deletingLastPathComponent().path
    static let payloads = fixturesURL.appendingPathComponent("payloads").path

    /// A web seed server serving `root` on `host`, in `mode` (HTTPS with `tls`); its port and the process.
    static func server(_ root: String, mode: String = "ok", host: String = "127.0.0.1", folder: TemporaryFolder,
                       namespace: TestNamespace? = nil, port: Int = 0, tls: (cert: String, key: String)? = nil) throws -> (port: Int, process: BackgroundProcess) {
        let arguments = [repository + "/tools/webseed-server.py", root, host, "\(port)", mode] + (tls.map { [$0.cert, $0.key] } ?? [])
        let (executable, wrapped) = namespace?.command("/usr/bin/python3", arguments) ?? ("/usr/bin/python3", arguments)
        let process = try BackgroundProcess(executable, wrapped, logTo: folder.file("webseed-\(mode)-\(UInt32.random(in: 0...UInt32.max)).log"))
        var found: Int?
        _ = eventually(10) {
            found = process.output.split(separator: "\n").first.flatMap { $0.hasPrefix("listening ") ? Int($0.dropFirst(10)) : nil }
            return found != nil
        }
        let listening = try #require(found, "the web seed server did not start: \(process.output)")
        return (listening, process)
    }

    /// The JSON object of `get --json`'s completion line.
    static func completion(_ stdout: String) -> [String: Any]? {
        for line in stdout.split(separator: "\n") where line.contains(#""event":"complete""#) {
            return (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
        return nil
    }

    static func int(_ value: Any?) -> Int? { (value as? NSNumber)?.intValue }

    @Test func getCompletesWithAWebSeedAsItsOnlySource() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (port, server) = try Self.server(Self.payloads, folder: folder)
        defer { server.stop() }
        // The torrent's url-list names the file itself; no tracker, no peers.
        let torrent = folder.file("vm-small.torrent")
        let made = try runProcess(vmswarmBinary, ["create", Self.payloads + "/vm-small.img", "--piece-size", "16K",
            "--web-seed", "http://127.0.0.1:\(port)/vm-small.img", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json"])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(try sha256(folder.file("out/vm-small.img")) == sha256(Self.payloads + "/vm-small.img"))
        let done = try #require(Self.completion(get.stdout), "\(get.stdout)")
        #expect(Self.int(done["web_seed_bytes"]) == 300_003)
        #expect(Self.int(done["web_seed_pieces"]) == 19)
        #expect(Self.int(done["downloaded"]) == 0, "nothing came from peers")
        // Range requests, one per piece (the last one short). The server logs each after it has
        // answered, so the last line may come a moment after get is done.
        func loggedRanges() -> [Substring] { server.output.split(separator: "\n").filter { $0.hasPrefix("GET /vm-small.img bytes=") } }
        #expect(eventually(5) { loggedRanges().count >= 19 }, "\(loggedRanges().count) range requests logged")
        let ranges = loggedRanges()
        #expect(ranges.contains { $0.hasSuffix("bytes=294912-300002") })

        // The text completion line names the web seed's share.
        let text = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out2"), "--port", "0"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("0 bytes downloaded from peers by this run, 300003 from web seeds (19 pieces)"), "\(text.stdout)")
    }

    /// `--web-seed-fallback`: with a peer that holds the image the origin is not asked at all;
    /// with none, the node still completes from the origin once the fallback's wait is over.
    @Test func aFallbackWebSeedIsAskedOnlyForWhatNoPeerHas() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (port, server) = try Self.server(Self.payloads, folder: folder)
        defer { server.stop() }
        let torrent = folder.file("vm-small.torrent")
        let made = try runProcess(vmswarmBinary, ["create", Self.payloads + "/vm-small.img", "--piece-size", "16K",
            "--web-seed", "http://127.0.0.1:\(port)/vm-small.img", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        let peerPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", Self.payloads + "/vm-small.img", "--port", "\(peerPort)"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("on port") }, "\(seeder.output)")
        let withPeer = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json",
            "--peer", "127.0.0.1:\(peerPort)", "--web-seed-fallback"])
        #expect(withPeer.status == 0, "\(withPeer.stderr)")
        let done = try #require(Self.completion(withPeer.stdout), "\(withPeer.stdout)")
        #expect(Self.int(done["web_seed_bytes"]) == 0 && Self.int(done["downloaded"]) == 300_003, "\(done)")
        #expect(!server.output.contains("GET /vm-small.img bytes="), "the origin was asked: \(server.output.suffix(300))")

        let alone = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out2"), "--port", "0", "--json", "--web-seed-fallback"])
        #expect(alone.status == 0, "\(alone.stderr)")
        #expect(Self.int(Self.completion(alone.stdout)?["web_seed_bytes"]) == 300_003)
        #expect(try sha256(folder.file("out2/vm-small.img")) == sha256(Self.payloads + "/vm-small.img"))
    }

    /// An object store that answers with a redirect (a signed URL, a chain of hops): `get` follows
    /// it for web seed pieces and for a torrent URL, up to 5 in a row, and says so past that.
    @Test func redirectsAreFollowedForWebSeedsAndTorrentURLs() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let www = folder.file("www")
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.payloads + "/vm-small.img", toPath: www + "/vm-small.img")
        let (port, server) = try Self.server(www, folder: folder)
        defer { server.stop() }
        let torrent = www + "/vm-small.torrent"
        let made = try runProcess(vmswarmBinary, ["create", Self.payloads + "/vm-small.img", "--piece-size", "16K",
            "--web-seed", "http://127.0.0.1:\(port)/moved/vm-small.img", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json"])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(try sha256(folder.file("out/vm-small.img")) == sha256(Self.payloads + "/vm-small.img"))
        #expect(Self.int(Self.completion(get.stdout)?["web_seed_bytes"]) == 300_003, "\(get.stdout)")
        // Each piece was asked at the old URL, then by Range at the signed one.
        #expect(eventually(5) { server.output.split(separator: "\n").filter { $0.hasPrefix("GET /vm-small.img?signature=0123abcd bytes=") }.count >= 19 },
            "\(server.output.suffix(400))")

        // The torrent itself behind five hops (path-absolute Locations) is fetched; six are refused.
        let five = try runProcess(vmswarmBinary, ["get", "http://127.0.0.1:\(port)/hop/5/vm-small.torrent", "-o", folder.file("out2"),
            "--port", "0", "--json"])
        #expect(five.status == 0, "\(five.stderr)")
        #expect(try sha256(folder.file("out2/vm-small.img")) == sha256(Self.payloads + "/vm-small.img"))
        let six = try runProcess(vmswarmBinary, ["get", "http://127.0.0.1:\(port)/hop/6/vm-small.torrent", "-o", folder.file("out3"),
            "--port", "0"])
        #expect(six.status != 0)
        #expect(six.stderr.contains("redirect not followed: more than 5 in a row"), "\(six.stderr)")
    }

    /// A multi-file torrent: URL + name + path, percent-encoded (the bundle has a non-ASCII name
    /// and nested folders), pieces spanning files fetched as one Range request per file.
    @Test func aMultiFileTorrentComesFromAFolderURL() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (port, server) = try Self.server(Self.payloads, folder: folder)
        defer { server.stop() }
        let torrent = folder.file("bundle.torrent")
        let made = try runProcess(vmswarmBinary, ["create", Self.payloads + "/image-bundle", "--piece-size", "16K", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        // The web seed comes from the command line this time (the torrent has none).
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json",
            "--web-seed", "http://127.0.0.1:\(port)"])
        #expect(get.status == 0, "\(get.stderr)")
        let diff = try runProcess("/usr/bin/diff", ["-r", Self.payloads + "/image-bundle", folder.file("out/image-bundle")])
        #expect(diff.status == 0, "\(diff.stdout)")
        #expect(Self.int(Self.completion(get.stdout)?["web_seed_bytes"]) ?? 0 > 0)
        #expect(server.output.contains("GET /image-bundle/%C3%BCn%C3%AFcode-notes.txt bytes="), "\(server.output.prefix(2000))")
        #expect(server.output.contains("GET /image-bundle/config/nested/seed.iso bytes="))
    }

    func makeImage(_ folder: TemporaryFolder, webSeed: String? = nil) throws -> (image: String, torrent: String, sha: String) {
        try FileManager.default.createDirectory(atPath: folder.file("data"), withIntermediateDirectories: true)
        let image = folder.file("data/image.img")
        let result = try runProcess("/bin/sh", ["-c", "head -c \(2 << 20) /dev/urandom > '\(image)'"])
        try #require(result.status == 0)
        let torrent = folder.file("image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "64K"]
            + (webSeed.map { ["--web-seed", $0] } ?? []))
        try #require(created.status == 0, "\(created.stderr)")
        return (image, torrent, try sha256(image))
    }

    /// A seed that serves other bytes is never trusted: its pieces fail their hash, no peer is
    /// blamed, after three it is dropped with a log line, and the image completes from a peer
    /// (slowed to 256 KiB/s, so the web seed is given pieces alongside it).
    @Test func aLyingWebSeedIsDroppedAndThePiecesCompleteFromAPeer() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try makeImage(folder)
        let (webPort, server) = try Self.server(folder.file("data"), mode: "corrupt", folder: folder)
        defer { server.stop() }
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)", "--max-up", "256K"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json",
            "--peer", "127.0.0.1:\(port)", "--web-seed", "http://127.0.0.1:\(webPort)/image.img"])
        #expect(get.status == 0, "\(get.stderr.suffix(2000))")
        #expect(try sha256(folder.file("out/image.img")) == sha)
        #expect(get.stderr.contains("a piece from a web seed failed its hash"), "\(get.stderr.suffix(2000))")
        #expect(get.stderr.contains("web seed dropped: 3 pieces from it failed their hash"), "\(get.stderr.suffix(2000))")
        let done = try #require(Self.completion(get.stdout))
        #expect(Self.int(done["web_seed_bytes"]) == 0)
        #expect(Self.int(done["downloaded"]) ?? 0 >= 2 << 20)
    }

    /// Seeds that ignore Range (200 with the whole file), send a short body, or answer 503 are
    /// backed off, each with its reason; the image completes from the peer. `--no-web-seeds`
    /// then leaves the torrent's web seed alone.
    @Test func misbehavingWebSeedsAreBackedOffAndNoWebSeedsSkipsThem() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let ignoring = try Self.server(folder.file("."), mode: "ignore-range", folder: folder)
        defer { ignoring.process.stop() }
        let (image, torrent, sha) = try makeImage(folder, webSeed: "http://127.0.0.1:\(ignoring.port)/data/image.img")
        let short = try Self.server(folder.file("data"), mode: "short", folder: folder)
        defer { short.process.stop() }
        let failing = try Self.server(folder.file("data"), mode: "status-503", folder: folder)
        defer { failing.process.stop() }
        let port = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(port)", "--max-up", "256K"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json", "--peer", "127.0.0.1:\(port)",
            "--web-seed", "http://127.0.0.1:\(short.port)/image.img", "--web-seed", "http://127.0.0.1:\(failing.port)/image.img"])
        #expect(get.status == 0, "\(get.stderr.suffix(2000))")
        #expect(try sha256(folder.file("out/image.img")) == sha)
        let log = get.stderr
        #expect(log.contains("web seed backed off"), "\(log.suffix(2000))")
        #expect(log.contains("the server does not do ranges"), "\(log.suffix(2000))")
        #expect(log.contains("where 65536 were asked for"), "\(log.suffix(2000))")
        #expect(log.contains("HTTP status 503"), "\(log.suffix(2000))")
        #expect(Self.int(Self.completion(get.stdout)?["web_seed_bytes"]) == 0)
        // Each was asked, and was asked again only after waiting.
        #expect(ignoring.process.output.contains("GET /data/image.img bytes="))
        #expect(short.process.output.contains("GET /image.img bytes="))

        let before = ignoring.process.output.split(separator: "\n").count
        let skip = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out2"), "--port", "0", "--json",
            "--peer", "127.0.0.1:\(port)", "--no-web-seeds"])
        #expect(skip.status == 0, "\(skip.stderr.suffix(2000))")
        #expect(try sha256(folder.file("out2/image.img")) == sha)
        #expect(ignoring.process.output.split(separator: "\n").count == before, "--no-web-seeds still asked the web seed")
        #expect(Self.completion(skip.stdout)?["web_seed_bytes"] == nil)
    }

    /// `--max-down` holds the web seed too: 1 MiB at 256 KiB/s takes about 3 s after the first
    /// second's burst, where loopback takes milliseconds.
    @Test func maxDownLimitsTheWebSeed() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try FileManager.default.createDirectory(atPath: folder.file("data"), withIntermediateDirectories: true)
        let image = folder.file("data/image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(1 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let (port, server) = try Self.server(folder.file("data"), folder: folder)
        defer { server.stop() }
        let torrent = folder.file("image.torrent")
        let made = try runProcess(vmswarmBinary, ["create", image, "--piece-size", "64K", "--web-seed", "http://127.0.0.1:\(port)/image.img", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        let started = Date()
        let get = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--json", "--max-down", "256K"])
        let elapsed = -started.timeIntervalSinceNow
        #expect(get.status == 0, "\(get.stderr)")
        #expect(try sha256(folder.file("out/image.img")) == sha256(image))
        #expect(Self.int(Self.completion(get.stdout)?["web_seed_bytes"]) == 1 << 20)
        #expect(elapsed >= 2.5, "1 MiB at 256 KiB/s took \(elapsed) s")
    }

    /// A reader of the image in flight (`--serve`) gets what it asks for from the web seed
    /// first: at 256 KiB/s the 4 MiB image takes some 15 s, and a read near its end is answered
    /// long before that, with the right bytes.
    @Test func aReaderOfTheImageInFlightIsServedFromTheWebSeedFirst() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try FileManager.default.createDirectory(atPath: folder.file("data"), withIntermediateDirectories: true)
        let image = folder.file("data/image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(4 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let (webPort, server) = try Self.server(folder.file("data"), folder: folder)
        defer { server.stop() }
        let torrent = folder.file("image.torrent")
        let made = try runProcess(vmswarmBinary, ["create", image, "--piece-size", "64K", "--web-seed", "http://127.0.0.1:\(webPort)/image.img", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        let port = freePort()
        let get = try BackgroundProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--port", "0", "--max-down", "256K",
            "--serve", "http://127.0.0.1:\(port)"], logTo: folder.file("get.log"))
        defer { get.stop() }
        let url = "http://127.0.0.1:\(port)/image.img"
        try #require(eventually(20) { get.output.contains("serving image.img read-only at \(url)") }, "\(get.output)")
        let offset = (4 << 20) - 100_000
        let part = folder.file("part.bin")
        let started = Date()
        let ranged = try runProcess("/usr/bin/curl", ["-sS", "-o", part, "-w", "%{http_code}", "-r", "\(offset)-\(offset + 65535)", url])
        let waited = -started.timeIntervalSinceNow
        #expect(ranged.stdout == "206", "\(ranged.stdout) \(ranged.stderr)")
        #expect(waited < 6, "the read waited \(waited) s")
        #expect(!get.output.contains("complete:"), "the download ended before the read")
        let handle = try #require(FileHandle(forReadingAtPath: image))
        try handle.seek(toOffset: UInt64(offset))
        #expect(try Data(contentsOf: URL(fileURLWithPath: part)) == handle.readData(ofLength: 65536))
    }

    @Test func unusableWebSeedFlagsAreRefusedWithTheReason() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let torrent = folder.file("vm-small.torrent")
        let made = try runProcess(vmswarmBinary, ["create", Self.payloads + "/vm-small.img", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")
        let ftp = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--web-seed", "ftp://origin/vm-small.img"])
        #expect(ftp.status != 0)
        #expect(ftp.stderr.contains("ftp:// is not supported (http:// or https://)"), "\(ftp.stderr)")
        let spaced = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--web-seed", "http://origin/a b"])
        #expect(spaced.status != 0)
        #expect(spaced.stderr.contains("percent-encode them"), "\(spaced.stderr)")
        let both = try runProcess(vmswarmBinary, ["get", torrent, "-o", folder.file("out"), "--web-seed", "http://o/x", "--no-web-seeds"])
        #expect(both.status != 0 && both.stderr.contains("contradict"), "\(both.stderr)")
    }

    /// The issue's interop point: aria2c and Transmission download from vmswarm nodes whose only
    /// sources are a web seed and each other. Their torrent has no url-list (the web seed is given
    /// to vmswarm alone with --web-seed; url-list lies outside `info`, so the info-hash is the
    /// same), so every byte they get came through vmswarm. The first node fetches from the web
    /// seed at 1 MiB/s; the second joins once the first holds a third of the image and takes it
    /// from both. In a network namespace of the test's own with a 10.x address (Transmission
    /// refuses loopback peers); a vmswarm tracker introduces them.
    @Test func aria2AndTransmissionDownloadFromVmswarmNodesFedOnlyByAWebSeedAndEachOther() throws {
        let namespace = try TestNamespace(address: "10.77.0.2")
        let folder = try TemporaryFolder()
        var running: [BackgroundProcess] = []
        defer {
            running.forEach { $0.stop() }
            namespace.remove()
            folder.cleanUp()
        }
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
        try FileManager.default.createDirectory(atPath: folder.file("origin"), withIntermediateDirectories: true)
        let image = folder.file("origin/vm.img")
        let size = 3 << 20
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(size) /dev/urandom > '\(image)'"]).status == 0)
        let expected = try sha256(image)

        let tracker = try start(vmswarmBinary, ["tracker", "--listen", "\(host):6969", "--interval", "10", "--min-interval", "1"], log: "tracker.log")
        try #require(eventually(10) { stats().contains("\"torrents\"") }, "tracker did not start: \(tracker.output)")
        let origin = try Self.server(folder.file("origin"), host: host, folder: folder, namespace: namespace, port: 8080)
        running.append(origin.process)

        let torrent = folder.file("vm.torrent")
        let made = try runProcess(vmswarmBinary, ["create", image, "--piece-size", "64K", "-t", "http://\(host):6969/announce", "-o", torrent])
        try #require(made.status == 0, "\(made.stderr)")

        // The first node fetches from the web seed alone (no peer has anything yet); the second
        // joins when it holds a third; both seed on.
        let node = try start(vmswarmBinary, ["get", torrent, "-o", folder.file("node"), "--listen", "\(host):6881", "--json",
            "--web-seed", "http://\(host):8080/vm.img", "--max-down", "1M", "--seed-after", "forever", "--metrics-listen", "\(host):9109"], log: "node.log")
        func progress(_ output: String) -> Int {
            output.split(separator: "\n").filter { $0.contains(#""event":"progress""#) }.compactMap {
                Self.int(((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["bytes"])
            }.max() ?? 0
        }
        try #require(eventually(30) { progress(node.output) >= size / 3 }, "the first node did not start: \(node.output.suffix(1500))")
        let second = try start(vmswarmBinary, ["get", torrent, "-o", folder.file("second"), "--listen", "\(host):6884", "--json",
            "--web-seed", "http://\(host):8080/vm.img", "--seed-after", "forever"], log: "second.log")
        try #require(eventually(60) { node.output.contains(#""event":"complete""#) && second.output.contains(#""event":"complete""#) },
            "vmswarm did not complete: \(node.output.suffix(1000)) \(second.output.suffix(1000))")
        let done = try #require(Self.completion(node.output), "\(node.output.suffix(800))")
        let secondDone = try #require(Self.completion(second.output), "\(second.output.suffix(800))")
        // Every byte of each came from the web seed or the other node, and the second took part of
        // the image from the first.
        #expect(Self.int(done["web_seed_bytes"])! + Self.int(done["downloaded"])! == size, "\(done)")
        #expect(Self.int(secondDone["web_seed_bytes"])! + Self.int(secondDone["downloaded"])! == size, "\(secondDone)")
        #expect(Self.int(secondDone["downloaded"])! > 0, "\(secondDone)")
        #expect(try sha256(folder.file("node/vm.img")) == expected)
        #expect(try sha256(folder.file("second/vm.img")) == expected)
        // The node's metrics count the web seed as a source of its own.
        let (wrapper, wrapped) = namespace.command("/usr/bin/curl", ["-s", "http://\(host):9109/metrics"])
        let metrics = try runProcess(wrapper, wrapped).stdout
        #expect(metrics.contains(#"vmswarm_downloaded_bytes_total{source="web_seed"} \#(Self.int(done["web_seed_bytes"])!)"#), "\(metrics.prefix(1500))")
        #expect(metrics.contains(#"vmswarm_downloaded_bytes_total{source="peer"} \#(Self.int(done["downloaded"])!)"#))
        let originRequests = origin.process.output.split(separator: "\n").count

        let aria2Dir = folder.file("aria2")
        let aria2Run = try start(aria2, [
            "--dir", aria2Dir, "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--seed-time=0", "--listen-port=6882", "--bt-stop-timeout=90",
            "--summary-interval=0", "--console-log-level=warn", torrent,
        ], log: "aria2.log")
        let config = folder.file("transmission-config")
        try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        try #"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "port-forwarding-enabled": false, "utp-enabled": false}"#
            .write(toFile: config + "/settings.json", atomically: true, encoding: .utf8)
        let transmissionDir = folder.file("transmission")
        try FileManager.default.createDirectory(atPath: transmissionDir, withIntermediateDirectories: true)
        let transmissionRun = try start(transmission, ["-g", config, "-w", transmissionDir, "-p", "6883", torrent], log: "transmission.log")

        #expect(aria2Run.wait(seconds: 90), "aria2 did not finish: \(aria2Run.output.suffix(800))")
        #expect(aria2Run.process.terminationStatus == 0)
        #expect(try sha256(aria2Dir + "/vm.img") == expected)
        let transmissionDone = eventually(90) { (try? sha256(transmissionDir + "/vm.img")) == expected }
        #expect(transmissionDone, "Transmission did not finish: \(transmissionRun.output.suffix(400))")
        // Neither client went to the origin: it saw no request after vmswarm's.
        #expect(origin.process.output.split(separator: "\n").count == originRequests)
    }
}
