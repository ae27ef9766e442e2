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
        #expect(answers.values.allSatisfy { $0.racks == 4 })
    }

    /// A seed that is not its rack's gateway reaches no other rack, and no gateway is given it:
    /// its rack's pieces leave through the gateway, once (issue 17: rack 1's members, seeds after
    /// a few seconds, were given to every other gateway, and the source's rack sent 1.31 copies).
    @Test mutating func seedsReachOtherRacksOnlyThroughTheirGateway() throws {
        _ = try lists()
        var done = request(12)
        done.left = 0
        done.event = .completed
        #expect(try outside(12, done) == [])
        #expect(try outside(31) == [Self.seed, 21, 41])
    }

    /// A gateway whose source died without a word stops making progress: its announce that says
    /// so is given the seeds elsewhere as well, so its rack is not cut off until the dead entry
    /// expires. Once it moves again it is given the gateways only.
    @Test mutating func aStalledGatewayIsGivenTheSeedsElsewhereUntilItMovesAgain() throws {
        _ = try lists()
        var done = request(12)
        done.left = 0
        _ = try state.announce(done, from: Self.at(12, port: 40000), now: 1)
        var stuck = request(31)
        stuck.downloaded = 5000
        #expect(try outside(31, stuck, now: 100) == [Self.seed, 21, 41])
        #expect(try outside(31, stuck, now: 200) == [Self.seed, 12, 21, 41])
        stuck.downloaded = 9000
        #expect(try outside(31, stuck, now: 300) == [Self.seed, 21, 41])
    }

    /// The first node, alone in its rack and in the swarm, is told its rack and that the swarm
    /// spans one: it learns its side of the uplink before it would announce again.
    @Test mutating func theFirstNodeIsToldItsRackBeforeASecondRackComes() throws {
        let first = try state.announce(request(Self.seed), from: Self.at(Self.seed, port: 40000), now: 0)
        #expect(first.rack == "10.1.1.0/24" && first.racks == 1 && !first.spansRacks)
        let second = try state.announce(request(21), from: Self.at(21, port: 40000), now: 0)
        #expect(second.racks == 2 && second.spansRacks)
    }

    /// The nodes outside its rack that `n` is given when it announces.
    mutating func outside(_ n: Int, _ announce: AnnounceRequest? = nil, now: Double = 1) throws -> Set<Int> {
        Set(try state.announce(announce ?? request(n), from: Self.at(n, port: 40000), now: now).peers.map(number).filter { Self.rackOf($0) != Self.rackOf(n) })
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

    // MARK: Issue 15: one hostile address against a rack's gateway

    /// A hostile client (node number 90 and up) at `address`, in rack 2 by subnet or by name.
    mutating func hostile(_ id: Int, at address: PeerAddress, named: Bool, tree: Bool = false, now: Double) throws -> AnnounceResponse {
        var request = announce(id, left: 100)
        request.port = address.port + UInt16(id - 90)
        request.rack = named ? "r2" : nil
        request.tree = tree
        return try state.announce(request, from: address, now: now)
    }

    /// Honest node `n`; with `named`, every honest node names its rack (`r1`...`r4`).
    mutating func honest(_ n: Int, named: Bool, downloaded: Int64 = 0, now: Double) throws -> AnnounceResponse {
        var request = request(n)
        request.downloaded = n == Self.seed ? 0 : downloaded
        if named { request.rack = "r\(Self.rackOf(n))" }
        return try state.announce(request, from: Self.at(n, port: 40000), now: now)
    }

    /// Honest peers of other racks than `rack` in an answer.
    func honestOutside(_ answer: AnnounceResponse, rack: Int) -> [Int] {
        answer.peers.compactMap { peer in Self.nodes.first { Self.at($0) == peer.address } }.filter { Self.rackOf($0) != rack }
    }

    /// The eclipse of issue 15: one address announces first in rack 2 (from the rack's /24, or
    /// naming the rack from anywhere), so it is the rack's gateway, and never serves. Rack 2's honest
    /// members announce when their answers tell them to and report no progress until one of them
    /// has been given an honest peer outside the rack (after that the rack is fed, and they report
    /// more bytes on every announce). Within ten minutes one of them, and only one (the rack still
    /// enters through one node), must be given that route out; the attacker, announcing every
    /// minute under two ids from its one address, never takes the role back.
    @Test(arguments: [false, true])
    mutating func oneHostileAddressCannotEclipseARack(named: Bool) throws {
        let attacker = named ? PeerAddress(ip: [192, 0, 2, 66], port: 7000)! : PeerAddress(ip: [10, 1, 2, 99], port: 7000)!
        let rack2 = (1...4).map { Self.node(rack: 2, host: $0) }
        _ = try honest(Self.seed, named: named, now: 0)
        _ = try hostile(90, at: attacker, named: named, now: 0)
        for n in Self.nodes where n != Self.seed { _ = try honest(n, named: named, now: 0) }

        var due = Dictionary(uniqueKeysWithValues: rack2.map { ($0, 1.0) })
        var reachedOut: [Int: Double] = [:]
        for second in 1...3600 {
            let now = Double(second)
            if second % 60 == 0 {
                for id in [90, 91] { _ = try hostile(id, at: attacker, named: named, now: now) }
            }
            for n in rack2 where due[n]! <= now {
                let fed = !reachedOut.isEmpty
                let answer = try honest(n, named: named, downloaded: fed ? Int64(second) << 10 : 0, now: now)
                if !honestOutside(answer, rack: 2).isEmpty, reachedOut[n] == nil { reachedOut[n] = now }
                due[n] = now + Double(max(answer.interval, answer.minInterval ?? 0, 1))
            }
        }
        let first = try #require(reachedOut.values.min(), "rack 2 never given a route out: eclipsed by \(attacker)")
        #expect(first <= 600, "rack 2's first route out after \(first) s")
        #expect(reachedOut.count == 1, "one member imports for rack 2: \(reachedOut)")

        // The honest gateway leaves: the role goes to another honest member, not back to the attacker.
        let gateway = try #require(reachedOut.keys.first)
        var stopped = request(gateway, event: .stopped)
        stopped.rack = named ? "r2" : nil
        _ = try state.announce(stopped, from: Self.at(gateway, port: 40000), now: 3601)
        for id in [90, 91] { #expect(honestOutside(try hostile(id, at: attacker, named: named, now: 3602), rack: 2).isEmpty) }
        let successors = try rack2.filter { $0 != gateway }.filter { n in
            !honestOutside(try honest(n, named: named, downloaded: 1 << 30, now: 3603), rack: 2).isEmpty
        }
        #expect(successors.count == 1, "\(successors)")
    }

    /// In normal operation the gateway never changes: members that make progress keep answering
    /// the first gateway, and only the gateways are given peers outside their racks, however long
    /// the swarm runs (no second importer, so no extra bytes on the uplinks).
    @Test mutating func anHonestGatewayKeepsTheRoleWhileItsRackProgresses() throws {
        _ = try lists()
        var due = Dictionary(uniqueKeysWithValues: Self.nodes.map { ($0, 2.0) })
        var importers: [Int: Set<Int>] = [:]
        for second in 2...7200 {
            let now = Double(second)
            for n in Self.nodes where due[n]! <= now {
                let answer = try honest(n, named: false, downloaded: Int64(second) * 1000, now: now)
                if !honestOutside(answer, rack: Self.rackOf(n)).isEmpty { importers[Self.rackOf(n), default: []].insert(n) }
                due[n] = now + Double(max(answer.interval, answer.minInterval ?? 0, 1))
            }
        }
        #expect(importers == [1: [Self.seed], 2: [21], 3: [31], 4: [41]])
    }

    /// The other side of the replacement: one hostile address in rack 2 that is not the gateway and
    /// says, every minute, that it gets nothing cannot take the role from a gateway whose rack's
    /// other members report progress, and is never given peers outside the rack.
    @Test mutating func aHostileMemberCannotTakeTheRoleFromAGatewayThatServes() throws {
        let attacker = PeerAddress(ip: [10, 1, 2, 99], port: 7000)!
        _ = try lists()
        var due = Dictionary(uniqueKeysWithValues: Self.nodes.map { ($0, 2.0) })
        var importers: Set<Int> = []
        for second in 2...7200 {
            let now = Double(second)
            if second % 60 == 0 {
                for id in [90, 91] {
                    let answer = try hostile(id, at: attacker, named: false, now: now)
                    #expect(honestOutside(answer, rack: 2).isEmpty, "the attacker was given peers outside rack 2 at \(second) s")
                }
            }
            for n in Self.nodes where due[n]! <= now {
                let answer = try honest(n, named: false, downloaded: Int64(second) * 1000, now: now)
                if Self.rackOf(n) == 2, !honestOutside(answer, rack: 2).isEmpty { importers.insert(n) }
                due[n] = now + Double(max(answer.interval, answer.minInterval ?? 0, 1))
            }
        }
        #expect(importers == [21])
    }

    /// Tree mode is covered by `lost=`: a hostile first node of rack 2 heads the rack's tree (the
    /// parent of its first honest node), and that node, which gets nothing from it, reports it
    /// lost (docs/tree.md: within `TreeMembership.patience` seconds). The attacker leaves the tree
    /// and the rack enters through the honest node; announcing again, under any id from its
    /// address, it is placed anew at the end of the rack's chain, parent of none already placed.
    @Test mutating func aHostileTreeHeadIsDroppedWhenItsChildReportsItLost() throws {
        let attacker = PeerAddress(ip: [10, 1, 2, 99], port: 7000)!
        func parent(_ n: Int, lost: Int? = nil, now: Double) throws -> PeerAddress? {
            var request = request(n, tree: true)
            request.lostParent = lost.map(peerID)
            return try state.announce(request, from: Self.at(n, port: 40000), now: now).treeParents?.first?.address
        }
        _ = try parent(Self.seed, now: 0)
        _ = try hostile(90, at: attacker, named: false, tree: true, now: 0)
        #expect(try parent(21, now: 1) == attacker)
        #expect(try parent(22, now: 1) == Self.at(21))
        #expect(try parent(21, lost: 90, now: 10) == Self.at(Self.seed))
        for id in [90, 91] { _ = try hostile(id, at: attacker, named: false, tree: true, now: 11) }
        #expect(try parent(21, now: 12) == Self.at(Self.seed))
        #expect(try parent(22, now: 12) == Self.at(21))
    }

    @Test func subnetNames() {
        #expect(PeerAddress.subnetName([10, 77, 2, 9], prefix: 24) == "10.77.2.0/24")
        #expect(PeerAddress.subnetName([10, 77, 2, 9], prefix: 20) == "10.77.0.0/20")
        #expect(PeerAddress.subnetName([10, 77, 2, 9], prefix: 99) == "10.77.2.9/32")
        #expect(PeerAddress.subnetName([255, 255, 255, 255], prefix: 32) == "255.255.255.255/32")
        #expect(PeerAddress.subnetName([255, 255, 255, 255], prefix: 0) == "0.0.0.0/0")
        #expect(PeerAddress.subnetName([127, 10, 3, 7], prefix: 8) == "127.0.0.0/8")
        #expect(PeerAddress.subnetName([192, 168, 100, 200], prefix: 30) == "192.168.100.200/30")
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
