import Bencode
import Crypto
import Foundation
import Metainfo

/// One entry of a sealed torrent's `vmswarm-recipients` list: the content key wrapped with HPKE for
/// one site's X25519 key, bound to the torrent's info bytes.
public struct RecipientEntry: Hashable, Sendable {
    public static let suite = "hpke-x25519-sha256-aes256gcm"
    static let encapsulatedKeyLength = 32
    static let wrappedKeyLength = ContentKey.byteCount + 16

    /// `SitePublicKey.keyID` of the recipient.
    public let keyID: [UInt8]
    /// The HPKE encapsulated key (`enc`).
    public let encapsulatedKey: [UInt8]
    /// The content key sealed by HPKE (`ct`): 32 bytes and a 16-byte tag.
    public let wrappedKey: [UInt8]

    var bencoded: BencodeValue {
        .dictionary([
            Array("suite".utf8): .string(Self.suite),
            Array("key-id".utf8): .bytes(keyID),
            Array("enc".utf8): .bytes(encapsulatedKey),
            Array("ct".utf8): .bytes(wrappedKey),
        ])
    }

    init(keyID: [UInt8], encapsulatedKey: [UInt8], wrappedKey: [UInt8]) {
        self.keyID = keyID
        self.encapsulatedKey = encapsulatedKey
        self.wrappedKey = wrappedKey
    }

    /// Reads one entry; nil when it names a suite this implementation does not know (skipped, so a
    /// later suite can stand beside this one).
    static func parse(_ node: BencodeNode, index: Int) throws(SealingError) -> RecipientEntry? {
        let reader = SealedFieldReader(prefix: "\(KeyWrap.listKey)[\(index)]")
        let entry = try reader.dictionary(node)
        guard try reader.bytes(try reader.required(entry, "suite"), "suite") == Array(suite.utf8) else { return nil }
        return RecipientEntry(
            keyID: try reader.bytes(try reader.required(entry, "key-id"), "key-id", count: Fingerprint.keyIDLength),
            encapsulatedKey: try reader.bytes(try reader.required(entry, "enc"), "enc", count: encapsulatedKeyLength),
            wrappedKey: try reader.bytes(try reader.required(entry, "ct"), "ct", count: wrappedKeyLength))
    }
}

/// HPKE (RFC 9180, base mode) wrapping of a content key for a site: DHKEM(X25519, HKDF-SHA256),
/// HKDF-SHA256, AES-256-GCM, with `info = "vmswarm-wrap-v1" ‖ SHA-256(info bytes)` so an entry
/// opens only for the torrent it was made for.
public enum KeyWrap {
    /// The top-level key of the recipients list in a sealed torrent.
    public static let listKey = "vmswarm-recipients"
    /// The most entries read from a torrent.
    public static let maxRecipients = 10_000

    static let ciphersuite = HPKE.Ciphersuite(kem: .Curve25519_HKDF_SHA256, kdf: .HKDF_SHA256, aead: .AES_GCM_256)

    static func hpkeInfo(infoBytes: [UInt8]) -> Data {
        Data("vmswarm-wrap-v1".utf8) + Data(SHA256.hash(data: infoBytes))
    }

    /// Wraps `key` for `recipient`, bound to the torrent whose info dictionary is `infoBytes`.
    public static func wrap(
        _ key: ContentKey, for recipient: SitePublicKey, infoBytes: [UInt8]
    ) throws(SealingError) -> RecipientEntry {
        do {
            var sender = try HPKE.Sender(
                recipientKey: recipient.agreementKey, ciphersuite: ciphersuite, info: hpkeInfo(infoBytes: infoBytes))
            let wrapped = try sender.seal(key.bytes, authenticating: Data())
            return RecipientEntry(
                keyID: recipient.keyID, encapsulatedKey: Array(sender.encapsulatedKey), wrappedKey: Array(wrapped))
        } catch {
            // Not expected: SitePublicKey admits only usable keys, and the content key is 32 bytes.
            throw .wrapFailed(fingerprint: recipient.description)
        }
    }

    /// The content key from the entry addressed to `identity`. The caller still has to check it
    /// against the torrent's key check (`SealedTorrent.contentKey(for:)` does).
    public static func unwrap(
        _ entries: [RecipientEntry], with identity: SiteKeyPair, infoBytes: [UInt8]
    ) throws(SealingError) -> ContentKey {
        let fingerprint = identity.publicKey.description
        let mine = entries.filter { $0.keyID == identity.publicKey.keyID }
        guard !mine.isEmpty else { throw .notARecipient(fingerprint: fingerprint) }
        // Key ids are 64 bits: a second entry with the same id (a collision, or a planted entry)
        // must not hide the real one.
        for entry in mine {
            guard
                var recipient = try? HPKE.Recipient(
                    privateKey: identity.privateKey, ciphersuite: ciphersuite, info: hpkeInfo(infoBytes: infoBytes),
                    encapsulatedKey: Data(entry.encapsulatedKey)),
                let opened = try? recipient.open(entry.wrappedKey, authenticating: Data()),
                let key = ContentKey(bytes: opened)
            else { continue }
            return key
        }
        throw .unwrapFailed(fingerprint: fingerprint)
    }
}
