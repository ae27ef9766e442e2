/// How a node's pieces travel (`--method`): a BitTorrent mesh, a distribution tree placed by the
/// tracker (docs/tree.md), or the multicast booster beside the mesh (docs/multicast.md); `auto`
/// chooses one of them at start (`AutoMethod`).
public enum DistributionMethod: String, Sendable, CaseIterable {
    case mesh, tree, multicast, auto
}

/// `--method auto` without I/O (docs/tree.md, "Choosing the method"): what a node can measure in
/// its first seconds, and the method that follows from it. The node announces as a tree node (so
/// it learns whether its tracker places trees, and whether the swarm spans racks) and, when it has
/// a booster group, listens for a sender; the choice is made once, when both are known.
///
/// The rule, from the testbed's figures (docs/benchmarks.md, sessions 11 to 13):
/// 1. A booster sender heard on the group: **multicast** (the booster, with the mesh for what it
///    misses). One pass of the image reaches every receiver at once: 1.07x F/B on 8 hosts where the
///    mesh took 1.16x, 1.11x on 16.
/// 2. Otherwise, when the tracker places tree nodes and a chain's pipeline costs at most a fifth of
///    the transfer, **tree**. A chain of n nodes needs F/B + (n - 1)c/B, so its overhead is at most
///    (n - 1) / pieces (less across racks, where the tree is a chain per rack and the slow uplinks
///    set F/B). Measured, the tree is never slower than the mesh: equal on a flat LAN of 8 (1.14x
///    against 1.13x), ahead on 16 hosts (1.30x against 1.53x) and across racks (1.29x of the
///    uplink-bound time against 1.39x, with 1.05 copies per uplink against 1.31), while the mesh
///    itself took 1.13x to 1.53x: a chain that adds at most a fifth stays in that range.
/// 3. Otherwise **mesh**: no tracker that places trees, or too many nodes for one chain per seed
///    (the mesh's time does not grow with the chain's length).
///
/// The paper's rule (a tree below 300 MB and 10 nodes, else BitTorrent) is the row this one beats:
/// it would take its binary tree on 8 hosts (2.54x F/B) and the mesh on 16 hosts and across racks.
public struct AutoMethod: Sendable {
    public struct Choice: Sendable, Equatable {
        public var method: DistributionMethod
        public var reason: String
    }

    /// Seconds a node listens for a booster sender before choosing without one: senders announce
    /// twice a second.
    public static let multicastProbe: Double = 2
    /// Seconds it waits for a tracker's first answer before choosing the mesh.
    public static let trackerPatience: Double = 10
    /// The most a chain's pipeline may add to the transfer, as a share of it.
    public static let maximumChainOverhead = 0.2

    /// What the tracker's first answer said: whether it places tree nodes, whether the swarm spans
    /// racks, and the leechers in it (this node included).
    public struct TrackerFacts: Sendable, Equatable {
        public var placesTrees: Bool
        public var spansRacks: Bool
        public var leechers: Int

        public init(placesTrees: Bool, spansRacks: Bool, leechers: Int) {
            self.placesTrees = placesTrees
            self.spansRacks = spansRacks
            self.leechers = leechers
        }
    }

    let listensToGroup: Bool
    let hasTracker: Bool
    let pieceCount: Int
    private(set) var tracker: TrackerFacts?
    public private(set) var choice: Choice?

    public init(listensToGroup: Bool, hasTracker: Bool, pieceCount: Int) {
        self.listensToGroup = listensToGroup
        self.hasTracker = hasTracker
        self.pieceCount = pieceCount
    }

    /// The tracker's first answer (later ones change nothing).
    public mutating func answered(_ facts: TrackerFacts) {
        if tracker == nil { tracker = facts }
    }

    /// The choice, once it can be made (nil until then; the same choice on every later call).
    /// `now`: seconds since the node started; `senderHeard`: the booster follows a sender.
    public mutating func decide(now: Double, senderHeard: Bool) -> Choice? {
        if let choice { return choice }
        let choice: Choice
        if listensToGroup && senderHeard {
            choice = Choice(method: .multicast, reason: "a booster sender is heard on the group")
        } else if listensToGroup && now < Self.multicastProbe {
            return nil
        } else if let tracker {
            choice = Self.choose(tracker, pieceCount: pieceCount, listened: listensToGroup)
        } else if !hasTracker || now >= Self.trackerPatience {
            choice = Choice(method: .mesh, reason: hasTracker ? "no tracker answered within \(Int(Self.trackerPatience)) s" : "no tracker to place a tree")
        } else {
            return nil
        }
        self.choice = choice
        return choice
    }

    /// Rules 2 and 3, once no sender was heard.
    static func choose(_ tracker: TrackerFacts, pieceCount: Int, listened: Bool) -> Choice {
        let noSender = listened ? "no booster sender heard; " : ""
        guard tracker.placesTrees else {
            return Choice(method: .mesh, reason: noSender + "the tracker does not place tree nodes")
        }
        let overhead = Double(max(tracker.leechers - 1, 0)) / Double(max(pieceCount, 1))
        guard overhead <= maximumChainOverhead else {
            return Choice(method: .mesh, reason: noSender + "\(tracker.leechers) nodes would make a chain longer than a fifth of \(pieceCount) pieces")
        }
        return Choice(method: .tree, reason: noSender + (tracker.spansRacks
            ? "the swarm spans racks, and a tree enters each rack once"
            : "the tracker places tree nodes and a chain of \(tracker.leechers) costs \(Int((overhead * 100).rounded(.up))) % at most"))
    }
}
