extension BencodeValue {
    /// The canonical encoding: shortest integers, dictionary keys sorted by raw bytes.
    public func encoded() -> [UInt8] {
        var output: [UInt8] = []
        append(to: &output)
        return output
    }

    func append(to output: inout [UInt8]) {
        switch self {
        case .integer(let value):
            output.append(UInt8(ascii: "i"))
            output.append(contentsOf: String(value).utf8)
            output.append(UInt8(ascii: "e"))
        case .bytes(let value):
            Bencode.appendString(value, to: &output)
        case .list(let items):
            output.append(UInt8(ascii: "l"))
            for item in items { item.append(to: &output) }
            output.append(UInt8(ascii: "e"))
        case .dictionary(let entries):
            output.append(UInt8(ascii: "d"))
            for (key, value) in entries.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                Bencode.appendString(key, to: &output)
                value.append(to: &output)
            }
            output.append(UInt8(ascii: "e"))
        }
    }
}

/// Encoding helpers for documents assembled from parts.
public enum Bencode {
    static func appendString(_ bytes: [UInt8], to output: inout [UInt8]) {
        output.append(contentsOf: String(bytes.count).utf8)
        output.append(UInt8(ascii: ":"))
        output.append(contentsOf: bytes)
    }

    /// Encodes a dictionary whose values are already encoded, sorting the keys canonically.
    ///
    /// This is how a torrent is written around an `info` dictionary that must stay byte-for-byte as
    /// it was read (its hash is the torrent's identity), whatever else changes around it.
    public static func encodeDictionary(preencoded entries: [(key: [UInt8], encoded: [UInt8])]) -> [UInt8] {
        var output: [UInt8] = [UInt8(ascii: "d")]
        for entry in entries.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            appendString(entry.key, to: &output)
            output.append(contentsOf: entry.encoded)
        }
        output.append(UInt8(ascii: "e"))
        return output
    }
}
