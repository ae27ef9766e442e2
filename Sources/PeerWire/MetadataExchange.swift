import Bencode
import Metainfo
import NIOCore

/// BEP 9 geometry: the info dictionary travels in 16 KiB pieces, the last one shorter.
public enum MetadataPiece {
    public static let length = 16 << 10
    /// The largest info dictionary fetched or believed. A VM image of 2^22 pieces (the most
    /// `PieceLayout` allows) has 80 MiB of hashes, but real ones are far smaller: 8 MiB is 419,430
    /// pieces, 100 TiB at 256 MiB pieces. A peer's claimed size is what a fetcher allocates.
    public static let maxMetadataSize = 8 << 20
    public static let maxPieces = maxMetadataSize / length

    /// Pieces of a dictionary of `size` bytes (1...maxMetadataSize); division, never `size + 16383`.
    public static func count(forSize size: Int) -> Int {
        size / length + (size % length == 0 ? 0 : 1)
    }

    /// The length of piece `index` of a dictionary of `size` bytes, nil when there is no such piece.
    public static func length(of index: Int, size: Int) -> Int? {
        guard index >= 0, index < count(forSize: size) else { return nil }
        return index == count(forSize: size) - 1 ? size - index * length : length
    }
}

/// One ut_metadata message (BEP 9): a bencoded dictionary, and for `data` the piece's raw bytes
/// after it.
public enum MetadataMessage: Equatable, Sendable {
    case request(piece: Int)
    case data(piece: Int, totalSize: Int, bytes: [UInt8])
    case reject(piece: Int)

    /// The dictionary is small (three integers); beyond this it is not a ut_metadata header.
    static let maxHeaderLength = 256

    /// Reads a message. A peer controls all of it, so: the header is a dictionary of at most
    /// `maxHeaderLength` bytes; `msg_type` is 0, 1 or 2; `piece` lies within the largest dictionary
    /// allowed; `total_size` within 1...`maxMetadataSize`; a data piece is at most 16 KiB and
    /// requests and rejects carry nothing after the header. Whether a piece fits the dictionary
    /// being exchanged is for the caller, which knows its size.
    public init(payload: ByteBuffer) throws(PeerViolation) {
        let bytes = Array(payload.readableBytesView)
        let headerEnd: Int
        do {
            headerEnd = try BencodeScanner.endOfValue(in: bytes, limit: Self.maxHeaderLength)
        } catch {
            throw .malformedExtension("ut_metadata: \(error.reason)")
        }
        let root: BencodeNode
        do {
            root = try BencodeDecoder(mode: .lenient, limits: .init(maxInputSize: Self.maxHeaderLength, maxDepth: 2))
                .decode(bytes[0..<headerEnd])
        } catch {
            throw .malformedExtension("ut_metadata: \(error)")
        }
        guard root.entries != nil else { throw .malformedExtension("ut_metadata: \(root.kindName), not a dictionary") }
        guard let type = root["msg_type"]?.integer else { throw .malformedExtension("ut_metadata: no integer 'msg_type'") }
        guard let piece = root["piece"]?.integer, (0..<Int64(MetadataPiece.maxPieces)).contains(piece) else {
            throw .malformedExtension("ut_metadata: 'piece' missing or outside 0..<\(MetadataPiece.maxPieces)")
        }
        let trailing = bytes.count - headerEnd
        switch type {
        case 0, 2:
            guard trailing == 0 else { throw .malformedExtension("ut_metadata: \(trailing) bytes after a \(type == 0 ? "request" : "reject")") }
            self = type == 0 ? .request(piece: Int(piece)) : .reject(piece: Int(piece))
        case 1:
            guard let size = root["total_size"]?.integer, (1...Int64(MetadataPiece.maxMetadataSize)).contains(size) else {
                throw .malformedExtension("ut_metadata: data without a 'total_size' in 1...\(MetadataPiece.maxMetadataSize)")
            }
            guard trailing <= MetadataPiece.length else {
                throw .malformedExtension("ut_metadata: data piece of \(trailing) bytes, more than \(MetadataPiece.length)")
            }
            self = .data(piece: Int(piece), totalSize: Int(size), bytes: Array(bytes[headerEnd...]))
        default:
            throw .malformedExtension("ut_metadata: unknown msg_type \(type)")
        }
    }

    public var piece: Int {
        switch self {
        case .request(let piece), .reject(let piece), .data(let piece, _, _): piece
        }
    }

    public func encoded() -> ByteBuffer {
        var header: [[UInt8]: BencodeValue] = [Array("piece".utf8): .integer(Int64(piece))]
        var tail: [UInt8] = []
        switch self {
        case .request: header[Array("msg_type".utf8)] = .integer(0)
        case .reject: header[Array("msg_type".utf8)] = .integer(2)
        case .data(_, let totalSize, let bytes):
            header[Array("msg_type".utf8)] = .integer(1)
            header[Array("total_size".utf8)] = .integer(Int64(totalSize))
            tail = bytes
        }
        var buffer = ByteBuffer(bytes: BencodeValue.dictionary(header).encoded())
        buffer.writeBytes(tail)
        return buffer
    }
}

/// Answers ut_metadata requests from a node that holds the info dictionary: exactly the bytes of
/// the .torrent's `info` (what the info-hash is of), piece by piece.
public struct MetadataServer: Sendable {
    public let metadata: [UInt8]
    /// Answers given to one peer before the rest are rejected: each request is 30 bytes and each
    /// answer up to 16 KiB, so an unbounded peer could make us queue far more than it sends. Four
    /// copies of the dictionary, plus a few for clients that ask again after a hiccup.
    public var maxAnswersPerPeer: Int { 4 * MetadataPiece.count(forSize: metadata.count) + 16 }

    public init(metadata: [UInt8]) {
        self.metadata = metadata
    }

    /// The answer to `message` from a peer already answered `answered` times: data for a piece
    /// that exists, a reject for one that does not or once the peer had its share; nil for
    /// messages that need none (data and rejects sent to a node that is not fetching).
    public func answer(_ message: MetadataMessage, answered: Int) -> MetadataMessage? {
        guard case .request(let piece) = message else { return nil }
        guard answered < maxAnswersPerPeer, let length = MetadataPiece.length(of: piece, size: metadata.count) else {
            return .reject(piece: piece)
        }
        let start = piece * MetadataPiece.length
        return .data(piece: piece, totalSize: metadata.count, bytes: Array(metadata[start..<start + length]))
    }
}

/// Fetching the info dictionary of a magnet link from several peers (BEP 9), without I/O: peers
/// joining and leaving, their messages and the time in, requests and disconnects out.
///
/// Pieces go to peers that announced the size being fetched, a few requests each; a peer that
/// rejects, sends what was not asked, a piece of the wrong length or another total size, or sits on
/// a request past `requestTimeout` is dropped (a fetcher has no other use for it). The assembled
/// bytes must hash to the link's info-hash. When they do not, a single sender is known to have lied
/// and is dropped; with several, nobody can be told, so nobody is dropped: the next attempts fetch
/// the whole dictionary from one peer at a time, those not involved first, so the next failure has
/// one sender.
public struct MetadataFetch: Sendable {
    public typealias Peer = Int

    public enum Action: Equatable, Sendable {
        case send(Peer, MetadataMessage)
        case disconnect(Peer, reason: String)
        /// The info dictionary, its hash checked.
        case completed([UInt8])
    }

    public struct Configuration: Sendable {
        /// Requests outstanding at one peer.
        public var requestsPerPeer = 4
        /// Seconds a request may wait for its answer.
        public var requestTimeout: Double = 15
        public init() {}
    }

    private final class PeerState: @unchecked Sendable {
        let messageID: UInt8
        let size: Int
        var outstanding: [Int: Double] = [:]
        init(messageID: UInt8, size: Int) {
            self.messageID = messageID
            self.size = size
        }
    }

    public let infoHash: InfoHash
    public let configuration: Configuration
    private var peers: [Peer: PeerState] = [:]
    /// The attempt under way: the size fetched, pieces received and who sent each.
    private var size: Int?
    private var pieces: [[UInt8]?] = []
    private var senders: [Peer?] = []
    /// After a failed hash with several senders: fetch from one peer at a time (this one).
    private var soloMode = false
    private var soloPeer: Peer?
    /// Peers that sent part of a dictionary that failed its hash (not known to have lied).
    private var suspects: Set<Peer> = []
    private var finished = false

    /// Dictionaries that failed the hash, and peers dropped, for the status line and tests.
    public private(set) var hashFailures = 0
    public private(set) var peersDropped = 0
    public var isFinished: Bool { finished }
    public var connectedPeers: Int { peers.count }

    public init(infoHash: InfoHash, configuration: Configuration = Configuration()) {
        self.infoHash = infoHash
        self.configuration = configuration
    }

    /// A peer's extension handshake arrived: it offers the dictionary if it names `ut_metadata`
    /// and a `metadata_size`.
    public mutating func peerJoined(_ peer: Peer, handshake: ExtensionHandshake, now: Double) -> [Action] {
        guard !finished else { return [] }
        guard let id = handshake.messageIDs["ut_metadata"], id != 0 else {
            return [.disconnect(peer, reason: "does not speak ut_metadata")]
        }
        guard let size = handshake.metadataSize else {
            return [.disconnect(peer, reason: "offers no metadata (no metadata_size, or one over \(MetadataPiece.maxMetadataSize) bytes)")]
        }
        peers[peer] = PeerState(messageID: id, size: size)
        return assign(now: now)
    }

    public mutating func peerLeft(_ peer: Peer, now: Double) -> [Action] {
        guard peers.removeValue(forKey: peer) != nil else { return [] }
        if soloPeer == peer { restartSolo() }
        return assign(now: now)
    }

    public mutating func received(_ message: MetadataMessage, from peer: Peer, now: Double) -> [Action] {
        guard !finished, let state = peers[peer] else { return [] }
        switch message {
        case .request(let piece):
            // We have nothing to give yet.
            return [.send(peer, .reject(piece: piece))]
        case .reject(let piece):
            return drop(peer, "rejected metadata piece \(piece)", now: now)
        case .data(let piece, let totalSize, let bytes):
            guard state.outstanding.removeValue(forKey: piece) != nil else {
                return drop(peer, "sent metadata piece \(piece), which was not requested", now: now)
            }
            guard totalSize == state.size, totalSize == size else {
                return drop(peer, "sent total_size \(totalSize), having announced \(state.size)", now: now)
            }
            guard let expected = MetadataPiece.length(of: piece, size: totalSize), bytes.count == expected else {
                return drop(peer, "sent metadata piece \(piece) of \(bytes.count) bytes, not its length", now: now)
            }
            if pieces[piece] == nil {
                pieces[piece] = bytes
                senders[piece] = peer
            }
            if pieces.allSatisfy({ $0 != nil }) { return check(now: now) }
            return assign(now: now)
        }
    }

    /// Time passed: a peer that sat on a request longer than `requestTimeout` is dropped.
    public mutating func tick(now: Double) -> [Action] {
        guard !finished else { return [] }
        var actions: [Action] = []
        for (peer, state) in peers.sorted(by: { $0.key < $1.key })
        where state.outstanding.values.contains(where: { now - $0 >= configuration.requestTimeout }) {
            actions += drop(peer, "no answer to a metadata request in \(Int(configuration.requestTimeout)) s", now: now)
        }
        return actions + assign(now: now)
    }

    // MARK: Inside

    private mutating func drop(_ peer: Peer, _ reason: String, now: Double) -> [Action] {
        guard peers.removeValue(forKey: peer) != nil else { return [] }
        peersDropped += 1
        suspects.remove(peer)
        if soloPeer == peer { restartSolo() }
        return [.disconnect(peer, reason: reason)] + assign(now: now)
    }

    /// Peers that may be asked in this attempt.
    private func eligible(_ peer: Peer, _ state: PeerState) -> Bool {
        guard let size else { return false }
        if soloMode { return peer == soloPeer }
        return state.size == size
    }

    private mutating func startAttempt() {
        guard size == nil, !peers.isEmpty else { return }
        let chosen: (Peer, PeerState)?
        if soloMode {
            // Peers not involved in a failure first, the lowest handle (the earliest) among them.
            let ordered = peers.sorted { $0.key < $1.key }
            chosen = ordered.first(where: { !suspects.contains($0.key) }) ?? ordered.first
            soloPeer = chosen?.0
        } else {
            // The size most peers announce; a lone liar about the size is then asked for nothing.
            var votes: [Int: Int] = [:]
            for state in peers.values { votes[state.size, default: 0] += 1 }
            let best = votes.max { ($0.value, -$0.key) < ($1.value, -$1.key) }!.key
            chosen = peers.first { $0.value.size == best }
        }
        guard let (_, state) = chosen else { return }
        size = state.size
        let count = MetadataPiece.count(forSize: state.size)
        pieces = Array(repeating: nil, count: count)
        senders = Array(repeating: nil, count: count)
    }

    private mutating func restartSolo() {
        soloPeer = nil
        size = nil
        pieces = []
        senders = []
    }

    /// Hands missing pieces not yet asked for to eligible peers with room.
    private mutating func assign(now: Double) -> [Action] {
        guard !finished else { return [] }
        // An attempt whose every possible sender left is abandoned: the others announced
        // another size, so what was received cannot be part of what they would send.
        if size != nil, !peers.contains(where: { eligible($0.key, $0.value) }) { restartSolo() }
        startAttempt()
        guard size != nil else { return [] }
        var asked = Set(peers.values.flatMap(\.outstanding.keys))
        var actions: [Action] = []
        for (peer, state) in peers.sorted(by: { $0.key < $1.key }) where eligible(peer, state) {
            for piece in pieces.indices where pieces[piece] == nil && !asked.contains(piece) {
                guard state.outstanding.count < configuration.requestsPerPeer else { break }
                state.outstanding[piece] = now
                asked.insert(piece)
                actions.append(.send(peer, .request(piece: piece)))
            }
        }
        return actions
    }

    private mutating func check(now: Double) -> [Action] {
        let bytes = pieces.flatMap { $0 ?? [] }
        if InfoHash(hashingInfo: bytes) == infoHash {
            finished = true
            return [.completed(bytes)]
        }
        hashFailures += 1
        let contributors = Set(senders.compactMap { $0 })
        size = nil
        pieces = []
        senders = []
        soloPeer = nil
        if contributors.count == 1, let liar = contributors.first {
            return drop(liar, "sent metadata that does not hash to the info-hash", now: now)
        }
        // Nobody can be told: every sender becomes a suspect, and from now on the dictionary comes
        // from one peer at a time, so the next failure names its sender.
        suspects.formUnion(contributors)
        soloMode = true
        return assign(now: now)
    }
}

/// Finds where the one bencoded value at the start of `bytes` ends, looking at most `limit`
/// bytes in: a ut_metadata message is its header dictionary followed by raw bytes, and the
/// decoder reads whole inputs only.
enum BencodeScanner {
    struct Failure: Error {
        let reason: String
    }

    static func endOfValue(in bytes: [UInt8], limit: Int) throws(Failure) -> Int {
        let end = min(bytes.count, limit)
        var index = 0
        try skipValue(bytes, &index, end: end, depth: 0)
        return index
    }

    private static func skipValue(_ bytes: [UInt8], _ index: inout Int, end: Int, depth: Int) throws(Failure) {
        guard depth < 4 else { throw Failure(reason: "header nested too deep") }
        guard index < end else { throw Failure(reason: "header truncated or over \(end) bytes") }
        switch bytes[index] {
        case UInt8(ascii: "i"):
            index += 1
            while index < end, bytes[index] != UInt8(ascii: "e") { index += 1 }
            guard index < end else { throw Failure(reason: "unterminated integer in the header") }
            index += 1
        case UInt8(ascii: "l"), UInt8(ascii: "d"):
            index += 1
            while index < end, bytes[index] != UInt8(ascii: "e") { try skipValue(bytes, &index, end: end, depth: depth + 1) }
            guard index < end else { throw Failure(reason: "unterminated list or dictionary in the header") }
            index += 1
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            var length = 0
            while index < end, let digit = bytes[index].wholeNumberDigit {
                length = length * 10 + digit
                guard length <= end else { throw Failure(reason: "string longer than the header") }
                index += 1
            }
            guard index < end, bytes[index] == UInt8(ascii: ":") else { throw Failure(reason: "bad string length in the header") }
            index += 1
            guard end - index >= length else { throw Failure(reason: "string runs past the header") }
            index += length
        default:
            throw Failure(reason: "byte \(bytes[index]) at \(index) starts no bencode value")
        }
    }
}

extension UInt8 {
    fileprivate var wholeNumberDigit: Int? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) ? Int(self - UInt8(ascii: "0")) : nil
    }
}
