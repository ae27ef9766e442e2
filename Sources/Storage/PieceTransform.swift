import Metainfo

/// A torrent whose pieces travel in one form and are kept in another: a sealed image is ciphertext
/// on the wire (what the torrent's hashes cover) and plaintext on disk. The store applies the
/// transform after a piece's hash has verified, and back again when a peer asks for it.
///
/// Both directions work on buffers the store owns, so a piece is transformed where it is read or
/// sent from, not copied between buffers of the transform's making.
public protocol PieceTransform: Sendable {
    /// Bytes kept on disk (one file).
    var storedLength: Int64 { get }
    /// Where a piece's stored form lies in the file. It is never longer than the piece.
    func storedRange(of piece: PieceIndex) -> Range<Int64>
    /// Writes the stored form of a piece whose hash verified into `stored` (exactly its stored
    /// length). Throws when the piece does not authenticate; the store then writes nothing of it.
    func store(_ piece: PieceIndex, wire: UnsafeRawBufferPointer, into stored: UnsafeMutableRawBufferPointer) throws
    /// Turns a stored piece into its wire form where it lies: `buffer` is the piece's length and
    /// starts with its stored form; on return it holds exactly what the torrent's hash covers.
    func makeWire(_ piece: PieceIndex, inPlace buffer: UnsafeMutableRawBufferPointer) throws
    /// How many bytes at the end of a wire form authenticate all of it under the transform's key
    /// (an AEAD tag), or 0. The store keeps them for every piece whose hash verified, and checks a
    /// wire form made again for a peer by comparing them instead of hashing the whole piece.
    var wireTagLength: Int { get }
}

extension PieceTransform {
    public var wireTagLength: Int { 0 }
}
