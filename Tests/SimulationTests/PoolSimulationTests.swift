import Metainfo
import Swarm
import Testing

@testable import Simulation

/// Pool nodes (issue 18, docs/pool.md) in the model: a source site of one host, a private site of
/// two pool nodes and eight nodes confined to it, joined by a WAN at a fifth of the LAN rate.
@Suite struct PoolSimulationTests {
    static let lan = 12_500_000.0  // 100 Mbit/s
    static let image: Int64 = 64 << 20

    /// Hosts 0..<sources are the source site (rack 0, all seeds); then the pool nodes, then the
    /// site's nodes (rack 1).
    static func scenario(sources: Int = 1, pools: Int = 2, nodes: Int = 8, policy usesPools: Bool = true) -> SwarmScenario {
        let hosts = sources + pools + nodes
        var shape = NetworkShape(hosts: hosts, rate: lan)
        shape.racks = 2
        shape.rackOf = Array(repeating: 0, count: sources) + Array(repeating: 1, count: hosts - sources)
        shape.uplink = lan / 5
        var scenario = SwarmScenario(network: shape, imageLength: image, pieceLength: 256 << 10)
        scenario.seeders = sources
        scenario.confined = Set((sources + pools)..<hosts)
        scenario.announcesRacks = false  // the site's tracker and the WAN's know nothing of racks
        let site = (sources..<hosts).compactMap { IPNetwork(SwarmSimulation.address(of: $0).host) }
        let poolHosts = Array(sources..<(sources + pools))
        if usesPools {
            scenario.policy = { host, pieceCount in
                guard poolHosts.contains(host) else { return nil }
                return PoolPolicy(site: site, ownAddress: SwarmSimulation.address(of: host).ip,
                    siblings: poolHosts.filter { $0 != host }.map { SwarmSimulation.address(of: $0).ip }, pieceCount: pieceCount)
            }
        }
        return scenario
    }

    /// The WAN's F/B: the image over the WAN rate.
    static var wanLimit: Double { Double(image) / (lan / 5) }

    @Test func twoPoolNodesCarryTheImageAcrossTheWANOnceAndTheSiteHidesBehindIt() throws {
        let simulation = try SwarmSimulation(Self.scenario())
        let outcome = simulation.run()
        let nodes = outcome.completions.dropFirst(2)
        #expect(nodes.allSatisfy { $0 != nil }, "\(outcome.completions)")
        let last = nodes.compactMap { $0 }.max() ?? .infinity
        let wan = Double(outcome.rackIn[1]) / Double(Self.image)
        #expect(last / Self.wanLimit <= 1.15, "last site node at \(last / Self.wanLimit)x of the WAN's F/B: \(outcome.completions)")
        #expect(wan <= 1.05, "the WAN carried \(wan) images")
        // Nothing of the site's nodes crossed the WAN.
        #expect(outcome.rackOut[1] < Int64(Double(Self.image) * 0.01), "\(outcome.rackOut[1]) bytes left the site")
    }

    /// A pool node in the plain mesh would pass WAN addresses to the site's nodes by peer exchange
    /// (they have no route there; on the testbed each try is a packet the trap counts). The pool
    /// policy exchanges no peers. Two seeds at the source: the WAN still carries one copy.
    @Test func thePoolTellsTheSiteNoWANAddressesAndTheMeshWould() throws {
        let mesh = try SwarmSimulation(Self.scenario(sources: 2, policy: false)).run()
        #expect(mesh.leakedAddresses > 0)
        let pool = try SwarmSimulation(Self.scenario(sources: 2)).run()
        #expect(pool.leakedAddresses == 0)
        #expect(pool.completions.allSatisfy { $0 != nil })
        #expect(Double(pool.rackIn[1]) / Double(Self.image) <= 1.05, "\(pool.rackIn[1])")
    }

    @Test func aPoolNodeKilledHalfWayLeavesTheOtherToFinishAndTheWANCarriesLittleMore() throws {
        var scenario = Self.scenario()
        scenario.deaths = [1: Self.wanLimit / 2]
        let simulation = try SwarmSimulation(scenario)
        let outcome = simulation.run()
        let nodes = outcome.completions.dropFirst(2)
        #expect(nodes.allSatisfy { $0 != nil }, "\(outcome.completions)")
        let wan = Double(outcome.rackIn[1]) / Double(Self.image)
        #expect(wan <= 1.25, "the WAN carried \(wan) images")
    }
}
