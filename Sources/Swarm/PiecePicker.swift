import Metainfo

/// Decides which blocks to request from which peer: rarest piece first (a random one while we hold
/// fewer than `randomFirstPieces`, so a fresh swarm does not all chase the same rare piece), among
/// equally rare pieces the one the peer announced last, pieces already started are finished first,
/// and in end-game (every missing block already requested) a block may be asked of a second peer so
/// one slow peer cannot hold back the last piece. A peer on parole (it contributed to a piece that
/// failed its hash) fetches whole pieces alone: it is asked only for pieces nobody else touched, and
/// nobody else for those, so its next bad piece has it as the only sender.
///
/// Pure: no clock, no sockets; randomness comes from a seeded generator.
public struct PiecePicker: Sendable {
    /// Identifies a peer connection to the picker.
    public typealias Peer = Int

    public static let randomFirstPieces = 4
    /// In end-game, how many peers may be asked for the same block.
    public static let endGameDuplicates = 2

    public let layout: PieceLayout
    public private(set) var have: Bitfield
    /// How many connected peers hold each piece.
    public private(set) var availability: [Int]
    private var inProgress: [PieceIndex: PieceProgress] = [:]
    /// The pieces in `inProgress`, to scan candidates by whole bytes rather than by lookups.
    private var started: Bitfield
    private var random: SeededRandom

    /// A started piece's blocks. A class: it is read and changed for every block requested and
    /// received, and a struct in the dictionary had to be taken out and put back each time. Each
    /// belongs to one picker, confined to one event loop, never shared: hence the unchecked `Sendable`.
    final class PieceProgress: @unchecked Sendable {
        /// Where each block starts, ascending; nil for the usual 16 KiB grid. A piece adopted from
        /// the booster has blocks of exactly the byte ranges the group lost (a few datagrams each),
        /// so peers are asked for those bytes and not for the 16 KiB blocks around them.
        var begins: [Int]?
        var lengths: [Int]?
        /// Per block: who it was asked of (empty: not requested) and whether it arrived.
        var requestedFrom: [[Peer]]
        var received: [Bool]
        var receivedCount = 0
        /// Blocks neither received nor asked of anyone: a piece with none has nothing to hand out
        /// outside end-game, and is passed over without a look at its blocks.
        var open: Int
        /// The peer on parole fetching this piece alone: no other peer is asked for its blocks,
        /// not even in end-game, and blocks others send for it (stale requests) are not taken.
        var owner: Peer?

        /// Nothing of the piece was received or is asked of anyone, on the usual grid: a peer on
        /// parole may take it over.
        var isUntouched: Bool { receivedCount == 0 && open == received.count && begins == nil }

        init(blocks: Int) {
            requestedFrom = [[Peer]](repeating: [], count: blocks)
            received = [Bool](repeating: false, count: blocks)
            open = blocks
        }

        /// Blocks covering `ranges` (ascending, not overlapping), none longer than 16 KiB.
        convenience init(ranges: [Range<Int>]) {
            var begins: [Int] = []
            var lengths: [Int] = []
            for range in ranges {
                for begin in stride(from: range.lowerBound, to: range.upperBound, by: PieceLayout.blockLength) {
                    begins.append(begin)
                    lengths.append(min(PieceLayout.blockLength, range.upperBound - begin))
                }
            }
            self.init(blocks: begins.count)
            self.begins = begins
            self.lengths = lengths
        }

        /// The block that starts at `begin`, if one does.
        func slot(at begin: Int) -> Int? {
            guard let begins else {
                let slot = begin / PieceLayout.blockLength
                return begin % PieceLayout.blockLength == 0 && slot < received.count ? slot : nil
            }
            var low = 0
            var high = begins.count
            while low < high {
                let middle = (low + high) / 2
                if begins[middle] < begin { low = middle + 1 } else { high = middle }
            }
            return low < begins.count && begins[low] == begin ? low : nil
        }

        func range(of slot: Int, pieceLength: Int) -> (begin: Int, length: Int) {
            if let begins, let lengths { return (begins[slot], lengths[slot]) }
            let begin = slot * PieceLayout.blockLength
            return (begin, min(PieceLayout.blockLength, pieceLength - begin))
        }

        /// `peer` no longer fetches the block in `slot`.
        func release(_ peer: Peer, slot: Int) {
            guard requestedFrom[slot].contains(peer) else { return }
            requestedFrom[slot].removeAll { $0 == peer }
            if requestedFrom[slot].isEmpty && !received[slot] { open += 1 }
        }

        /// `peer` no longer fetches any block of the piece.
        func release(_ peer: Peer) {
            for slot in requestedFrom.indices { release(peer, slot: slot) }
        }
    }

    public init(layout: PieceLayout, have: Bitfield, seed: UInt64) {
        self.layout = layout
        self.have = have
        availability = [Int](repeating: 0, count: layout.pieceCount)
        started = Bitfield(pieceCount: layout.pieceCount)
        random = SeededRandom(seed: seed)
    }

    // MARK: Availability

    public mutating func peerAdded(_ pieces: Bitfield) {
        for index in 0..<layout.pieceCount where pieces[PieceIndex(index)] { availability[index] += 1 }
    }

    public mutating func peerGained(_ piece: PieceIndex) { availability[piece.value] += 1 }

    /// The peer left: its pieces no longer count, and its unanswered requests go back to the pool.
    public mutating func peerRemoved(_ peer: Peer, pieces: Bitfield) {
        for index in 0..<layout.pieceCount where pieces[PieceIndex(index)] { availability[index] -= 1 }
        for progress in inProgress.values { progress.release(peer) }
        disown(peer)
    }

    /// The peer no longer fetches pieces alone (its parole ended, it stalled, it left): the pieces
    /// it took over are open to every peer again.
    public mutating func disown(_ peer: Peer) {
        for progress in inProgress.values where progress.owner == peer { progress.owner = nil }
    }

    // MARK: Requests

    /// Up to `count` new block requests for `peer`, which holds `peerPieces`.
    ///
    /// `maxAvailability` keeps the choice to pieces that at most that many connected peers hold: a
    /// seed is asked only for what no other peer can give, so the seed's upload, the scarcest link of
    /// a fresh swarm, carries each piece about once and the peers trade the rest among themselves.
    /// `endGameCount` bounds the duplicate requests of end-game: only an idle peer is asked for
    /// blocks already requested elsewhere, a few at a time, or the last pieces would be fetched many
    /// times over from whoever has deep queues.
    /// `urgent` pieces (a reader of the image in flight waits for them, most urgent first) come
    /// before everything else, whatever `maxAvailability` says: a seed is asked for them too, and once
    /// all their blocks are asked somewhere an idle peer (within `endGameCount`) is asked again, as in
    /// end-game, so a slow holder cannot keep a reader waiting.
    /// `preferred` pieces (a peer's suggestions) are started before any other new piece.
    /// `ordered` pieces (a boot profile's order, see `SwarmEngine.setPieceOrder`) are started next,
    /// in that order, within `maxAvailability` like rarest-first: a swarm of nodes with the same
    /// profile still takes each piece from the seed about once.
    /// `recent` are the pieces the peer announced last, oldest first: among equally rare pieces the
    /// newest of them is taken, as the peer most likely still holds it in memory (a sealed image's
    /// peer would otherwise read it back from disk and seal it again).
    /// `alone`: the peer is on parole and gets only pieces it fetches alone (see `PieceProgress.owner`).
    public mutating func requests(for peer: Peer, peerPieces: Bitfield, count: Int, maxAvailability: Int = .max,
                                  endGameCount: Int = .max, urgent: [PieceIndex] = [], preferred: [PieceIndex] = [],
                                  ordered: [PieceIndex] = [], recent: [PieceIndex] = [], alone: Bool = false) -> [BlockRequest] {
        var picked: [BlockRequest] = []
        // 0. Pieces a reader waits for: their open blocks, then (end-game for them alone) blocks
        // asked elsewhere already. Parole holds here too: a piece another peer fetches alone is its
        // own, and a peer on parole takes only pieces it can fetch alone, with no duplicates.
        for piece in urgent where picked.count < count && layout.contains(piece) && !have[piece] && peerPieces[piece] {
            if let progress = inProgress[piece] {
                guard progress.owner == nil || progress.owner == peer else { continue }
                if alone && progress.owner == nil {
                    guard progress.isUntouched else { continue }
                    progress.owner = peer
                }
            } else {
                start(piece, owner: alone ? peer : nil)
            }
            picked += take(from: piece, for: peer, limit: count - picked.count, duplicates: false)
        }
        var urgentDuplicates = alone ? 0 : min(count - picked.count, endGameCount)
        for piece in urgent where urgentDuplicates > 0 && layout.contains(piece) && !have[piece] && peerPieces[piece]
            && inProgress[piece]?.owner == nil
        {
            let blocks = take(from: piece, for: peer, limit: urgentDuplicates, duplicates: true)
            urgentDuplicates -= blocks.count
            picked += blocks
        }
        // 1. Blocks of pieces already started, that nobody was asked for yet; a piece a peer on
        // parole fetches is its own, and such a peer takes only those and untouched pieces.
        started.forEachPiece { piece in
            guard picked.count < count, peerPieces[piece], availability[piece.value] <= maxAvailability else { return }
            let progress = inProgress[piece]!
            guard progress.open > 0, progress.owner == nil || progress.owner == peer else { return }
            if alone && progress.owner == nil {
                guard progress.isUntouched else { return }
                progress.owner = peer
            }
            picked += take(from: piece, for: peer, limit: count - picked.count, duplicates: false)
        }
        // 2a. Pieces the peer suggested.
        for piece in preferred
        where picked.count < count && layout.contains(piece) && !have[piece] && inProgress[piece] == nil && peerPieces[piece] {
            start(piece, owner: alone ? peer : nil)
            picked += take(from: piece, for: peer, limit: count - picked.count, duplicates: false)
        }
        // 2b. The pieces of the profile's order.
        for piece in ordered where picked.count < count && layout.contains(piece) && !have[piece] && inProgress[piece] == nil
            && peerPieces[piece] && availability[piece.value] <= maxAvailability
        {
            start(piece, owner: alone ? peer : nil)
            picked += take(from: piece, for: peer, limit: count - picked.count, duplicates: false)
        }
        // 2. New pieces, rarest first (random at the start).
        while picked.count < count, let piece = choosePiece(peerPieces, maxAvailability: maxAvailability, recent: recent) {
            start(piece, owner: alone ? peer : nil)
            picked += take(from: piece, for: peer, limit: count - picked.count, duplicates: false)
        }
        // 3. End-game: every missing block is requested somewhere; ask this peer too. Never a peer
        // on parole, nor for a piece one fetches alone: either would make it one sender of several.
        let duplicates = alone ? 0 : min(count - picked.count, endGameCount)
        if duplicates > 0 && isEndGame {
            var taken = 0
            started.forEachPiece { piece in
                guard peerPieces[piece] && taken < duplicates && inProgress[piece]!.owner == nil else { return }
                let blocks = take(from: piece, for: peer, limit: duplicates - taken, duplicates: true)
                taken += blocks.count
                picked += blocks
            }
        }
        return picked
    }

    /// A requested block arrived. `accepted` says whether its bytes belong in the piece: not when
    /// the block is already in (a late duplicate must never overwrite bytes taken before it), is no
    /// block of the piece in progress (a stale request of an earlier try, or of other block
    /// boundaries), or comes from another peer than the one fetching the piece alone. Also returns
    /// the piece when its last block is in (hash it now), and the other peers asked for this block
    /// in end-game (send them a cancel).
    public mutating func received(_ block: BlockRequest, from peer: Peer) -> (accepted: Bool, completePiece: PieceIndex?, cancelAt: [Peer]) {
        guard let progress = inProgress[block.piece], let slot = progress.slot(at: block.begin), !progress.received[slot],
            progress.range(of: slot, pieceLength: layout.length(of: block.piece)).length == block.length,
            progress.owner == nil || progress.owner == peer
        else {
            return (false, nil, [])
        }
        progress.received[slot] = true
        progress.receivedCount += 1
        if progress.requestedFrom[slot].isEmpty { progress.open -= 1 }
        let others = progress.requestedFrom[slot].filter { $0 != peer }
        return (true, progress.receivedCount == progress.received.count ? block.piece : nil, others)
    }

    /// Part of `piece` arrived by another way (a partly heard multicast piece): only the byte ranges
    /// in `missing` are requested, each as blocks of at most 16 KiB. What peers already delivered
    /// of a piece in progress is kept out of those ranges. Returns true when nothing is missing.
    public mutating func adopt(_ piece: PieceIndex, missing: [Range<Int>]) -> Bool {
        guard !have[piece] else { return false }
        var wanted = missing
        if let progress = inProgress[piece] {
            let length = layout.length(of: piece)
            for slot in progress.received.indices where progress.received[slot] {
                let (begin, blockLength) = progress.range(of: slot, pieceLength: length)
                wanted = wanted.flatMap { Self.subtract(begin..<(begin + blockLength), from: $0) }
            }
        }
        inProgress[piece] = PieceProgress(ranges: wanted)
        started.insert(piece)
        return wanted.isEmpty
    }

    /// `range` without `removed`: none, one or two ranges.
    static func subtract(_ removed: Range<Int>, from range: Range<Int>) -> [Range<Int>] {
        guard removed.overlaps(range) else { return [range] }
        var rest: [Range<Int>] = []
        if range.lowerBound < removed.lowerBound { rest.append(range.lowerBound..<removed.lowerBound) }
        if removed.upperBound < range.upperBound { rest.append(removed.upperBound..<range.upperBound) }
        return rest
    }

    /// A request was rejected, cancelled or dropped by a choke: someone else may be asked.
    public mutating func released(_ block: BlockRequest, by peer: Peer) {
        guard let progress = inProgress[block.piece], let slot = progress.slot(at: block.begin) else { return }
        progress.release(peer, slot: slot)
    }

    public mutating func pieceVerified(_ piece: PieceIndex) {
        inProgress[piece] = nil
        started.remove(piece)
        have.insert(piece)
    }

    /// The piece's hash did not match: all of it is fetched again.
    public mutating func pieceFailed(_ piece: PieceIndex) {
        inProgress[piece] = nil
        started.remove(piece)
    }

    public var isComplete: Bool { have.isComplete }

    /// Pieces with blocks asked of peers or assembling (a web seed leaves them to the peers).
    public var startedPieces: Bitfield { started }

    /// Every block we lack is requested from at least one peer.
    public var isEndGame: Bool {
        let missing = layout.pieceCount - have.count
        guard missing > 0, inProgress.count == missing else { return false }
        return inProgress.values.allSatisfy { $0.open == 0 }
    }

    // MARK: Internals

    private mutating func choosePiece(_ peerPieces: Bitfield, maxAvailability: Int, recent: [PieceIndex]) -> PieceIndex? {
        let availability = self.availability
        let randomPhase = have.count < Self.randomFirstPieces
        /// How rare a piece counts as (all alike at the start), or nil if it is held too widely.
        func rank(_ index: Int) -> Int? {
            availability[index] <= maxAvailability ? (randomPhase ? 0 : availability[index]) : nil
        }
        var best: [Int] = []
        var bestRank = Int.max
        var candidates = peerPieces
        candidates.subtract(have)
        candidates.subtract(started)
        candidates.forEachPiece { piece in
            guard let rank = rank(piece.value) else { return }
            if rank < bestRank {
                bestRank = rank
                best = [piece.value]
            } else if rank == bestRank {
                best.append(piece.value)
            }
        }
        guard !best.isEmpty else { return nil }
        if let newest = recent.last(where: { layout.contains($0) && candidates[$0] && rank($0.value) == bestRank }) {
            return newest
        }
        return PieceIndex(best[Int.random(in: 0..<best.count, using: &random)])
    }

    private mutating func start(_ piece: PieceIndex, owner: Peer? = nil) {
        let progress = PieceProgress(blocks: layout.blockCount(of: piece))
        progress.owner = owner
        inProgress[piece] = progress
        started.insert(piece)
    }

    private mutating func take(from piece: PieceIndex, for peer: Peer, limit: Int, duplicates: Bool) -> [BlockRequest] {
        guard limit > 0, let progress = inProgress[piece] else { return [] }
        let length = layout.length(of: piece)
        var taken: [BlockRequest] = []
        for slot in progress.received.indices where taken.count < limit && !progress.received[slot] {
            let askers = progress.requestedFrom[slot]
            let eligible = duplicates
                ? !askers.contains(peer) && askers.count < Self.endGameDuplicates
                : askers.isEmpty
            if eligible {
                if askers.isEmpty { progress.open -= 1 }
                progress.requestedFrom[slot].append(peer)
                let (begin, blockLength) = progress.range(of: slot, pieceLength: length)
                taken.append(BlockRequest(piece: piece, begin: begin, length: blockLength))
            }
        }
        return taken
    }

}
