import Metainfo
import Swarm
import Testing

@testable import Simulation

@Suite struct NetworkModelTests {
    /// Sends `count` messages of `bytes` from `from` to each of `to` at time 0 and runs the model;
    /// returns, per receiver, the arrival times in order and the messages' sequence numbers.
    static func transfer(_ shape: NetworkShape, from: Int, to receivers: [Int], count: Int, bytes: Int)
        -> [Int: (times: [Double], order: [Int])]
    {
        let network = Network<Int>(shape: shape, seed: 3)
        var arrivals: [Int: (times: [Double], order: [Int])] = [:]
        network.onDeliver = { channel, sequence in
            arrivals[channel.to, default: ([], [])].times.append(network.now)
            arrivals[channel.to, default: ([], [])].order.append(sequence)
        }
        for receiver in receivers {
            let channel = network.open(from: from, to: receiver)
            for sequence in 0..<count { network.send(sequence, bytes: bytes, on: channel) }
        }
        network.run()
        return arrivals
    }

    @Test func aSingleFlowGetsItsLinksCapacity() {
        let shape = NetworkShape(hosts: 2, rate: 10_000_000)
        let arrivals = Self.transfer(shape, from: 0, to: [1], count: 100, bytes: 100_000)
        // 10 MB at 10 MB/s: 1 s, plus one message's time on the second link and the path's delay.
        let last = arrivals[1]!.times.last!
        #expect(abs(last - (1.0 + 0.01 + shape.latency)) < 0.001, "\(last)")
        #expect(arrivals[1]!.order == Array(0..<100))
    }

    @Test func twoFlowsFromOneHostShareItsUplinkEqually() {
        let shape = NetworkShape(hosts: 3, rate: 10_000_000)
        let arrivals = Self.transfer(shape, from: 0, to: [1, 2], count: 50, bytes: 100_000)
        // Together 10 MB through one 10 MB/s uplink: both finish near 1 s, neither near 0.5 s.
        for receiver in [1, 2] {
            let last = arrivals[receiver]!.times.last!
            #expect(last > 0.98 && last < 1.03, "receiver \(receiver) finished at \(last)")
        }
    }

    @Test func aLostDatagramIsGoneNotLate() {
        var shape = NetworkShape(hosts: 2, rate: 10_000_000)
        shape.loss = 0.05
        let network = Network<Int>(shape: shape, seed: 5)
        var delivered: [Int] = []
        network.onDeliver = { _, sequence in delivered.append(sequence) }
        let group = network.openGroupDownlink(from: 0, to: 1)
        for sequence in 0..<2000 { network.send(sequence, bytes: 1486, on: group) }
        network.run()
        // Each datagram crosses two links at 5 % each: about 9.75 % lost, the rest in order.
        #expect(delivered.count + group.lost == 2000)
        #expect(group.lost > 140 && group.lost < 260, "\(group.lost) lost")
        #expect(delivered == delivered.sorted())
        // 2000 datagrams of 1486 bytes through a 10 MB/s downlink, lost ones included: 0.3 s.
        #expect(abs(network.now - 2000 * 1486 / 10_000_000.0) < 0.01, "\(network.now)")
    }

    @Test func twoSendersShareTheReceiversDownlink() {
        let shape = NetworkShape(hosts: 3, rate: 10_000_000)
        let network = Network<Int>(shape: shape)
        var last: [Int: Double] = [:]
        network.onDeliver = { channel, _ in last[channel.from] = network.now }
        for sender in [1, 2] {
            let channel = network.open(from: sender, to: 0)
            for sequence in 0..<50 { network.send(sequence, bytes: 100_000, on: channel) }
        }
        network.run()
        #expect(last[1]! > 0.98 && last[1]! < 1.03 && last[2]! > 0.98 && last[2]! < 1.03, "\(last)")
        // With `--cap egress` the receiver takes both at their senders' rates.
        var egress = shape
        egress.capsDownload = false
        let fast = Network<Int>(shape: egress)
        var fastest = 0.0
        fast.onDeliver = { _, _ in fastest = fast.now }
        for sender in [1, 2] {
            let channel = fast.open(from: sender, to: 0)
            for sequence in 0..<50 { fast.send(sequence, bytes: 100_000, on: channel) }
        }
        fast.run()
        #expect(fastest > 0.49 && fastest < 0.52, "\(fastest)")
    }

    @Test func aRackUplinkCapsWhatLeavesTheRack() {
        var shape = NetworkShape(hosts: 4, rate: 10_000_000)
        shape.racks = 2
        shape.uplink = 5_000_000
        // Hosts 0 and 1 in rack 0 send to 2 and 3 in rack 1: 10 MB through one 5 MB/s uplink.
        let network = Network<Int>(shape: shape)
        var last = 0.0
        network.onDeliver = { _, _ in last = network.now }
        for (from, to) in [(0, 2), (1, 3)] {
            let channel = network.open(from: from, to: to)
            for sequence in 0..<50 { network.send(sequence, bytes: 100_000, on: channel) }
        }
        network.run()
        #expect(last > 1.98 && last < 2.05, "\(last)")
        #expect(network.rackUplinks[0]!.bytes == 10_000_000)
        #expect(network.rackUplinks[1]!.bytes == 0)
    }

    @Test func lossCostsRoundTripsButDeliversEverythingInOrder() {
        var shape = NetworkShape(hosts: 2, rate: 10_000_000)
        shape.latency = 0.01
        let clean = Self.transfer(shape, from: 0, to: [1], count: 200, bytes: 16_397)[1]!
        shape.loss = 0.01
        let lossy = Self.transfer(shape, from: 0, to: [1], count: 200, bytes: 16_397)[1]!
        #expect(lossy.order == Array(0..<200))
        #expect(lossy.times == lossy.times.sorted())
        // TCP at 1 % loss and a 20 ms round trip moves about 0.6 MB/s (Mathis): 3.3 MB take
        // about 5 s where the 10 MB/s link alone takes a third of one.
        #expect(lossy.times.last! > 10 * clean.times.last!, "\(clean.times.last!) → \(lossy.times.last!)")
    }

    @Test func smallMessagesRideBehindWhatTheirConnectionCarries() {
        let shape = NetworkShape(hosts: 2, rate: 1_000_000)
        let network = Network<Int>(shape: shape)
        var order: [Int] = []
        network.onDeliver = { _, value in order.append(value) }
        let channel = network.open(from: 0, to: 1)
        network.send(1, bytes: 500_000, on: channel)  // half a second on the wire
        network.send(2, bytes: 17, on: channel)       // a request: no link time, but not first
        network.run(until: 0.1)
        #expect(order.isEmpty)
        network.run()
        #expect(order == [1, 2])
    }
}

@Suite struct SwarmSimulationModelTests {
    static func scenario(hosts: Int, megabytes: Int = 4) -> SwarmScenario {
        var scenario = SwarmScenario(network: NetworkShape(hosts: hosts, rate: 12_500_000),
            imageLength: Int64(megabytes) << 20, pieceLength: 256 << 10)
        scenario.timeLimit = 600
        return scenario
    }

    @Test func aSmallSwarmOfRealEnginesCompletesNearTheLinkLimit() throws {
        var scenario = Self.scenario(hosts: 8, megabytes: 32)
        scenario.byteScale = 8
        let outcome = try SwarmSimulation(scenario).run()
        let ratio = try #require(outcome.timeOverLimit(scenario))
        // The testbed's 8 hosts at 100 Mbit/s measure 1.13x for 256 MiB.
        #expect(ratio > 1.0 && ratio < 1.3, "\(ratio)x F/B")
        // The source sends each piece about once; the swarm trades the rest.
        #expect(outcome.sent[0] < 2 * (32 << 20), "the source sent \(outcome.sent[0]) bytes")
        #expect(outcome.received.dropFirst().allSatisfy { $0 >= 32 << 20 })
    }

    /// 4 racks of 4 behind uplinks at a quarter of the hosts' rate (the testbed's racks): the
    /// rack-aware tracker's gateways carry the image across each uplink about once each way, and
    /// the swarm takes about the time the uplinks allow. Before the lone seed counted each side of
    /// its rack's uplink on its own, the source's rack sent 1.15–1.19 copies out here (1.31 on the
    /// testbed).
    @Test func racksBehindThinUplinksTakeTheImageAboutOnce() throws {
        var shape = NetworkShape(hosts: 16, rate: 5_000_000)
        shape.racks = 4
        shape.uplink = 1_250_000
        var scenario = SwarmScenario(network: shape, imageLength: 32 << 20, pieceLength: 256 << 10)
        scenario.timeLimit = 600
        let outcome = try SwarmSimulation(scenario).run()
        let image = Double(scenario.imageLength)
        #expect(outcome.completions.allSatisfy { $0 != nil })
        for rack in 0..<4 {
            #expect(Double(outcome.rackOut[rack]) < 1.05 * image, "out of rack \(rack): \(Double(outcome.rackOut[rack]) / image) images")
            #expect(Double(outcome.rackIn[rack]) < 1.05 * image, "into rack \(rack): \(Double(outcome.rackIn[rack]) / image) images")
        }
        let limit = image / Double(shape.uplink!)
        let last = outcome.completions.compactMap { $0 }.max()!
        #expect(last < 1.2 * limit, "\(last / limit)x the uplink's limit")
    }

    @Test func theSameSeedGivesTheSameRun() throws {
        let first = try SwarmSimulation(Self.scenario(hosts: 6)).run()
        let second = try SwarmSimulation(Self.scenario(hosts: 6)).run()
        #expect(first.completions == second.completions)
        #expect(first.messages == second.messages)
    }

    /// Nodes that join together fill each other's slots; with no slots kept for nodes that dial
    /// in, every later node finds the earlier ones full, and they form a swarm of their own with
    /// no piece in it. `PeerLimits` keeps half the slots for incoming connections.
    @Test func nodesJoiningLateStillReachTheSwarmWhenEarlierNodesAreFull() throws {
        var scenario = Self.scenario(hosts: 40, megabytes: 2)
        scenario.limits = PeerLimits(maxPeers: 8)
        scenario.timeLimit = 120
        let outcome = try SwarmSimulation(scenario).run()
        #expect(outcome.completions.allSatisfy { $0 != nil }, "\(outcome.completions.count { $0 == nil }) nodes never completed")

        scenario.limits.maxOutgoing = 8  // every slot may be dialled: the old rule
        let partitioned = try SwarmSimulation(scenario).run()
        #expect(partitioned.completions.contains { $0 == nil }, "the old rule should strand late nodes")
    }

    /// The booster beside the swarm, as bench-distribution's vmswarm-multicast: the sender's one
    /// pass at 98 % of the link brings every piece to every receiver (the testbed: 1.07x at 8
    /// hosts); with loss, what the group does not repair comes from peers and every node completes.
    @Test func theBoosterBringsTheImageInOnePassAndPeersFillWhatItLost() throws {
        var scenario = Self.scenario(hosts: 8, megabytes: 16)
        scenario.booster = BoosterScenario(rate: 0.98 * 8 * scenario.network.rate)
        let clean = try SwarmSimulation(scenario).run()
        let ratio = try #require(clean.timeOverLimit(scenario))
        #expect(ratio > 1.0 && ratio < 1.12, "\(ratio)x F/B")
        #expect(clean.piecesFromGroup == 7 * 64, "\(clean.piecesFromGroup) pieces from the group")
        #expect(clean.received.dropFirst().allSatisfy { $0 < 4 << 20 }, "peers sent a receiver much of the image")

        scenario.network.loss = 0.02
        let lossy = try SwarmSimulation(scenario).run()
        #expect(lossy.timeOverLimit(scenario) != nil, "a node never completed")
        #expect(lossy.datagramsLost > 0)
        #expect(lossy.received.dropFirst().contains { $0 > 0 }, "no repair came from a peer")
    }

    /// Every node is told of more peers than it dials at once, and some it dials are full. Before
    /// nodes kept what the tracker named beyond the dials of the moment, the last nodes to announce
    /// stayed with the few of their first dials that were not refused.
    @Test func aNodeKeepsDiallingThePeersItWasToldOfUntilItsShareIsConnected() throws {
        var scenario = Self.scenario(hosts: 40, megabytes: 8)
        scenario.network.rate = 1_250_000  // a few seconds' work, so each node ticks a few times
        scenario.limits = PeerLimits(maxPeers: 8)
        scenario.numWant = 30
        scenario.timeLimit = 120
        let simulation = try SwarmSimulation(scenario)
        simulation.recordsProbes = true
        let outcome = simulation.run()
        #expect(outcome.refusedConnections > 0, "no dial was refused: the case is not exercised")
        let fewest = simulation.probes.dropFirst().map { $0.map(\.peers).max() ?? 0 }.min() ?? 0
        #expect(fewest >= scenario.limits.maxOutgoing, "a node peaked at \(fewest) peers")
    }

    /// A lone seed's first pieces reach a few nodes, which announce them to every peer; the
    /// peers that answer first take those few nodes' upload slots. When every node announced in
    /// the order its peers connected, the same early nodes answered first everywhere and traded
    /// among themselves, and half the swarm (the nodes that started last) held nothing for 6 s
    /// of a 54 s image at 32 × 10 Mbit/s.
    @Test func theFirstPiecesSpreadToEveryNodeNotAmongTheFirstFew() throws {
        var scenario = Self.scenario(hosts: 32, megabytes: 16)
        scenario.network.rate = 1_250_000
        let simulation = try SwarmSimulation(scenario)
        simulation.network.run(until: 5)
        let empty = simulation.nodes.dropFirst().filter { $0.engine.have.count == 0 }.count
        #expect(empty == 0, "\(empty) of 31 nodes hold no piece after 5 s")
    }

    @Test func aScenarioThatCannotBeRunIsRefusedNotACrash() {
        var scenario = Self.scenario(hosts: 4)
        scenario.byteScale = 0
        #expect(throws: SwarmSimulation.ScenarioError.self) { try SwarmSimulation(scenario) }
        scenario = Self.scenario(hosts: 4)
        scenario.imageLength = Int64.max
        scenario.pieceLength = 16 << 10
        #expect(throws: SwarmSimulation.ScenarioError.self) { try SwarmSimulation(scenario) }
    }

    @Test func bytesScaledDownKeepTheTiming() throws {
        var exact = Self.scenario(hosts: 8, megabytes: 8)
        exact.pieceLength = 512 << 10
        var scaled = exact
        scaled.byteScale = 4
        let exactRatio = try SwarmSimulation(exact).run().timeOverLimit(exact)!
        let scaledRatio = try SwarmSimulation(scaled).run().timeOverLimit(scaled)!
        #expect(abs(scaledRatio - exactRatio) / exactRatio < 0.1, "exact \(exactRatio), scaled \(scaledRatio)")
    }
}

@Suite struct PeerLimitsTests {
    @Test func halfTheSlotsWaitForPeersThatDialUs() {
        let limits = PeerLimits(maxPeers: 60)
        #expect(limits.maxOutgoing == 30)
        #expect(limits.mayDial(outgoing: 29, dialing: 0, connected: 29))
        #expect(!limits.mayDial(outgoing: 29, dialing: 1, connected: 29))
        #expect(!limits.mayDial(outgoing: 10, dialing: 0, connected: 60))
        #expect(limits.mayAccept(connected: 59))
        #expect(!limits.mayAccept(connected: 60))
        #expect(PeerLimits(maxPeers: 1).maxOutgoing == 1)
    }
}

@Suite struct PeerCandidatesTests {
    static func address(_ n: Int) -> PeerAddress { PeerAddress(ip: [10, 0, 0, UInt8(n)], port: 6881)! }

    @Test func addressesBeyondTheDialsOfTheMomentWaitTheirTurnOnce() {
        var candidates = PeerCandidates()
        candidates.add((1...5).map(Self.address))
        candidates.add([Self.address(3), Self.address(6)])
        #expect(candidates.count == 6)
        #expect(candidates.next(now: 0)?.address == Self.address(1))
        // Connected or being dialled already: passed over and dropped.
        #expect(candidates.next(now: 0, skip: { $0 == Self.address(2) })?.address == Self.address(3))
        #expect(candidates.count == 3)
    }

    @Test func aFailedDialWaitsLongerEachTimeAndIsForgottenAfterTheLast() throws {
        var candidates = PeerCandidates()
        candidates.add([Self.address(1)])
        let first = candidates.next(now: 0)
        var candidate = try #require(first)
        candidates.failed(candidate, now: 0)
        #expect(candidates.next(now: PeerCandidates.retryAfter - 1) == nil)
        let again = candidates.next(now: PeerCandidates.retryAfter)
        candidate = try #require(again)
        #expect(candidate.failures == 1)
        candidates.failed(candidate, now: 100)
        #expect(candidates.next(now: 100 + 2 * PeerCandidates.retryAfter - 1) == nil)
        let third = candidates.next(now: 100 + 2 * PeerCandidates.retryAfter)
        candidate = try #require(third)
        candidates.failed(candidate, now: 200)
        #expect(candidates.count == 0, "forgotten after \(PeerCandidates.maxFailures) failures")
        // Told of it again (a later answer), it starts afresh.
        candidates.add([Self.address(1)])
        #expect(candidates.next(now: 200)?.failures == 0)
    }

    @Test func peerExchangeCannotGrowTheListWithoutBound() {
        var candidates = PeerCandidates()
        candidates.add((0..<5000).map { PeerAddress(ip: [10, UInt8($0 >> 8), UInt8($0 & 0xFF), 1], port: 1)! })
        #expect(candidates.count == PeerCandidates.capacity)
    }
}
