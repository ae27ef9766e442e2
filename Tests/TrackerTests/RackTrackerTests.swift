import Metainfo
import Testing
import TrackerProtocol

@testable import Tracker

/// Racks at the tracker: peer lists and trees that enter each rack through one node.
@Suite struct RackTrackerTests {
    var state = TrackerState(configuration: TrackerConfiguration(), seed: 7)

    /// Rack r (1...4), host h: 10.1.r.h, the rack's subnet a /24. Node n = 10r + h.
    static func node(rack: Int, host: Int) -> Int { rack * 10 + host }
    static func rackOf(_ n: Int) -> Int { n / 10 }
    static func at(_ n: Int, port: UInt16 = 6881) -> PeerAddress { PeerAddress(ip: [10, 1, UInt8(n / 10), UInt8(n % 10)], port: port)! }
    static let nodes = (1...4).flatMap { rack in (1...4).map { node(rack: rack, host: $0) } }
    /// The seed is host 1 of rack 1.
    static let seed = node(rack: 1, host: 1)

    func request(_ n: Int, tree: Bool = false, event: AnnounceEvent = .none) -> AnnounceRequest {
        var request = announce(n, left: n == Self.seed ? 0 : 100, event: event)
        request.port = 6881
        request.tree = tree
        return request
    }

    func number(_ peer: AnnouncedPeer) -> Int { Self.nodes.first { Self.at($0) == peer.address }! }

    /// Everyone joins (interleaved across racks), then announces again: what each is given.
    mutating func lists(tree: Bool = false) throws -> [Int: AnnounceResponse] {
        let order = [Self.seed] + (1...4).flatMap { host in (1...4).map { Self.node(rack: $0, host: host) } }.filter { $0 != Self.seed }
        for n in order { _ = try state.announce(request(n, tree: tree), from: Self.at(n, port: 40000), now: 0) }
        var answers: [Int: AnnounceResponse] = [:]
        for n in order { answers[n] = try state.announce(request(n, tree: tree), from: Self.at(n, port: 40000), now: 1) }
        return answers
    }

    @Test mutating func eachRackReachesOutThroughOneGateway() throws {
        let answers = try lists()
        var gateways: [Int: Int] = [:]
        for (n, answer) in answers {
            let peers = answer.peers.map(number)
            #expect(answer.rack == "10.1.\(Self.rackOf(n)).0/24")
            #expect(!peers.contains(n))
            let outside = peers.filter { Self.rackOf($0) != Self.rackOf(n) }
            if !outside.isEmpty {
                #expect(gateways[Self.rackOf(n)] == nil, "rack \(Self.rackOf(n)) has one gateway: \(n) and \(gateways[Self.rackOf(n)] ?? 0)")
                gateways[Self.rackOf(n)] = n
            }
            // Everyone knows the rest of its rack.
            #expect(Set(peers.filter { Self.rackOf($0) == Self.rackOf(n) }).count == 3, "\(n): \(peers)")
        }
        // The seed's rack reaches out through the seed; the others through their first node.
        #expect(gateways == [1: Self.seed, 2: 21, 3: 31, 4: 41])
        // A gateway knows every other gateway (the seed included), and nobody else outside.
        let seen = answers[21]!.peers.map(number).filter { Self.rackOf($0) != 2 }
        #expect(Set(seen) == [Self.seed, 31, 41])
    }

    @Test mutating func aGatewayThatLeavesIsReplacedFromItsRack() throws {
        _ = try lists()
        _ = try state.announce(request(21, event: .stopped), from: Self.at(21, port: 40000), now: 2)
        let answers = (22...24).map { n in try! state.announce(request(n), from: Self.at(n, port: 40000), now: 3) }
        let reaching = answers.enumerated().filter { $0.element.peers.map(number).contains { Self.rackOf($0) != 2 } }.map { 22 + $0.offset }
        #expect(reaching.count == 1, "\(reaching)")
        #expect(answers.allSatisfy { !$0.peers.map(number).contains(21) })
    }

    @Test mutating func aNamedRackOverridesTheSubnetAndPrefixZeroIsRackBlind() throws {
        var named = request(22)
        named.rack = "r1"
        _ = try lists()
        let answer = try state.announce(named, from: Self.at(22, port: 40000), now: 2)
        #expect(answer.rack == "r1")

        state = TrackerState(configuration: { var c = TrackerConfiguration(); c.rackPrefix = 0; return c }(), seed: 7)
        let blind = try lists()
        #expect(blind.values.allSatisfy { $0.rack == nil })
        #expect(blind[22]!.peers.count == 15)
    }

    /// Tree mode, rack by rack: one edge into each rack, every other parent inside the rack.
    @Test mutating func theTreeIsBuiltRackByRack() throws {
        let answers = try lists(tree: true)
        var crossings: [Int: Int] = [:]
        for n in Self.nodes where n != Self.seed {
            let parents = try #require(answers[n]?.treeParents)
            let parent = number(try #require(parents.first, "\(n) has a parent"))
            if Self.rackOf(parent) != Self.rackOf(n) { crossings[Self.rackOf(n), default: 0] += 1 }
        }
        #expect(crossings == [2: 1, 3: 1, 4: 1])
    }

    @Test func subnetNames() {
        #expect(PeerAddress.subnetName([10, 77, 2, 9], prefix: 24) == "10.77.2.0/24")
        #expect(PeerAddress.subnetName([10, 77, 2, 9], prefix: 20) == "10.77.0.0/20")
        #expect(PeerAddress.subnetName([10, 77, 2, 9], prefix: 99) == "10.77.2.9/32")
        let v6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2] + Array(repeating: 7, count: 8)
        #expect(PeerAddress.subnetName(v6, prefix: 64) == "2001:db8:1:2:0:0:0:0/64")
        #expect(AnnounceRequest.isValidRack("rack-3.site:a/b"))
        #expect(!AnnounceRequest.isValidRack(""))
        #expect(!AnnounceRequest.isValidRack("a b"))
        #expect(!AnnounceRequest.isValidRack(String(repeating: "r", count: 65)))
        #expect(throws: TrackerRequestError.self) {
            try AnnounceRequest(query: "info_hash=\(String(repeating: "%01", count: 20))&peer_id=\(String(repeating: "a", count: 20))&port=1&rack=a%20b")
        }
    }
}
