import Metainfo

/// A torrent whose pieces travel in one form and are kept in another: a sealed image is ciphertext
/// on the wire (what the torrent's hashes cover) and plaintext on disk. The store applies the
/// transform after a piece's hash has verified, and back again when a peer asks for a block.
public protocol PieceTransform: Sendable {
    /// Bytes kept on disk (one file).
    var storedLength: Int64 { get }
    /// Where a piece's stored form lies in the file.
    func storedRange(of piece: PieceIndex) -> Range<Int64>
    /// Calls `body` with the stored form of a piece whose hash verified (valid only during the
    /// call, so a transform can hand over its own buffer without a copy). Throws when the piece does
    /// not authenticate; `body` is not called then, and nothing of it is written.
    func withStored<Result>(
        _ piece: PieceIndex, fromWire wire: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> Result
    ) throws -> Result
    /// Calls `body` with the wire form of a stored piece, byte for byte what the torrent's hash
    /// covers (valid only during the call, so a transform can lend its own buffer).
    func withWire<Result>(
        _ piece: PieceIndex, fromStored stored: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> Result
    ) throws -> Result
}
