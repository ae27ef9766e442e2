import Foundation
import Testing
@testable import VMSwarmCLI

/// The pure parts of `--metrics-listen` and of the progress line: the exposition text, the rate
/// meter, and the lines a seeder and a failed download print (issue 21, points 3 and 8).
@Suite struct NodeMetricsTests {
    func sample() -> NodeMetrics {
        var metrics = NodeMetrics(role: "get", infoHash: "0123456789abcdef0123456789abcdef01234567", name: "disk \"a\"\\b\nc.img")
        metrics.downloadedPeerBytes = 1_048_576
        metrics.downloadedMulticastBytes = 262_144
        metrics.downloadedWebSeedBytes = 524_288
        metrics.downloadedCacheBytes = 131_072
        metrics.webSeedsUsable = 1
        metrics.webSeedFailures = ["fetch": 3, "hash": 2]
        metrics.uploadedBytes = 42
        metrics.wastedBytes = 16_384
        metrics.piecesVerified = 4
        metrics.piecesFailed = 1
        metrics.pieceCount = 5
        metrics.piecesHeld = 4
        metrics.sizeBytes = 1_300_000
        metrics.heldBytes = 1_048_576
        metrics.peersConnected = 3
        metrics.peersBanned = 1
        metrics.stallsFound = 6
        metrics.refusals = ["too many peers": 2, "banned": 7]
        metrics.downloadRate = 2_097_152.25
        metrics.uploadRate = 0
        return metrics
    }

    /// Parses the text as a scraper does: every sample line is NAME{LABELS} VALUE, every family
    /// has HELP and TYPE before its samples, counters end in `_total`.
    @Test func exposition() throws {
        let text = sample().prometheusText
        #expect(text.hasSuffix("\n"))
        var types: [String: String] = [:]
        var helped: Set<String> = []
        var values: [String: String] = [:]
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") {
                helped.insert(String(line.dropFirst(7).split(separator: " ")[0]))
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ").map(String.init)
                #expect(parts.count == 2 && ["counter", "gauge"].contains(parts[1]), "\(line)")
                #expect(helped.contains(parts[0]), "TYPE before HELP: \(line)")
                types[parts[0]] = parts[1]
            } else {
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                #expect(types[name] != nil, "a sample of no declared family: \(line)")
                #expect(name.hasPrefix("vmswarm_"), "\(line)")
                let key = String(line[..<line.lastIndex(of: " ")!])
                values[key] = String(line[line.index(after: line.lastIndex(of: " ")!)...])
            }
        }
        for (name, type) in types {
            #expect(type == "counter" ? name.hasSuffix("_total") : !name.hasSuffix("_total"), "\(name) is a \(type)")
        }
        #expect(values[#"vmswarm_downloaded_bytes_total{source="peer"}"#] == "1048576")
        #expect(values[#"vmswarm_downloaded_bytes_total{source="multicast"}"#] == "262144")
        #expect(values[#"vmswarm_downloaded_bytes_total{source="web_seed"}"#] == "524288")
        #expect(values[#"vmswarm_downloaded_bytes_total{source="cache"}"#] == "131072")
        #expect(values["vmswarm_web_seeds_usable"] == "1")
        #expect(values[#"vmswarm_web_seed_failures_total{kind="fetch"}"#] == "3")
        #expect(values[#"vmswarm_web_seed_failures_total{kind="hash"}"#] == "2")
        #expect(values["vmswarm_uploaded_bytes_total"] == "42")
        #expect(values["vmswarm_wasted_bytes_total"] == "16384")
        #expect(values["vmswarm_pieces_verified_total"] == "4")
        #expect(values["vmswarm_pieces_failed_total"] == "1")
        #expect(values["vmswarm_torrent_pieces"] == "5")
        #expect(values["vmswarm_pieces_held"] == "4")
        #expect(values["vmswarm_peers_connected"] == "3")
        #expect(values["vmswarm_peers_not_reading_total"] == "6")
        #expect(values["vmswarm_peers_banned"] == "1")
        #expect(values[#"vmswarm_connections_refused_total{reason="banned"}"#] == "7")
        #expect(values[#"vmswarm_connections_refused_total{reason="too many peers"}"#] == "2")
        #expect(values["vmswarm_download_rate_bytes_per_second"] == "2097152.2" || values["vmswarm_download_rate_bytes_per_second"] == "2097152.3")
        #expect(values["vmswarm_upload_rate_bytes_per_second"] == "0.0")
        // The name's quote, backslash and line feed are escaped, so the line stays one sample.
        #expect(text.contains(#"vmswarm_node_info{info_hash="0123456789abcdef0123456789abcdef01234567",name="disk \"a\"\\b\nc.img",role="get"} 1"#),
            "\(text)")
    }

    @Test func rateMeterMeasuresNowAndDecaysToZeroWhenIdle() {
        var meter = RateMeter(window: 5)
        #expect(meter.bytesPerSecond == 0)
        for second in 0...10 { meter.record(Int64(second) << 20, at: Double(second)) }
        #expect(abs(meter.bytesPerSecond - 1_048_576) < 1)
        // The transfer stops: within the window the rate falls to 0, where an average since start
        // (10 MiB over 16 s) would still claim 640 KiB/s.
        for second in 11...16 { meter.record(10 << 20, at: Double(second)) }
        #expect(meter.bytesPerSecond == 0)
        meter.record(5, at: 3)  // a clock going backwards is ignored
        #expect(meter.bytesPerSecond == 0)
    }

    /// The issue's seeder line: "0 peers, up 0 B … 2.13 MiB/s", a download-style average that
    /// decays while the node only seeds. A seeder shows its upload rate now, and no ETA.
    @Test func aSeederShowsItsUploadRate() {
        let total: Int64 = 256 << 20
        let reporter = ProgressReporter(label: "seeding", total: total, style: .plain)
        let line = reporter.render(done: total, elapsed: 120, ending: nil, rate: .up(3_145_728), note: "2 peers, up 700.00 MiB", counters: [:])
        #expect(line.contains("up 3.00 MiB/s"), "\(line)")
        #expect(line.contains("2 peers"), "\(line)")
        #expect(!line.contains("2.13 MiB/s"), "the average of 256 MiB over 120 s: \(line)")
        #expect(!line.contains("ETA"), "\(line)")
        let idle = reporter.render(done: total, elapsed: 120, ending: nil, rate: .up(0), note: "0 peers, up 0 B", counters: [:])
        #expect(idle.contains("up 0 B/s"), "\(idle)")
        let json = ProgressReporter(label: "seeding", total: total, style: .json)
            .render(done: total, elapsed: 120, ending: nil, rate: .up(3_145_728), note: "", counters: [:])
        #expect(json.contains(#""rate_bytes_per_s":3145728"#), "\(json)")
    }

    /// The issue's failed download: its last line said "done in 0:00".
    @Test func aFailedRunDoesNotSayDone() {
        let plain = ProgressReporter(label: "downloading", total: 1 << 20, style: .plain)
        let failed = plain.render(done: 1 << 19, elapsed: 3, ending: .failed, rate: .down(0), note: "", counters: [:])
        #expect(failed.contains("failed after 0:03"), "\(failed)")
        #expect(!failed.contains("done"), "\(failed)")
        let stopped = plain.render(done: 1 << 19, elapsed: 3, ending: .stopped, rate: .down(0), note: "", counters: [:])
        #expect(stopped.contains("stopped after 0:03") && !stopped.contains("done"), "\(stopped)")
        let done = plain.render(done: 1 << 20, elapsed: 3, ending: .done, rate: .down(0), note: "", counters: [:])
        #expect(done.contains("done in 0:03"), "\(done)")
        let terminal = ProgressReporter(label: "downloading", total: 1 << 20, style: .terminal)
            .render(done: 1 << 19, elapsed: 3, ending: .failed, rate: .down(0), note: "", counters: [:])
        #expect(terminal.contains("failed after 0:03") && terminal.hasSuffix("\n"), "\(terminal)")
        let json = ProgressReporter(label: "downloading", total: 1 << 20, style: .json)
            .render(done: 1 << 19, elapsed: 3, ending: .failed, rate: .down(0), note: "", counters: [:])
        #expect(json.contains(#""event":"failed""#), "\(json)")
    }
}
