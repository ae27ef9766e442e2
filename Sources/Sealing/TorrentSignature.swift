import Bencode
import Crypto

/// A publisher's Ed25519 signature of a torrent, kept as BEP 35 keeps signatures: in a top-level
/// `signatures` dictionary, outside the info dictionary it covers.
///
/// The signed message is `"vmswarm-sign-v1" ‖ SHA-256(info bytes)`: domain-separated, and over
/// SHA-256 rather than the SHA-1 info-hash, whose collisions are practical (docs/encryption.md).
public struct TorrentSignature: Hashable, Sendable {
    /// The top-level dictionary, as BEP 35 names it.
    public static let dictionaryKey = "signatures"
    /// This signature's entry in that dictionary.
    public static let entryKey = "vmswarm-ed25519"
    static let signatureLength = 64

    /// The key that says it signed; informational, since verification uses the trusted key.
    public let publicKey: PublisherPublicKey
    public let signature: [UInt8]

    /// Signs the info dictionary `infoBytes`.
    public init(signing infoBytes: [UInt8], with publisher: PublisherKeyPair) {
        self.publicKey = publisher.publicKey
        self.signature = publisher.signature(for: Self.message(infoBytes: infoBytes))
    }

    init(publicKey: PublisherPublicKey, signature: [UInt8]) {
        self.publicKey = publicKey
        self.signature = signature
    }

    static func message(infoBytes: [UInt8]) -> [UInt8] {
        Array("vmswarm-sign-v1".utf8) + Array(SHA256.hash(data: infoBytes))
    }

    /// Returns the trusted key that made this signature of `infoBytes`; throws
    /// `untrustedPublisher` when the torrent names another signer and `badSignature` when the
    /// signature does not verify.
    public func verify(infoBytes: [UInt8], trusting trusted: [PublisherPublicKey]) throws(SealingError)
        -> PublisherPublicKey
    {
        guard let key = trusted.first(where: { $0 == publicKey }) else {
            throw .untrustedPublisher(fingerprint: publicKey.description)
        }
        guard key.isValidSignature(signature, for: Self.message(infoBytes: infoBytes)) else {
            throw .badSignature(fingerprint: key.description)
        }
        return key
    }

    var bencoded: BencodeValue {
        .dictionary([
            Array("public-key".utf8): .bytes(publicKey.bytes),
            Array("signature".utf8): .bytes(signature),
        ])
    }

    /// Reads the vmswarm entry of a torrent's `signatures` dictionary; nil when there is none (other
    /// signers' entries are ignored).
    static func parse(signatures node: BencodeNode) throws(SealingError) -> TorrentSignature? {
        let outer = try SealedFieldReader(prefix: dictionaryKey).dictionary(node)
        guard let entryNode = outer[entryKey] else { return nil }
        let reader = SealedFieldReader(prefix: "\(dictionaryKey).\(entryKey)")
        let entry = try reader.dictionary(entryNode)
        let keyBytes = try reader.bytes(try reader.required(entry, "public-key"), "public-key", count: 32)
        let signature = try reader.bytes(
            try reader.required(entry, "signature"), "signature", count: signatureLength)
        // 32 bytes make a PublisherPublicKey.
        return TorrentSignature(publicKey: PublisherPublicKey(bytes: keyBytes)!, signature: signature)
    }
}
