/// A decoded bencode value together with where it came from: the exact byte range it occupied in the
/// input. The range is what lets a torrent's info-hash be taken over the original `info` bytes, and
/// lets every later error (in the metainfo layer too) name the byte offset at fault.
public struct BencodeNode: Sendable {
    public enum Content: Sendable {
        case integer(Int64)
        case bytes([UInt8])
        case list([BencodeNode])
        /// Entries in input order. Strictly decoded input has them sorted and unique.
        case dictionary([BencodeEntry])
    }

    /// The bytes this value occupied in the input, from its first byte to one past its last.
    public let range: Range<Int>
    public let content: Content

    public init(range: Range<Int>, content: Content) {
        self.range = range
        self.content = content
    }

    // The accessors below are kept out of line: inlined into another module (cross-module
    // optimization in release builds), they crash the Swift 6.3.1 optimizer's ownership verifier.
    public var integer: Int64? {
        @inline(never) get {
            switch content {
            case .integer(let value): value
            default: nil
            }
        }
    }

    public var bytes: [UInt8]? {
        @inline(never) get {
            switch content {
            case .bytes(let value): value
            default: nil
            }
        }
    }

    public var list: [BencodeNode]? {
        @inline(never) get {
            switch content {
            case .list(let value): value
            default: nil
            }
        }
    }

    public var entries: [BencodeEntry]? {
        @inline(never) get {
            switch content {
            case .dictionary(let value): value
            default: nil
            }
        }
    }

    /// The first dictionary entry whose key is `key` in UTF-8, or nil (also when this is not a dictionary).
    public subscript(key: String) -> BencodeNode? {
        guard case .dictionary(let entries) = content else { return nil }
        let wanted = Array(key.utf8)
        return entries.first { $0.key == wanted }?.value
    }

    /// A short name of this value's kind, for error messages.
    public var kindName: String {
        switch content {
        case .integer: "integer"
        case .bytes: "byte string"
        case .list: "list"
        case .dictionary: "dictionary"
        }
    }

    /// The plain value, without byte ranges. Where a leniently decoded dictionary repeats a key, the
    /// first occurrence wins (as it does for `subscript(key:)`).
    public var value: BencodeValue {
        switch content {
        case .integer(let value): return .integer(value)
        case .bytes(let value): return .bytes(value)
        case .list(let nodes): return .list(nodes.map(\.value))
        case .dictionary(let entries):
            var result: [[UInt8]: BencodeValue] = [:]
            result.reserveCapacity(entries.count)
            for entry in entries where result[entry.key] == nil {
                result[entry.key] = entry.value.value
            }
            return .dictionary(result)
        }
    }
}

/// One key/value pair of a decoded dictionary.
public struct BencodeEntry: Sendable {
    public let key: [UInt8]
    /// Offset of the key's first byte (its length prefix) in the input.
    public let keyOffset: Int
    public let value: BencodeNode

    public init(key: [UInt8], keyOffset: Int, value: BencodeNode) {
        self.key = key
        self.keyOffset = keyOffset
        self.value = value
    }
}
