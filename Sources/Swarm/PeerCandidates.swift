import Metainfo

/// Addresses a node has been told of (tracker answers, peer exchange) and may dial: kept until
/// `PeerLimits` and the dials under way leave room, not dropped when an answer names more peers
/// than can be dialled at once.
///
/// A node dials at most 16 peers at a time. Before, the addresses of an answer beyond those were
/// forgotten, so a node that joined a large swarm after the others kept the 16 it dialled first
/// (less those that were full) until its next announce, half an hour later: `vmswarm-sim --hosts
/// 200` found the last node with 15 peers against 40 for the others, unchoked by one of them, and
/// finishing 1.5x F/B after the median at 1.1x. An address whose dial failed is tried again after
/// `retryAfter` seconds, doubling, and forgotten after `maxFailures` failures in a row. Pure: the
/// runtime and `vmswarm-sim` both dial from it.
public struct PeerCandidates: Sendable {
    /// Addresses kept at most: peer exchange is anyone's to fill, and each entry costs a dial.
    public static let capacity = 1000
    public static let retryAfter = 15.0
    public static let maxFailures = 3

    /// An address handed out to dial, with the failures in a row it has had so far.
    public struct Candidate: Sendable, Equatable {
        public let address: PeerAddress
        public let failures: Int
    }

    private struct Entry {
        var address: PeerAddress
        var failures = 0
        var notBefore = 0.0
    }

    /// Waiting to be dialled, oldest first, and the same as a set.
    private var queue: [Entry] = []
    private var waiting: Set<PeerAddress> = []

    public init() {}

    /// Addresses waiting to be dialled.
    public var count: Int { queue.count }

    /// Adds addresses not already waiting; beyond `capacity` the newest are left out.
    public mutating func add(_ addresses: some Sequence<PeerAddress>) {
        for address in addresses where queue.count < Self.capacity && waiting.insert(address).inserted {
            queue.append(Entry(address: address))
        }
    }

    /// The oldest address that may be dialled at `now`, taken off the list; `skip` passes over
    /// (and drops) addresses already connected or being dialled.
    public mutating func next(now: Double, skip: (PeerAddress) -> Bool = { _ in false }) -> Candidate? {
        var index = 0
        while index < queue.count {
            let entry = queue[index]
            let skipped = skip(entry.address)
            if skipped || entry.notBefore <= now {
                queue.remove(at: index)
                waiting.remove(entry.address)
                if skipped { continue }
                return Candidate(address: entry.address, failures: entry.failures)
            }
            index += 1
        }
        return nil
    }

    /// Dialling `candidate` failed (refused, timed out): it waits `retryAfter` seconds, doubling
    /// with each failure in a row, and is forgotten after `maxFailures`.
    public mutating func failed(_ candidate: Candidate, now: Double) {
        let failures = candidate.failures + 1
        guard failures < Self.maxFailures, queue.count < Self.capacity, waiting.insert(candidate.address).inserted else { return }
        queue.append(Entry(address: candidate.address, failures: failures,
                           notBefore: now + Self.retryAfter * Double(1 << (failures - 1))))
    }
}
