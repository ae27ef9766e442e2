import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm

/// The engine's topology is its policy: the same engines, handed non-mesh policies, move every
/// piece along the edges they were given and nowhere else.
@Suite struct SwarmPolicyTests {
    /// Node `i`'s place when each node's parent is `parent(i)` (nil: the root).
    static func tree(_ count: Int, strangers: TreePolicy.Strangers = .refuse, parent: (Int) -> Int?) -> [TreePolicy] {
        (0..<count).map { node in
            var policy = TreePolicy(strangers: strangers)
            if let up = parent(node) { policy.parents[SimulatedSwarm.id(up)] = .some(nil) }
            for child in 0..<count where parent(child) == node { policy.children[SimulatedSwarm.id(child)] = .some(nil) }
            return policy
        }
    }

    static func swarm(nodes: Int, policies: [TreePolicy], pieces: Int = 24) -> SimulatedSwarm {
        var swarm = SimulatedSwarm(pieceLength: 32768, length: 32768 * pieces + 777, seeders: 1, leechers: nodes - 1)
        for (node, policy) in policies.enumerated() { swarm.setPolicy(policy, at: node) }
        return swarm
    }

    /// Every block crossed an edge of the tree, each node received the image exactly once, and
    /// every other connection was refused.
    static func expectFlowsAlongTheTree(_ swarm: SimulatedSwarm, parent: (Int) -> Int?) {
        for node in swarm.nodes.indices.dropFirst() {
            #expect(swarm.nodes[node].data == swarm.content, "node \(node) holds the exact image")
            #expect(swarm.nodes[node].engine.downloaded == Int64(swarm.content.count), "node \(node) received the image once")
            #expect(swarm.nodes[node].engine.wasted == 0)
        }
        for (edge, bytes) in swarm.sent where bytes > 0 {
            #expect(parent(edge[1]) == edge[0], "\(bytes) bytes went from \(edge[0]) to \(edge[1]), not an edge of the tree")
        }
        #expect(swarm.links.count == swarm.nodes.count - 1, "\(swarm.links)")
    }

    @Test func aChainCarriesEveryPieceDownItsEdgesOnly() {
        let parent: (Int) -> Int? = { $0 == 0 ? nil : $0 - 1 }
        var swarm = Self.swarm(nodes: 6, policies: Self.tree(6, parent: parent))
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        Self.expectFlowsAlongTheTree(swarm, parent: parent)
        let refused = swarm.nodes.flatMap(\.disconnects).filter { $0.reason == SwarmEngine.outsideTopology }
        #expect(refused.count == 15 - 5, "every pair but the chain's five edges was refused: \(refused)")
    }

    @Test func aBinaryTreeSeedSendsEachChildTheWholeImage() {
        // The seed does not decline a piece sent to one child to the other (`receiversTrade` is
        // false): siblings never trade, so each gets everything from its parent.
        let parent: (Int) -> Int? = { $0 == 0 ? nil : ($0 - 1) / 2 }
        var swarm = Self.swarm(nodes: 7, policies: Self.tree(7, parent: parent))
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        Self.expectFlowsAlongTheTree(swarm, parent: parent)
        #expect(swarm.nodes[0].engine.uploaded == Int64(2 * swarm.content.count))
    }

    @Test func aNodeWithTwoParentsFetchesFromBothAndServesNeither() {
        // 0 → 1, 0 → 2, 2 → 1: node 1 asks both its parents and unchokes nobody, though both are
        // interested in what it holds at times; node 0 never asks anyone.
        var policies = Self.tree(3) { $0 == 0 ? nil : 0 }
        policies[1].parents[SimulatedSwarm.id(2)] = .some(nil)
        policies[2].children[SimulatedSwarm.id(1)] = .some(nil)
        var swarm = Self.swarm(nodes: 3, policies: policies, pieces: 40)
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        #expect(swarm.nodes[1].data == swarm.content && swarm.nodes[2].data == swarm.content)
        #expect(swarm.sent[[1, 0], default: 0] == 0 && swarm.sent[[1, 2], default: 0] == 0 && swarm.sent[[2, 0], default: 0] == 0)
        #expect(swarm.sent[[2, 1], default: 0] > 0, "node 1 fetched from its second parent too")
        #expect(swarm.nodes[1].engine.downloaded == Int64(swarm.content.count))
    }

    @Test func aNodeUnchokesOnlyWhomItsPolicyServes() {
        // Mesh nodes 1 and 2 want what node 3 holds; node 3 takes from all and serves none of them.
        var swarm = SimulatedSwarm(pieceLength: 32768, length: 32768 * 40, seeders: 1, leechers: 3, seederSlots: 1)
        let parents = (0..<3).map { (SimulatedSwarm.id($0), PeerAddress?.none) }
        swarm.setPolicy(TreePolicy(parents: Dictionary(uniqueKeysWithValues: parents), strangers: .refuse), at: 3)
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        #expect(swarm.nodes[1...3].allSatisfy { $0.data == swarm.content })
        #expect((0..<3).allSatisfy { swarm.sent[[3, $0], default: 0] == 0 }, "\(swarm.sent)")
        #expect(swarm.sent[[1, 2], default: 0] + swarm.sent[[2, 1], default: 0] > 0, "the mesh nodes still trade")
    }

    @Test func aChildMovedToANewParentKeepsItsPiecesAndGoesOn() {
        // 0 → 1 → 2 → 3. Node 1 dies once node 2 holds a third of the image; node 2 is re-attached
        // to the seed and fetches only what it lacked, and node 3 never notices.
        let chain: (Int) -> Int? = { $0 == 0 ? nil : $0 - 1 }
        let pieces = 30
        var swarm = Self.swarm(nodes: 4, policies: Self.tree(4, parent: chain), pieces: pieces)
        swarm.connectAll()
        let reached = swarm.run(until: { $0.nodes[2].engine.have.count >= pieces / 3 })
        #expect(reached)
        let held = swarm.nodes[2].engine.have.count
        #expect(held < pieces)
        swarm.kill(1)
        let repaired = Self.tree(4) { $0 == 0 ? nil : $0 == 2 ? 0 : $0 - 1 }
        swarm.setPolicy(repaired[0], at: 0)
        swarm.setPolicy(repaired[2], at: 2)
        swarm.connect(2, 0)
        let finished = swarm.run()
        #expect(finished)
        for node in [2, 3] {
            #expect(swarm.nodes[node].data == swarm.content)
            #expect(swarm.nodes[node].engine.wasted == 0)
        }
        // What node 2 got from the seed is what it lacked when it moved (plus at most the blocks
        // of the pieces node 1 was still sending then, which were never completed).
        let fromSeed = swarm.sent[[0, 2], default: 0]
        let lacked = swarm.content.count - held * 32768
        #expect(fromSeed <= lacked && fromSeed >= lacked - 2 * 32768, "\(fromSeed) bytes from the seed for \(lacked) lacking")
        #expect(swarm.nodes[2].engine.downloaded <= Int64(swarm.content.count))
    }

    @Test func aNewPolicyDropsStrangersAndCancelsWhatItNoLongerAsks() {
        // A mesh of one seed and two leechers; leecher 1 is then told the seed is its only parent.
        var swarm = SimulatedSwarm(pieceLength: 32768, length: 32768 * 40, seeders: 1, leechers: 2)
        swarm.connectAll()
        let reached = swarm.run(until: { $0.nodes[1].engine.have.count >= 5 })
        #expect(reached)
        let actions = swarm.nodes[1].engine.setPolicy(TreePolicy(parents: [SimulatedSwarm.id(0): nil], strangers: .refuse))
        #expect(actions.contains { if case .disconnect(2, SwarmEngine.outsideTopology) = $0 { true } else { false } })
        swarm.perform(actions, at: 1)
        let finished = swarm.run()
        #expect(finished)
        #expect(swarm.nodes[1].data == swarm.content)
        #expect(swarm.nodes[2].data == swarm.content)

        // Asking nobody: every request in flight is cancelled and interest withdrawn.
        var fresh = SimulatedSwarm(pieceLength: 32768, length: 32768 * 40, seeders: 1, leechers: 1)
        fresh.connectAll()
        let requesting = fresh.run(until: { $0.queue.contains { if case .request = $0.message { true } else { false } } })
        #expect(requesting)
        let asked = fresh.queue.filter { if case .request = $0.message { true } else { false } }.count
        let stop = fresh.nodes[1].engine.setPolicy(TreePolicy(children: [SimulatedSwarm.id(0): nil], strangers: .refuse))
        let cancels = stop.filter { if case .send(0, .cancel) = $0 { true } else { false } }.count
        #expect(cancels == asked)
        #expect(stop.contains(.send(0, .notInterested)))
        #expect(!stop.contains { if case .send(_, .request) = $0 { true } else { false } })
    }

    @Test func aPieceAParentJustGainedIsAskedForAtOnce() {
        // A child that caught up with its parent asks for the parent's next piece when the `have`
        // arrives, not at the next tick: in a chain that wait added a second per hop (testbed).
        var swarm = SimulatedSwarm(pieceLength: 32768, length: 32768 * 8, seeders: 1, leechers: 2)
        swarm.setPolicy(TreePolicy(parents: [SimulatedSwarm.id(1): nil], strangers: .refuse), at: 2)
        swarm.connect(2, 1)
        // Node 1 holds nothing yet: node 2 is connected, not interested, asking nothing.
        let settled = swarm.run(until: { $0.queue.isEmpty })
        #expect(settled)
        let actions = swarm.nodes[2].engine.received(.have(PieceIndex(3)), from: 1)
        #expect(actions.contains(.send(1, .interested)))
        swarm.perform(actions, at: 2)
        let unchoked = swarm.run(until: { $0.queue.isEmpty })
        #expect(unchoked)
        let next = swarm.nodes[2].engine.received(.have(PieceIndex(5)), from: 1)
        #expect(next.contains { if case .send(1, .request(let block)) = $0 { block.piece == PieceIndex(5) } else { false } }, "\(next)")
    }

    @Test func aTreeNodeNeitherExchangesNorDialsWhatPeersTellOf() throws {
        let hash = InfoHash(bytes: [UInt8](repeating: 1, count: 20))!
        let info = try TorrentInfo(name: "x", files: [FileEntry(path: ["x"], length: 32768)], isMultiFile: false,
            privacy: .unspecified, pieceLength: 32768, pieceHashes: [UInt8](repeating: 0, count: 20))
        let stranger = PeerAddress(ip: [10, 9, 9, 9], port: 6881)!
        let parentAddress = PeerAddress(ip: [10, 0, 0, 1], port: 6881)!
        let tree = TreePolicy(parents: [SimulatedSwarm.id(1): parentAddress])
        for (policy, dialsStranger) in [(MeshPolicy() as any SwarmPolicy, true), (tree, false)] {
            var configuration = SwarmEngine.Configuration()
            configuration.policy = policy
            var engine = SwarmEngine(info: info, have: Bitfield(pieceCount: 1), handshake: Handshake(infoHash: hash, peerID: SimulatedSwarm.id(0)),
                configuration: configuration, seed: 1)
            #expect(engine.dials(stranger) == dialsStranger)
            #expect(engine.dials(parentAddress))
            _ = engine.peerConnected(1, handshake: Handshake(infoHash: hash, peerID: SimulatedSwarm.id(1)), address: parentAddress)
            _ = engine.received(.extended(id: 0, payload: ByteBuffer(bytes: ExtensionHandshake.ours.encoded())), from: 1)
            // A second peer with an address, for a mesh node to tell of.
            _ = engine.peerConnected(2, handshake: Handshake(infoHash: hash, peerID: SimulatedSwarm.id(2)), address: PeerAddress(ip: [10, 0, 0, 2], port: 6881)!)
            let told = PeerExchange(added: [stranger], dropped: [])
            let actions = engine.received(.extended(id: ExtensionHandshake.pexID, payload: ByteBuffer(bytes: told.encoded())), from: 1)
            #expect(actions.contains(.connect([stranger])) == dialsStranger, "\(type(of: policy)): \(actions)")
            let later = engine.tick(now: 120)
            let exchanged = later.contains { if case .send(1, .extended(ExtensionHandshake.pexID, _)) = $0 { true } else { false } }
            #expect(exchanged == dialsStranger, "\(type(of: policy)) exchanged peers: \(exchanged)")
        }
    }
}
