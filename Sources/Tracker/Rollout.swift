import Metainfo
import TrackerProtocol

/// How far one peer is, from what its announces said: `left`, and the rate at which `left` fell
/// between its last two announces. The tracker knows no image sizes (an allowlist is info-hashes);
/// a peer's `left + downloaded` is the size as it can tell it (less what it resumed from disk), so the
/// largest such value seen stands for the image's size.
struct PeerProgress: Sendable, Equatable {
    var left: Int64?
    /// Bytes per second by which `left` fell between the two latest announces (0 when unknown).
    var rate: Double = 0
    var size: Int64?
    var at: Double

    init(left: Int64?, downloaded: Int64, at now: Double, previous: PeerProgress?) {
        self.left = left.map { max(0, $0) }
        at = now
        let (sum, overflow) = max(0, left ?? 0).addingReportingOverflow(max(0, downloaded))
        let seen = left == nil ? nil : (overflow ? Int64.max : sum)
        size = [seen, previous?.size].compactMap { $0 }.max()
        if let previous, let before = previous.left, let left = self.left, now > previous.at {
            // `left` grew: the peer started over (a new .part, a failed check); its rate is unknown.
            rate = left <= before ? Double(before - left) / (now - previous.at) : 0
        }
    }
}

/// A rollout of one image as the tracker sees it: what an admin watches while thousands of nodes
/// fetch it. Nodes that are done are the seeders (those that joined done included).
public struct RolloutView: Sendable, Equatable, Encodable {
    public struct Node: Sendable, Equatable, Encodable {
        public let address: String
        public let bytesLeft: Int64?
        public let bytesPerSecond: Double
        /// nil: it reported no progress between its last two announces.
        public let etaSeconds: Double?
        public let lastAnnounceSecondsAgo: Double

        enum CodingKeys: String, CodingKey {
            case address
            case bytesLeft = "bytes_left"
            case bytesPerSecond = "bytes_per_second"
            case etaSeconds = "eta_seconds"
            case lastAnnounceSecondsAgo = "last_announce_seconds_ago"
        }
    }

    public let infoHash: String
    public let done: Int
    public let inProgress: Int
    /// `completed` events: nodes that finished while the tracker watched.
    public let completed: Int
    /// The largest `left + downloaded` a peer announced (nil before any did).
    public let imageBytes: Int64?
    public let bytesLeft: Int64
    /// The rate at which the nodes in progress close in, summed.
    public let bytesPerSecond: Double
    /// Share of all nodes' bytes they hold (nil without a size).
    public let fractionDone: Double?
    /// When the last node in progress should be done, at the rates of now; nil while any of them
    /// shows no progress (a stalled node is what an admin must look at).
    public let etaSeconds: Double?
    /// The nodes in progress that will be done last (stalled ones first).
    public let slowest: [Node]

    enum CodingKeys: String, CodingKey {
        case infoHash = "info_hash"
        case done
        case inProgress = "in_progress"
        case completed
        case imageBytes = "image_bytes"
        case bytesLeft = "bytes_left"
        case bytesPerSecond = "bytes_per_second"
        case fractionDone = "fraction_done"
        case etaSeconds = "eta_seconds"
        case slowest
    }
}

extension TrackerState {
    /// The rollout of `hash`, or nil when the tracker has no peers for it. O(peers of the torrent).
    public func rollout(of hash: InfoHash, now: Double, slowest count: Int = 20) -> RolloutView? {
        guard let swarm = swarms[hash] else { return nil }
        let all = swarm.seeders.entries + swarm.leechers.entries
        let size = all.compactMap(\.progress.size).max()
        var left: Int64 = 0
        var rate = 0.0
        var nodes: [RolloutView.Node] = []
        nodes.reserveCapacity(swarm.leechers.count)
        for entry in swarm.leechers.entries {
            let progress = entry.progress
            let (sum, overflow) = left.addingReportingOverflow(progress.left ?? 0)
            left = overflow ? .max : sum
            rate += progress.rate
            let eta = progress.rate > 0 ? Double(progress.left ?? 0) / progress.rate : (progress.left == 0 ? 0 : nil)
            nodes.append(RolloutView.Node(address: entry.address.description, bytesLeft: progress.left, bytesPerSecond: progress.rate,
                etaSeconds: eta, lastAnnounceSecondsAgo: max(0, now - entry.lastSeen)))
        }
        // Stalled first (no ETA), then the longest ETA; ties by address, so the page is stable.
        nodes.sort {
            switch ($0.etaSeconds, $1.etaSeconds) {
            case (nil, nil): $0.address < $1.address
            case (nil, _): true
            case (_, nil): false
            case (let a?, let b?): a != b ? a > b : $0.address < $1.address
            }
        }
        let etas = nodes.map(\.etaSeconds)
        let total = size.map { Double($0) * Double(all.count) }
        return RolloutView(
            infoHash: hash.hex, done: swarm.seeders.count, inProgress: swarm.leechers.count, completed: swarm.completed,
            imageBytes: size, bytesLeft: left, bytesPerSecond: rate,
            fractionDone: total.flatMap { $0 > 0 ? max(0, min(1, 1 - Double(left) / $0)) : nil },
            etaSeconds: etas.contains(where: { $0 == nil }) ? nil : (etas.compactMap { $0 }.max() ?? 0),
            slowest: Array(nodes.prefix(max(0, count))))
    }
}
