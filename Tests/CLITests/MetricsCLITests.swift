import Foundation
import TestSupport
import Testing

/// `--metrics-listen` on real `seed` and `get` processes on loopback: the counters scraped match
/// the transfer; and the status lines of a seeder and of a failed download read right.
@Suite(.serialized) struct MetricsCLITests {
    /// A random image of `megabytes` MiB (plus an odd tail) and its trackerless torrent, 256 KiB pieces.
    func makeImage(_ folder: TemporaryFolder, megabytes: Int = 16) throws -> (image: String, torrent: String, length: Int, pieces: Int, infoHash: String) {
        let image = folder.file("image.img")
        let length = (megabytes << 20) + 12_345
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(length) /dev/urandom > '\(image)'"]).status == 0)
        let torrent = folder.file("image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K", "--json"])
        try #require(created.status == 0, "\(created.stderr)")
        let event = try #require(created.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.first { $0["event"] as? String == "created" })
        let report = try #require(event["torrent"] as? [String: Any])
        return (image, torrent, length, (length + (256 << 10) - 1) / (256 << 10), try #require(report["info_hash"] as? String))
    }

    /// GET /metrics with curl; the samples by NAME{LABELS}, and the response's content type.
    func scrape(_ port: Int) throws -> (samples: [String: Double], contentType: String, text: String)? {
        let result = try runProcess("/usr/bin/curl", ["-s", "-m", "5", "-D", "-", "http://127.0.0.1:\(port)/metrics"])
        guard result.status == 0 else { return nil }
        let parts = result.stdout.components(separatedBy: "\r\n\r\n")
        guard parts.count >= 2 else { return nil }
        let contentType = parts[0].split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-type:") }
            .map { String($0.dropFirst("content-type:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
        let text = parts.dropFirst().joined(separator: "\r\n\r\n")
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return (samples, contentType, text)
    }

    @Test func scrapedCountersMatchTheTransfer() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let made = try makeImage(folder)
        let (seedPort, seedMetrics, getMetrics) = (freePort(), freePort(), freePort())
        let seeder = try BackgroundProcess(vmswarmBinary, [
            "seed", made.torrent, "--data", made.image, "--listen", "127.0.0.1:\(seedPort)", "--metrics-listen", "127.0.0.1:\(seedMetrics)",
        ], logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        try #require(eventually(10) { seeder.output.contains("metrics at http://127.0.0.1:\(seedMetrics)/metrics") }, "\(seeder.output)")

        // Before any peer: the seeder holds every piece, verified none this run, sent nothing.
        let before = try #require(try scrape(seedMetrics), "\(seeder.output)")
        #expect(before.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(before.samples["vmswarm_torrent_pieces"] == Double(made.pieces))
        #expect(before.samples["vmswarm_pieces_held"] == Double(made.pieces))
        #expect(before.samples["vmswarm_uploaded_bytes_total"] == 0)
        #expect(before.samples[#"vmswarm_node_info{info_hash="\#(made.infoHash)",name="image.img",role="seed"}"#] == 1, "\(before.text)")

        // get stays up after completion (--seed-after forever) so its metrics can be read.
        let getter = try BackgroundProcess(vmswarmBinary, [
            "get", made.torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(seedPort)", "--port", "0",
            "--metrics-listen", "127.0.0.1:\(getMetrics)", "--seed-after", "forever",
        ], logTo: folder.file("get.log"))
        defer { getter.stop() }
        try #require(eventually(120) { getter.output.contains("complete: ") }, "\(getter.output)")
        #expect(try sha256(folder.file("out/image.img")) == (try sha256(made.image)))

        let got = try #require(try scrape(getMetrics), "\(getter.output)")
        let s = got.samples
        #expect(s[#"vmswarm_node_info{info_hash="\#(made.infoHash)",name="image.img",role="get"}"#] == 1, "\(got.text)")
        let peerBytes = try #require(s[#"vmswarm_downloaded_bytes_total{source="peer"}"#], "\(got.text)")
        let wasted = try #require(s["vmswarm_wasted_bytes_total"])
        // Every byte of the image came from the one peer, once; anything more is counted as wasted.
        #expect(peerBytes - wasted == Double(made.length), "\(got.text)")
        #expect(s[#"vmswarm_downloaded_bytes_total{source="multicast"}"#] == 0)
        #expect(s["vmswarm_pieces_verified_total"] == Double(made.pieces), "\(got.text)")
        #expect(s["vmswarm_pieces_failed_total"] == 0)
        #expect(s["vmswarm_pieces_held"] == Double(made.pieces))
        #expect(s["vmswarm_held_bytes"] == Double(made.length))
        #expect(s["vmswarm_torrent_size_bytes"] == Double(made.length))
        #expect(s["vmswarm_peers_connected"] == 1, "\(got.text)")
        #expect(s["vmswarm_peers_banned"] == 0)
        #expect(s["vmswarm_download_rate_bytes_per_second"] != nil && s["vmswarm_upload_rate_bytes_per_second"] != nil)

        // The seeder sent the whole image (its counter is of blocks sent, so it may exceed the
        // image by end-game duplicates, never fall short), and verified nothing.
        let sentAll = try eventually(10) { (try scrape(seedMetrics)?.samples["vmswarm_uploaded_bytes_total"] ?? 0) >= Double(made.length) }
        let seeded = try #require(try scrape(seedMetrics))
        try #require(sentAll, "\(seeded.text)")
        #expect(seeded.samples["vmswarm_uploaded_bytes_total"] == peerBytes, "\(seeded.text)")
        #expect(seeded.samples["vmswarm_pieces_verified_total"] == 0)
        #expect(seeded.samples["vmswarm_peers_connected"] == 1)

        // Only /metrics answers; other paths are 404.
        let other = try runProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(getMetrics)/"])
        #expect(other.stdout == "404")

        // The seeder's progress lines (piped: one every 2 s) show its upload rate, not a download
        // average: "seeding: 100.0%  16.01 MiB of 16.01 MiB  up 1.23 MiB/s  1 peers, up 16.01 MiB".
        try #require(eventually(10) { seeder.output.split(separator: "\n").contains { $0.hasPrefix("seeding:") && $0.contains("  up ") } },
            "\(seeder.output)")
        let lines = seeder.output.split(separator: "\n").filter { $0.hasPrefix("seeding:") }
        for line in lines {
            #expect(line.range(of: #"  up [0-9.]+ (B|KiB|MiB|GiB)/s  \d+ peers, up "#, options: .regularExpression) != nil, "\(line)")
            #expect(!line.contains("ETA"), "\(line)")
        }
    }

    /// Pieces a node already held (here an earlier version, `--reuse`) are scraped as
    /// `source="cache"`; only the changed piece comes from the peer.
    @Test func piecesTakenFromTheNodesOwnDataAreTheCacheSource() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let made = try makeImage(folder)
        let old = folder.file("old.img")
        try FileManager.default.copyItem(atPath: made.image, toPath: old)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: old))
        try handle.seek(toOffset: UInt64(5 * (256 << 10) + 77))
        try handle.write(contentsOf: Data("older".utf8))
        try handle.close()
        let (seedPort, getMetrics) = (freePort(), freePort())
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", made.torrent, "--data", made.image, "--listen", "127.0.0.1:\(seedPort)"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let getter = try BackgroundProcess(vmswarmBinary, [
            "get", made.torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(seedPort)", "--port", "0", "--reuse", old,
            "--metrics-listen", "127.0.0.1:\(getMetrics)", "--seed-after", "forever",
        ], logTo: folder.file("get.log"))
        defer { getter.stop() }
        try #require(eventually(120) { getter.output.contains("complete: ") }, "\(getter.output)")
        #expect(try sha256(folder.file("out/image.img")) == (try sha256(made.image)))
        let got = try #require(try scrape(getMetrics), "\(getter.output)")
        #expect(got.samples[#"vmswarm_downloaded_bytes_total{source="cache"}"#] == Double(made.length - (256 << 10)), "\(got.text)")
        let peerBytes = try #require(got.samples[#"vmswarm_downloaded_bytes_total{source="peer"}"#])
        #expect(peerBytes - (got.samples["vmswarm_wasted_bytes_total"] ?? 0) == Double(256 << 10), "\(got.text)")
        #expect(got.samples["vmswarm_pieces_verified_total"] == 1, "\(got.text)")
    }

    /// A download that fails (its disk fills up) ends with a line that says it failed, not
    /// "done in 0:00".
    @Test func aFailedDownloadsLastLineSaysFailed() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let made = try makeImage(folder, megabytes: 32)
        let seedPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", made.torrent, "--data", made.image, "--listen", "127.0.0.1:\(seedPort)"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(30) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let disk = folder.file("disk")
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mounted = try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=12m", "tmpfs", disk])
        try #require(mounted.status == 0, "mount: \(mounted.stderr)")
        defer { _ = try? runProcess("/bin/umount", ["-l", disk]) }

        let full = try runProcess(vmswarmBinary, ["get", made.torrent, "--output", disk, "--peer", "127.0.0.1:\(seedPort)", "--port", "0"])
        #expect(full.status == 1, "\(full.stderr)")
        let last = try #require(full.stderr.split(separator: "\n").last { $0.hasPrefix("downloading:") }, "\(full.stderr)")
        #expect(last.contains("failed after "), "\(last)")
        #expect(!last.contains("done"), "\(last)")

        // The same in JSON, on a fresh small disk (the first .part would make this a resumed check).
        let disk2 = folder.file("disk2")
        try FileManager.default.createDirectory(atPath: disk2, withIntermediateDirectories: true)
        let mounted2 = try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=12m", "tmpfs", disk2])
        try #require(mounted2.status == 0, "mount: \(mounted2.stderr)")
        defer { _ = try? runProcess("/bin/umount", ["-l", disk2]) }
        let json = try runProcess(vmswarmBinary, ["get", made.torrent, "--output", disk2, "--peer", "127.0.0.1:\(seedPort)", "--port", "0", "--json"])
        #expect(json.status == 1)
        let events = json.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.filter { $0["task"] as? String == "downloading" }
        #expect(events.last?["event"] as? String == "failed", "\(json.stdout.suffix(600))")
    }
}
