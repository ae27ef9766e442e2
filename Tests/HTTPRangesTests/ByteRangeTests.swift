import Testing

@testable import HTTPRanges

@Suite struct ByteRangeTests {
    @Test(arguments: [
        (nil, ByteRangeRequest.whole),
        ("bytes=0-99", .range(0..<100)),
        ("bytes=100-", .range(100..<1000)),
        ("bytes=-10", .range(990..<1000)),
        ("bytes=-5000", .range(0..<1000)),
        ("bytes=990-5000", .range(990..<1000)),  // the end is clipped to the resource
        ("Bytes=5-5 ", .range(5..<6)),  // the unit is case-insensitive
        ("bytes=1000-", .unsatisfiable),
        ("bytes=1000-2000", .unsatisfiable),
        ("bytes=-0", .unsatisfiable),
        // Ignored, so the whole resource is sent: several ranges, other units, bad syntax, overflow.
        ("bytes=0-1,5-6", .whole),
        ("items=0-1", .whole),
        ("bytes=5-1", .whole),
        ("bytes=a-b", .whole),
        ("bytes=-", .whole),
        ("bytes=+1-2", .whole),
        ("bytes=99999999999999999999-", .whole),
        ("bytes=0-99999999999999999999", .whole),
    ] as [(String?, ByteRangeRequest)])
    func rangesAreReadAsRFC9110Says(header: String?, expected: ByteRangeRequest) {
        #expect(ByteRangeRequest(header: header, size: 1000) == expected)
    }

    @Test func anEmptyResourceHasNoRange() {
        #expect(ByteRangeRequest(header: "bytes=0-", size: 0) == .unsatisfiable)
        #expect(ByteRangeRequest(header: "bytes=-1", size: 0) == .unsatisfiable)
        #expect(ByteRangeRequest(header: nil, size: 0) == .whole)
    }
}
