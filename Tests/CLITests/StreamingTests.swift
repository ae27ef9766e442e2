import Foundation
import TestSupport
import Testing

/// `get --serve nbd://…`: real NBD clients (libnbd's nbdinfo and nbdcopy, qemu-img and qemu-io from
/// qemu-utils) read the image while it is still downloading (issue 20).
@Suite(.serialized) struct StreamingTests {
    struct Swarm {
        let folder: TemporaryFolder
        let image: String
        let torrent: String
        let sha: String
        let seeder: BackgroundProcess
        let seederPort: Int
        /// The content key's arguments (`--key FILE`) when the image is sealed, else none.
        let key: [String]

        init(megabytes: Int = 16, sealed: Bool = false) throws {
            folder = try TemporaryFolder()
            image = folder.file("image.img")
            try #require(try runProcess("/bin/sh", ["-c", "head -c \(megabytes << 20) /dev/urandom > '\(image)'"]).status == 0)
            torrent = folder.file("image.torrent")
            if sealed {
                try #require(try runProcess(vmswarmBinary, ["keygen", folder.file("content"), "--kind", "content"]).status == 0)
                key = ["--key", folder.file("content.key")]
            } else {
                key = []
            }
            let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K"] + key)
            try #require(created.status == 0, "\(created.stderr)")
            sha = try sha256(image)
            seederPort = freePort()
            seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(seederPort)"] + key, logTo: folder.file("seed.log"))
            try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        }

        /// `get --serve` at a rate that keeps the download going for a few seconds.
        func serve(port: Int, rate: String, url: String? = nil, extra: [String] = []) throws -> BackgroundProcess {
            let url = url ?? "nbd://127.0.0.1:\(port)"
            let get = try BackgroundProcess(vmswarmBinary, [
                "get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(seederPort)", "--port", "0",
                "--max-down", rate, "--serve", url,
            ] + key + extra, logTo: folder.file("get.log"))
            try #require(eventually(20) { get.output.contains("serving image.img read-only at \(url)") }, "\(get.output)")
            return get
        }

        func stop() {
            seeder.stop()
            folder.cleanUp()
        }
    }

    func tool(_ name: String) throws -> String {
        try #require(which(name), "\(name) is needed: run tools/test (libnbd-bin, qemu-utils)")
    }

    /// The export has the image's size at once, the first read of a range returns its true bytes
    /// before the download is done, and `qemu-img compare`, `qemu-img convert` and `nbdcopy` see
    /// exactly the image.
    @Test func nbdClientsReadTheImageWhileItDownloads() throws {
        let swarm = try Swarm()
        defer { swarm.stop() }
        let port = freePort()
        let get = try swarm.serve(port: port, rate: "3M")
        defer { get.stop() }
        let url = "nbd://127.0.0.1:\(port)"

        let size = try runProcess(try tool("nbdinfo"), ["--size", url])
        #expect(size.status == 0, "\(size.stderr)")
        #expect(size.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(16 << 20)")

        // 4 KiB near the end, read with qemu-io while most of the image is still missing.
        let offset = (16 << 20) - 300_000
        let read = try runProcess(try tool("qemu-io"), ["-r", "-f", "raw", "-c", "read -v \(offset) 4096", url])
        #expect(read.status == 0, "\(read.stderr)")
        #expect(!get.output.contains("complete:"), "the download ended before the read: \(get.output.suffix(300))")
        let handle = try #require(FileHandle(forReadingAtPath: swarm.image))
        try handle.seek(toOffset: UInt64(offset))
        let expected = try #require(try handle.read(upToCount: 16))
        let firstLine = try #require(read.stdout.split(separator: "\n").first)
        #expect(firstLine.contains(expected.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")), "\(firstLine)")

        let compare = try runProcess(try tool("qemu-img"), ["compare", "-f", "raw", "-F", "raw", url, swarm.image])
        #expect(compare.status == 0, "\(compare.stdout) \(compare.stderr)")
        // qemu-img convert takes the export as any image: to qcow2, the same guest bytes.
        let converted = swarm.folder.file("converted.qcow2")
        let convert = try runProcess(try tool("qemu-img"), ["convert", "-f", "raw", "-O", "qcow2", url, converted])
        #expect(convert.status == 0, "\(convert.stderr)")
        let same = try runProcess(try tool("qemu-img"), ["compare", "-f", "qcow2", "-F", "raw", converted, swarm.image])
        #expect(same.status == 0, "\(same.stdout) \(same.stderr)")
        let copy = swarm.folder.file("copy.img")
        let copied = try runProcess(try tool("nbdcopy"), [url, copy])
        #expect(copied.status == 0, "\(copied.stderr)")
        #expect(try sha256(copy) == swarm.sha)

        // The download itself completes under its real name, and get keeps serving until stopped.
        // Its last line counts the reads served meanwhile and those that found their data here.
        #expect(eventually(30) { get.output.contains("complete:") }, "\(get.output.suffix(500))")
        #expect(get.output.contains("reads served while it downloaded"), "\(get.output.suffix(300))")
        #expect(try sha256(swarm.folder.file("out/image.img")) == swarm.sha)
        #expect(get.process.isRunning)
        let after = try runProcess(try tool("nbdinfo"), ["--size", url])
        #expect(after.status == 0)
        get.process.interrupt()
        #expect(get.wait(seconds: 10))
        #expect(get.process.terminationStatus == 0, "\(get.output.suffix(300))")
    }

    /// Clients that misbehave get errors, never bytes: a write to the read-only export, a read past
    /// its end.
    @Test func writesAndReadsPastTheEndAreRefused() throws {
        let swarm = try Swarm(megabytes: 1)
        defer { swarm.stop() }
        let port = freePort()
        let get = try swarm.serve(port: port, rate: "100M")
        defer { get.stop() }
        let url = "nbd://127.0.0.1:\(port)"
        let qemuIO = try tool("qemu-io")
        let write = try runProcess(qemuIO, ["-f", "raw", "-c", "write -P 0x41 0 4096", url])
        #expect(write.status != 0 || (write.stdout + write.stderr).lowercased().contains("error")
            || (write.stdout + write.stderr).lowercased().contains("read-only"), "\(write.stdout) \(write.stderr)")
        let past = try runProcess(qemuIO, ["-r", "-f", "raw", "-c", "read \((1 << 20) - 100) 4096", url])
        #expect((past.stdout + past.stderr).lowercased().contains("error") || (past.stdout + past.stderr).contains("Input/output")
            || (past.stdout + past.stderr).contains("Invalid"), "\(past.stdout) \(past.stderr)")
        #expect(get.process.isRunning)
        #expect(try sha256(swarm.image) == swarm.sha)
    }

    /// HTTP with byte ranges on the same data: HEAD gives the size and Accept-Ranges, a range
    /// read while the download runs returns the true bytes with 206, past the end is 416, and a
    /// whole GET streams the image as it arrives.
    @Test func httpRangeReadsWhileItDownloads() throws {
        let swarm = try Swarm()
        defer { swarm.stop() }
        let port = freePort()
        let get = try BackgroundProcess(vmswarmBinary, [
            "get", swarm.torrent, "--output", swarm.folder.file("out"), "--peer", "127.0.0.1:\(swarm.seederPort)", "--port", "0",
            "--max-down", "3M", "--serve", "http://127.0.0.1:\(port)",
        ], logTo: swarm.folder.file("get.log"))
        defer { get.stop() }
        let url = "http://127.0.0.1:\(port)/image.img"
        try #require(eventually(20) { get.output.contains("serving image.img read-only at \(url)") }, "\(get.output)")
        let curl = try tool("curl")

        let head = try runProcess(curl, ["-sS", "-I", url])
        #expect(head.stdout.contains("200") && head.stdout.lowercased().contains("accept-ranges: bytes")
            && head.stdout.lowercased().contains("content-length: \(16 << 20)"), "\(head.stdout)")

        let offset = 9_000_001
        let part = swarm.folder.file("part.bin")
        let ranged = try runProcess(curl, ["-sS", "-o", part, "-w", "%{http_code}", "-r", "\(offset)-\(offset + 65535)", url])
        #expect(ranged.stdout == "206", "\(ranged.stdout) \(ranged.stderr)")
        #expect(!get.output.contains("complete:"), "the download ended before the read")
        let handle = try #require(FileHandle(forReadingAtPath: swarm.image))
        try handle.seek(toOffset: UInt64(offset))
        #expect(try Data(contentsOf: URL(fileURLWithPath: part)) == handle.readData(ofLength: 65536))

        let past = try runProcess(curl, ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-r", "\(16 << 20)-", url])
        #expect(past.stdout == "416", "\(past.stdout)")
        let missing = try runProcess(curl, ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/other"])
        #expect(missing.stdout == "404", "\(missing.stdout)")

        // qemu's curl driver (HEAD, then ranged GETs) sees exactly the image.
        let compare = try runProcess(try tool("qemu-img"), ["compare", "-f", "raw", "-F", "raw", url, swarm.image])
        #expect(compare.status == 0, "\(compare.stdout) \(compare.stderr)")

        let whole = swarm.folder.file("whole.img")
        let streamed = try runProcess(curl, ["-sS", "-o", whole, "-w", "%{http_code}", url])
        #expect(streamed.stdout == "200", "\(streamed.stdout) \(streamed.stderr)")
        #expect(try sha256(whole) == swarm.sha)
    }

    /// A sealed image is served as its plaintext, each piece once it authenticated (the forged
    /// case, where a piece never does, is in SealedSwarmTests): NBD and HTTP readers see the image.
    @Test func aSealedImageIsServedAsItsPlaintext() throws {
        let swarm = try Swarm(megabytes: 8, sealed: true)
        defer { swarm.stop() }
        let port = freePort()
        let get = try swarm.serve(port: port, rate: "2M")
        defer { get.stop() }
        let url = "nbd://127.0.0.1:\(port)"
        let size = try runProcess(try tool("nbdinfo"), ["--size", url])
        #expect(size.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(8 << 20)", "\(size.stdout) \(size.stderr)")
        let compare = try runProcess(try tool("qemu-img"), ["compare", "-f", "raw", "-F", "raw", url, swarm.image])
        #expect(compare.status == 0, "\(compare.stdout) \(compare.stderr)")
        #expect(eventually(30) { get.output.contains("complete:") }, "\(get.output.suffix(500))")
        #expect(try sha256(swarm.folder.file("out/image.img")) == swarm.sha)
    }

    /// Boot profiles (VMTorrent): `--record-reads` writes the reads served, `create --boot-profile`
    /// carries them in a torrent with the same info-hash, and a node getting that torrent fetches the
    /// pieces under them first (at 512 KiB/s, a random order would take about 30 s for them).
    @Test func aRecordedBootProfileIsFetchedFirstByTheNextNode() throws {
        let swarm = try Swarm()
        defer { swarm.stop() }
        let port = freePort()
        let profile = swarm.folder.file("boot.profile")
        let recording = try swarm.serve(port: port, rate: "2M", extra: ["--record-reads", profile])
        let reads = [((16 << 20) - 600_000, 4096), (5_000_000, 65536)]
        for (offset, length) in reads {
            let read = try runProcess(try tool("qemu-io"), ["-r", "-f", "raw", "-c", "read \(offset) \(length)", "nbd://127.0.0.1:\(port)"])
            #expect(read.status == 0, "\(read.stderr)")
        }
        recording.stop()
        let recorded = try String(contentsOfFile: profile, encoding: .utf8)
        for (offset, length) in reads { #expect(recorded.contains("\(offset) \(length)\n"), "\(recorded)") }

        let boot = swarm.folder.file("boot.torrent")
        let created = try runProcess(vmswarmBinary, ["create", swarm.image, "-o", boot, "--piece-size", "256K", "--boot-profile", profile])
        try #require(created.status == 0, "\(created.stderr)")
        let hashes = try [swarm.torrent, boot].map { torrent in
            try runProcess(vmswarmBinary, ["inspect", torrent]).stdout.split(separator: "\n").first { $0.contains("info-hash") }
        }
        #expect(hashes[0] != nil && hashes[0] == hashes[1], "\(hashes)")

        let next = try BackgroundProcess(vmswarmBinary, [
            "get", boot, "--output", swarm.folder.file("next"), "--peer", "127.0.0.1:\(swarm.seederPort)", "--port", "0", "--max-down", "512K",
        ], logTo: swarm.folder.file("next.log"))
        defer { next.stop() }
        try #require(eventually(20) { next.output.contains("fetching first the 2 pieces the boot profile reads") }, "\(next.output)")
        let original = try #require(FileHandle(forReadingAtPath: swarm.image))
        let expected = try reads.map { offset, length in
            try original.seek(toOffset: UInt64(offset))
            return original.readData(ofLength: length)
        }
        let part = swarm.folder.file("next/image.img.part")
        #expect(eventually(5) {
            guard let handle = FileHandle(forReadingAtPath: part) else { return false }
            return zip(reads, expected).allSatisfy { read, bytes in
                (try? handle.seek(toOffset: UInt64(read.0))) != nil && handle.readData(ofLength: read.1) == bytes
            }
        }, "\(next.output.suffix(300))")
        #expect(!next.output.contains("complete:"))
    }

    @Test func serveNeedsAnNBDOrHTTPURLAndTheImage() throws {
        let bad = try runProcess(vmswarmBinary, ["get", "x.torrent", "--serve", "ftp://127.0.0.1:1"])
        #expect(bad.status != 0 && bad.stderr.contains("--serve takes nbd://HOST[:PORT] or http://HOST:PORT"), "\(bad.stderr)")
        let relay = try runProcess(vmswarmBinary, ["get", "x.torrent", "--serve", "nbd://127.0.0.1", "--relay-only"])
        #expect(relay.status != 0 && relay.stderr.contains("--relay-only"), "\(relay.stderr)")
    }
}
