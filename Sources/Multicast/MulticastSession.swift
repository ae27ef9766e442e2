import Crypto
import Metainfo

/// Which torrent a multicast packet belongs to: the first 8 bytes of
/// SHA-256("vmswarm-multicast" ‖ info-hash), read big-endian.
///
/// Several torrents may share a group (or a misconfigured sender may use ours); the session in
/// every packet's header lets a receiver drop another torrent's packets after reading 16 bytes,
/// before any of their fields are trusted. Derived rather than random so that every node computes
/// it from the torrent alone, and hashed rather than truncated so that it cannot be chosen to
/// collide with a given torrent's by picking a related info-hash.
public struct MulticastSession: Hashable, Sendable, CustomStringConvertible {
    public let value: UInt64

    public init(value: UInt64) { self.value = value }

    /// What a decoded data packet holds: data packets name no session (their sender instance does).
    public static let unnamed = MulticastSession(value: 0)

    public init(infoHash: InfoHash) {
        var hasher = SHA256()
        hasher.update(data: Array("vmswarm-multicast".utf8))
        hasher.update(data: infoHash.bytes)
        value = Array(hasher.finalize()).prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    public var description: String {
        "session " + HexCoding.encode((0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) })
    }
}

extension PieceLayout {
    /// How many multicast blocks (of `MulticastPacket.blockLength` bytes, the last one shorter)
    /// carry the piece.
    public func multicastBlockCount(of piece: PieceIndex) -> Int {
        (length(of: piece) + MulticastPacket.blockLength - 1) / MulticastPacket.blockLength
    }

    /// Whether the booster can carry the torrent: a piece has at most 65,536 blocks (91 MiB).
    public var fitsMulticast: Bool {
        pieceLength <= MulticastPacket.maxBlocksPerPiece * MulticastPacket.blockLength
    }

    /// The length of one multicast block of the piece.
    public func multicastBlockLength(of piece: PieceIndex, block: Int) -> Int {
        min(MulticastPacket.blockLength, length(of: piece) - block * MulticastPacket.blockLength)
    }
}
