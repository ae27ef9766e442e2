import Crypto
import Metainfo

/// A site's or node's X25519 public key: what `--seal-for` names, and what content keys are wrapped to.
public struct SitePublicKey: Hashable, Sendable, CustomStringConvertible {
    /// The 32 raw bytes.
    public let bytes: [UInt8]

    /// Accepts 32 bytes that are a usable X25519 public key: not a point of small order.
    ///
    /// swift-crypto does not refuse those (it follows CryptoKit), yet every key agreement with one
    /// yields the all-zero secret, so a content key wrapped for it could be unwrapped by anyone.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == KeyFile.keyLength,
            let key = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: Array(bytes)),
            let secret = try? Curve25519.KeyAgreement.PrivateKey().sharedSecretFromKeyAgreement(with: key),
            secret.withUnsafeBytes({ $0.contains { $0 != 0 } })
        else { return nil }
        self.bytes = Array(bytes)
        self.agreementKey = key
    }

    /// Reads a `vmswarm-x25519-public` key file.
    public init(readingFile path: String) throws(SealingError) {
        guard let key = SitePublicKey(bytes: try KeyFile.load(path, expecting: .sitePublic)) else {
            throw .keyFile(path: path, problem: "holds a point of small order, not a usable X25519 public key")
        }
        self = key
    }

    /// Writes a `vmswarm-x25519-public` key file (mode 0644); never replaces an existing file.
    public func write(to path: String) throws(SealingError) {
        try KeyFile.save(bytes, kind: .sitePublic, to: path)
    }

    /// The first 8 bytes of SHA-256 of the key: how a recipient entry names its recipient.
    public var keyID: [UInt8] { Fingerprint.keyID(of: bytes) }

    /// `keyID` in hex, for people.
    public var description: String { "x25519:" + HexCoding.encode(keyID) }

    let agreementKey: Curve25519.KeyAgreement.PublicKey

    public static func == (lhs: SitePublicKey, rhs: SitePublicKey) -> Bool { lhs.bytes == rhs.bytes }
    public func hash(into hasher: inout Hasher) { hasher.combine(bytes) }
}

/// A site's or node's X25519 key pair (`--identity`): unwraps the content keys wrapped for it.
public struct SiteKeyPair: Sendable {
    let privateKey: Curve25519.KeyAgreement.PrivateKey
    public let publicKey: SitePublicKey

    /// A fresh key pair from the system's secure generator.
    public static func generate() -> SiteKeyPair {
        SiteKeyPair(privateKey: Curve25519.KeyAgreement.PrivateKey())
    }

    private init(privateKey: Curve25519.KeyAgreement.PrivateKey) {
        self.privateKey = privateKey
        // A clamped private scalar never gives a point of small order.
        self.publicKey = SitePublicKey(bytes: privateKey.publicKey.rawRepresentation)!
    }

    /// Accepts exactly 32 bytes of private key.
    public init?(privateKeyBytes: some Collection<UInt8>) {
        guard privateKeyBytes.count == KeyFile.keyLength,
            let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(privateKeyBytes))
        else { return nil }
        self.init(privateKey: key)
    }

    /// Reads a `vmswarm-x25519-private` key file (which must not be accessible to group or others).
    public init(readingFile path: String) throws(SealingError) {
        let bytes = try KeyFile.load(path, expecting: .sitePrivate)
        guard let pair = SiteKeyPair(privateKeyBytes: bytes) else {
            throw .keyFile(path: path, problem: "does not hold a usable X25519 private key")
        }
        self = pair
    }

    /// Writes the private key as a `vmswarm-x25519-private` file with mode 0600; never replaces an
    /// existing file. Write `publicKey` to a file of its own to hand out.
    public func write(to path: String) throws(SealingError) {
        try KeyFile.save(Array(privateKey.rawRepresentation), kind: .sitePrivate, to: path)
    }
}

/// A publisher's Ed25519 public key: what `--trust` names.
public struct PublisherPublicKey: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Accepts exactly 32 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == KeyFile.keyLength else { return nil }
        self.bytes = Array(bytes)
    }

    /// Reads a `vmswarm-ed25519-public` key file.
    public init(readingFile path: String) throws(SealingError) {
        self.bytes = try KeyFile.load(path, expecting: .publisherPublic)
    }

    /// Writes a `vmswarm-ed25519-public` key file (mode 0644); never replaces an existing file.
    public func write(to path: String) throws(SealingError) {
        try KeyFile.save(bytes, kind: .publisherPublic, to: path)
    }

    /// `ed25519:` and the first 8 bytes of SHA-256 of the key in hex, for people.
    public var description: String { "ed25519:" + HexCoding.encode(Fingerprint.keyID(of: bytes)) }

    /// Whether `signature` is this key's signature of `message`; false for bytes that are no key.
    func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes) else { return false }
        return key.isValidSignature(signature, for: message)
    }
}

/// A publisher's Ed25519 key pair (`--sign`): signs sealed torrents.
public struct PublisherKeyPair: Sendable {
    let privateKey: Curve25519.Signing.PrivateKey
    public let publicKey: PublisherPublicKey

    public static func generate() -> PublisherKeyPair {
        PublisherKeyPair(privateKey: Curve25519.Signing.PrivateKey())
    }

    private init(privateKey: Curve25519.Signing.PrivateKey) {
        self.privateKey = privateKey
        self.publicKey = PublisherPublicKey(bytes: privateKey.publicKey.rawRepresentation)!
    }

    /// Accepts exactly the 32-byte seed of an Ed25519 private key.
    public init?(privateKeyBytes: some Collection<UInt8>) {
        guard privateKeyBytes.count == KeyFile.keyLength,
            let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: Array(privateKeyBytes))
        else { return nil }
        self.init(privateKey: key)
    }

    /// Reads a `vmswarm-ed25519-private` key file (which must not be accessible to group or others).
    public init(readingFile path: String) throws(SealingError) {
        let bytes = try KeyFile.load(path, expecting: .publisherPrivate)
        guard let pair = PublisherKeyPair(privateKeyBytes: bytes) else {
            throw .keyFile(path: path, problem: "does not hold a usable Ed25519 private key")
        }
        self = pair
    }

    /// Writes the private key as a `vmswarm-ed25519-private` file with mode 0600; never replaces an
    /// existing file.
    public func write(to path: String) throws(SealingError) {
        try KeyFile.save(Array(privateKey.rawRepresentation), kind: .publisherPrivate, to: path)
    }

    func signature(for message: [UInt8]) -> [UInt8] {
        do {
            return Array(try privateKey.signature(for: message))
        } catch {
            // Ed25519 signing has no failure case for a valid private key.
            preconditionFailure("Ed25519 refused to sign: \(error)")
        }
    }
}

extension ContentKey {
    /// Reads a shared content key file: `vmswarm-content-key BASE64`, or one line of 64 hex digits
    /// (`openssl rand -hex 32`). The file must not be accessible to group or others.
    public init(readingFile path: String) throws(SealingError) {
        // KeyFile.read returns exactly 32 bytes.
        self.init(bytes: try KeyFile.load(path, expecting: .contentKey))!
    }

    /// Writes a `vmswarm-content-key` file with mode 0600; never replaces an existing file.
    public func write(to path: String) throws(SealingError) {
        try KeyFile.save(bytes, kind: .contentKey, to: path)
    }
}

enum Fingerprint {
    static let keyIDLength = 8

    static func keyID(of publicKey: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: publicKey).prefix(keyIDLength))
    }
}
