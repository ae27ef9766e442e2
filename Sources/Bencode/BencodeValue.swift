/// A bencoded value as data: what you build to encode, and what a decoded document reduces to.
///
/// Byte strings stay bytes (`[UInt8]`): torrent fields such as `pieces` are binary, and names in
/// old torrents need not be UTF-8. Dictionaries are keyed by raw bytes; encoding sorts them by raw
/// byte order, so the encoding of a value is canonical and unique.
public indirect enum BencodeValue: Hashable, Sendable {
    case integer(Int64)
    case bytes([UInt8])
    case list([BencodeValue])
    case dictionary([[UInt8]: BencodeValue])

    /// A byte string holding the UTF-8 of `text`.
    public static func string(_ text: String) -> BencodeValue { .bytes(Array(text.utf8)) }

    public var integerValue: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var bytesValue: [UInt8]? {
        if case .bytes(let value) = self { return value }
        return nil
    }

    /// The byte string decoded as UTF-8, or nil when it is not a string or not valid UTF-8.
    public var stringValue: String? {
        guard case .bytes(let value) = self else { return nil }
        return String(validating: value, as: UTF8.self)
    }

    public var listValue: [BencodeValue]? {
        if case .list(let value) = self { return value }
        return nil
    }

    public var dictionaryValue: [[UInt8]: BencodeValue]? {
        if case .dictionary(let value) = self { return value }
        return nil
    }

    /// Looks up a dictionary entry by its key spelled as UTF-8 text.
    public subscript(key: String) -> BencodeValue? {
        dictionaryValue?[Array(key.utf8)]
    }
}

extension BencodeValue: ExpressibleByIntegerLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral {
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: BencodeValue...) { self = .list(elements) }
}
