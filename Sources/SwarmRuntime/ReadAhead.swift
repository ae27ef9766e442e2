/// Readahead for readers of the image in flight, as a kernel does for files: a read that starts
/// where an earlier one ended is part of a sequential stream (a VM reading a file, qemu-img
/// copying), so the bytes after it are fetched before the reader asks for them. Without it, each
/// piece a stream enters costs one wait for that piece to arrive.
///
/// Pure: ranges in, the range to fetch ahead out. Several streams (NBD clients, or one VM's
/// interleaved reads) are told apart by where each last ended, a few of them at a time.
struct ReadAhead: Sendable {
    /// How far ahead of a sequential read to fetch: `factor` times the read, within these bounds.
    static let minimum: Int64 = 256 << 10
    static let maximum: Int64 = 4 << 20
    static let factor: Int64 = 4
    /// Streams followed at once; the least recent is forgotten first.
    static let streams = 8

    private var ends: [Int64] = []

    /// Notes a read; when it continues a stream, returns the bytes to fetch ahead of it (clipped to
    /// `end`, the image's length), else nil.
    mutating func read(_ range: Range<Int64>, end: Int64) -> Range<Int64>? {
        defer {
            ends.append(range.upperBound)
            if ends.count > Self.streams { ends.removeFirst() }
        }
        guard let stream = ends.firstIndex(of: range.lowerBound) else { return nil }
        ends.remove(at: stream)
        let window = min(Self.maximum, max(Self.minimum, Int64(range.count) * Self.factor))
        let ahead = range.upperBound..<min(end, range.upperBound + window)
        return ahead.isEmpty ? nil : ahead
    }
}
