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
    /// It announced before, with `left`, at an earlier time: `rate` is measured, not unknown.
    /// With announce intervals of many minutes most nodes of a rollout announce once before they
    /// finish; those are waiting for their first report, not stalled.
    var measured = false

    init(left: Int64?, downloaded: Int64, at now: Double, previous: PeerProgress?) {
        self.left = left.map { max(0, $0) }
        at = now
        let (sum, overflow) = max(0, left ?? 0).addingReportingOverflow(max(0, downloaded))
        let seen = left == nil ? nil : (overflow ? Int64.max : sum)
        size = [seen, previous?.size].compactMap { $0 }.max()
        if let previous, let before = previous.left, let left = self.left, now > previous.at {
            // `left` grew: the peer started over (a new .part, a failed check); its rate is unknown.
            rate = left <= before ? Double(before - left) / (now - previous.at) : 0
            measured = left <= before
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
        /// nil: it reported no progress between its last two announces, or announced once only.
        public let etaSeconds: Double?
        public let lastAnnounceSecondsAgo: Double
        /// It has announced only once since it started (its rate is not known yet).
        public var waiting = false

        public init(address: String, bytesLeft: Int64?, bytesPerSecond: Double, etaSeconds: Double?, lastAnnounceSecondsAgo: Double,
                    waiting: Bool = false) {
            self.address = address
            self.bytesLeft = bytesLeft
            self.bytesPerSecond = bytesPerSecond
            self.etaSeconds = etaSeconds
            self.lastAnnounceSecondsAgo = lastAnnounceSecondsAgo
            self.waiting = waiting
        }

        /// Stalled: it announced again and was no further.
        public var stalled: Bool { etaSeconds == nil && !waiting }

        enum CodingKeys: String, CodingKey {
            case waiting
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
    /// When the last node in progress should be done, at the rates of now: each measured node's
    /// own ETA, and for the nodes not measured yet, how long the rollout takes to finish that many
    /// at its recent completion rate. nil while a node is stalled (what an admin must look at), or
    /// while nodes wait for their first report and none has completed yet.
    public let etaSeconds: Double?
    /// Nodes in progress that have announced only once.
    public var waiting = 0
    /// Nodes in progress that announced again no further.
    public var stalled = 0
    /// `completed` events per second over the recent ones (nil before the first).
    public var completionsPerSecond: Double?
    /// The nodes in progress that will be done last (stalled ones first, then those not measured).
    public let slowest: [Node]

    public init(infoHash: String, done: Int, inProgress: Int, completed: Int, imageBytes: Int64?, bytesLeft: Int64, bytesPerSecond: Double,
                fractionDone: Double?, etaSeconds: Double?, waiting: Int = 0, stalled: Int = 0, completionsPerSecond: Double? = nil, slowest: [Node]) {
        self.infoHash = infoHash
        self.done = done
        self.inProgress = inProgress
        self.completed = completed
        self.imageBytes = imageBytes
        self.bytesLeft = bytesLeft
        self.bytesPerSecond = bytesPerSecond
        self.fractionDone = fractionDone
        self.etaSeconds = etaSeconds
        self.waiting = waiting
        self.stalled = stalled
        self.completionsPerSecond = completionsPerSecond
        self.slowest = slowest
    }

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
        case waiting
        case stalled
        case completionsPerSecond = "completions_per_second"
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
                etaSeconds: eta, lastAnnounceSecondsAgo: max(0, now - entry.lastSeen), waiting: eta == nil && !progress.measured))
        }
        // Stalled first, then those not measured yet, then the longest ETA; ties by address, so
        // the page is stable.
        func rank(_ node: RolloutView.Node) -> Int { node.stalled ? 0 : node.waiting ? 1 : 2 }
        nodes.sort {
            if rank($0) != rank($1) { return rank($0) < rank($1) }
            switch ($0.etaSeconds, $1.etaSeconds) {
            case (let a?, let b?) where a != b: return a > b
            default: return $0.address < $1.address
            }
        }
        let stalled = nodes.count { $0.stalled }, waiting = nodes.count { $0.waiting }
        let perSecond = swarm.completionRate(now: now)
        let measured = nodes.compactMap(\.etaSeconds).max() ?? 0
        let eta: Double? = stalled > 0 ? nil
            : waiting == 0 ? measured
            : perSecond.map { max(measured, Double(waiting) / $0) }
        let total = size.map { Double($0) * Double(all.count) }
        return RolloutView(
            infoHash: hash.hex, done: swarm.seeders.count, inProgress: swarm.leechers.count, completed: swarm.completed,
            imageBytes: size, bytesLeft: left, bytesPerSecond: rate,
            fractionDone: total.flatMap { $0 > 0 ? max(0, min(1, 1 - Double(left) / $0)) : nil },
            etaSeconds: eta, waiting: waiting, stalled: stalled, completionsPerSecond: perSecond,
            slowest: Array(nodes.prefix(max(0, count))))
    }
}
