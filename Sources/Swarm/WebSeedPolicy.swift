import Metainfo

/// Which pieces to fetch from web seeds (BEP 19), and how much to trust each seed: a value, time
/// passed in, tested without sockets. The runtime asks it for work, reports each fetch and each
/// hash result, and keeps the pieces it `claims` away from peers (`SwarmEngine.deferPieces`), so
/// no piece is fetched from both.
///
/// Peers come first: a web seed takes pieces no connected peer has, then pieces peers have that
/// the engine has not started (so it only adds to what peers give), never one the engine is
/// already fetching. A web seed is never trusted: its pieces are hashed like any other (they enter
/// the engine as `external` pieces, so no peer is blamed for its bytes); a fetch that fails backs
/// the seed off (doubling, capped), and hash failures drop it for good after a few.
public struct WebSeedPolicy: Sendable {
    public struct Configuration: Sendable {
        /// Pieces fetched from one seed at once.
        public var piecesPerSeed = 2
        /// Seconds after the first failure in a row; doubles with each further one up to `maxBackoff`.
        public var firstBackoff: Double = 2
        public var maxBackoff: Double = 120
        /// A seed whose pieces failed their hash this often is dropped: one bad piece may be a
        /// file replaced mid-read, three are a server that serves something else.
        public var maxHashFailures = 3
        /// Also fetch pieces some connected peer has (but the engine has not started): the seed
        /// then adds its bandwidth to the peers'. Off, it fetches only what no peer offers.
        public var fetchPiecesPeersHave = true
        /// Seconds after the start before any seed is asked: with `fetchPiecesPeersHave` off, the
        /// time peers get to connect and say what they hold, so an origin kept as a fallback is
        /// not asked for what the swarm would have given.
        public var startAfter: Double = 0

        public init() {}

        /// Web seeds as a fallback (`get --web-seed-fallback`): after `startAfter` seconds, and only
        /// for pieces no connected peer has. An origin serving a fleet then sends what the swarm
        /// lacks, not two pieces to every node.
        public static func fallback(after seconds: Double = 5) -> Configuration {
            var configuration = Configuration()
            configuration.fetchPiecesPeersHave = false
            configuration.startAfter = seconds
            return configuration
        }
    }

    /// Why one fetch from a web seed failed.
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        /// Connect, timeout, reset, a body larger than asked for.
        case transport(String)
        /// Any status but 206 (or 200 for a request of a whole file): 4xx, 5xx, redirects.
        case status(Int)
        /// 200 with the whole resource, for a Range request of part of it: the server ignores Range.
        case rangeIgnored
        /// `Content-Range` missing, unreadable, or naming other bytes or another file length.
        case wrongRange(String)
        /// A body of another length than the range asked for; `bodyTooLong` when it went on past
        /// it (the fetch stops reading there).
        case wrongLength(expected: Int, got: Int)
        case bodyTooLong(expected: Int)

        public var description: String {
            switch self {
            case .transport(let why): why
            case .status(let code): "HTTP status \(code)"
            case .rangeIgnored: "answered 200 with the whole file to a Range request (the server does not do ranges)"
            case .wrongRange(let why): "wrong Content-Range: \(why)"
            case .wrongLength(let expected, let got): "a body of \(got) bytes where \(expected) were asked for"
            case .bodyTooLong(let expected): "a body longer than the \(expected) bytes asked for"
            }
        }
    }

    /// One web seed's standing.
    public struct Seed: Sendable, Equatable {
        public let url: String
        /// Pieces being fetched from it now.
        public internal(set) var fetching: Set<PieceIndex> = []
        /// Failed fetches in a row (reset by a piece that verified), and when it may be asked again.
        public internal(set) var failuresInARow = 0
        public internal(set) var retryAt: Double = 0
        public internal(set) var hashFailures = 0
        /// Why it was dropped, or nil while it is in use.
        public internal(set) var dropped: String?
        /// Pieces from it that verified, and their bytes.
        public internal(set) var pieces = 0
        public internal(set) var bytes: Int64 = 0
        public internal(set) var lastFailure: Failure?
        /// Pieces whose bytes from this seed failed their hash: never asked of it again.
        var failedPieces: Set<PieceIndex> = []
    }

    public struct Assignment: Equatable, Sendable {
        public let seed: Int
        public let piece: PieceIndex
    }

    /// What a report changed, for the runtime to log.
    public enum Event: Equatable, Sendable {
        case backedOff(seed: Int, seconds: Double, failure: Failure)
        case dropped(seed: Int, reason: String)
    }

    public let configuration: Configuration
    public private(set) var seeds: [Seed]
    private let layout: PieceLayout
    /// Pieces fetched from a web seed or handed to the engine and not yet checked, and by which seed.
    private var owners: [PieceIndex: Int] = [:]
    /// The same pieces as a bitfield: what the engine must not ask peers for.
    public private(set) var claimed: Bitfield

    public init(seeds: [String], layout: PieceLayout, configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.seeds = seeds.map { Seed(url: $0) }
        self.layout = layout
        claimed = Bitfield(pieceCount: layout.pieceCount)
    }

    /// Seeds that may still be used (not dropped).
    public var usableSeeds: Int { seeds.count { $0.dropped == nil } }
    /// Failed fetches and pieces that failed their hash, over all seeds (for status and metrics).
    public private(set) var fetchFailures = 0
    public var hashFailures: Int { seeds.reduce(0) { $0 + $1.hashFailures } }

    /// Pieces to start fetching now, each from one seed with room and not backed off. `have` and
    /// `availability` (connected peers holding each piece) are the engine's; `busy` holds pieces
    /// the engine is fetching, verifying, or leaves to another source (the multicast booster).
    /// `urgent` pieces (what readers of the image in flight wait for, most urgent first) go
    /// before all others, on the same terms.
    public mutating func next(now: Double, have: Bitfield, availability: [Int], busy: Bitfield, urgent: [PieceIndex] = []) -> [Assignment] {
        guard now >= configuration.startAfter else { return [] }
        var room: [Int] = []
        for (index, seed) in seeds.enumerated() where seed.dropped == nil && now >= seed.retryAt {
            // A seed that failed gets one fetch at a time until one succeeds again.
            let limit = seed.failuresInARow > 0 ? 1 : configuration.piecesPerSeed
            room += Array(repeating: index, count: max(0, limit - seed.fetching.count))
        }
        guard !room.isEmpty else { return [] }
        // One pass: the first pieces (in order, so a server reads its file front to back) that no
        // peer has, then those peers have that the engine has not started, fewest holders first.
        var unheld: [PieceIndex] = []
        var held: [(holders: Int, piece: PieceIndex)] = []
        let asking = Set(room).map { seeds[$0] }
        for index in 0..<layout.pieceCount {
            let piece = PieceIndex(index)
            guard !have[piece], !busy[piece], !claimed[piece], asking.contains(where: { !$0.failedPieces.contains(piece) }) else { continue }
            let holders = index < availability.count ? availability[index] : 0
            if holders == 0 {
                unheld.append(piece)
                if unheld.count >= room.count { break }
            } else if configuration.fetchPiecesPeersHave {
                held.append((holders, piece))
            }
        }
        let wanted = urgent.filter { layout.contains($0) && !have[$0] && !busy[$0] && !claimed[$0] }
        var candidates = wanted + unheld.filter { !wanted.contains($0) }
        if candidates.count < room.count + wanted.count {
            candidates += held.sorted { ($0.holders, $0.piece) < ($1.holders, $1.piece) }.map(\.piece)
        }
        var assignments: [Assignment] = []
        var used = Set<PieceIndex>()
        for seed in room {
            // The first candidate this seed has not failed on.
            guard let piece = candidates.first(where: { !used.contains($0) && !seeds[seed].failedPieces.contains($0) }) else { continue }
            used.insert(piece)
            seeds[seed].fetching.insert(piece)
            owners[piece] = seed
            claimed.insert(piece)
            assignments.append(Assignment(seed: seed, piece: piece))
        }
        return assignments
    }

    /// The piece's bytes arrived whole and in order from `seed`, and go to the engine to be
    /// hashed: the seed gets its slot back; the piece stays claimed until `checked`.
    public mutating func fetched(_ piece: PieceIndex, from seed: Int) {
        guard seeds.indices.contains(seed) else { return }
        seeds[seed].fetching.remove(piece)
    }

    /// The fetch failed: the piece goes back to everyone, the seed backs off.
    public mutating func failed(_ piece: PieceIndex, from seed: Int, _ failure: Failure, now: Double) -> Event? {
        release(piece)
        guard seeds.indices.contains(seed) else { return nil }
        fetchFailures += 1
        seeds[seed].fetching.remove(piece)
        guard seeds[seed].dropped == nil else { return nil }
        seeds[seed].failuresInARow += 1
        seeds[seed].lastFailure = failure
        let doublings = min(seeds[seed].failuresInARow - 1, 30)
        let delay = min(configuration.maxBackoff, configuration.firstBackoff * Double(1 << doublings))
        seeds[seed].retryAt = now + delay
        return .backedOff(seed: seed, seconds: delay, failure: failure)
    }

    /// The engine would not take the piece (it verified or began verifying it meanwhile): nobody's fault.
    public mutating func discarded(_ piece: PieceIndex, from seed: Int) {
        release(piece)
        if seeds.indices.contains(seed) { seeds[seed].fetching.remove(piece) }
    }

    /// The engine hashed a piece. Returns the event when it was a web seed's piece that made the
    /// seed dropped. Pieces that were not a seed's are ignored.
    public mutating func checked(_ piece: PieceIndex, valid: Bool) -> Event? {
        guard let seed = owners[piece] else { return nil }
        release(piece)
        if valid {
            seeds[seed].pieces += 1
            seeds[seed].bytes += Int64(layout.length(of: piece))
            seeds[seed].failuresInARow = 0
            seeds[seed].retryAt = 0
            return nil
        }
        seeds[seed].hashFailures += 1
        seeds[seed].failedPieces.insert(piece)
        guard seeds[seed].dropped == nil, seeds[seed].hashFailures >= configuration.maxHashFailures else { return nil }
        let reason = "\(seeds[seed].hashFailures) pieces from it failed their hash"
        seeds[seed].dropped = reason
        return .dropped(seed: seed, reason: reason)
    }

    /// Which seed a piece is being fetched from or checked for, if any.
    public func owner(of piece: PieceIndex) -> Int? { owners[piece] }

    private mutating func release(_ piece: PieceIndex) {
        owners[piece] = nil
        claimed.remove(piece)
    }
}
