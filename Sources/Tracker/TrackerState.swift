import Metainfo
import Topology
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
    /// Most peers of one torrent announced from one source: an IPv4 address, or an IPv6 /64 (the
    /// least a site is given, so one host owns all of it). Without it one client fills a torrent's
    /// peer slots with made-up peer ids and eclipses it. nil: no cap.
    public var maxPeersPerSource: Int? = 16
    /// Loopback sources (127.0.0.0/8, ::1) are not capped: only a process on the tracker's own host
    /// can announce from them, and tests and single-host demos put every peer there.
    public var capLoopback = false
    public var maxTorrents = 100_000
    /// Honour the `ip` parameter (off: a client could otherwise point a swarm at any host).
    public var acceptIPParameter = false
    /// nil: any torrent is tracked (open mode). Otherwise only these.
    public var allowlist: Set<InfoHash>?
    /// Children per node in a tree-mode swarm (docs/tree.md): 1 makes chains, which move an image
    /// fastest between nodes of equal upload rate.
    public var treeFanOut = 1
    /// Connections a rack's head takes the image over from the rack above (`RackedTree.parents`):
    /// its parent there and the nodes next below it.
    public var rackEntryParents = 1
    /// Racks (docs/racks.md): a node that names no rack (`rack=`) is counted in the rack of its
    /// IPv4 address's subnet of this many bits (IPv6: its /64). 0 puts every such node in one rack.
    public var rackPrefix = 24
    /// Seconds a rack member may go without progress (no byte downloaded, `left` not falling) while
    /// the swarm has a seeder, before it counts as cut off by its rack's gateway
    /// (`RackIndex`): the gateway, if it has held the role this long too, is then replaced by that
    /// member, and its source may not hold the role again in that rack. Members that have not yet
    /// shown progress are told to announce again after this many seconds (not `interval`), so a
    /// gateway that never serves is found within about two of them. At least `minInterval`.
    public var gatewayPatience = 120

    public init() {}

    /// The rack a node is counted in: the one it named, else its subnet.
    func rack(named name: String?, address: PeerAddress) -> String {
        if let name { return name }
        if !address.isIPv4 { return PeerAddress.subnetName(address.ip, prefix: 64) }
        return rackPrefix == 0 ? "" : PeerAddress.subnetName(address.ip, prefix: rackPrefix)
    }

    var effectivePeerTimeout: Double { peerTimeout ?? Double(interval * 2 + 120) }
}

/// What happened on an announce that an operator should hear about.
public enum TrackerNotice: Equatable, Sendable {
    case torrentLimitReached(Int)
    case peerLimitReached(InfoHash, Int)
    /// A source announced more peers of this torrent than `maxPeersPerSource`.
    case sourceLimitReached(InfoHash, source: String, Int)
}

/// What an announce did to the peer table (counted by the service).
public enum AnnounceOutcome: String, Equatable, Sendable {
    /// A new peer was stored, or a known one refreshed by its owner.
    case stored
    /// The owner's `stopped`: the peer was removed (or was not there).
    case removed
    /// The peer id is held by an entry from another address, or with another BEP 7 `key`: nothing
    /// changed. Answered as usual, so a squatter learns nothing.
    case notOwner = "not_owner"
    /// The source already has `maxPeersPerSource` peers in this torrent: the new one is not stored.
    case sourceLimit = "source_limit"
    /// The torrent has `maxPeersPerTorrent` peers: the new one is not stored.
    case torrentFull = "torrent_full"
}

/// The tracker's bookkeeping as a pure value: announces and scrapes in, answers out. Time is passed
/// in as seconds on any monotonic clock and randomness comes from a seeded generator, so every
/// behaviour (selection, expiry, limits) is tested without sockets or sleeping.
public struct TrackerState: Sendable {
    public private(set) var configuration: TrackerConfiguration
    private(set) var swarms: [InfoHash: Swarm] = [:]
    private var random: SeededRandom
    public private(set) var notices: [TrackerNotice] = []
    /// What the latest announce did.
    public private(set) var lastOutcome: AnnounceOutcome = .stored
    /// Totals over all torrents, kept as peers come and go, so figures never walk every torrent.
    private var totals = Totals()

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
        let owner = Owner(source: source, key: request.key)

        if request.event == .stopped {
            let outcome = change(request.infoHash) { $0.remove(key, by: owner, now: now) }
            lastOutcome = outcome ?? .removed
            if let swarm = swarms[request.infoHash], swarm.isEmpty {
                totals.add(Totals(), minus: Totals(completed: swarm.completed))
                swarms[request.infoHash] = nil
            }
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
        let known = swarms[request.infoHash]?.entry(key)
        let progress = PeerProgress(left: request.left, downloaded: request.downloaded, at: now, previous: known?.progress)
        let rack = configuration.rack(named: request.rack, address: address)
        var entry = PeerEntry(key: key, peerID: request.peerID, address: address, lastSeen: now, owner: owner, progress: progress, rack: rack)
        entry.noteProgress(downloaded: request.downloaded, since: known, now: now)
        // numwant: absent or negative (clients send -1) means the default; more than the cap, the cap.
        let requested = request.numWant.flatMap { $0 < 0 ? nil : $0 } ?? configuration.defaultNumWant
        let wanted = min(requested, configuration.maxNumWant)
        let limits = Swarm.Limits(
            torrent: configuration.maxPeersPerTorrent,
            source: owner.isLoopback && !configuration.capLoopback ? nil : configuration.maxPeersPerSource)
        let outcome = change(request.infoHash) {
            $0.upsert(entry, seeding: request.isSeeder, completed: request.event == .completed, limits: limits)
        } ?? .stored
        lastOutcome = outcome
        switch outcome {
        case .torrentFull: notices.append(.peerLimitReached(request.infoHash, limits.torrent))
        case .sourceLimit:
            notices.append(.sourceLimitReached(request.infoHash, source: source.host, limits.source ?? 0))
        case .stored, .removed, .notOwner: break
        }
        // A tree-mode node is given its parents only, in `peers` (for any client) and in `tree`.
        let fanOut = configuration.treeFanOut, entryParents = configuration.rackEntryParents
        let parents: [AnnouncedPeer]? = request.tree && outcome == .stored
            ? change(request.infoHash) {
                $0.place(key, rack: rack, complete: request.isSeeder, lostParent: request.lostParent.map(PeerKey.init), fanOut: fanOut,
                    rackEntryParents: entryParents)
            } : nil
        // Mesh in a swarm that spans racks: a member cut off by its gateway takes the role over
        // (`Swarm.replaceGatewayIfCutOff`); one that has shown no progress yet comes back soon.
        let patience = Double(max(configuration.gatewayPatience, configuration.minInterval))
        var interval = configuration.interval
        if !request.tree, outcome == .stored, !request.isSeeder {
            let waiting = change(request.infoHash) { $0.replaceGatewayIfCutOff(key, now: now, patience: patience) } ?? false
            if waiting { interval = min(interval, Int(patience)) }
        }
        let swarm = swarms[request.infoHash, default: Swarm()]
        var response = AnnounceResponse(
            interval: interval, minInterval: configuration.minInterval,
            complete: swarm.seeders.count, incomplete: swarm.leechers.count,
            peers: parents ?? swarm.select(count: wanted, for: key, at: address, rack: rack, requesterIsSeeder: request.isSeeder, random: &random))
        response.treeParents = parents
        // A node is told its rack (and how many the swarm spans) whenever the tracker counts
        // racks, so the first in a rack, often the seed, knows its side of the uplink before the
        // second rack comes: it does not announce again for an interval.
        if !rack.isEmpty {
            response.rack = rack
            response.racks = swarm.racks.count
        }
        return response
    }

    /// Changes one torrent's swarm in place (if it exists) and keeps the totals true.
    private mutating func change<T>(_ hash: InfoHash, _ body: (inout Swarm) -> T) -> T? {
        guard swarms[hash] != nil else { return nil }
        let before = Totals(swarms[hash])
        // Dictionary's defaulted subscript changes the swarm in place, never copying its tables.
        let result = body(&swarms[hash, default: Swarm()])
        totals.add(Totals(swarms[hash]), minus: before)
        return result
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
            let before = Totals(swarm)
            dropped += swarm.removeStale(before: cutoff, now: now)
            totals.add(Totals(swarm), minus: before)
            if !swarm.isEmpty { swarms[hash] = swarm } else { totals.add(Totals(), minus: Totals(completed: swarm.completed)) }
        }
        return dropped
    }

    /// Replaces the allowlist (nil: open). Torrents no longer allowed are dropped; the rest keep
    /// their peers.
    public mutating func setAllowlist(_ allowlist: Set<InfoHash>?) {
        configuration.allowlist = allowlist
        if let allowlist {
            swarms = swarms.filter { allowlist.contains($0.key) }
            totals = swarms.values.reduce(into: Totals()) { $0.add(Totals($1), minus: Totals()) }
        }
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
    public var seederCount: Int { totals.seeders }
    public var leecherCount: Int { totals.leechers }
    /// `completed` events of the torrents still tracked.
    public var completedCount: Int { totals.completed }

    /// One line per torrent, unsorted: a plain copy, cheap enough to take under the service's lock,
    /// so the sort of `largestTorrents` runs outside it and never holds announces up.
    public func torrentSummaries() -> [TorrentSummary] {
        var summaries: [TorrentSummary] = []
        summaries.reserveCapacity(swarms.count)
        for (hash, swarm) in swarms {
            summaries.append(TorrentSummary(infoHash: hash, seeders: swarm.seeders.count, leechers: swarm.leechers.count, completed: swarm.completed))
        }
        return summaries
    }

    /// The largest swarms first, at most `limit` of them (ties by info-hash bytes).
    public static func largest(_ summaries: [TorrentSummary], limit: Int) -> [TorrentSummary] {
        guard limit > 0 else { return [] }
        return summaries.sorted {
            let (a, b) = ($0.seeders + $0.leechers, $1.seeders + $1.leechers)
            return a != b ? a > b : $0.infoHash.bytes.lexicographicallyPrecedes($1.infoHash.bytes)
        }.prefix(limit).map { $0 }
    }

    /// The largest swarms first, at most `limit` of them.
    public func largestTorrents(limit: Int) -> [TorrentSummary] { Self.largest(torrentSummaries(), limit: limit) }
}

/// Seeders, leechers and completions summed over torrents.
struct Totals: Sendable, Equatable {
    var seeders = 0
    var leechers = 0
    var completed = 0

    init(seeders: Int = 0, leechers: Int = 0, completed: Int = 0) {
        self.seeders = seeders
        self.leechers = leechers
        self.completed = completed
    }

    init(_ swarm: Swarm?) {
        self.init(seeders: swarm?.seeders.count ?? 0, leechers: swarm?.leechers.count ?? 0, completed: swarm?.completed ?? 0)
    }

    mutating func add(_ after: Totals, minus before: Totals) {
        seeders += after.seeders - before.seeders
        leechers += after.leechers - before.leechers
        completed += after.completed - before.completed
    }
}

/// Who announced a peer: the connection's IP address (never the `ip` parameter) and the BEP 7
/// `key` it sent, if any. Only the same owner may change or remove the entry.
struct Owner: Sendable, Equatable {
    /// The address as two integers (an IPv4 address in `low`, with `high` marking it as IPv4).
    let high: UInt64
    let low: UInt64
    let key: String?

    init(source: PeerAddress, key: String?) {
        func load(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
        if source.isIPv4 {
            high = .max
            low = load(source.ip[0..<4])
        } else {
            high = load(source.ip[0..<8])
            low = load(source.ip[8..<16])
        }
        self.key = key
    }

    /// The unit a per-source cap counts: an IPv4 address, or an IPv6 /64.
    var group: SourceGroup { SourceGroup(high: high, low: high == .max ? low : 0) }

    var isLoopback: Bool { high == .max ? low >> 24 == 127 : (high == 0 && low == 1) }

    /// Same address, and the same key when the entry was made with one.
    func mayChange(_ entry: Owner) -> Bool {
        high == entry.high && low == entry.low && (entry.key == nil || entry.key == key)
    }
}

struct SourceGroup: Hashable, Sendable {
    let high: UInt64
    let low: UInt64
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
    var owner: Owner
    /// What its announces said of how far it is (the rollout view).
    var progress: PeerProgress
    /// The rack it is counted in (`TrackerConfiguration.rack(named:address:)`).
    var rack: String = ""
    /// `downloaded` of its latest announce.
    var downloaded: Int64 = 0
    /// When it last reported progress (more bytes downloaded, or less left), or first announced.
    var progressedAt: Double = 0
    /// It has reported progress since it first announced.
    var hasProgressed = false
    /// Its `completed` event was counted (once per entry: a client that repeats it counts once).
    var completionCounted = false

    /// Carries the progress record over from the entry this announce refreshes.
    mutating func noteProgress(downloaded: Int64, since known: PeerEntry?, now: Double) {
        self.downloaded = downloaded
        guard let known else {
            progressedAt = now
            return
        }
        let fewerLeft = (progress.left ?? .max) < (known.progress.left ?? .max)
        if downloaded > known.downloaded || fewerLeft {
            progressedAt = now
            hasProgressed = true
        } else {
            progressedAt = known.progressedAt
            hasProgressed = known.hasProgressed
        }
    }
}

/// Who is in which rack, for answers that cross racks' uplinks as little as they can: each rack's
/// seeders and leechers, and its gateway, the one member that is given peers in other racks (the
/// first to come, until it leaves). Everyone else in a rack is given peers of the rack only, so
/// the rack fetches the image from outside about once, through its gateway.
///
/// The role is not a prize one address can hold (issue 15): the first to come is whoever announces
/// first, from the rack's subnet or naming the rack from anywhere, and a gateway that never serves
/// would leave its rack no route out. So a member that reports no progress for the tracker's
/// `gatewayPatience` takes the role over (`demote`), and the source (IPv4 address, IPv6 /64) of the
/// gateway it replaced is not chosen again in this rack while a member from another source is
/// there. That costs nothing while gateways serve: one importer per rack, as before.
struct RackIndex: Sendable {
    private(set) var seeders: [String: PeerTable] = [:]
    private(set) var leechers: [String: PeerTable] = [:]
    private(set) var gateways: [String: PeerKey] = [:]
    /// When the rack's gateway took the role.
    private(set) var gatewaySince: [String: Double] = [:]
    /// Sources whose gateway was replaced for cutting its rack off, latest last (at most
    /// `maxDemoted` per rack: one replacement per `gatewayPatience`, and they end with the rack).
    private(set) var demoted: [String: [SourceGroup]] = [:]
    static let maxDemoted = 16

    var count: Int { gateways.count }

    func isDemoted(_ group: SourceGroup, in rack: String) -> Bool { demoted[rack]?.contains(group) ?? false }

    func member(_ key: PeerKey, in rack: String) -> PeerEntry? { seeders[rack]?.entry(key) ?? leechers[rack]?.entry(key) }

    mutating func upsert(_ entry: PeerEntry, seeding: Bool, now: Double) {
        if seeding {
            leechers[entry.rack]?.remove(entry.key)
            seeders[entry.rack, default: PeerTable()].upsert(entry)
        } else {
            seeders[entry.rack]?.remove(entry.key)
            leechers[entry.rack, default: PeerTable()].upsert(entry)
        }
        // The first to come; or one from a source in good standing, when the rack had only
        // members from demoted sources left.
        let current = gateways[entry.rack].flatMap { member($0, in: entry.rack) }
        if current == nil || (isDemoted(current!.owner.group, in: entry.rack) && !isDemoted(entry.owner.group, in: entry.rack)) {
            gateways[entry.rack] = entry.key
            gatewaySince[entry.rack] = now
        }
    }

    /// Whether the rack shows it is fed, by members from other sources than its gateway's (which one
    /// address cannot forge): a seeder, or a leecher other than `requester` whose latest announce
    /// reported progress. Then a member that says it is cut off (a hostile one, or one whose own
    /// links failed) does not take the role from a gateway that serves. Scans the rack: only a
    /// member that has gone `gatewayPatience` without progress asks.
    func isFed(_ rack: String, besides requester: PeerKey, gateway: SourceGroup) -> Bool {
        if seeders[rack]?.entries.contains(where: { $0.owner.group != gateway }) == true { return true }
        return leechers[rack]?.entries.contains { member in
            member.key != requester && member.owner.group != gateway && member.hasProgressed && member.progressedAt == member.lastSeen
        } == true
    }

    /// `member` (a node of `rack` from another source) was cut off: it takes the gateway role, and
    /// the old gateway's source is not chosen again in the rack.
    mutating func demote(_ rack: String, for member: PeerEntry, now: Double) {
        if let gateway = gateways[rack].flatMap({ self.member($0, in: rack) }) {
            demoted[rack] = (demoted[rack] ?? []).filter { $0 != gateway.owner.group }.suffix(Self.maxDemoted - 1) + [gateway.owner.group]
        }
        gateways[rack] = member.key
        gatewaySince[rack] = now
    }

    mutating func remove(_ entry: PeerEntry, now: Double) {
        let rack = entry.rack
        seeders[rack]?.remove(entry.key)
        leechers[rack]?.remove(entry.key)
        if seeders[rack]?.count == 0 { seeders[rack] = nil }
        if leechers[rack]?.count == 0 { leechers[rack] = nil }
        if seeders[rack] == nil && leechers[rack] == nil {
            demoted[rack] = nil
            gatewaySince[rack] = nil
        }
        guard gateways[rack] == entry.key else { return }
        let first = seeders[rack]?.entries.first ?? leechers[rack]?.entries.first
        if demoted[rack] == nil {
            gateways[rack] = first?.key
        } else {
            let good = seeders[rack]?.entries.first { !isDemoted($0.owner.group, in: rack) }
                ?? leechers[rack]?.entries.first { !isDemoted($0.owner.group, in: rack) }
            gateways[rack] = (good ?? first)?.key
        }
        // The successor's patience starts now.
        gatewaySince[rack] = gateways[rack] == nil ? nil : now
    }
}

/// Peers in an array for O(1) random picks, with an index for O(1) lookup and swap-removal.
struct PeerTable: Sendable {
    private(set) var entries: [PeerEntry] = []
    private var positions: [PeerKey: Int] = [:]

    var count: Int { entries.count }

    func contains(_ key: PeerKey) -> Bool { positions[key] != nil }

    func entry(_ key: PeerKey) -> PeerEntry? { positions[key].map { entries[$0] } }

    mutating func upsert(_ entry: PeerEntry) {
        if let position = positions[entry.key] {
            entries[position] = entry
        } else {
            positions[entry.key] = entries.count
            entries.append(entry)
        }
    }

    @discardableResult
    mutating func remove(_ key: PeerKey) -> PeerEntry? {
        guard let position = positions.removeValue(forKey: key) else { return nil }
        let last = entries.removeLast()
        if position < entries.count {
            let removed = entries[position]
            entries[position] = last
            positions[last.key] = position
            return removed
        }
        return last
    }

    mutating func removeStale(before cutoff: Double) -> [PeerEntry] {
        let stale = entries.filter { $0.lastSeen < cutoff }
        for entry in stale { remove(entry.key) }
        return stale
    }

    /// Up to `count` distinct random entries, never `excluded`.
    func sample(_ count: Int, excluding excluded: PeerKey, random: inout SeededRandom) -> [PeerEntry] {
        samplePositions(count, excluding: excluded, random: &random).map { entries[$0] }
    }

    /// Where `sample`'s entries are in `entries`: an answer built from them copies only the
    /// fields it sends. (Copying whole entries, each a few reference-counted fields, was the
    /// largest item of a UDP tracker's profile.)
    func samplePositions(_ count: Int, excluding excluded: PeerKey, random: inout SeededRandom) -> [Int] {
        let available = entries.count - (positions[excluded] != nil ? 1 : 0)
        guard count > 0, available > 0 else { return [] }
        if count >= available { return entries.indices.filter { entries[$0].key != excluded }.shuffled(using: &random) }
        // Few wanted from many: distinct random positions (count is at most a few hundred).
        var chosen = Set<Int>()
        var result: [Int] = []
        while result.count < count {
            let position = Int.random(in: 0..<entries.count, using: &random)
            guard entries[position].key != excluded, chosen.insert(position).inserted else { continue }
            result.append(position)
        }
        return result
    }
}

struct Swarm: Sendable {
    struct Limits {
        var torrent: Int
        /// nil: this source is not capped.
        var source: Int?
    }

    var seeders = PeerTable()
    var leechers = PeerTable()
    /// `completed` events seen (the scrape's `downloaded`).
    var completed = 0
    /// When the latest `completed` events came (at most `recentCompletions`, oldest first): the
    /// rollout's completion rate.
    private(set) var completionTimes: [Double] = []
    static let recentCompletions = 32
    /// Completions older than this no longer count toward the rate.
    static let completionWindow = 900.0
    /// Peers stored per source (address or IPv6 /64), for the per-source cap.
    private(set) var perSource: [SourceGroup: Int] = [:]
    /// Where the tree-mode peers sit (nil until one announces with `topology=tree`).
    private(set) var tree: RackedTree<PeerKey, String>?
    private(set) var racks = RackIndex()
    /// Since when the swarm has had a seeder (nil: none now): before that nobody can progress,
    /// so nobody counts as cut off.
    private(set) var seededSince: Double?

    var isEmpty: Bool { seeders.count == 0 && leechers.count == 0 }

    /// The peer stored under `key`, seeder or leecher.
    func entry(_ key: PeerKey) -> PeerEntry? { seeders.entry(key) ?? leechers.entry(key) }

    /// Stores a new peer or refreshes one its owner announced; anything else changes nothing.
    /// Completions per second since the oldest recent one (so the rate falls while none come),
    /// or nil when none came within `completionWindow`.
    func completionRate(now: Double) -> Double? {
        let recent = completionTimes.filter { now - $0 <= Self.completionWindow }
        guard let first = recent.first else { return nil }
        return Double(recent.count) / max(1, now - first)
    }

    mutating func upsert(_ entry: PeerEntry, seeding: Bool, completed completedEvent: Bool, limits: Limits) -> AnnounceOutcome {
        var entry = entry
        if let known = self.entry(entry.key) {
            guard entry.owner.mayChange(known.owner) else { return .notOwner }
            // An entry made without a key keeps the one its owner sends later, and keeps its key
            // when a later announce omits it.
            if entry.owner.key == nil, known.owner.key != nil { entry.owner = known.owner }
            if known.rack != entry.rack { racks.remove(known, now: entry.lastSeen) }
            entry.completionCounted = known.completionCounted
        } else {
            if seeders.count + leechers.count >= limits.torrent { return .torrentFull }
            if let cap = limits.source, perSource[entry.owner.group, default: 0] >= cap { return .sourceLimit }
            perSource[entry.owner.group, default: 0] += 1
        }
        // Counted even when an announce without the event already said left=0 (Transmission
        // sends its periodic announce and then the queued `completed`; CI saw the count stay 0).
        if completedEvent && !entry.completionCounted {
            completed += 1
            entry.completionCounted = true
            completionTimes.append(entry.lastSeen)
            if completionTimes.count > Self.recentCompletions { completionTimes.removeFirst() }
        }
        if seeding {
            leechers.remove(entry.key)
            seeders.upsert(entry)
        } else {
            seeders.remove(entry.key)
            leechers.upsert(entry)
        }
        racks.upsert(entry, seeding: seeding, now: entry.lastSeen)
        if seeders.count == 0 { seededSince = nil } else if seededSince == nil { seededSince = entry.lastSeen }
        return .stored
    }

    /// Mesh: the leecher `key` just announced, in a swarm that spans racks. If it has gone
    /// `patience` seconds without progress while the swarm had a seeder, and its rack's gateway,
    /// from another source, has held the role as long, that gateway has cut it off (it never
    /// serves, or left without the tracker knowing): this member takes the role
    /// (`RackIndex.demote`), so its answer holds peers in other racks. A source demoted in the
    /// rack cannot do this (one address cannot take the role back, nor demote its successor).
    ///
    /// Returns whether the member has shown no progress yet, or none for `patience`: its answer
    /// then asks it back after `patience` seconds instead of `interval`, which is what lets the
    /// tracker see a cut-off rack within minutes. Members fed as usual report bytes on their second
    /// announce and return to the usual interval: one announce more per download.
    ///
    /// Why this and not the alternatives (issue 15): the answer is a plain peer list, and a node
    /// dials every peer in it (`SwarmRuntime`), so out-of-rack "fallback" peers given to every
    /// member would be used from the first second (one more importer per member, not one per
    /// rack), and two gateways per rack would fetch overlapping pieces across the uplink (as
    /// three racks' gateways fetching from the source's rack did: 1.31 copies out of it,
    /// docs/benchmarks.md). A rack name that disagrees with the announcer's subnet proves nothing
    /// (named racks may span subnets) and does not stop an attacker on the rack's own subnet.
    /// Progress reported from other addresses is what one address cannot forge.
    mutating func replaceGatewayIfCutOff(_ key: PeerKey, now: Double, patience: Double) -> Bool {
        guard racks.count > 1, let entry = leechers.entry(key) else { return false }
        let rack = entry.rack
        guard let gateway = racks.gateways[rack].flatMap({ racks.member($0, in: rack) }), gateway.key != key else { return false }
        let stalled = now - entry.progressedAt >= patience
        if stalled, gateway.owner.group != entry.owner.group, !racks.isDemoted(entry.owner.group, in: rack),
            let since = racks.gatewaySince[rack], now - since >= patience,
            let seeded = seededSince, now - seeded >= patience,
            !racks.isFed(rack, besides: entry.key, gateway: gateway.owner.group)
        {
            racks.demote(rack, for: entry, now: now)
        }
        return !entry.hasProgressed || stalled
    }

    /// Removes a peer on its owner's `stopped`.
    mutating func remove(_ key: PeerKey, by owner: Owner, now: Double) -> AnnounceOutcome {
        guard let known = entry(key) else { return .removed }
        guard owner.mayChange(known.owner) else { return .notOwner }
        if seeders.remove(key) == nil { leechers.remove(key) }
        forget(known, now: now)
        tree?.remove(key)
        return .removed
    }

    /// Places a stored tree-mode peer (a known one keeps its place) and returns its parents. The
    /// parent it reports lost leaves the tree, if it is that peer's parent (a peer cannot move
    /// others' parents); so does a parent this table no longer holds.
    mutating func place(_ key: PeerKey, rack: String, complete: Bool, lostParent: PeerKey?, fanOut: Int, rackEntryParents: Int = 1) -> [AnnouncedPeer] {
        var tree = self.tree ?? RackedTree(fanOut: fanOut)
        defer { self.tree = tree }
        if let lostParent, tree.parents(of: key, extra: rackEntryParents - 1).contains(lostParent) { tree.remove(lostParent) }
        tree.join(key, rack: rack, complete: complete)
        while let parent = tree.parent(of: key) {
            guard entry(parent) != nil else {
                tree.remove(parent)
                continue
            }
            return tree.parents(of: key, extra: rackEntryParents - 1).compactMap { node in
                entry(node).map { AnnouncedPeer(address: $0.address, peerID: $0.peerID) }
            }
        }
        return []
    }

    private mutating func forget(_ entry: PeerEntry, now: Double) {
        let group = entry.owner.group
        if let count = perSource[group], count > 1 { perSource[group] = count - 1 } else { perSource[group] = nil }
        racks.remove(entry, now: now)
        if seeders.count == 0 { seededSince = nil }
    }

    mutating func removeStale(before cutoff: Double, now: Double) -> Int {
        let stale = seeders.removeStale(before: cutoff) + leechers.removeStale(before: cutoff)
        stale.forEach {
            forget($0, now: now)
            tree?.remove($0.key)
        }
        return stale.count
    }

    /// Seeders first for a leecher (they have everything), then leechers; a seeder gets leechers only.
    /// Each address once, and never the requester's own: a client that restarted with a new peer
    /// id leaves its old entry at the same address until it expires, and a compact answer cannot
    /// tell the two apart (a fuzz finding: the same peer twice in one answer, or a client's own
    /// address handed back to it).
    ///
    /// In a swarm that spans racks, peers of the requester's rack, and for the rack's gateway (or
    /// a seeder) also the other racks' gateways and seeders, up to half the answer (`RackIndex`).
    func select(count: Int, for requester: PeerKey, at address: PeerAddress, rack: String, requesterIsSeeder: Bool,
        random: inout SeededRandom) -> [AnnouncedPeer] {
        var picked: [PeerEntry]
        if racks.count > 1 {
            picked = []
            if racks.gateways[rack] == requester {
                // The other racks' gateways, and no seed elsewhere: a rack's seeds are reached
                // through its gateway, which sends each piece out of the rack once
                // (`SwarmEngine`'s lone-seed rule, per side of the uplink).
                let gateways = racks.gateways.filter { $0.key != rack }.values.compactMap { entry($0) }
                picked = Array(gateways.shuffled(using: &random).prefix(max(1, count / 2)))
                // A gateway that lacks pieces and has announced no progress for 20 s may have
                // lost its only source (a gateway that died; the tracker learns that only when
                // the entry expires): it is also given the seeds elsewhere until it moves again.
                if !requesterIsSeeder, let me = entry(requester), me.lastSeen - me.progressedAt >= 20 {
                    picked += seeders.sample(count, excluding: requester, random: &random).filter { $0.rack != rack }.prefix(max(1, count / 2))
                }
            } else if let gateway = racks.gateways[rack].flatMap({ entry($0) }) {
                picked = [gateway]
            }
            if !requesterIsSeeder { picked += racks.seeders[rack]?.sample(count, excluding: requester, random: &random) ?? [] }
            picked += racks.leechers[rack]?.sample(count, excluding: requester, random: &random) ?? []
        } else {
            // One rack, the common case: the answer is built from positions, with no entry copied.
            let fromSeeders = requesterIsSeeder ? [] : seeders.samplePositions(count, excluding: requester, random: &random)
            let fromLeechers = leechers.samplePositions(count - fromSeeders.count, excluding: requester, random: &random)
            var seen: Set<PeerAddress> = [address]
            var answer: [AnnouncedPeer] = []
            answer.reserveCapacity(min(count, fromSeeders.count + fromLeechers.count))
            for (table, positions) in [(seeders, fromSeeders), (leechers, fromLeechers)] {
                for position in positions where answer.count < count {
                    guard table.entries[position].key != requester, seen.insert(table.entries[position].address).inserted else { continue }
                    answer.append(AnnouncedPeer(address: table.entries[position].address, peerID: table.entries[position].peerID))
                }
            }
            return answer
        }
        var seen: Set<PeerAddress> = [address]
        let unique = picked.filter { $0.key != requester && seen.insert($0.address).inserted }
        return unique.prefix(count).map { AnnouncedPeer(address: $0.address, peerID: $0.peerID) }
    }
}
