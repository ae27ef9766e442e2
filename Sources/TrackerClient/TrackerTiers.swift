/// The BEP 12 order of trying trackers: tiers in order; within a tier, trackers shuffled once, and a
/// tracker that answers moves to the front of its tier so it is tried first next time.
public struct TrackerTiers: Sendable, Equatable {
    public private(set) var tiers: [[String]]

    public init(_ tiers: [[String]], using random: inout some RandomNumberGenerator) {
        self.tiers = tiers.filter { !$0.isEmpty }.map { $0.shuffled(using: &random) }
    }

    public init(_ tiers: [[String]]) {
        var random = SystemRandomNumberGenerator()
        self.init(tiers, using: &random)
    }

    /// Every tracker, in the order to try them.
    public var order: [String] { tiers.flatMap { $0 } }

    public mutating func succeeded(_ url: String) {
        for index in tiers.indices {
            if let position = tiers[index].firstIndex(of: url) {
                tiers[index].remove(at: position)
                tiers[index].insert(url, at: 0)
                return
            }
        }
    }
}

/// When to announce next: the tracker's interval after an answer, exponential back-off after
/// failures (15 s, 30 s, 60 s … capped at 30 min) with ±10 % jitter so a cluster that lost its
/// tracker does not return in lockstep.
public struct RetryPolicy: Sendable {
    public var firstRetry: Double = 15
    public var maxRetry: Double = 1800

    public init() {}

    public func delay(afterFailures failures: Int, using random: inout some RandomNumberGenerator) -> Double {
        precondition(failures >= 1)
        let exponent = min(failures - 1, 20)
        let base = min(firstRetry * Double(1 << exponent), maxRetry)
        return base * Double.random(in: 0.9...1.1, using: &random)
    }

    /// After an answer: the interval, but never sooner than `min interval`.
    public func delay(afterInterval interval: Int, minInterval: Int?) -> Double {
        Double(max(interval, minInterval ?? 0, 1))
    }
}
