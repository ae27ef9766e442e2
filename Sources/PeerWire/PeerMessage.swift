import Metainfo
import NIOCore

/// The 68-byte greeting that opens every connection (BEP 3), with the reserved bits that announce
/// the extensions a client speaks.
public struct Handshake: Equatable, Sendable {
    public static let length = 68
    static let protocolName = Array("BitTorrent protocol".utf8)

    public var infoHash: InfoHash
    public var peerID: PeerID
    public var reserved: [UInt8]

    public init(infoHash: InfoHash, peerID: PeerID, fast: Bool = true, extensions: Bool = true) {
        self.infoHash = infoHash
        self.peerID = peerID
        var reserved = [UInt8](repeating: 0, count: 8)
        if extensions { reserved[5] |= 0x10 }  // BEP 10
        if fast { reserved[7] |= 0x04 }  // BEP 6
        self.reserved = reserved
    }

    public var supportsFast: Bool { reserved[7] & 0x04 != 0 }
    public var supportsExtensions: Bool { reserved[5] & 0x10 != 0 }

    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(Self.protocolName.count))
        buffer.writeBytes(Self.protocolName)
        buffer.writeBytes(reserved)
        buffer.writeBytes(infoHash.bytes)
        buffer.writeBytes(peerID.bytes)
    }

    /// Reads a handshake when all 68 bytes are there; nil while fewer have arrived.
    public static func read(from buffer: inout ByteBuffer) throws(PeerWireError) -> Handshake? {
        guard let nameLength = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        guard nameLength == protocolName.count else { throw .notBitTorrent }
        guard buffer.readableBytes >= length else {
            // Check the name as soon as it is there, so a stranger is refused without waiting.
            if let name = buffer.getBytes(at: buffer.readerIndex + 1, length: min(buffer.readableBytes - 1, protocolName.count)),
                name != Array(protocolName.prefix(name.count))
            {
                throw .notBitTorrent
            }
            return nil
        }
        buffer.moveReaderIndex(forwardBy: 1)
        guard buffer.readBytes(length: protocolName.count) == protocolName,
            let reserved = buffer.readBytes(length: 8),
            let hash = buffer.readBytes(length: 20).flatMap({ InfoHash(bytes: $0) }),
            let id = buffer.readBytes(length: 20).flatMap({ PeerID(bytes: $0) })
        else { throw .notBitTorrent }
        var handshake = Handshake(infoHash: hash, peerID: id)
        handshake.reserved = reserved
        return handshake
    }
}

/// One peer wire message after the handshake (BEP 3, the fast extension BEP 6, extensions BEP 10).
public enum PeerMessage: Equatable, Sendable {
    case keepAlive
    case choke
    case unchoke
    case interested
    case notInterested
    case have(PieceIndex)
    /// The raw payload; its size and spare bits are checked against the torrent by `PeerSession`.
    case bitfield([UInt8])
    case request(BlockRequest)
    case piece(PieceIndex, begin: Int, block: ByteBuffer)
    case cancel(BlockRequest)
    /// BEP 5: the peer's DHT port.
    case port(UInt16)
    case suggest(PieceIndex)
    case haveAll
    case haveNone
    case reject(BlockRequest)
    case allowedFast(PieceIndex)
    case extended(id: UInt8, payload: ByteBuffer)
    /// An id this side does not know; BEP 3 says to ignore it.
    case unknown(id: UInt8, length: Int)

    enum ID: UInt8 {
        case choke = 0, unchoke, interested, notInterested, have, bitfield, request, piece, cancel, port
        case suggest = 0x0D, haveAll = 0x0E, haveNone = 0x0F, reject = 0x10, allowedFast = 0x11
        case extended = 20
    }
}

/// Why a peer's bytes were refused. Each is a reason to drop the connection and count it.
public enum PeerWireError: Error, Equatable, Sendable, CustomStringConvertible {
    case notBitTorrent
    case messageTooLong(length: Int, limit: Int)
    case wrongLength(message: String, length: Int)

    public var description: String {
        switch self {
        case .notBitTorrent: "not a BitTorrent handshake"
        case .messageTooLong(let length, let limit): "message of \(length) bytes exceeds the limit of \(limit)"
        case .wrongLength(let message, let length): "\(message) message with a payload of \(length) bytes"
        }
    }
}
