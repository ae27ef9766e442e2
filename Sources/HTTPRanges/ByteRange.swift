/// What a `Range` header asks of a resource of `size` bytes (RFC 9110 section 14): the whole of
/// it, one satisfiable range, or nothing it holds (416). Only single `bytes=` ranges are served as
/// ranges; a header with several ranges, another unit, or bad syntax is ignored (the whole resource
/// is sent), as the RFC allows. Every number is checked for overflow before use.
public enum ByteRangeRequest: Equatable, Sendable {
    case whole
    case range(Range<Int64>)
    case unsatisfiable

    public init(header: String?, size: Int64) {
        guard let header else {
            self = .whole
            return
        }
        let trimmed = header.trimmingWhitespace()
        guard trimmed.lowercased().hasPrefix("bytes="), trimmed.utf8.count <= 200 else {
            self = .whole
            return
        }
        let spec = trimmed.dropFirst("bytes=".count).trimmingWhitespace()
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else {
            self = .whole
            return
        }
        let first = spec[..<dash].trimmingWhitespace(), last = spec[spec.index(after: dash)...].trimmingWhitespace()
        switch (Self.number(first), Self.number(last)) {
        case (let start?, let end?) where start <= end:
            self = start < size ? .range(start..<(end < size ? end + 1 : size)) : .unsatisfiable
        case (let start?, nil) where last.isEmpty:
            self = start < size ? .range(start..<size) : .unsatisfiable
        case (nil, let suffix?) where first.isEmpty:
            // The last `suffix` bytes.
            self = suffix > 0 && size > 0 ? .range(max(0, size - suffix)..<size) : .unsatisfiable
        default:
            self = .whole
        }
    }

    /// A decimal of at most 18 digits (so it fits an Int64), or nil.
    static func number(_ text: Substring) -> Int64? {
        guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int64(text)
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        let characters = self[...]
        let start = characters.firstIndex { $0 != " " && $0 != "\t" } ?? characters.endIndex
        let end = characters.lastIndex { $0 != " " && $0 != "\t" }.map { characters.index(after: $0) } ?? start
        return Substring(characters[start..<Swift.max(start, end)])
    }
}
