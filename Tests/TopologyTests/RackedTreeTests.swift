import Testing
import Topology

@Suite struct RackedTreeTests {
    /// The hops a piece makes from the seed to the node, and which of them cross between racks.
    static func path(_ tree: RackedTree<Int, String>, to node: Int) -> [Int] {
        var path = [node]
        while let parent = tree.parent(of: path.last!), path.count <= tree.count { path.append(parent) }
        return path.reversed()
    }

    static func crossings(_ tree: RackedTree<Int, String>, nodes: [Int]) -> [String: Int] {
        var into: [String: Int] = [:]
        for node in nodes {
            guard let parent = tree.parent(of: node), tree.rack(of: parent) != tree.rack(of: node) else { continue }
            into[tree.rack(of: node)!, default: 0] += 1
        }
        return into
    }

    /// 4 racks of 4 joining interleaved (as nodes of a rollout do): each rack is entered by exactly
    /// one edge, every node reaches the seed, and each rack's nodes form a chain inside it.
    @Test func eachRackIsEnteredOnceWhateverTheOrderOfJoining() {
        var tree = RackedTree<Int, String>()
        tree.join(0, rack: "r1", complete: true)
        let rackOf = { (node: Int) in "r\(node % 4 + 1)" }
        let nodes = Array(1...15)
        for node in nodes { tree.join(node, rack: rackOf(node), complete: false) }
        #expect(Self.crossings(tree, nodes: nodes) == ["r2": 1, "r3": 1, "r4": 1])
        for node in nodes {
            let path = Self.path(tree, to: node)
            #expect(path.first == 0, "node \(node) reaches the seed: \(path)")
            // Once inside its rack a piece never leaves it: the path enters each rack once.
            let racks = path.map { tree.rack(of: $0)! }
            #expect(Set(racks).count == zip(racks, racks.dropFirst()).filter { $0 != $1 }.count + 1, "\(path)")
        }
        // Inside r1 the seed heads a chain: 4, 8, 12.
        #expect(Self.path(tree, to: 12) == [0, 4, 8, 12])
    }

    /// One rack is exactly the plain tree.
    @Test func oneRackIsThePlainTree() {
        var racked = RackedTree<Int, String>(fanOut: 2)
        var plain = DistributionTree<Int>(fanOut: 2)
        racked.join(0, rack: "", complete: true)
        plain.join(0, complete: true)
        for node in 1...9 {
            #expect(racked.join(node, rack: "", complete: false) == plain.join(node, complete: false))
        }
        racked.remove(1)
        plain.remove(1)
        for node in 2...9 { #expect(racked.parent(of: node) == plain.parent(of: node)) }
    }

    /// A rack's head that leaves hands the rack to the next of its nodes, which takes over the
    /// crossing; a rack that empties lets the racks below move up.
    @Test func aHeadThatLeavesIsReplacedInsideItsRack() {
        var tree = RackedTree<Int, String>()
        tree.join(0, rack: "a", complete: true)
        tree.join(1, rack: "b", complete: false)
        tree.join(2, rack: "b", complete: false)
        tree.join(3, rack: "c", complete: false)
        #expect(Self.path(tree, to: 3) == [0, 1, 3])
        tree.remove(1)
        #expect(Self.path(tree, to: 2) == [0, 2])
        #expect(Self.path(tree, to: 3) == [0, 2, 3])
        tree.remove(2)
        #expect(Self.path(tree, to: 3) == [0, 3])
    }

    /// Nodes that joined before any seed wait as roots; the seed adopts them when it comes.
    @Test func nodesThatCameBeforeTheSeedAreAdoptedByIt() {
        var tree = RackedTree<Int, String>()
        #expect(tree.join(1, rack: "b", complete: false) == nil)
        #expect(tree.join(2, rack: "b", complete: false) == 1)
        tree.join(0, rack: "a", complete: true)
        #expect(Self.path(tree, to: 2) == [0, 1, 2])

        var plain = DistributionTree<Int>()
        plain.join(5, complete: false)
        plain.join(6, complete: false)
        #expect(plain.waiting == [5])
        plain.join(0, complete: true)
        #expect(plain.waiting.isEmpty)
        #expect(plain.parent(of: 5) == 0)
        #expect(plain.parent(of: 6) == 5)
    }

    /// A seed that appears in a rack that was fetching from another stops the crossing into it.
    @Test func aSeedInARackMakesItARootRack() {
        var tree = RackedTree<Int, String>()
        tree.join(0, rack: "a", complete: true)
        tree.join(1, rack: "b", complete: false)
        tree.join(2, rack: "c", complete: false)
        #expect(Self.path(tree, to: 2) == [0, 1, 2])
        tree.join(9, rack: "b", complete: true)
        #expect(tree.parentRack(of: "b") == nil)
        #expect(tree.parent(of: 1) == 9)
        // c, which hung below b, moved up to a.
        #expect(tree.parent(of: 2) == 0)
    }

    /// A rack's only seed leaves: the rack fetches from the racks above it again. (The testbed
    /// caught this: h4, the head of rack b, was reported lost by its child h3 while it finished;
    /// its `completed` announce then placed it anew as b's seed, which made b a root rack; when
    /// h4 stopped, h3 waited as a root of a root rack with no parent at all, 0 peers, forever.)
    @Test func aRackWhoseOnlySeedLeavesFetchesFromAboveAgain() {
        var tree = RackedTree<Int, String>()
        tree.join(1, rack: "a", complete: true)
        tree.join(4, rack: "b", complete: false)
        tree.join(3, rack: "b", complete: false)
        #expect(Self.path(tree, to: 3) == [1, 4, 3])
        tree.remove(4)  // h3 reported it lost
        #expect(Self.path(tree, to: 3) == [1, 3])
        tree.join(4, rack: "b", complete: true)  // its `completed` announce
        #expect(tree.parentRack(of: "b") == nil)
        #expect(Self.path(tree, to: 3) == [4, 3])
        tree.remove(4)  // `stopped`
        #expect(tree.parentRack(of: "b") == "a")
        #expect(Self.path(tree, to: 3) == [1, 3])
        // A rack below b, hanging from it while it was a root, still reaches the seed.
        tree.join(9, rack: "b", complete: true)
        tree.join(5, rack: "c", complete: false)
        tree.remove(9)
        #expect(Self.path(tree, to: 5).first == 1)
    }

    /// A rack's head may take the image from the rack above over more than one connection: its
    /// parent and the nodes next below it there. Nodes inside a rack keep one parent.
    @Test func aRacksHeadMayHaveMoreParentsInTheRackAbove() {
        var tree = RackedTree<Int, String>()
        tree.join(0, rack: "a", complete: true)
        tree.join(1, rack: "a", complete: false)
        tree.join(2, rack: "a", complete: false)
        tree.join(10, rack: "b", complete: false)
        tree.join(11, rack: "b", complete: false)
        #expect(tree.parents(of: 10, extra: 1) == [0, 1])
        #expect(tree.parents(of: 10, extra: 2) == [0, 1, 2])
        #expect(tree.parents(of: 10, extra: 0) == [0])
        #expect(tree.parents(of: 11, extra: 1) == [10])
        #expect(tree.parents(of: 0, extra: 1) == [])
    }
}
