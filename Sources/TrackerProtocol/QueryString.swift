import Metainfo

/// URL query strings as trackers use them: values are raw bytes (an info-hash is 20 binary bytes
/// percent-encoded), names are ASCII.
public enum QueryString {
    /// The most `name=value` pairs one request may carry (a scrape of 100 torrents fits).
    public static let maxPairs = 128

    /// Splits and percent-decodes `a=1&b=%FF`. `+` stays a literal plus, as RFC 3986 has it.
    ///
    /// Every announce goes through here. It works on the query's UTF-8 bytes in place, by integer
    /// offsets: splitting a `Substring`'s `UTF8View` generically (string indices, a slice per part)
    /// cost 18 % of the tracker's CPU with one connection per announce, more than the announce.
    public static func parse(_ query: some StringProtocol) throws(TrackerRequestError) -> [(name: String, value: [UInt8])] {
        let parsed = query.utf8.withContiguousStorageIfAvailable { parse(bytes: $0) }
            ?? Array(query.utf8).withUnsafeBufferPointer { parse(bytes: $0) }
        return try parsed.get()
    }

    private static func parse(bytes: UnsafeBufferPointer<UInt8>) -> Result<[(name: String, value: [UInt8])], TrackerRequestError> {
        var pairs: [(name: String, value: [UInt8])] = []
        pairs.reserveCapacity(12)
        var start = 0
        while start < bytes.count {
            var stop = start
            while stop < bytes.count && bytes[stop] != UInt8(ascii: "&") { stop += 1 }
            defer { start = stop + 1 }
            guard stop > start else { continue }
            guard pairs.count < maxPairs else { return .failure(.malformedQuery("more than \(maxPairs) parameters")) }
            var equals = start
            while equals < stop && bytes[equals] != UInt8(ascii: "=") { equals += 1 }
            do throws(TrackerRequestError) {
                let rawName = UnsafeBufferPointer(rebasing: bytes[start..<equals])
                let name = rawName.contains(UInt8(ascii: "%"))
                    ? String(validating: try decode(rawName), as: UTF8.self) : String(validating: rawName, as: UTF8.self)
                guard let name, !name.isEmpty else { return .failure(.malformedQuery("a parameter name is empty or not UTF-8")) }
                pairs.append((name, equals < stop ? try decode(UnsafeBufferPointer(rebasing: bytes[(equals + 1)..<stop])) : []))
            } catch {
                return .failure(error)
            }
        }
        return .success(pairs)
    }

    static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(TrackerRequestError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard index + 1 < bytes.count, let high = HexCoding.nibble(bytes[index]), let low = HexCoding.nibble(bytes[index + 1]) else {
                throw .malformedQuery("a '%' is not followed by two hex digits")
            }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }
}
