import Metainfo
import Storage

/// Why a sealed image, a sealed torrent or a key was refused: which piece, field or file, and what was
/// wrong with it, so that every failure is one line a person can act on.
public enum SealingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The torrent has no `vmswarm-sealed` entry: it is a plain torrent.
    case notSealed
    /// The torrent itself is not a valid torrent.
    case torrent(MetainfoError)
    /// A field of the sealing format is missing, of the wrong type, or contradicts the torrent.
    /// `offset` is the byte offset in the .torrent file, where known.
    case invalidField(field: String, problem: String, offset: Int?)
    /// A version, cipher or parameter this implementation does not handle.
    case unsupported(String)
    /// Parameters for a new sealed image that cannot be used (a piece length that is not a power of two).
    case invalidParameters(String)

    /// The piece's tag did not verify: the key is wrong, or the piece or the torrent was altered.
    case authenticationFailed(piece: Int)
    /// A sealed piece of the wrong length was handed to `open`.
    case sealedPieceLength(piece: Int, expected: Int, found: Int)
    /// A plaintext chunk of the wrong length was handed to `seal`.
    case plaintextLength(piece: Int, expected: Int, found: Int)
    /// A piece index outside the image.
    case pieceOutOfRange(piece: Int, pieceCount: Int)
    /// The content key does not match the torrent's `key-check`.
    case wrongKey
    /// The image changed length between planning and sealing.
    case imageChanged(path: String, expected: Int64, found: Int64)

    /// `--trust` was given but the torrent carries no vmswarm signature.
    case unsigned
    /// The torrent is signed, but by a key that is not trusted (its fingerprint).
    case untrustedPublisher(fingerprint: String)
    /// The signature does not verify against the trusted key: the torrent was altered after signing.
    case badSignature(fingerprint: String)

    /// No recipient entry for this node's key (its fingerprint).
    case notARecipient(fingerprint: String)
    /// The entry for this node's key did not open: it was made for another torrent or altered.
    case unwrapFailed(fingerprint: String)
    /// HPKE refused to wrap for this public key (not a usable X25519 key).
    case wrapFailed(fingerprint: String)

    /// A key file that cannot be used, and why.
    case keyFile(path: String, problem: String)
    case storage(StorageError)

    public var description: String {
        switch self {
        case .notSealed:
            "the torrent is not sealed (it has no 'info.vmswarm-sealed' entry)"
        case .torrent(let error):
            error.description
        case .invalidField(let field, let problem, let offset):
            "invalid sealed torrent\(offset.map { " at byte \($0)" } ?? ""): '\(field)' \(problem)"
        case .unsupported(let what):
            "unsupported sealed torrent: \(what)"
        case .invalidParameters(let problem):
            "cannot seal: \(problem)"
        case .authenticationFailed(let piece):
            "piece \(piece) failed authentication: wrong key or tampered data"
        case .sealedPieceLength(let piece, let expected, let found):
            "piece \(piece) holds \(found) sealed bytes but should hold \(expected)"
        case .plaintextLength(let piece, let expected, let found):
            "piece \(piece) was given \(found) plaintext bytes but its chunk holds \(expected)"
        case .pieceOutOfRange(let piece, let count):
            "piece \(piece) is outside a sealed image of \(count) pieces"
        case .wrongKey:
            "the content key does not match this torrent (wrong key file, or a recipient entry was replaced)"
        case .imageChanged(let path, let expected, let found):
            "\(path) changed while being sealed: it was \(expected) bytes and is now \(found)"
        case .unsigned:
            "the torrent is not signed, and a trusted publisher's signature is required"
        case .untrustedPublisher(let fingerprint):
            "the torrent is signed by \(fingerprint), which is not a trusted publisher"
        case .badSignature(let fingerprint):
            "the torrent's signature by \(fingerprint) does not verify: the torrent was altered after signing"
        case .notARecipient(let fingerprint):
            "the torrent's content key is not wrapped for this node's key \(fingerprint)"
        case .unwrapFailed(let fingerprint):
            "the content key wrapped for \(fingerprint) does not open: it belongs to another torrent or was altered"
        case .wrapFailed(let fingerprint):
            "cannot wrap the content key for \(fingerprint): not a usable X25519 public key"
        case .keyFile(let path, let problem):
            "key file \(path): \(problem)"
        case .storage(let error):
            error.description
        }
    }
}
