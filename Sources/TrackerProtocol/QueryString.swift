import Metainfo

/// URL query strings as trackers use them: values are raw bytes (an info-hash is 20 binary bytes
/// percent-encoded), names are ASCII.
public enum QueryString {
    /// The most `name=value` pairs one request may carry (a scrape of 100 torrents fits).
    public static let maxPairs = 128

    /// Splits and percent-decodes `a=1&b=%FF`. `+` stays a literal plus, as RFC 3986 has it.
    public static func parse(_ query: some StringProtocol) throws(TrackerRequestError) -> [(name: String, value: [UInt8])] {
        var pairs: [(name: String, value: [UInt8])] = []
        for part in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            guard pairs.count < maxPairs else { throw .malformedQuery("more than \(maxPairs) parameters") }
            let pieces = part.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let nameBytes = try decode(pieces[0])
            guard let name = String(validating: nameBytes, as: UTF8.self), !name.isEmpty else {
                throw .malformedQuery("a parameter name is empty or not UTF-8")
            }
            pairs.append((name, pieces.count > 1 ? try decode(pieces[1]) : []))
        }
        return pairs
    }

    static func decode(_ bytes: some Collection<UInt8>) throws(TrackerRequestError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var iterator = bytes.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(HexCoding.nibble), let low = iterator.next().flatMap(HexCoding.nibble) else {
                throw .malformedQuery("a '%' is not followed by two hex digits")
            }
            out.append(high << 4 | low)
        }
        return out
    }
}
