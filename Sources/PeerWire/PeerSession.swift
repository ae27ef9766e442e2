import Metainfo
import NIOCore

/// What a peer did that the protocol forbids. The connection is dropped and the reason counted.
public enum PeerViolation: Error, Equatable, Sendable, CustomStringConvertible {
    case badBitfield(Bitfield.Problem)
    case pieceOutOfRange(PieceIndex)
    case invalidRequest(BlockRequest)
    case unrequestedBlock(BlockRequest)
    case fastMessageWithoutFastExtension(String)
    case tooManyRequests(limit: Int)
    case malformedExtension(String)

    public var description: String {
        switch self {
        case .badBitfield(let problem): "bitfield refused: \(problem)"
        case .pieceOutOfRange(let piece): "\(piece) is outside the torrent"
        case .invalidRequest(let request): "request for \(request), outside its piece or too long"
        case .unrequestedBlock(let block): "sent \(block), which was not requested"
        case .fastMessageWithoutFastExtension(let message): "\(message) without the fast extension"
        case .tooManyRequests(let limit): "more than \(limit) requests queued"
        case .malformedExtension(let why): "malformed extension message: \(why)"
        }
    }
}

/// One connection's protocol state and the rules of what the peer may send (BEP 3, 6, 10, 11).
/// Pure: messages in, events out; the swarm engine decides what to do with them.
public struct PeerSession: Sendable {
    public enum Event: Equatable, Sendable {
        case choked
        /// Requests that a choke cancelled (without the fast extension every outstanding one is lost).
        case requestsDropped([BlockRequest])
        case unchoked
        case interested(Bool)
        case has(PieceIndex)
        /// The peer's piece set arrived (bitfield, have-all or have-none); these pieces are new to
        /// us (any announced by an earlier `have` are not repeated).
        case hasPieces(Bitfield)
        case block(BlockRequest, ByteBuffer)
        /// A block arrived after we cancelled it: harmless, not counted against the peer.
        case lateBlock(BlockRequest)
        case requested(BlockRequest)
        case cancelled(BlockRequest)
        case rejected(BlockRequest)
        case suggested(PieceIndex)
        case allowedFast(PieceIndex)
        case extensionHandshake(ExtensionHandshake)
        case peerExchange(PeerExchange)
        case dhtPort(UInt16)
        case ignored(String)
    }

    public let layout: PieceLayout
    /// Both sides set the fast-extension bit.
    public let fast: Bool
    public private(set) var peerPieces: Bitfield
    public private(set) var peerChoking = true
    public private(set) var peerInterested = false
    public private(set) var amChoking = true
    public private(set) var amInterested = false
    /// Our requests the peer has not answered.
    public private(set) var outstanding: Set<BlockRequest> = []
    /// The peer's requests we have not served.
    public private(set) var peerRequests: [BlockRequest] = []
    public private(set) var peerExtensions: ExtensionHandshake?
    /// Pieces the peer lets us request while choked (BEP 6).
    public private(set) var allowedFastFromPeer: Set<PieceIndex> = []
    /// Blocks we cancelled while requested, with how many copies may still come: a block asked,
    /// cancelled and asked again (an urgent piece jumping the queue, twice) can arrive once per
    /// request. At most `maximumLateCopies` per block are excused.
    private var cancelled: [BlockRequest: Int] = [:]
    static let maximumLateCopies = 8

    /// Requests a peer may queue with us before it is a flood.
    public static let maxPeerRequests = 500
    /// Pieces a peer may offer as allowed-fast (BEP 6) that we keep.
    public static let maxAllowedFast = 64

    public init(layout: PieceLayout, ourHandshake: Handshake, theirHandshake: Handshake) {
        self.layout = layout
        fast = ourHandshake.supportsFast && theirHandshake.supportsFast
        peerPieces = Bitfield(pieceCount: layout.pieceCount)
    }

    public mutating func receive(_ message: PeerMessage) throws(PeerViolation) -> [Event] {
        switch message {
        case .keepAlive:
            return []
        case .choke:
            peerChoking = true
            guard !fast else { return [.choked] }
            // Without the fast extension a choke discards every outstanding request.
            let dropped = Array(outstanding)
            outstanding.removeAll()
            return dropped.isEmpty ? [.choked] : [.choked, .requestsDropped(dropped)]
        case .unchoke:
            peerChoking = false
            return [.unchoked]
        case .interested:
            peerInterested = true
            return [.interested(true)]
        case .notInterested:
            peerInterested = false
            return [.interested(false)]
        case .have(let piece):
            try check(piece)
            return peerPieces.insert(piece) ? [.has(piece)] : []
        case .bitfield(let bytes):
            let pieces: Bitfield
            do {
                pieces = try Bitfield(bytes: bytes, pieceCount: layout.pieceCount)
            } catch {
                throw .badBitfield(error)
            }
            return receivePieceSet(pieces)
        case .haveAll, .haveNone:
            guard fast else { throw .fastMessageWithoutFastExtension(message == .haveAll ? "have-all" : "have-none") }
            return receivePieceSet(Bitfield(pieceCount: layout.pieceCount, all: message == .haveAll))
        case .request(let request):
            guard layout.isValid(request) else { throw .invalidRequest(request) }
            if amChoking {
                // BEP 3: requests while choked are ignored; BEP 6: they are rejected.
                return fast ? [.ignored("request while choked: reject it")] : [.ignored("request while choked")]
            }
            guard peerRequests.count < Self.maxPeerRequests else { throw .tooManyRequests(limit: Self.maxPeerRequests) }
            peerRequests.append(request)
            return [.requested(request)]
        case .cancel(let request):
            guard let position = peerRequests.firstIndex(of: request) else { return [] }
            peerRequests.remove(at: position)
            return [.cancelled(request)]
        case .piece(let piece, let begin, let data):
            let block = BlockRequest(piece: piece, begin: begin, length: data.readableBytes)
            if outstanding.remove(block) != nil { return [.block(block, data)] }
            if let copies = cancelled[block] {
                cancelled[block] = copies > 1 ? copies - 1 : nil
                return [.lateBlock(block)]
            }
            throw .unrequestedBlock(block)
        case .reject(let request):
            guard fast else { throw .fastMessageWithoutFastExtension("reject") }
            guard outstanding.remove(request) != nil else { return [.ignored("reject of a block not requested")] }
            return [.rejected(request)]
        case .suggest(let piece):
            guard fast else { throw .fastMessageWithoutFastExtension("suggest") }
            try check(piece)
            return [.suggested(piece)]
        case .allowedFast(let piece):
            guard fast else { throw .fastMessageWithoutFastExtension("allowed-fast") }
            try check(piece)
            // BEP 6 suggests 10; a peer naming every piece of a large torrent would otherwise grow
            // this set to millions of entries. Beyond the cap the offer is ignored, not an offence.
            guard allowedFastFromPeer.count < Self.maxAllowedFast || allowedFastFromPeer.contains(piece) else {
                return [.ignored("allowed-fast beyond \(Self.maxAllowedFast) pieces")]
            }
            allowedFastFromPeer.insert(piece)
            return [.allowedFast(piece)]
        case .port(let port):
            return [.dhtPort(port)]
        case .extended(let id, let payload):
            if id == 0 {
                let handshake = try ExtensionHandshake(payload: payload)
                peerExtensions = handshake
                return [.extensionHandshake(handshake)]
            }
            if id == ExtensionHandshake.pexID {
                return [.peerExchange(try PeerExchange(payload: payload))]
            }
            return [.ignored("extension message \(id)")]
        case .unknown(let id, _):
            return [.ignored("unknown message id \(id)")]
        }
    }

    /// Records what we send, so that later answers can be checked against it.
    public mutating func sent(_ message: PeerMessage) {
        switch message {
        case .choke:
            amChoking = true
            if !fast { peerRequests.removeAll() }
        case .unchoke:
            amChoking = false
        case .interested:
            amInterested = true
        case .notInterested:
            amInterested = false
        case .request(let request):
            outstanding.insert(request)
        case .cancel(let request):
            if outstanding.remove(request) != nil { cancelled[request] = min(Self.maximumLateCopies, (cancelled[request] ?? 0) + 1) }
        case .piece(let piece, let begin, let data):
            let block = BlockRequest(piece: piece, begin: begin, length: data.readableBytes)
            if let position = peerRequests.firstIndex(of: block) { peerRequests.remove(at: position) }
        case .reject(let request):
            if let position = peerRequests.firstIndex(of: request) { peerRequests.remove(at: position) }
        default:
            break
        }
    }

    /// BEP 3 and 6 want the piece set once and first; real clients send it after their extension
    /// handshake (libtorrent), or twice (aria2: have-none, then a bitfield). A peer never loses
    /// pieces, so every piece set is merged into what it had announced, and only new pieces reported.
    private mutating func receivePieceSet(_ pieces: Bitfield) -> [Event] {
        var fresh = Bitfield(pieceCount: layout.pieceCount)
        for piece in layout.pieces where pieces[piece] && peerPieces.insert(piece) { fresh.insert(piece) }
        return [.hasPieces(fresh)]
    }

    private func check(_ piece: PieceIndex) throws(PeerViolation) {
        guard layout.contains(piece) else { throw .pieceOutOfRange(piece) }
    }
}
