import Testing
import Topology

@Suite struct DistributionTreeTests {
    /// Every node's parent chain ends at a root, without a cycle, and children lists agree with parents.
    static func expectWellFormed(_ tree: DistributionTree<Int>, nodes: [Int]) {
        for node in nodes {
            var seen: Set<Int> = [node]
            var current = tree.parent(of: node)
            var depth = 0
            while let at = current {
                depth += 1
                #expect(seen.insert(at).inserted, "a cycle through \(at)")
                current = tree.parent(of: at)
            }
            #expect(tree.position(of: node)?.depth == depth, "node \(node) depth")
            if let parent = tree.parent(of: node) { #expect(tree.children(of: parent).contains(node)) }
        }
    }

    @Test func fanOutOneMakesAChainPerSeedAndNewcomersGoToTheShortest() {
        var tree = DistributionTree<Int>(fanOut: 1)
        #expect(tree.join(0, complete: true) == nil)
        for node in 1...4 { #expect(tree.join(node, complete: false) == node - 1) }
        // A second seed heads a chain of its own; the next newcomers go under it until it is as long.
        #expect(tree.join(10, complete: true) == nil)
        #expect(tree.join(11, complete: false) == 10)
        #expect(tree.join(12, complete: false) == 11)
        #expect(tree.roots == [0, 10])
        #expect(tree.position(of: 4)?.depth == 4)
        Self.expectWellFormed(tree, nodes: [0, 1, 2, 3, 4, 10, 11, 12])
        // Joining again (a re-announce) keeps the place.
        #expect(tree.join(3, complete: true) == 2)
    }

    @Test func fanOutTwoMakesABinaryTreeFilledBreadthFirst() {
        var tree = DistributionTree<Int>(fanOut: 2)
        tree.join(0, complete: true)
        for node in 1...6 { tree.join(node, complete: false) }
        #expect(tree.children(of: 0) == [1, 2])
        #expect(tree.children(of: 1) == [3, 4])
        #expect(tree.children(of: 2) == [5, 6])
        Self.expectWellFormed(tree, nodes: Array(0...6))
    }

    @Test func aNodeThatLeavesHandsItsChildrenToItsParent() {
        var tree = DistributionTree<Int>(fanOut: 1)
        tree.join(0, complete: true)
        for node in 1...5 { tree.join(node, complete: false) }
        tree.remove(2)
        #expect(tree.parent(of: 3) == 1)
        #expect(tree.children(of: 1) == [3])
        #expect(tree.position(of: 5)?.depth == 4)
        #expect(!tree.contains(2))
        Self.expectWellFormed(tree, nodes: [0, 1, 3, 4, 5])
        // A late joiner still goes to the end.
        #expect(tree.join(6, complete: false) == 5)
        // Removing the tail and an unknown node is harmless.
        tree.remove(6)
        tree.remove(99)
        #expect(tree.count == 5)
    }

    @Test func aRootThatLeavesHasItsChildrenAdoptedElsewhere() {
        var tree = DistributionTree<Int>(fanOut: 1)
        tree.join(0, complete: true)
        tree.join(1, complete: false)
        tree.join(2, complete: false)
        tree.join(10, complete: true)
        tree.join(11, complete: false)
        tree.remove(0)
        // 1 (with 2 below it) moves to the end of the other chain, never under its own subtree.
        #expect(tree.parent(of: 1) == 11)
        #expect(tree.parent(of: 2) == 1)
        Self.expectWellFormed(tree, nodes: [1, 2, 10, 11])
        // With no other node left, orphans wait as roots.
        var lone = DistributionTree<Int>(fanOut: 1)
        lone.join(0, complete: true)
        lone.join(1, complete: false)
        lone.join(2, complete: false)
        lone.remove(0)
        #expect(lone.parent(of: 1) == nil)
        #expect(lone.parent(of: 2) == 1)
    }

    @Test func aThousandNodesJoinAndHalfLeaveWithoutACycle() {
        var tree = DistributionTree<Int>(fanOut: 2)
        tree.join(0, complete: true)
        for node in 1..<1000 { tree.join(node, complete: false) }
        var rng = SystemRandomNumberGenerator()
        let leaving = Array(1..<1000).shuffled(using: &rng).prefix(500)
        for node in leaving { tree.remove(node) }
        let left = (0..<1000).filter(tree.contains)
        #expect(left.count == 500)
        Self.expectWellFormed(tree, nodes: left)
    }
}
