/// Where each node of one swarm sits in its distribution tree: a pure value the tracker keeps per
/// torrent, since only the tracker sees every node. Nodes are placed as they join; a node that
/// leaves hands its children to its own parent, so nobody below it starts over.
///
/// Shape: every complete node (a seed) that joins is a root. A node that joins incomplete attaches
/// as a leaf under the shallowest node with fewer than `fanOut` children (the earliest such node
/// among equals); one that joins before any seed waits as a root until a seed joins. So with
/// `fanOut` 1 each seed heads a chain and newcomers go to the end of the shortest one, and with
/// `fanOut` 2 the swarm is a binary tree. A pipelined chain moves an image
/// in F/B plus one piece time per hop, where any tree with two children per inner node needs at
/// least 2F/B (each inner node sends every piece twice): 1 is the default, for links of equal rate.
///
/// Generic over the node's key (the tracker's peer key; tests use integers).
public struct DistributionTree<Node: Hashable & Sendable>: Sendable {
    public struct Position: Sendable, Equatable {
        /// Nil: a root.
        public var parent: Node?
        public var children: [Node]
        public var depth: Int
        /// It joined holding the whole image.
        public var complete: Bool
    }

    public let fanOut: Int
    private var positions: [Node: Position] = [:]
    /// Nodes in the order they joined: placement scans it for the shallowest free slot.
    private var order: [Node] = []

    public init(fanOut: Int = 1) {
        precondition(fanOut >= 1, "a tree node has at least one child slot")
        self.fanOut = fanOut
    }

    public var count: Int { positions.count }
    public func contains(_ node: Node) -> Bool { positions[node] != nil }
    public func position(of node: Node) -> Position? { positions[node] }
    public func parent(of node: Node) -> Node? { positions[node]?.parent }
    public func children(of node: Node) -> [Node] { positions[node]?.children ?? [] }
    public var roots: [Node] { order.filter { positions[$0]?.parent == nil } }

    /// Places a node that is not yet in the tree (one already placed keeps its place) and returns
    /// its parent. `complete`: it holds the whole image and becomes a root.
    @discardableResult
    public mutating func join(_ node: Node, complete: Bool) -> Node? {
        if let known = positions[node] { return known.parent }
        let parent = complete ? nil : freeSlot()
        positions[node] = Position(parent: parent, children: [], depth: parent.map { positions[$0]!.depth + 1 } ?? 0, complete: complete)
        if let parent { positions[parent]!.children.append(node) }
        order.append(node)
        if complete { placeWaiting() }
        return parent
    }

    /// Incomplete roots: nodes that joined before any seed (or lost every ancestor) and wait for
    /// a place.
    public var waiting: [Node] { order.filter { positions[$0]?.parent == nil && positions[$0]?.complete == false } }

    /// A seed arrived: the nodes that waited for one go under free slots (each with its subtree),
    /// in the order they joined.
    private mutating func placeWaiting() {
        for node in waiting {
            guard let adopter = freeSlot(excluding: node, anchored: true) else { continue }
            positions[node]!.parent = adopter
            positions[adopter]!.children.append(node)
        }
        recomputeDepths()
    }

    /// The node left (it stopped, timed out, or its children lost it). Its children move under its
    /// parent, which holds at least what it held; a root's children move under the shallowest free
    /// slot elsewhere (nil while no other node is left: they wait as roots).
    public mutating func remove(_ node: Node) {
        guard let gone = positions.removeValue(forKey: node) else { return }
        order.removeAll { $0 == node }
        if let parent = gone.parent { positions[parent]!.children.removeAll { $0 == node } }
        for child in gone.children {
            positions[child]!.parent = nil
            let adopter = gone.parent ?? freeSlot(excluding: child)
            positions[child]!.parent = adopter
            if let adopter { positions[adopter]!.children.append(child) }
        }
        // Depths below the moved children changed; trees are small enough to recompute.
        recomputeDepths()
    }

    /// The shallowest node with a free child slot, earliest joined among equals. `excluding`: a
    /// node whose own subtree must not be chosen (it would make a cycle). `anchored`: only a node
    /// below a seed (or a seed), not one that waits itself.
    private func freeSlot(excluding excluded: Node? = nil, anchored: Bool = false) -> Node? {
        var best: Node?
        var bestDepth = Int.max
        for node in order {
            guard let position = positions[node], position.children.count < fanOut, position.depth < bestDepth else { continue }
            if let excluded, isInSubtree(node, of: excluded) { continue }
            if anchored, let root = root(of: node), positions[root]?.complete != true { continue }
            best = node
            bestDepth = position.depth
        }
        return best
    }

    private func root(of node: Node) -> Node? {
        var current = node
        var steps = 0
        while let parent = positions[current]?.parent, steps <= positions.count {
            current = parent
            steps += 1
        }
        return positions[current] == nil ? nil : current
    }

    private func isInSubtree(_ node: Node, of root: Node) -> Bool {
        var current: Node? = node
        var steps = 0
        while let at = current, steps <= positions.count {
            if at == root { return true }
            current = positions[at]?.parent
            steps += 1
        }
        return false
    }

    private mutating func recomputeDepths() {
        var stack = roots.map { ($0, 0) }
        while let (node, depth) = stack.popLast() {
            positions[node]!.depth = depth
            for child in positions[node]!.children { stack.append((child, depth + 1)) }
        }
    }
}
