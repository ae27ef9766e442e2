/// A rate limit in bytes per second, with a burst of one second's worth (at least one 16 KiB block).
/// Pure: the caller passes the time. `--max-up` and `--max-down` are two of these.
public struct TokenBucket: Sendable {
    public let rate: Double
    private var tokens: Double
    private var last: Double?

    public init(bytesPerSecond: Double) {
        rate = bytesPerSecond
        tokens = max(bytesPerSecond, 16384)
    }

    private var capacity: Double { max(rate, 16384) }

    /// Takes `bytes` if that many tokens are there at `now`.
    public mutating func take(_ bytes: Int, now: Double) -> Bool {
        if let last { tokens = min(capacity, tokens + (now - last) * rate) }
        last = now
        guard tokens >= Double(bytes) else { return false }
        tokens -= Double(bytes)
        return true
    }
}
