import Metainfo
import TrackerProtocol

/// Limits and timings of a tracker.
public struct TrackerConfiguration: Sendable {
    /// Seconds between announces that clients are told.
    public var interval = 1800
    /// Seconds a client must wait at least between announces.
    public var minInterval = 60
    /// A peer that has not announced for this long is forgotten. Default: two intervals and a margin.
    public var peerTimeout: Double?
    public var defaultNumWant = 50
    public var maxNumWant = 200
    public var maxPeersPerTorrent = 50_000
    public var maxTorrents = 100_000
    /// Honour the `ip` parameter (off: a client could otherwise point a swarm at any host).
    public var acceptIPParameter = false
    /// nil: any torrent is tracked (open mode). Otherwise only these.
    public var allowlist: Set<InfoHash>?

    public init() {}

    var effectivePeerTimeout: Double { peerTimeout ?? Double(interval * 2 + 120) }
}

/// What happened on an announce that an operator should hear about.
public enum TrackerNotice: Equatable, Sendable {
    case torrentLimitReached(Int)
    case peerLimitReached(InfoHash, Int)
}

/// The tracker's bookkeeping as a pure value: announces and scrapes in, answers out. Time is passed
/// in as seconds on any monotonic clock and randomness comes from a seeded generator, so every
/// behaviour (selection, expiry, limits) is tested without sockets or sleeping.
public struct TrackerState: Sendable {
    public private(set) var configuration: TrackerConfiguration
    private var swarms: [InfoHash: Swarm] = [:]
    private var random: SeededRandom
    public private(set) var notices: [TrackerNotice] = []

    public init(configuration: TrackerConfiguration, seed: UInt64) {
        self.configuration = configuration
        self.random = SeededRandom(seed: seed)
    }

    // MARK: Announce

    public mutating func announce(
        _ request: AnnounceRequest, from source: PeerAddress, now: Double
    ) throws(TrackerRequestError) -> AnnounceResponse {
        if let allowlist = configuration.allowlist, !allowlist.contains(request.infoHash) {
            throw .unknownTorrent
        }
        var address = PeerAddress(ip: source.ip, port: request.port) ?? source
        if configuration.acceptIPParameter, let claimed = request.ip,
            let parsed = PeerAddress(host: claimed, port: request.port)
        {
            address = parsed
        }
        let key = PeerKey(request.peerID)

        if request.event == .stopped {
            swarms[request.infoHash]?.remove(key)
            if swarms[request.infoHash]?.isEmpty == true { swarms[request.infoHash] = nil }
            return AnnounceResponse(
                interval: configuration.interval, minInterval: configuration.minInterval,
                complete: swarms[request.infoHash]?.seeders.count ?? 0,
                incomplete: swarms[request.infoHash]?.leechers.count ?? 0)
        }

        if swarms[request.infoHash] == nil {
            guard swarms.count < configuration.maxTorrents else {
                if notices.last != .torrentLimitReached(configuration.maxTorrents) {
                    notices.append(.torrentLimitReached(configuration.maxTorrents))
                }
                throw .trackerFull
            }
            swarms[request.infoHash] = Swarm()
        }
        let entry = PeerEntry(key: key, peerID: request.peerID, address: address, lastSeen: now)
        // numwant: absent or negative (clients send -1) means the default; more than the cap, the cap.
        let requested = request.numWant.flatMap { $0 < 0 ? nil : $0 } ?? configuration.defaultNumWant
        let wanted = min(requested, configuration.maxNumWant)
        let limit = configuration.maxPeersPerTorrent
        // Dictionary's defaulted subscript changes the swarm in place, never copying its tables.
        let stored = swarms[request.infoHash, default: Swarm()].upsert(
            entry, seeding: request.isSeeder, completed: request.event == .completed, limit: limit)
        if !stored { notices.append(.peerLimitReached(request.infoHash, limit)) }
        let swarm = swarms[request.infoHash, default: Swarm()]
        return AnnounceResponse(
            interval: configuration.interval, minInterval: configuration.minInterval,
            complete: swarm.seeders.count, incomplete: swarm.leechers.count,
            peers: swarm.select(count: wanted, for: key, requesterIsSeeder: request.isSeeder, random: &random))
    }

    // MARK: Scrape

    /// Counts for the known torrents among `hashes`; unknown ones are left out.
    public func scrape(_ request: ScrapeRequest) -> ScrapeResponse {
        var files: [InfoHash: ScrapeStats] = [:]
        for hash in request.infoHashes {
            if let swarm = swarms[hash] {
                files[hash] = ScrapeStats(complete: swarm.seeders.count, downloaded: swarm.completed, incomplete: swarm.leechers.count)
            } else if configuration.allowlist?.contains(hash) == true {
                files[hash] = ScrapeStats(complete: 0, downloaded: 0, incomplete: 0)
            }
        }
        return ScrapeResponse(files: files)
    }

    // MARK: Housekeeping

    /// Forgets peers that stopped announcing, and torrents left without peers (so a flood of
    /// one-off info-hashes cannot hold the torrent limit for long). Returns how many
    /// peers were dropped.
    @discardableResult
    public mutating func expire(now: Double) -> Int {
        let cutoff = now - configuration.effectivePeerTimeout
        var dropped = 0
        for hash in Array(swarms.keys) {
            guard var swarm = swarms.removeValue(forKey: hash) else { continue }
            dropped += swarm.removeStale(before: cutoff)
            if !swarm.isEmpty { swarms[hash] = swarm }
        }
        return dropped
    }

    /// Replaces the allowlist (nil: open). Torrents no longer allowed are dropped; the rest keep
    /// their peers.
    public mutating func setAllowlist(_ allowlist: Set<InfoHash>?) {
        configuration.allowlist = allowlist
        if let allowlist { swarms = swarms.filter { allowlist.contains($0.key) } }
    }

    /// Takes the notices gathered since the last call.
    public mutating func takeNotices() -> [TrackerNotice] {
        defer { notices = [] }
        return notices
    }

    // MARK: Figures

    public struct TorrentSummary: Sendable, Equatable {
        public let infoHash: InfoHash
        public let seeders: Int
        public let leechers: Int
        public let completed: Int
    }

    public var torrentCount: Int { swarms.count }
    public var seederCount: Int { swarms.values.reduce(0) { $0 + $1.seeders.count } }
    public var leecherCount: Int { swarms.values.reduce(0) { $0 + $1.leechers.count } }
    public var completedCount: Int { swarms.values.reduce(0) { $0 + $1.completed } }

    /// The largest swarms first, at most `limit` of them.
    public func largestTorrents(limit: Int) -> [TorrentSummary] {
        swarms.map { TorrentSummary(infoHash: $0.key, seeders: $0.value.seeders.count, leechers: $0.value.leechers.count, completed: $0.value.completed) }
            .sorted { ($0.seeders + $0.leechers, $0.infoHash.hex) > ($1.seeders + $1.leechers, $1.infoHash.hex) }
            .prefix(limit).map { $0 }
    }
}

/// A peer id packed into integers: cheap to hash and compare, no heap allocation.
struct PeerKey: Hashable, Sendable {
    let a: UInt64
    let b: UInt64
    let c: UInt32

    init(_ id: PeerID) {
        let bytes = id.bytes
        func load(_ range: Range<Int>) -> UInt64 { bytes[range].reduce(0) { $0 << 8 | UInt64($1) } }
        a = load(0..<8)
        b = load(8..<16)
        c = UInt32(load(16..<20))
    }
}

struct PeerEntry: Sendable {
    let key: PeerKey
    let peerID: PeerID
    var address: PeerAddress
    var lastSeen: Double
}

/// Peers in an array for O(1) random picks, with an index for O(1) lookup and swap-removal.
struct PeerTable: Sendable {
    private(set) var entries: [PeerEntry] = []
    private var positions: [PeerKey: Int] = [:]

    var count: Int { entries.count }

    func contains(_ key: PeerKey) -> Bool { positions[key] != nil }

    mutating func upsert(_ entry: PeerEntry) {
        if let position = positions[entry.key] {
            entries[position] = entry
        } else {
            positions[entry.key] = entries.count
            entries.append(entry)
        }
    }

    @discardableResult
    mutating func remove(_ key: PeerKey) -> Bool {
        guard let position = positions.removeValue(forKey: key) else { return false }
        let last = entries.removeLast()
        if position < entries.count {
            entries[position] = last
            positions[last.key] = position
        }
        return true
    }

    mutating func removeStale(before cutoff: Double) -> Int {
        let stale = entries.filter { $0.lastSeen < cutoff }.map(\.key)
        for key in stale { remove(key) }
        return stale.count
    }

    /// Up to `count` distinct random entries, never `excluded`.
    func sample(_ count: Int, excluding excluded: PeerKey, random: inout SeededRandom) -> [PeerEntry] {
        let available = entries.count - (positions[excluded] != nil ? 1 : 0)
        guard count > 0, available > 0 else { return [] }
        if count >= available { return entries.filter { $0.key != excluded }.shuffled(using: &random) }
        // Few wanted from many: distinct random positions (count is at most a few hundred).
        var chosen = Set<Int>()
        var result: [PeerEntry] = []
        while result.count < count {
            let position = Int.random(in: 0..<entries.count, using: &random)
            guard entries[position].key != excluded, chosen.insert(position).inserted else { continue }
            result.append(entries[position])
        }
        return result
    }
}

struct Swarm: Sendable {
    var seeders = PeerTable()
    var leechers = PeerTable()
    /// `completed` events seen (the scrape's `downloaded`).
    var completed = 0

    var isEmpty: Bool { seeders.count == 0 && leechers.count == 0 }

    /// Stores or refreshes a peer; returns false when the swarm is full and the peer is new.
    mutating func upsert(_ entry: PeerEntry, seeding: Bool, completed completedEvent: Bool, limit: Int) -> Bool {
        let known = seeders.contains(entry.key) || leechers.contains(entry.key)
        if !known && seeders.count + leechers.count >= limit { return false }
        if completedEvent && !seeders.contains(entry.key) { completed += 1 }
        if seeding {
            leechers.remove(entry.key)
            seeders.upsert(entry)
        } else {
            seeders.remove(entry.key)
            leechers.upsert(entry)
        }
        return true
    }

    mutating func remove(_ key: PeerKey) {
        if !seeders.remove(key) { leechers.remove(key) }
    }

    mutating func removeStale(before cutoff: Double) -> Int {
        seeders.removeStale(before: cutoff) + leechers.removeStale(before: cutoff)
    }

    /// Seeders first for a leecher (they have everything), then leechers; a seeder gets leechers only.
    func select(count: Int, for requester: PeerKey, requesterIsSeeder: Bool, random: inout SeededRandom) -> [AnnouncedPeer] {
        var picked = requesterIsSeeder ? [] : seeders.sample(count, excluding: requester, random: &random)
        picked += leechers.sample(count - picked.count, excluding: requester, random: &random)
        return picked.map { AnnouncedPeer(address: $0.address, peerID: $0.peerID) }
    }
}
