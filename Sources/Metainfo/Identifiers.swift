import Crypto

/// A torrent's identity: the SHA-1 of its bencoded `info` dictionary, exactly as the bytes appear in
/// the .torrent file (BEP 3).
public struct InfoHash: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 20

    /// The 20 raw bytes, as sent in handshakes and announce requests.
    public let bytes: [UInt8]

    /// Accepts exactly 20 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = Array(bytes)
    }

    /// Accepts 40 hexadecimal digits, either case.
    public init?(hex: String) {
        guard let bytes = HexCoding.decode(hex), bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// Hashes the given bencoded `info` dictionary bytes.
    public init(hashingInfo infoBytes: some Collection<UInt8>) {
        var hasher = Insecure.SHA1()
        Array(infoBytes).withUnsafeBytes { hasher.update(bufferPointer: $0) }
        self.bytes = Array(hasher.finalize())
    }

    /// 40 lowercase hex digits, the form tools print and magnets carry.
    public var hex: String { HexCoding.encode(bytes) }

    /// Every byte as `%XX` unless it is unreserved (RFC 3986), as in tracker announce URLs.
    public var percentEncoded: String { PercentEncoding.encode(bytes) }

    public var description: String { hex }

    // The tracker looks an info-hash up several times per announce (allowlist, swarm table): the
    // synthesized versions hash and compare it byte by byte (21 hasher calls, 20 comparisons), which
    // was a third of `TrackerState.announce`'s time under load.
    public static func == (lhs: Self, rhs: Self) -> Bool { TwentyBytes.equal(lhs.bytes, rhs.bytes) }

    public func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
}

/// A peer's self-chosen 20-byte identity (BEP 3, BEP 20 for the `-XX1234-` client prefix).
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 20
    public let bytes: [UInt8]

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = Array(bytes)
    }

    /// A fresh id: `-VS0100-` then 12 random alphanumerics, the BEP 20 convention.
    public static func random(prefix: String = "-VS0100-") -> PeerID {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        var bytes = Array(prefix.utf8.prefix(byteCount))
        while bytes.count < byteCount { bytes.append(alphabet[Int.random(in: 0..<alphabet.count)]) }
        return PeerID(validated: bytes)
    }

    private init(validated bytes: [UInt8]) { self.bytes = bytes }

    /// Compared and hashed as whole words, as `InfoHash` is.
    public static func == (lhs: Self, rhs: Self) -> Bool { TwentyBytes.equal(lhs.bytes, rhs.bytes) }

    public func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }

    /// Printable ASCII as is, other bytes as `%XX`.
    public var description: String {
        bytes.map { $0 >= 0x20 && $0 < 0x7F && $0 != 0x25 ? String(UnicodeScalar($0)) : "%" + HexCoding.encode([$0]) }
            .joined()
    }
}

/// Equality of two byte arrays, in words when both hold 20 bytes (info-hashes and peer ids).
enum TwentyBytes {
    @inline(__always)
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == 20, b.count == 20 else { return a == b }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in
                x.loadUnaligned(as: UInt64.self) == y.loadUnaligned(as: UInt64.self)
                    && x.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == y.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    && x.loadUnaligned(fromByteOffset: 16, as: UInt32.self) == y.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
            }
        }
    }
}

/// Index of a piece within a torrent. A type of its own so that a byte offset can never be passed
/// where a piece belongs.
public struct PieceIndex: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let value: Int

    public init(_ value: Int) { self.value = value }

    public static func < (lhs: PieceIndex, rhs: PieceIndex) -> Bool { lhs.value < rhs.value }

    public var description: String { "piece \(value)" }
}

/// Hexadecimal digits to bytes and back (info-hashes, percent-escapes).
public enum HexCoding {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = nibble(chars[index]), let low = nibble(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    /// The value of one hex digit (either case), or nil.
    public static func nibble(_ char: UInt8) -> UInt8? {
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): char - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// RFC 3986 percent-encoding of raw bytes, leaving only unreserved characters as they are.
public enum PercentEncoding {
    private static let hex = Array("0123456789ABCDEF".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func encode(_ text: String) -> String { encode(text.utf8) }
}
