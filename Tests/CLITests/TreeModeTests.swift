import Foundation
import TestSupport
import Testing

/// `--method tree` end to end on loopback: vmswarm's tracker places the nodes in a chain, each
/// fetches from its parent only, a libtorrent leecher in the same swarm is served, and a node
/// whose parent dies is moved up and goes on without fetching again what it held.
@Suite(.serialized) struct TreeModeTests {
    struct Swarm {
        let folder: TemporaryFolder
        let torrent: String
        let sha: String
        let size: Int
        var running: [BackgroundProcess] = []
        /// `--method` of every node.
        var method = "tree"

        init(size: Int) throws {
            folder = try TemporaryFolder()
            self.size = size
            let image = folder.file("image.img")
            try #require(try runProcess("/bin/sh", ["-c", "head -c \(size) /dev/urandom > '\(image)'"]).status == 0)
            sha = try sha256(image)
            torrent = folder.file("image.torrent")
            let trackerPort = freePort()
            let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "256K",
                "-t", "http://127.0.0.1:\(trackerPort)/announce"])
            try #require(created.status == 0, "\(created.stderr)")
            let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(trackerPort)", "--config", "none"],
                logTo: folder.file("tracker.log"))
            running.append(tracker)
            try #require(eventually(20) { (try? runProcess("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(trackerPort)/stats"]).status) == 0 },
                "\(tracker.output)")
        }

        /// The seed, a tree root.
        mutating func seed(_ extra: [String] = []) throws -> BackgroundProcess {
            let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", folder.file("image.img"), "--port", "\(freePort())",
                "--method", method, "--config", "none", "--json", "--log-level", "info"] + extra, logTo: folder.file("seed.log"))
            running.append(seeder)
            try #require(eventually(20) { seeder.output.contains("\"event\"") }, "\(seeder.output)")
            Thread.sleep(forTimeInterval: 1)  // announced: the next node joins below it
            return seeder
        }

        /// A tree node that stays to serve its children once complete.
        mutating func get(_ name: String, _ extra: [String] = []) throws -> BackgroundProcess {
            let node = try BackgroundProcess(vmswarmBinary, ["get", torrent, "--output", folder.file(name), "--port", "\(freePort())",
                "--method", method, "--seed-after", "forever", "--config", "none", "--json", "--log-level", "info"] + extra,
                logTo: folder.file("\(name).log"))
            running.append(node)
            Thread.sleep(forTimeInterval: 1)  // announced: the tracker places nodes in the order they join
            return node
        }

        func completed(_ name: String) -> Bool { (try? sha256(folder.file("\(name)/image.img"))) == sha }

        /// The last figure a node's JSON lines gave for `field` (uploaded, downloaded).
        static func last(_ field: String, in process: BackgroundProcess) -> Int64? {
            let lines = process.output.split(separator: "\n").filter { $0.hasPrefix("{") && $0.contains("\"\(field)\"") }
            guard let line = lines.last, let data = String(line).data(using: .utf8),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            else { return nil }
            return (object[field] as? NSNumber)?.int64Value
        }

        func stop() {
            for process in running.reversed() { process.stop() }
            folder.cleanUp()
        }
    }

    @Test func aChainMovesTheImageOncePerHopAndServesALibtorrentLeecher() throws {
        var swarm = try Swarm(size: 24 << 20)
        defer { swarm.stop() }
        let seeder = try swarm.seed()
        let nodes = try (1...4).map { try swarm.get("node\($0)") }
        let python = try #require(which("/usr/bin/python3"), "python3-libtorrent is needed: run tools/test")
        try FileManager.default.createDirectory(atPath: swarm.folder.file("lt"), withIntermediateDirectories: true)
        // libtorrent finds the swarm through the tracker (no peer given) and is served as a stranger.
        let libtorrent = try BackgroundProcess(python, ["-c", SwarmInteropTests.libtorrentSession, swarm.torrent, swarm.folder.file("lt"), "\(freePort())"],
            logTo: swarm.folder.file("lt.log"))
        swarm.running.append(libtorrent)
        #expect(eventually(90) { (1...4).allSatisfy { swarm.completed("node\($0)") } }, "\(nodes.map { $0.output.suffix(300) })")
        #expect(eventually(90) { libtorrent.output.contains("seeding=True") }, "\(libtorrent.output.suffix(300))")
        #expect(try sha256(swarm.folder.file("lt/image.img")) == swarm.sha)
        Thread.sleep(forTimeInterval: 2.5)  // the next progress lines carry the final counts
        // A chain: each node received the image once, and every node but the last sent it on once
        // (plus what it gave libtorrent, at most one more copy in all).
        let size = Int64(swarm.size)
        let uploads = ([seeder] + nodes).map { Swarm.last("uploaded", in: $0) ?? -1 }
        for (index, node) in nodes.enumerated() {
            let downloaded = Swarm.last("downloaded", in: node) ?? -1
            #expect(downloaded >= size && downloaded <= size + (1 << 20), "node\(index + 1) downloaded \(downloaded)")
        }
        #expect(uploads.prefix(4).allSatisfy { $0 >= size }, "every node but the last forwarded the image: \(uploads)")
        #expect(uploads.reduce(0, +) <= 5 * size + (4 << 20), "one copy per hop, one for libtorrent: \(uploads)")
    }

    @Test func aNodeWhoseParentDiesMovesUpAndKeepsItsPieces() throws {
        var swarm = try Swarm(size: 32 << 20)
        defer { swarm.stop() }
        // Slow links (4 MiB/s up per node), so the chain is half-way when node 2 dies.
        _ = try swarm.seed(["--max-up", "4M"])
        var nodes: [BackgroundProcess] = []
        for name in ["node1", "node2", "node3", "node4"] { nodes.append(try swarm.get(name, ["--max-up", "4M"])) }
        try #require(eventually(60) {
            let have = Swarm.last("bytes", in: nodes[2]) ?? 0
            return have >= Int64(swarm.size) / 3
        }, "\(nodes[2].output.suffix(400))")
        kill(nodes[1].process.processIdentifier, SIGKILL)
        #expect(eventually(90) { ["node1", "node3", "node4"].allSatisfy(swarm.completed) }, "\(nodes[2].output.suffix(600))")
        #expect(nodes[2].output.contains("tree parent lost"), "\(nodes[2].output.suffix(600))")
        Thread.sleep(forTimeInterval: 2.5)
        // Nothing it held was fetched again: at most the pieces in flight when its parent died.
        for index in [2, 3] {
            let downloaded = Swarm.last("downloaded", in: nodes[index]) ?? -1
            #expect(downloaded >= Int64(swarm.size) && downloaded <= Int64(swarm.size) + (2 << 20), "node\(index + 1) downloaded \(downloaded)")
        }
    }
}
