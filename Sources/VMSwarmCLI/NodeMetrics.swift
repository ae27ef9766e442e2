import Foundation
import SwarmRuntime

/// Bytes per second over the last few seconds, from samples of a running total. A swarm node's
/// rate is what it does now; an average since start decays while the node idles or only seeds.
struct RateMeter: Sendable {
    /// How far back the rate looks: long enough to smooth over choke rounds and 250 ms polls,
    /// short enough that a stalled transfer shows 0 within seconds.
    let window: Double
    private var samples: [(time: Double, total: Int64)] = []

    init(window: Double = 5) { self.window = window }

    /// Records the total at `time` (seconds, any origin, not decreasing).
    mutating func record(_ total: Int64, at time: Double) {
        if let last = samples.last, time < last.time { return }  // a clock step backwards: skip it
        samples.append((time, total))
        // Keep one sample at or before the window's start, so the rate spans the whole window.
        while samples.count > 2, samples[1].time <= time - window { samples.removeFirst() }
    }

    /// The rate over the samples held; 0 with fewer than two or no time between them.
    var bytesPerSecond: Double {
        guard let first = samples.first, let last = samples.last, last.time > first.time else { return 0 }
        return Double(max(0, last.total - first.total)) / (last.time - first.time)
    }
}

/// What a seeder or downloader exposes at `/metrics`: a snapshot of the runtime's counters and
/// the measured rates, rendered in the Prometheus text exposition format 0.0.4 by a pure function.
struct NodeMetrics: Sendable, Equatable {
    /// `seed` or `get`.
    var role: String
    var infoHash: String
    var name: String
    /// Piece data received this run, by source. Peer bytes count every block received;
    /// `wastedBytes` is the part thrown away. Web seed and booster bytes count whole pieces that
    /// verified; cache bytes are the pieces taken, each verified, from what the node already held
    /// (its content store, or an earlier version given with `--reuse`) before the swarm was joined.
    var downloadedPeerBytes: Int64 = 0
    var downloadedCacheBytes: Int64 = 0
    var downloadedMulticastBytes: Int64 = 0
    var downloadedWebSeedBytes: Int64 = 0
    /// Web seeds in use (not dropped) and failures of theirs by kind (`fetch`, `hash`).
    var webSeedsUsable = 0
    var webSeedFailures: [String: Int] = [:]
    var uploadedBytes: Int64 = 0
    var wastedBytes: Int64 = 0
    var piecesVerified = 0
    var piecesFailed = 0
    var pieceCount = 0
    var piecesHeld = 0
    var sizeBytes: Int64 = 0
    var heldBytes: Int64 = 0
    var peersConnected = 0
    var peersBanned = 0
    /// Times a peer was found not reading what waited for it, and lost its upload slot.
    var stallsFound = 0
    /// Connections refused or closed by reason (`ConnectionRefusal`'s raw values).
    var refusals: [String: Int] = [:]
    var downloadRate: Double = 0
    var uploadRate: Double = 0

    init(role: String, infoHash: String, name: String) {
        self.role = role
        self.infoHash = infoHash
        self.name = name
    }

    init(role: String, infoHash: String, name: String, status: SwarmRuntime.Status, downloadRate: Double, uploadRate: Double) {
        self.init(role: role, infoHash: infoHash, name: name)
        // The engine counts every block received from a peer, before verification; wasted bytes
        // (failed hashes, late duplicates) are exposed beside it so verified peer bytes are the
        // difference. Booster pieces never pass through the engine's block counter.
        downloadedPeerBytes = status.downloaded
        downloadedMulticastBytes = status.multicastBytes
        downloadedWebSeedBytes = status.webSeedBytes
        webSeedsUsable = status.webSeedsUsable
        if status.webSeedsConfigured > 0 {
            webSeedFailures = ["fetch": status.webSeedFetchFailures, "hash": status.webSeedHashFailures]
        }
        uploadedBytes = status.uploaded
        wastedBytes = status.wasted
        piecesVerified = status.piecesVerified
        piecesFailed = status.hashFailures
        pieceCount = status.pieceCount
        piecesHeld = status.piecesHave
        sizeBytes = status.totalLength
        heldBytes = status.bytesHave
        peersConnected = status.peers
        peersBanned = status.peersBanned
        stallsFound = status.stallsFound
        refusals = Dictionary(uniqueKeysWithValues: status.refusals.map { ($0.key.rawValue, $0.value) })
        self.downloadRate = downloadRate
        self.uploadRate = uploadRate
    }

    /// The exposition text: HELP and TYPE for every family, `_total` counters, base units, and
    /// label values escaped as the format requires (a torrent's name is anyone's bytes).
    var prometheusText: String {
        var text = PrometheusText()
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: String)]) {
            text.family(name, type, help, samples)
        }
        func one(_ value: some BinaryInteger) -> [(labels: [(String, String)], value: String)] { [([], "\(value)")] }
        func rate(_ value: Double) -> [(labels: [(String, String)], value: String)] {
            [([], value.isFinite ? String(format: "%.1f", value) : "0")]
        }
        family("vmswarm_node_info", "gauge", "The torrent this node serves or fetches, and its role; always 1.",
            [([("info_hash", infoHash), ("name", name), ("role", role)], "1")])
        family("vmswarm_downloaded_bytes_total", "counter", "Piece data received by this run, by source.",
            [([("source", "peer")], "\(downloadedPeerBytes)"), ([("source", "multicast")], "\(downloadedMulticastBytes)"),
             ([("source", "web_seed")], "\(downloadedWebSeedBytes)"), ([("source", "cache")], "\(downloadedCacheBytes)")])
        family("vmswarm_uploaded_bytes_total", "counter", "Piece data sent to peers by this run.", one(uploadedBytes))
        family("vmswarm_wasted_bytes_total", "counter", "Received bytes thrown away: failed hashes and late duplicates.", one(wastedBytes))
        family("vmswarm_pieces_verified_total", "counter", "Pieces that passed their hash in this run.", one(piecesVerified))
        family("vmswarm_pieces_failed_total", "counter", "Pieces that failed their hash in this run.", one(piecesFailed))
        family("vmswarm_torrent_pieces", "gauge", "Pieces in the torrent.", one(pieceCount))
        family("vmswarm_pieces_held", "gauge", "Verified pieces this node holds.", one(piecesHeld))
        family("vmswarm_torrent_size_bytes", "gauge", "Length of the torrent's data.", one(sizeBytes))
        family("vmswarm_held_bytes", "gauge", "Bytes of the verified pieces this node holds.", one(heldBytes))
        family("vmswarm_peers_connected", "gauge", "Peer connections with a completed handshake.", one(peersConnected))
        family("vmswarm_peers_banned", "gauge", "Peer identities (address and id) banned for bad data.", one(peersBanned))
        family("vmswarm_peers_not_reading_total", "counter", "Times a peer read nothing of what waited for it and lost its upload slot.",
            one(stallsFound))
        family("vmswarm_connections_refused_total", "counter", "Connections refused or closed by the node, by reason.",
            refusals.sorted { $0.key < $1.key }.map { ([("reason", $0.key)], "\($0.value)") })
        family("vmswarm_web_seeds_usable", "gauge", "Web seeds in use (not dropped after hash failures).", one(webSeedsUsable))
        family("vmswarm_web_seed_failures_total", "counter", "Failed web seed fetches and web seed pieces that failed their hash, by kind.",
            webSeedFailures.sorted { $0.key < $1.key }.map { ([("kind", $0.key)], "\($0.value)") })
        family("vmswarm_download_rate_bytes_per_second", "gauge", "Download rate over the last 5 seconds.", rate(downloadRate))
        family("vmswarm_upload_rate_bytes_per_second", "gauge", "Upload rate over the last 5 seconds.", rate(uploadRate))
        return text.text
    }
}

/// The Prometheus text exposition format 0.0.4, family by family.
struct PrometheusText {
    private(set) var text = ""

    /// HELP and TYPE, then one line per sample.
    mutating func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: String)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for sample in samples {
            let labels = sample.labels.isEmpty ? ""
                : "{" + sample.labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            text += "\(name)\(labels) \(sample.value)\n"
        }
    }

    /// Label values escape backslash, double quote and line feed (exposition format 0.0.4).
    static func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}

/// The latest rates, measured by the progress loop and read by the metrics server (any thread).
final class RateBoard: @unchecked Sendable {
    private let lock = NSLock()
    private var down = RateMeter()
    private var up = RateMeter()

    /// Records the runtime's running totals; returns the current (down, up) rates.
    @discardableResult
    func record(downloaded: Int64, uploaded: Int64, at time: Double) -> (down: Double, up: Double) {
        lock.withLock {
            down.record(downloaded, at: time)
            up.record(uploaded, at: time)
            return (down.bytesPerSecond, up.bytesPerSecond)
        }
    }

    var rates: (down: Double, up: Double) { lock.withLock { (down.bytesPerSecond, up.bytesPerSecond) } }
}
