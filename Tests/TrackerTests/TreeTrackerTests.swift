import Metainfo
import Testing
import TrackerProtocol

@testable import Tracker

/// vmswarm's tree mode at the tracker: `topology=tree` announces get their parents, and only them.
@Suite struct TreeTrackerTests {
    var state = TrackerState(configuration: TrackerConfiguration(), seed: 1)

    func tree(_ n: Int, left: Int64 = 100, event: AnnounceEvent = .none, lost: Int? = nil) -> AnnounceRequest {
        var request = announce(n, left: left, event: event)
        request.tree = true
        request.lostParent = lost.map(peerID)
        return request
    }

    mutating func parent(of n: Int, lost: Int? = nil, left: Int64 = 100) throws -> Int? {
        let answer = try state.announce(tree(n, left: left, lost: lost), from: address(n), now: 0)
        let parents = try #require(answer.treeParents)
        #expect(answer.peers == parents, "peers holds the parents, for any client")
        #expect(parents.count <= 1)
        return parents.first.map { parent in (0..<100).first { peerID($0) == parent.peerID }! }
    }

    @Test mutating func nodesJoinAsAChainAndEachIsGivenOnlyItsParent() throws {
        #expect(try parent(of: 0, left: 0) == nil)
        for n in 1...5 { #expect(try parent(of: n) == n - 1) }
        // Announcing again keeps the place, complete or not.
        #expect(try parent(of: 3, left: 0) == 2)
        // A mesh client in the same swarm is answered as always, without a tree.
        let mesh = try state.announce(announce(50), from: address(50), now: 0)
        #expect(mesh.treeParents == nil)
        #expect(mesh.peers.count == 6)
        // The parent's address is where it listens.
        let answer = try state.announce(tree(2), from: address(2), now: 1)
        #expect(answer.peers.first?.address == PeerAddress(ip: address(1).ip, port: 6001))
    }

    @Test mutating func aLostParentLeavesTheTreeAndItsChildrenMoveUp() throws {
        _ = try parent(of: 0, left: 0)
        for n in 1...4 { _ = try parent(of: n) }
        // 3 lost 2: it goes under 1 (2's parent). 2 reporting in later is placed anew, at the end.
        #expect(try parent(of: 3, lost: 2) == 1)
        #expect(try parent(of: 2) == 4)
        // A node cannot have another's parent removed: 4's parent is 3, not 1.
        #expect(try parent(of: 4, lost: 1) == 3)
        #expect(try parent(of: 3) == 1)
    }

    @Test mutating func stoppedAndExpiredNodesLeaveTheTree() throws {
        _ = try parent(of: 0, left: 0)
        for n in 1...3 { _ = try parent(of: n) }
        _ = try state.announce(tree(2, event: .stopped), from: address(2), now: 1)
        #expect(try parent(of: 3) == 1)
        // 1 goes silent; the others announce later, 1 expires.
        let later = state.configuration.effectivePeerTimeout - 10
        for n in [0, 3] { _ = try state.announce(tree(n, left: n == 0 ? 0 : 100), from: address(n), now: later) }
        state.expire(now: state.configuration.effectivePeerTimeout + 1)
        #expect(try parent(of: 3) == 0)
    }

    @Test func treeAnswersAndRequestsSurviveTheWire() throws {
        var request = AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 6881)
        request.tree = true
        request.lostParent = peerID(7)
        let parsed = try AnnounceRequest(query: request.query)
        #expect(parsed.tree && parsed.lostParent == peerID(7))
        #expect(throws: TrackerRequestError.self) { try AnnounceRequest(query: request.query + "&lost=short") }

        var answer = AnnounceResponse(interval: 60, peers: [AnnouncedPeer(address: address(3), peerID: peerID(3))])
        answer.treeParents = answer.peers
        for compact in [true, false] {
            let decoded = try AnnounceResponse(decoding: answer.encoded(compact: compact, includePeerIDs: true))
            #expect(decoded.treeParents == answer.treeParents)
            #expect(decoded.peers.map(\.address) == [address(3)])
        }
        answer.treeParents = []
        #expect(try AnnounceResponse(decoding: answer.encoded(compact: true, includePeerIDs: false)).treeParents == [])
        // Hostile: `tree` without a list is refused; parents without ids are dropped.
        #expect(throws: TrackerResponseError.self) { try AnnounceResponse(decoding: Array("d8:intervali60e4:treed7:parentsi1eee".utf8)) }
        let noID = try AnnounceResponse(decoding: Array("d8:intervali60e4:treed7:parentsld2:ip8:10.0.0.14:porti1eeeee".utf8))
        #expect(noID.treeParents == [])
    }
}
