import Metainfo
import NIOCore
import PeerWire

/// The swarm's decisions for one torrent, without I/O: events in (a peer connected, a message
/// arrived, a piece hashed, a block read, time passed), actions out (send, disconnect, hash this
/// piece, read that block). A SwiftNIO runtime drives it over sockets; tests drive it over an
/// in-memory network with a fake clock. One engine runs on one thread at a time.
public struct SwarmEngine: Sendable {
    public typealias Peer = PiecePicker.Peer

    public struct Configuration: Sendable {
        /// Peers we upload to at once (plus one optimistic unchoke).
        public var maxUnchoked = 8
        /// Blocks kept requested from each peer: 64 × 16 KiB = 1 MiB in flight, enough for
        /// ~800 Mbit/s at 10 ms round trip per peer.
        public var requestQueueDepth = 64
        /// Seconds between choking rounds (BEP 3 clients use 10).
        public var chokeInterval: Double = 10
        /// Hash failures a peer may contribute to before it is banned.
        public var strikesBeforeBan = 2

        public init() {}
    }

    public enum Action: Equatable, Sendable {
        case send(Peer, PeerMessage)
        case disconnect(Peer, reason: String)
        /// Hash this assembled piece (off the event loop) and report with `pieceChecked`.
        case verify(PieceIndex, [UInt8])
        /// Read this block from storage and hand it back with `blockRead`.
        case readBlock(Peer, BlockRequest)
        /// Every piece is verified.
        case completed
    }

    struct PeerState: Sendable {
        let id: PeerID
        var session: PeerSession
        var bytesFromPeer = 0
        var bytesToPeer = 0
        var strikes = 0
    }

    public let info: TorrentInfo
    public let configuration: Configuration
    private let ourHandshake: Handshake
    public private(set) var picker: PiecePicker
    private var peers: [Peer: PeerState] = [:]
    private var assembling: [PieceIndex: [UInt8]] = [:]
    private var contributors: [PieceIndex: Set<Peer>] = [:]
    private var banned: Set<PeerID> = []
    private var lastChokeRound: Double = -.infinity
    private var optimistic: Peer?
    private var random: SeededRandom
    public private(set) var downloaded: Int64 = 0
    public private(set) var uploaded: Int64 = 0
    /// Bytes received that were thrown away (failed hashes, late duplicates).
    public private(set) var wasted: Int64 = 0

    public init(info: TorrentInfo, have: Bitfield, handshake: Handshake, configuration: Configuration = Configuration(), seed: UInt64) {
        self.info = info
        self.configuration = configuration
        ourHandshake = handshake
        picker = PiecePicker(layout: info.layout, have: have, seed: seed)
        random = SeededRandom(seed: seed ^ 0xA5A5)
    }

    public var have: Bitfield { picker.have }
    public var isComplete: Bool { picker.isComplete }
    public var peerCount: Int { peers.count }

    /// Whether a peer with this id may join (banned peers may not).
    public func accepts(_ id: PeerID) -> Bool { !banned.contains(id) }

    // MARK: Events

    public mutating func peerConnected(_ peer: Peer, handshake theirs: Handshake) -> [Action] {
        guard !banned.contains(theirs.peerID) else { return [.disconnect(peer, reason: "banned")] }
        let session = PeerSession(layout: info.layout, ourHandshake: ourHandshake, theirHandshake: theirs)
        peers[peer] = PeerState(id: theirs.peerID, session: session)
        var actions: [Action] = []
        if session.fast && have.isComplete {
            actions.append(send(peer, .haveAll))
        } else if session.fast && have.isEmpty {
            actions.append(send(peer, .haveNone))
        } else if !have.isEmpty {
            actions.append(send(peer, .bitfield(have.bytes)))
        }
        if theirs.supportsExtensions && ourHandshake.supportsExtensions {
            actions.append(send(peer, .extended(id: 0, payload: ByteBuffer(bytes: ExtensionHandshake.ours.encoded()))))
        }
        return actions
    }

    public mutating func peerDisconnected(_ peer: Peer) -> [Action] {
        guard let state = peers.removeValue(forKey: peer) else { return [] }
        picker.peerRemoved(peer, pieces: state.session.peerPieces)
        if optimistic == peer { optimistic = nil }
        return fillRequests()
    }

    public mutating func received(_ message: PeerMessage, from peer: Peer) -> [Action] {
        guard var state = peers[peer] else { return [] }
        let events: [PeerSession.Event]
        do {
            events = try state.session.receive(message)
        } catch {
            peers[peer] = state
            return [.disconnect(peer, reason: error.description)] + peerDisconnected(peer)
        }
        peers[peer] = state
        var actions: [Action] = []
        for event in events {
            switch event {
            case .hasPieces(let pieces):
                picker.peerAdded(pieces)
                actions += updateInterest(peer)
            case .has(let piece):
                picker.peerGained(piece)
                actions += updateInterest(peer)
            case .unchoked:
                actions += fillRequests(for: peer)
            case .requestsDropped(let blocks):
                for block in blocks { picker.released(block, by: peer) }
            case .rejected(let block):
                picker.released(block, by: peer)
            case .block(let block, let data):
                actions += receivedBlock(block, data: data, from: peer)
            case .lateBlock(let block):
                wasted += Int64(block.length)
            case .requested(let request):
                actions.append(.readBlock(peer, request))
            case .interested(let wants):
                // A free upload slot is given at once rather than at the next choking round.
                let unchoked = peers.values.filter { !$0.session.amChoking }.count
                if wants, state.session.amChoking, unchoked < configuration.maxUnchoked {
                    actions.append(send(peer, .unchoke))
                }
            case .choked, .cancelled, .suggested, .allowedFast, .extensionHandshake, .peerExchange, .dhtPort:
                break
            case .ignored(let why):
                if why.hasPrefix("request while choked"), state.session.fast, case .request(let request) = message {
                    actions.append(send(peer, .reject(request)))
                }
            }
        }
        return actions
    }

    /// The runtime read a requested block; it is sent if the peer still wants it.
    public mutating func blockRead(_ request: BlockRequest, data: ByteBuffer, for peer: Peer) -> [Action] {
        guard let state = peers[peer], state.session.peerRequests.contains(request), !state.session.amChoking else { return [] }
        uploaded += Int64(request.length)
        peers[peer]?.bytesToPeer += request.length
        return [send(peer, .piece(request.piece, begin: request.begin, block: data))]
    }

    /// The runtime hashed an assembled piece.
    public mutating func pieceChecked(_ piece: PieceIndex, valid: Bool) -> [Action] {
        let sources = contributors.removeValue(forKey: piece) ?? []
        var actions: [Action] = []
        guard valid else {
            picker.pieceFailed(piece)
            wasted += Int64(info.layout.length(of: piece))
            for peer in sources {
                peers[peer]?.strikes += 1
                if let strikes = peers[peer]?.strikes, strikes >= configuration.strikesBeforeBan || sources.count == 1 {
                    if let id = peers[peer]?.id { banned.insert(id) }
                    actions.append(.disconnect(peer, reason: "sent data that failed the hash of \(piece)"))
                    actions += peerDisconnected(peer)
                }
            }
            return actions + fillRequests()
        }
        picker.pieceVerified(piece)
        for peer in peers.keys.sorted() {
            actions.append(send(peer, .have(piece)))
            actions += updateInterest(peer)
        }
        if picker.isComplete { actions.append(.completed) }
        return actions + fillRequests()
    }

    /// Runs a choking round when one is due.
    public mutating func tick(now: Double) -> [Action] {
        guard now - lastChokeRound >= configuration.chokeInterval else { return [] }
        lastChokeRound = now
        let interested = peers.filter { $0.value.session.peerInterested }.map(\.key)
        // Leeching: reciprocate the best uploaders to us. Seeding: whoever we served least, in turn.
        let ranked = interested.sorted { lhs, rhs in
            let l = peers[lhs]!, r = peers[rhs]!
            return have.isComplete ? (l.bytesToPeer, lhs) < (r.bytesToPeer, rhs) : (l.bytesFromPeer, rhs) > (r.bytesFromPeer, lhs)
        }
        var unchoke = Set(ranked.prefix(configuration.maxUnchoked))
        let others = interested.filter { !unchoke.contains($0) }
        if let current = optimistic, others.contains(current) {
            unchoke.insert(current)
        } else if let pick = others.randomElement(using: &random) {
            optimistic = pick
            unchoke.insert(pick)
        }
        var actions: [Action] = []
        for peer in peers.keys.sorted() {
            let shouldChoke = !unchoke.contains(peer)
            if shouldChoke != peers[peer]!.session.amChoking {
                actions.append(send(peer, shouldChoke ? .choke : .unchoke))
            }
            peers[peer]?.bytesFromPeer = 0
            peers[peer]?.bytesToPeer = 0
        }
        return actions
    }

    // MARK: Internals

    private mutating func send(_ peer: Peer, _ message: PeerMessage) -> Action {
        peers[peer]?.session.sent(message)
        return .send(peer, message)
    }

    private mutating func updateInterest(_ peer: Peer) -> [Action] {
        guard let session = peers[peer]?.session else { return [] }
        let wanted = (0..<info.pieceCount).contains { session.peerPieces[PieceIndex($0)] && !have[PieceIndex($0)] }
        guard wanted != session.amInterested else { return [] }
        return [send(peer, wanted ? .interested : .notInterested)]
    }

    private mutating func fillRequests() -> [Action] {
        peers.keys.sorted().flatMap { fillRequests(for: $0) }
    }

    private mutating func fillRequests(for peer: Peer) -> [Action] {
        guard let session = peers[peer]?.session, !session.peerChoking, session.amInterested else { return [] }
        let room = configuration.requestQueueDepth - session.outstanding.count
        guard room > 0 else { return [] }
        return picker.requests(for: peer, peerPieces: session.peerPieces, count: room).map { send(peer, .request($0)) }
    }

    private mutating func receivedBlock(_ block: BlockRequest, data: ByteBuffer, from peer: Peer) -> [Action] {
        downloaded += Int64(block.length)
        peers[peer]?.bytesFromPeer += block.length
        let outcome = picker.received(block, from: peer)
        var actions: [Action] = outcome.cancelAt.map { send($0, .cancel(block)) }
        var buffer = assembling[block.piece] ?? [UInt8](repeating: 0, count: info.layout.length(of: block.piece))
        buffer.withUnsafeMutableBytes { target in
            data.withUnsafeReadableBytes { source in
                target.baseAddress!.advanced(by: block.begin).copyMemory(from: source.baseAddress!, byteCount: source.count)
            }
        }
        contributors[block.piece, default: []].insert(peer)
        if let piece = outcome.completePiece {
            assembling[piece] = nil
            actions.append(.verify(piece, buffer))
        } else {
            assembling[block.piece] = buffer
        }
        return actions + fillRequests(for: peer)
    }
}
