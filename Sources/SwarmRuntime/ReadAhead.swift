/// Readahead for readers of the image in flight, as a kernel does for files: a read that starts
/// where an earlier one ended is part of a sequential stream (a VM reading a file, qemu-img
/// copying), so the bytes after it are fetched before the reader asks for them. Without it, each
/// piece a stream enters costs one wait for that piece to arrive.
///
/// Pure: ranges in, the range to fetch ahead out. Several streams (NBD clients, or one VM's
/// interleaved reads) are told apart by where each last ended, a few of them at a time.
struct ReadAhead: Sendable {
    /// A stream's first window is `factor` times its read (at least `minimum`); each read that
    /// continues it doubles the window, up to `maximum`. Reads of data already here are instant, so
    /// a window of one piece would only move the wait to the next piece: it has to outgrow the time
    /// a piece takes to arrive.
    static let minimum: Int64 = 256 << 10
    static let maximum: Int64 = 4 << 20
    static let factor: Int64 = 4
    /// Streams followed at once; the least recent is forgotten first.
    static let streams = 8

    private var streams: [(end: Int64, window: Int64)] = []

    /// Notes a read; when it continues a stream, returns the bytes to fetch ahead of it (clipped to
    /// `end`, the image's length), else nil.
    mutating func read(_ range: Range<Int64>, end: Int64) -> Range<Int64>? {
        var window: Int64 = 0
        if let stream = streams.firstIndex(where: { $0.end == range.lowerBound }) {
            let earlier = streams.remove(at: stream).window
            window = earlier == 0 ? max(Self.minimum, Int64(range.count) * Self.factor) : min(Self.maximum, 2 * earlier)
            window = min(Self.maximum, window)
        }
        streams.append((range.upperBound, window))
        if streams.count > Self.streams { streams.removeFirst() }
        guard window > 0 else { return nil }
        let ahead = range.upperBound..<min(end, range.upperBound + window)
        return ahead.isEmpty ? nil : ahead
    }
}
