import TrackerProtocol

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
public struct RetryPolicy: Sendable, Equatable {
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

/// When a node announces next, as a value: answers, failures and requests to announce early in,
/// "is one due, and with which event" out. The runtime keeps one per torrent; every path that wants
/// an announce goes through it, so none can bypass the back-off.
///
/// Failures in a row follow `RetryPolicy` (15 s, 30 s, 60 s … 30 min, each ±10 %), counted until
/// the next answer. A flat retry (what the runtime did before: 15 s after any failure) brings a
/// fleet that lost its tracker back in lockstep: 10,000 nodes started within a few seconds retry
/// within the same few seconds, every 15 s, for as long as the tracker is down, and all hit it the
/// moment it returns. With doubling and jitter the spread grows with each failure and the load on a
/// dead tracker falls by half each round. Requests to announce early (a lost tree parent, a seed
/// waiting for the swarm) wait out a back-off in progress, and a seed's early announce keeps to the
/// tracker's `min interval`.
public struct AnnounceSchedule: Sendable, Equatable {
    public var policy: RetryPolicy
    /// When the next announce is due (seconds on the caller's clock).
    public private(set) var next: Double
    /// Failed announces since the last answer.
    public private(set) var failures = 0
    /// When the latest answer came (nil: none yet).
    public private(set) var lastAnswer: Double?
    /// The tracker's `min interval` from its latest answer (at least 5 s; 30 s before any answer).
    public private(set) var minInterval: Double = 30
    /// `started` goes with every announce until one is answered: a tracker that missed the first
    /// (it was down) still learns that the node has just started.
    public var event: AnnounceEvent { lastAnswer == nil ? .started : .none }

    /// The first announce is due at `start`.
    public init(policy: RetryPolicy = RetryPolicy(), start: Double = 0) {
        self.policy = policy
        next = start
    }

    public func isDue(now: Double) -> Bool { now >= next }

    /// An answer: the next announce after its interval (never sooner than its `min interval`).
    public mutating func answered(interval: Int, minInterval: Int?, now: Double) {
        failures = 0
        lastAnswer = now
        self.minInterval = Double(max(minInterval ?? 30, 5))
        next = now + policy.delay(afterInterval: interval, minInterval: minInterval)
    }

    /// Every tracker failed: the next try after the back-off for this many failures in a row.
    /// Returns the delay.
    @discardableResult
    public mutating func failed(now: Double, using random: inout some RandomNumberGenerator) -> Double {
        failures += 1
        let delay = policy.delay(afterFailures: failures, using: &random)
        next = now + delay
        return delay
    }

    /// Announce as soon as allowed: now, unless a back-off is running (then when it ends).
    public mutating func announceNow(now: Double) {
        if failures == 0 { next = min(next, now) }
    }

    /// Announce as soon as the tracker's `min interval` since its latest answer allows (a seed
    /// waiting for the swarm to finish); a running back-off still holds.
    public mutating func announceWhenAllowed(now: Double) {
        guard failures == 0 else { return }
        next = min(next, max(now, (lastAnswer ?? now) + minInterval))
    }
}
