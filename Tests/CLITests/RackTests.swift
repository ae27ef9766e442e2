import Foundation
import TestSupport
import Testing

/// Racks end to end on loopback (docs/racks.md): nodes name their racks with `--rack`, vmswarm's
/// tracker answers by rack, and every node completes, in the mesh and in tree mode.
@Suite(.serialized) struct RackTests {
    /// The seed in rack a, two nodes in each of racks b and c: everyone ends with the image, and
    /// the nodes, told the swarm spans racks, stop exchanging peers.
    @Test(arguments: ["mesh", "tree", "auto"]) func nodesInThreeRacksComplete(method: String) throws {
        var swarm = try TreeModeTests.Swarm(size: 8 << 20)
        swarm.method = method
        defer { swarm.stop() }
        _ = try swarm.seed(["--rack", "a"])
        let nodes = try ["b1", "c1", "b2", "c2"].map { try swarm.get($0, ["--rack", String($0.prefix(1))]) }
        #expect(eventually(60) { ["b1", "c1", "b2", "c2"].allSatisfy(swarm.completed) },
            "\(nodes.map { $0.output.suffix(300) })")
        if method == "mesh" {
            for node in nodes { #expect(node.output.contains("peer exchange is off"), "\(node.output.suffix(400))") }
        }
        if method == "auto" {  // no booster group, a tracker that places trees, a swarm across racks: the tree
            for node in nodes {
                #expect(node.output.contains(#""method":"tree","reason":"the swarm spans racks"#), "\(node.output.suffix(400))")
            }
        }
    }

    @Test func aRackNameThatIsNotOneIsRefused() throws {
        let result = try runProcess(vmswarmBinary, ["get", "/nonexistent.torrent", "--rack", "rack 1", "--config", "none"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--rack must be"), "\(result.stderr)")
    }
}
