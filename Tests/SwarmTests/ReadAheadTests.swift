import Testing

@testable import SwarmRuntime

/// Readahead for readers of the image in flight (issue 20): a read continuing an earlier one gets
/// the bytes after it fetched ahead; a scattered read does not.
@Suite struct ReadAheadTests {
    @Test func aSequentialReadFetchesAheadAndAScatteredOneDoesNot() {
        var ahead = ReadAhead()
        let end: Int64 = 100 << 20
        #expect(ahead.read(0..<65536, end: end) == nil, "a first read is not yet a stream")
        #expect(ahead.read(65536..<131_072, end: end) == 131_072..<(131_072 + ReadAhead.minimum))
        #expect(ahead.read(50 << 20..<(50 << 20) + 4096, end: end) == nil)
        // The window doubles as the stream goes on, up to the maximum, and never passes the image.
        #expect(ahead.read(131_072..<196_608, end: end)?.count == Int(2 * ReadAhead.minimum))
        #expect(ahead.read(196_608..<262_144, end: end)?.count == Int(4 * ReadAhead.minimum))
        var at: Int64 = 262_144
        for _ in 0..<8 { _ = ahead.read(at..<(at + 65536), end: end); at += 65536 }
        #expect(ahead.read(at..<(at + 65536), end: end)?.count == Int(ReadAhead.maximum))
        var near = ReadAhead()
        _ = near.read((end - 8192)..<(end - 4096), end: end)
        #expect(near.read((end - 4096)..<end, end: end) == nil)
    }

    /// Interleaved streams are followed apart, a few at a time.
    @Test func interleavedStreamsAreFollowedApart() {
        var ahead = ReadAhead()
        let end: Int64 = 1 << 30
        let starts = (0..<Int64(ReadAhead.streams)).map { $0 << 24 }
        for start in starts { _ = ahead.read(start..<(start + 4096), end: end) }
        for start in starts { #expect(ahead.read((start + 4096)..<(start + 8192), end: end) != nil) }
        // One stream too many: the least recent is forgotten.
        _ = ahead.read(900 << 20..<(900 << 20) + 4096, end: end)
        #expect(ahead.read((starts[0] + 8192)..<(starts[0] + 12288), end: end) == nil)
    }
}
