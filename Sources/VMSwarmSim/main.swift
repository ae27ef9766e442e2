import ArgumentParser
import Foundation
import Metainfo
import Multicast
import Simulation
import Swarm
import TorrentCreation
import Units

/// `vmswarm-sim`: predicts a swarm that one machine cannot host by running the real engine of
/// every node over a simulated network (docs/simulation.md). The network is described with the
/// testbed's own flags (tools/testbed), so a simulated run and a testbed run can be set side by side.
struct VMSwarmSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmswarm-sim",
        abstract: "Simulate a vmswarm swarm of many nodes: the real engine over a modelled network, in virtual time.",
        discussion: """
            Every node runs vmswarm's own SwarmEngine (piece picker, choker, request pipeline) and the \
            peer wire codec; a real TrackerState hands out peers. Links are modelled per flow, not per \
            packet (docs/simulation.md). Prints the time until the last node held the image, over F/B \
            (the image over one host's link rate: the physical limit for a node to receive it).

            Example: vmswarm-sim --hosts 1000 --rate 100mbit --size 1G
            """)

    @Option(help: "Hosts, the seeders among them (testbed: --hosts).")
    var hosts = 8
    @Option(help: "Link rate of each host, in tc units: 100mbit, 1gbit (testbed: --rate).")
    var rate = "100mbit"
    @Option(help: "both: hosts receive at most the rate too; egress: only sending is capped (testbed: --cap).")
    var cap = "both"
    @Option(help: "Racks the hosts are split into (testbed: --racks).")
    var racks = 1
    @Option(help: "Each rack's uplink to the core, each way (testbed: --uplink; default: not capped).")
    var uplink: String?
    @Option(help: "Percent of packets lost on every host's link, each way.")
    var loss: Double = 0
    @Option(help: "One-way delay between two hosts, in milliseconds.")
    var latency: Double = 0.2
    @Option(help: "Image size: 256M, 1G, 4G.")
    var size = "256M"
    @Option(name: .customLong("piece-size"), help: "Piece size, or auto (vmswarm create's rule).")
    var pieceSize = "auto"
    @Option(help: "Hosts that hold the image at the start.")
    var seeders = 1
    @Option(name: .customLong("max-peers"), help: "Peers per node (vmswarm get's default).")
    var maxPeers = 60
    @Option(name: .customLong("upload-slots"), help: "Peers each node uploads to at once (default: vmswarm get's).")
    var uploadSlots: Int?
    @Option(help: "Peers asked of the tracker per announce.")
    var numwant = 80
    @Option(name: .customLong("join-within"), help: "Nodes start at random times within this many seconds.")
    var joinWithin: Double = 0
    @Option(help: "One simulated byte stands for this many real ones (a power of two), or auto.")
    var scale = "auto"
    @Option(help: "Random seed: the same seed gives the same run.")
    var seed: UInt64 = 1
    @Option(help: "Runs with seeds seed, seed+1, …; the median is reported.")
    var runs = 1
    @Option(help: ArgumentHelp("Also run the multicast booster: the first seeder sends the image to a group at this rate (IP and UDP headers included), every other host of its rack listens, as tools/bench-distribution's vmswarm-multicast.", valueName: "rate"))
    var booster: String?
    @Flag(help: "One JSON object per run, and one for the summary.")
    var json = false

    func run() throws {
        guard hosts >= 2, hosts <= 1_000_000 else { throw ValidationError("--hosts must be from 2 to 1,000,000.") }
        guard seeders >= 1, seeders < hosts else { throw ValidationError("--seeders must be at least 1 and below --hosts.") }
        guard let bits = Format.parseBitRate(rate) else { throw ValidationError("--rate: '\(rate)' is not a rate such as 100mbit.") }
        guard let image = Format.parseSize(size) else { throw ValidationError("--size: '\(size)' is not a size such as 1G.") }
        guard cap == "both" || cap == "egress" else { throw ValidationError("--cap must be both or egress.") }
        guard racks >= 1, racks <= hosts else { throw ValidationError("--racks must be from 1 to --hosts.") }
        guard (0..<100).contains(loss) else { throw ValidationError("--loss is a percentage below 100.") }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1.") }
        var shape = NetworkShape(hosts: hosts, rate: Double(bits) / 8)
        shape.capsDownload = cap == "both"
        shape.racks = racks
        if let uplink {
            guard let uplinkBits = Format.parseBitRate(uplink) else { throw ValidationError("--uplink: '\(uplink)' is not a rate.") }
            shape.uplink = Double(uplinkBits) / 8
        }
        shape.loss = loss / 100
        shape.latency = latency / 1000
        shape.coreLatency = latency / 1000
        let pieceLength: Int
        if pieceSize == "auto" {
            pieceLength = PieceSizeRule.pieceLength(forTotalLength: Int64(image))
        } else {
            guard let parsed = Format.parseSize(pieceSize), parsed >= PieceLayout.blockLength, parsed & (parsed - 1) == 0 else {
                throw ValidationError("--piece-size must be a power of two of at least 16K, or auto.")
            }
            pieceLength = parsed
        }
        var scenario = SwarmScenario(network: shape, imageLength: Int64(image), pieceLength: pieceLength)
        if let booster {
            guard let boosterBits = Format.parseBitRate(booster), boosterBits > 0 else { throw ValidationError("--booster: '\(booster)' is not a rate such as 98mbit.") }
            guard pieceLength <= MulticastPacket.maxBlocksPerPiece * MulticastPacket.blockLength else {
                throw ValidationError("--booster: pieces of \(pieceLength) bytes are too long for the booster.")
            }
            scenario.booster = BoosterScenario(rate: Double(boosterBits))
        }
        scenario.seeders = seeders
        scenario.limits = PeerLimits(maxPeers: maxPeers)
        scenario.numWant = numwant
        scenario.uploadSlots = uploadSlots
        scenario.joinWithin = joinWithin
        if scale == "auto" {
            scenario.byteScale = SwarmScenario.automaticScale(imageLength: Int64(image), pieceLength: pieceLength, hosts: hosts)
        } else {
            guard let factor = Int(scale), factor >= 1, factor & (factor - 1) == 0, pieceLength / factor >= PieceLayout.blockLength else {
                throw ValidationError("--scale must be a power of two that leaves pieces of at least 16K, or auto.")
            }
            scenario.byteScale = factor
        }

        var ratios: [Double] = []
        for run in 0..<runs {
            scenario.seed = seed &+ UInt64(run)
            let clock = ContinuousClock.now
            let simulation: SwarmSimulation
            do throws(SwarmSimulation.ScenarioError) {
                simulation = try SwarmSimulation(scenario)
            } catch {
                throw ValidationError("cannot simulate that: \(error)")
            }
            simulation.recordsProbes = ProcessInfo.processInfo.environment["SIM_TIMELINE"] != nil
            let outcome = simulation.run()
            let wall = ContinuousClock.now - clock
            let seconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
            report(outcome, scenario: scenario, wall: seconds)
            if ProcessInfo.processInfo.environment["SIM_TIMELINE"] != nil {
                let timelineLength = simulation.timeline.map(\.count).max() ?? 0
                let total = (0..<timelineLength).map { second in simulation.timeline.reduce(Int64(0)) { $0 + (second < $1.count ? $1[second] : 0) } }
                print("  all receivers, Mbit/s each second: " + total.map { String(format: "%.0f", Double($0) * 8 / 1e6) }.joined(separator: " "))
                let order = outcome.completions.indices.sorted { (outcome.completions[$0] ?? .infinity) < (outcome.completions[$1] ?? .infinity) }
                for index in [order[order.count / 2], order.last!] {
                    let host = index + scenario.seeders
                    print("  host \(host) done \(outcome.completions[index] ?? -1): " + simulation.timeline[host].map { String(format: "%.1f", Double($0) * 8 / 1e6) }.joined(separator: " "))
                    print("    peers/unchoking it/useful/pieces each second: " + simulation.probes[host].map { "\($0.peers)/\($0.unchokingUs)/\($0.useful)/\($0.pieces)" }.joined(separator: " "))
                }
            }
            if !json {
                for straggler in simulation.stragglers.prefix(5) {
                    print("  never completed: host \(straggler.host) with \(straggler.have) pieces, \(straggler.peers) peers, \(straggler.useful) of them ahead of it")
                }
            }
            if let ratio = outcome.timeOverLimit(scenario) { ratios.append(ratio) }
        }
        if runs > 1 {
            let sorted = ratios.sorted()
            let median = sorted.isEmpty ? nil : sorted[sorted.count / 2]
            if json {
                print(#"{"event":"summary","runs":\#(runs),"completed_runs":\#(ratios.count),"median_time_over_fb":\#(median.map { String(format: "%.4f", $0) } ?? "null")}"#)
            } else {
                print("median of \(runs) runs: \(median.map { String(format: "%.2fx F/B", $0) } ?? "no run completed")")
            }
        }
    }

    func report(_ outcome: SwarmOutcome, scenario: SwarmScenario, wall: Double) {
        let done = outcome.completions.compactMap { $0 }.sorted()
        let fb = scenario.fOverB
        func percentile(_ p: Double) -> Double? { done.isEmpty ? nil : done[min(done.count - 1, Int(Double(done.count - 1) * p))] }
        let last = outcome.completions.contains { $0 == nil } ? nil : done.last
        let sourceSent = Double(outcome.sent.prefix(scenario.seeders).reduce(0, +)) / Double(scenario.imageLength) / Double(scenario.seeders)
        let maxReceived = Double(outcome.received.max() ?? 0) / Double(scenario.imageLength)
        if json {
            func number(_ value: Double?) -> String { value.map { String(format: "%.4f", $0) } ?? "null" }
            print(#"{"event":"run","seed":\#(scenario.seed),"hosts":\#(scenario.network.hosts),"image_bytes":\#(scenario.imageLength),"piece_bytes":\#(scenario.pieceLength),"scale":\#(scenario.byteScale),"fb_seconds":\#(number(fb)),"completed":\#(done.count),"nodes":\#(outcome.completions.count),"p50_seconds":\#(number(percentile(0.5))),"p99_seconds":\#(number(percentile(0.99))),"last_seconds":\#(number(last)),"time_over_fb":\#(number(last.map { $0 / fb })),"source_sent_images":\#(number(sourceSent)),"max_received_images":\#(number(maxReceived)),"rack_out_bytes":\#(outcome.rackOut),"wasted_bytes":\#(outcome.wasted),"pieces_from_group":\#(outcome.piecesFromGroup),"choke_flips":\#(outcome.chokeFlips),"connections":\#(outcome.connections),"refused_connections":\#(outcome.refusedConnections),"messages":\#(outcome.messages),"events":\#(outcome.events),"wall_seconds":\#(number(wall))}"#)
            return
        }
        let pieces = (scenario.imageLength + Int64(scenario.pieceLength) - 1) / Int64(scenario.pieceLength)
        print("\(scenario.network.hosts) hosts, \(Format.bytes(scenario.imageLength)) in \(pieces) pieces of \(Format.bytes(Int64(scenario.pieceLength))), scale \(scenario.byteScale), seed \(scenario.seed): F/B \(String(format: "%.2f", fb)) s")
        if let last {
            print(String(format: "  last node %.2f s = %.3fx F/B (p50 %.2f s, p99 %.2f s)", last, last / fb, percentile(0.5)!, percentile(0.99)!))
        } else {
            print("  \(done.count) of \(outcome.completions.count) nodes completed within \(Int(scenario.timeLimit)) s")
        }
        if let last {
            let busy = outcome.uplinkBusy.reduce(0, +) / Double(outcome.uplinkBusy.count) / last
            print(String(format: "  uplinks busy %.0f %% of the time until the last node held the image (mean over hosts)", busy * 100))
        }
        print(String(format: "  source sent %.2f images; most any node received %.3f images; wasted %@",
            sourceSent, maxReceived, Format.bytes(outcome.wasted)))
        if scenario.booster != nil {
            let pieces = (scenario.imageLength + Int64(scenario.pieceLength) - 1) / Int64(scenario.pieceLength)
            print(String(format: "  booster: %.1f %% of the receivers' pieces came from the group, %d datagrams lost",
                100 * Double(outcome.piecesFromGroup) / Double(max(1, Int64(outcome.completions.count) * pieces)), outcome.datagramsLost))
        }
        if scenario.network.racks > 1 {
            print("  bytes out of each rack (images): " + outcome.rackOut.map { String(format: "%.2f", Double($0) / Double(scenario.imageLength)) }.joined(separator: " "))
        }
        print(String(format: "  %d connections (%d refused), %d choke/unchoke, %d messages, %d events, %.1f s wall",
            outcome.connections, outcome.refusedConnections, outcome.chokeFlips, outcome.messages, outcome.events, wall))
    }
}

// Swift seeds its hashing per process, so a dictionary's order (and with it the order the engine and
// tracker visit peers in) differs from run to run; the same --seed must give the same run.
if ProcessInfo.processInfo.environment["SWIFT_DETERMINISTIC_HASHING"] == nil {
    setenv("SWIFT_DETERMINISTIC_HASHING", "1", 1)
    let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", arguments)
    // Not reached unless exec failed: run with per-process hashing.
}
VMSwarmSim.main()
