import Testing

@testable import SwarmRuntime

@Suite struct TokenBucketTests {
    @Test func allowsTheRateOverTime() {
        var bucket = TokenBucket(bytesPerSecond: 100_000)
        var sent = 0
        var now = 0.0
        while now < 10 {
            while bucket.take(16384, now: now) { sent += 16384 }
            now += 0.02
        }
        // One second of burst plus ten seconds at the rate, to within one block.
        #expect(abs(Double(sent) - 1_100_000) < 16384 * 2, "\(sent)")
    }

    @Test func slowRatesStillPassWholeBlocks() {
        var bucket = TokenBucket(bytesPerSecond: 1000)
        let first = bucket.take(16384, now: 0)
        let tooSoon = bucket.take(16384, now: 1)
        let later = bucket.take(16384, now: 17)
        #expect(first && !tooSoon && later)
    }
}
