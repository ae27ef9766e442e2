import Metainfo
import Testing

@testable import Swarm

@Suite struct IPNetworkTests {
    @Test func parsesCIDRAndChecksMembership() throws {
        let site = try #require(IPNetwork("10.2.0.0/16"))
        #expect(site.contains([10, 2, 200, 7]))
        #expect(!site.contains([10, 3, 0, 1]))
        #expect(site.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 2, 0, 1]))  // IPv4-mapped
        #expect(site.description == "10.2.0.0/16")
        let odd = try #require(IPNetwork("10.0.0.0/13"))
        #expect(odd.contains([10, 7, 255, 255]) && !odd.contains([10, 8, 0, 0]))
        #expect(IPNetwork("10.2.0.9")?.contains([10, 2, 0, 9]) == true)
        #expect(IPNetwork("fd00::/8")?.contains(PeerAddress(host: "fd12::1", port: 0)!.ip) == true)
        #expect(IPNetwork("0.0.0.0/0")?.contains([192, 0, 2, 1]) == true)
    }

    @Test func refusesWhatIsNotANetwork() {
        for text in ["", "10.2.0.0/", "10.2.0.0/33", "10.2.0.0/-1", "10.2.3.4/16", "host/8", "10.2.0.0/16/2", "::/129", "10.2.0.0/+8"] {
            #expect(IPNetwork(text) == nil, "\(text)")
        }
    }
}

@Suite struct PoolPolicyTests {
    static let site = [IPNetwork("10.9.0.0/24")!]
    static let a: [UInt8] = [10, 9, 0, 1], b: [UInt8] = [10, 9, 0, 2], c: [UInt8] = [10, 9, 0, 3]

    static func facts(_ ip: [UInt8]) -> PeerFacts { PeerFacts(id: PeerID(bytes: [UInt8](repeating: ip[3], count: 20))!, ip: ip) }

    @Test func siblingsSplitThePiecesInTurnByAddress() throws {
        // Given in any order, the pool nodes agree on one order: a, b, c.
        let onB = PoolPolicy(site: Self.site, ownAddress: Self.b, siblings: [Self.c, Self.a], pieceCount: 10, present: [Self.a, Self.c])
        let share = try #require(onB.farPieces)
        #expect((0..<10).filter { share[PieceIndex($0)] } == [1, 4, 7])
    }

    @Test func aSiblingThatIsNotConnectedLeavesItsShareToTheOthers() throws {
        var policy: any SwarmPolicy = PoolPolicy(site: Self.site, ownAddress: Self.a, siblings: [Self.b], pieceCount: 6)
        // Alone at first: every piece is ours to fetch.
        #expect(policy.farPieces?.count == 6)
        let source = Self.facts([192, 0, 2, 1])
        // The sibling arrives: its half goes to it. A WAN peer changes nothing.
        policy = try #require(policy.reconsidered(peers: [source, Self.facts(Self.b)]))
        #expect(policy.farPieces.map { p in (0..<6).filter { p[PieceIndex($0)] } } == [0, 2, 4])
        #expect(policy.reconsidered(peers: [Self.facts(Self.b), source]) == nil)
        // It dies: its share is ours again.
        policy = try #require(policy.reconsidered(peers: [source]))
        #expect(policy.farPieces?.count == 6)
        // A sibling's address seen on the WAN side (not in the site) is not the sibling.
        let elsewhere = PoolPolicy(site: [IPNetwork("10.8.0.0/24")!], ownAddress: [10, 8, 0, 1], siblings: [Self.b], pieceCount: 6)
        #expect(elsewhere.reconsidered(peers: [Self.facts(Self.b)]) == nil)
    }

    @Test func sitePeersAreNearAndTheRestFarAndNoPeersAreExchanged() {
        let policy = PoolPolicy(site: Self.site, ownAddress: Self.a, siblings: [], pieceCount: 4)
        #expect(!policy.isFar(Self.facts(Self.c)))
        #expect(policy.isFar(Self.facts([10, 9, 1, 1])))
        #expect(policy.isFar(PeerFacts(id: PeerID(bytes: [UInt8](repeating: 1, count: 20))!)))  // no address: not known to be near
        #expect(!policy.exchangesPeers)
    }
}
