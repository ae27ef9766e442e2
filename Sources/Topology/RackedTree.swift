/// A distribution tree built rack by rack (or site by site): the nodes of each rack form a tree of
/// their own (`DistributionTree`), and the racks form a tree above them, so every rack's uplink
/// carries the image about once each way however many of its nodes take part. The first node of a
/// rack (its head) has as parent the head of the rack above, whose seed it is in effect; everyone
/// else in the rack is placed inside it. One rack gives exactly the plain tree.
///
/// The racks' own tree has one child per rack (a chain of racks) by default: a rack head then sends
/// one copy across the core beside the one it sends inside its rack, and no uplink carries two.
public struct RackedTree<Node: Hashable & Sendable, Rack: Hashable & Sendable>: Sendable {
    public let fanOut: Int
    private var racks: DistributionTree<Rack>
    private var trees: [Rack: DistributionTree<Node>] = [:]
    private var rackOf: [Node: Rack] = [:]

    /// `fanOut`: children per node inside a rack; `rackFanOut`: racks below each rack.
    public init(fanOut: Int = 1, rackFanOut: Int = 1) {
        self.fanOut = fanOut
        racks = DistributionTree(fanOut: rackFanOut)
    }

    public var count: Int { rackOf.count }
    public func contains(_ node: Node) -> Bool { rackOf[node] != nil }
    public func rack(of node: Node) -> Rack? { rackOf[node] }
    /// The racks above this one, nearest first: where its head gets the image from.
    public func parentRack(of rack: Rack) -> Rack? { racks.parent(of: rack) }

    /// Places a node that is not yet in the tree (one already placed keeps its place, even if it
    /// names another rack now) and returns its parent.
    @discardableResult
    public mutating func join(_ node: Node, rack: Rack, complete: Bool) -> Node? {
        if rackOf[node] == nil {
            rackOf[node] = rack
            if trees[rack] == nil {
                trees[rack] = DistributionTree(fanOut: fanOut)
                racks.join(rack, complete: complete)
            } else if complete, racks.position(of: rack)?.complete == false {
                // A seed in a rack that was fetching from others: the rack needs nothing from
                // outside any more and becomes a root (the racks below it move up, as when a
                // rack leaves); its nodes that waited go under the seed.
                racks.remove(rack)
                racks.join(rack, complete: true)
            }
            trees[rack]!.join(node, complete: complete)
        }
        return parent(of: node)
    }

    /// Its parent inside the rack, or for a rack's head (an incomplete root of its rack's tree)
    /// the head of the rack above; nil for a seed, and for a head whose racks all wait for a seed.
    public func parent(of node: Node) -> Node? {
        guard let rack = rackOf[node], let tree = trees[rack], let position = tree.position(of: node) else { return nil }
        if let parent = position.parent { return parent }
        guard !position.complete, let above = racks.parent(of: rack) else { return nil }
        return head(of: above)
    }

    /// `parent(of:)`, and for a rack's head `extra` more nodes of the rack above, those next below
    /// its head there (nearest first): a rack entered over one TCP connection gets one flow through
    /// its uplink, which a shallow switch buffer and the ACKs of the other direction slow; pieces
    /// asked of two nodes of the same rack still cross the uplink once each.
    public func parents(of node: Node, extra: Int) -> [Node] {
        guard let first = parent(of: node) else { return [] }
        guard extra > 0, let rack = rackOf[node], let above = rackOf[first], above != rack, let tree = trees[above] else { return [first] }
        var result = [first]
        var current = first
        while result.count <= extra, let next = tree.children(of: current).first {
            result.append(next)
            current = next
        }
        return result
    }

    /// The node a rack below this one takes the image from: a seed of the rack if it has one,
    /// else its first root.
    public func head(of rack: Rack) -> Node? {
        guard let tree = trees[rack] else { return nil }
        let roots = tree.roots
        return roots.first { tree.position(of: $0)?.complete == true } ?? roots.first
    }

    /// The node left. Inside its rack its children move up (`DistributionTree.remove`); a rack
    /// left empty leaves the racks' tree, whose racks below move up the same way.
    public mutating func remove(_ node: Node) {
        guard let rack = rackOf.removeValue(forKey: node) else { return }
        trees[rack]?.remove(node)
        guard let tree = trees[rack], tree.count > 0 else {
            trees[rack] = nil
            racks.remove(rack)
            return
        }
        // Its last seed gone, the rack fetches from the racks above again (else its nodes would
        // wait as roots of a root rack, with no parent at all).
        if racks.position(of: rack)?.complete == true, !tree.roots.contains(where: { tree.position(of: $0)?.complete == true }) {
            racks.remove(rack)
            racks.join(rack, complete: false)
        }
    }
}
