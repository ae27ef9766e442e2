import Crypto
import Metainfo
import NIOCore
import PeerWire
import TestSupport
import Testing

@testable import Swarm

/// Several engines wired together in memory: every message goes through the real codec, hashing
/// is real SHA-1, time is a counter. Deterministic, no sockets.
struct SimulatedSwarm {
    struct Node {
        var engine: SwarmEngine
        var data: [UInt8]
        var lies = false
        /// With `lies`: nil corrupts every block. n lies craftily, where another peer sends part of
        /// the piece too: of the pieces it was first asked for a later block of (another peer
        /// started them), it corrupts that first block in every n-th, per peer it serves; pieces
        /// it is asked for from the start, likely whole and alone, it sends true.
        var lieEvery: Int?
        var sentPieces: Set<[Int]> = []
        var completed = false
        /// Killed (`kill`): out of the swarm, and not waited for.
        var dead = false
        var disconnects: [(peer: Int, reason: String)] = []
    }

    let info: TorrentInfo
    var nodes: [Node] = []
    var links: Set<[Int]> = []
    var queue: [(to: Int, from: Int, message: PeerMessage)] = []
    var now: Double = 0
    /// Block bytes sent, by [from, to].
    var sent: [[Int]: Int] = [:]
    /// Peer exchange (BEP 11) messages sent.
    var peerExchanges = 0

    init(pieceLength: Int, length: Int, seeders: Int, leechers: Int, liars: Int = 0, lieEvery: Int? = nil, seederSlots: Int = 8,
         seed: UInt64 = 1) {
        var rng = SplitMix64(seed: seed)
        let content = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var hashes: [UInt8] = []
        for start in stride(from: 0, to: length, by: pieceLength) {
            hashes += Insecure.SHA1.hash(data: content[start..<min(start + pieceLength, length)])
        }
        info = try! TorrentInfo(name: "sim.img", files: [FileEntry(path: ["sim.img"], length: Int64(length))],
            isMultiFile: false, privacy: .unspecified, pieceLength: pieceLength, pieceHashes: hashes)
        let hash = InfoHash(bytes: [UInt8](repeating: 1, count: 20))!
        for index in 0..<(seeders + liars + leechers) {
            let isSeeder = index < seeders + liars
            let id = PeerID(bytes: Array(String(format: "-SIM000-%012d", index).utf8))!
            var configuration = SwarmEngine.Configuration()
            configuration.requestQueueDepth = 16
            // Simulated time jumps 10 s at a time; the timeout tests drive engines directly.
            configuration.requestTimeout = .infinity
            configuration.idleTimeout = .infinity
            if isSeeder { configuration.maxUnchoked = seederSlots }
            let engine = SwarmEngine(info: info, have: Bitfield(pieceCount: info.pieceCount, all: isSeeder),
                handshake: Handshake(infoHash: hash, peerID: id), configuration: configuration, seed: seed &+ UInt64(index))
            nodes.append(Node(engine: engine, data: isSeeder ? content : [UInt8](repeating: 0, count: length),
                lies: index >= seeders && index < seeders + liars, lieEvery: lieEvery, completed: isSeeder))
        }
    }

    var content: [UInt8] { nodes[0].data }

    static func id(_ node: Int) -> PeerID { PeerID(bytes: Array(String(format: "-SIM000-%012d", node).utf8))! }

    mutating func connectAll() {
        for a in nodes.indices {
            for b in nodes.indices where a < b { connect(a, b) }
        }
    }

    /// `a` dials `b`. Either may refuse the other (then the link is gone and the other never
    /// learns of it, as when a runtime closes the connection at the handshake).
    mutating func connect(_ a: Int, _ b: Int) {
        let (low, high) = (min(a, b), max(a, b))
        links.insert([low, high])
        let hash = InfoHash(bytes: [UInt8](repeating: 1, count: 20))!
        perform(nodes[a].engine.peerConnected(b, handshake: Handshake(infoHash: hash, peerID: Self.id(b))), at: a)
        guard links.contains([low, high]) else { return }
        perform(nodes[b].engine.peerConnected(a, handshake: Handshake(infoHash: hash, peerID: Self.id(a)), outgoing: false), at: b)
    }

    /// The node stops dead: its links are cut, its peers see it disconnect, nothing it sent is delivered.
    mutating func kill(_ node: Int) {
        nodes[node].dead = true
        for link in links where link.contains(node) {
            links.remove(link)
            let other = link[0] == node ? link[1] : link[0]
            perform(nodes[other].engine.peerDisconnected(node), at: other)
        }
    }

    /// Gives the node a new policy, as a runtime would when its place in the swarm changes.
    mutating func setPolicy(_ policy: any SwarmPolicy, at node: Int) {
        perform(nodes[node].engine.setPolicy(policy), at: node)
    }

    mutating func perform(_ actions: [SwarmEngine.Action], at node: Int) {
        for action in actions {
            switch action {
            case .send(let peer, let message):
                guard links.contains([min(node, peer), max(node, peer)]) else { continue }
                if case .piece(_, _, let block) = message { sent[[node, peer], default: 0] += block.readableBytes }
                if case .extended(let id, _) = message, id != 0 { peerExchanges += 1 }
                var buffer = ByteBuffer()
                PeerWireEncoder.write(message, to: &buffer)
                let decoded = try! PeerWireDecoder().next(from: &buffer)!
                queue.append((peer, node, decoded))
            case .disconnect(let peer, let reason):
                nodes[node].disconnects.append((peer, reason))
                if links.remove([min(node, peer), max(node, peer)]) != nil {
                    perform(nodes[peer].engine.peerDisconnected(node), at: peer)
                }
            case .verify(let piece, let bytes):
                let valid = Array(Insecure.SHA1.hash(data: bytes)) == Array(info.hash(of: piece))
                if valid {
                    let start = Int(info.layout.offset(of: piece))
                    nodes[node].data.replaceSubrange(start..<(start + bytes.count), with: bytes)
                }
                perform(nodes[node].engine.pieceChecked(piece, valid: valid), at: node)
            case .readBlock(let peer, let request):
                let start = Int(info.layout.offset(of: request.piece)) + request.begin
                var bytes = Array(nodes[node].data[start..<(start + request.length)])
                if nodes[node].lies { lie(in: &bytes, request, to: peer, at: node) }
                perform(nodes[node].engine.blockRead(request, data: ByteBuffer(bytes: bytes), for: peer), at: node)
            case .completed:
                nodes[node].completed = true
            case .connect:
                break
            }
        }
    }

    /// Corrupts what a liar sends: every block, or craftily (`Node.lieEvery`).
    mutating func lie(in bytes: inout [UInt8], _ request: BlockRequest, to peer: Int, at node: Int) {
        guard let every = nodes[node].lieEvery else {
            bytes[0] ^= 0xFF
            return
        }
        // Per peer and piece: [peer, piece, 0] once it was asked for the piece's first block,
        // [peer, piece, 1] once it was first asked for a later one (a piece someone else started).
        let piece = request.piece.value
        if request.begin == 0 { nodes[node].sentPieces.insert([peer, piece, 0]) }
        guard request.begin > 0, !nodes[node].sentPieces.contains([peer, piece, 0]),
            nodes[node].sentPieces.insert([peer, piece, 1]).inserted
        else { return }
        let shared = nodes[node].sentPieces.count { $0[0] == peer && $0[2] == 1 }
        if shared % every == 1 % every { bytes[0] ^= 0xFF }
    }

    /// Delivers messages, running a choking round every simulated 10 s, until every honest node
    /// holds the whole image or `maxSteps` deliveries pass.
    /// `until`: stop (and return true) as soon as this holds instead.
    mutating func run(maxSteps: Int = 2_000_000, until: ((SimulatedSwarm) -> Bool)? = nil) -> Bool {
        var steps = 0
        for node in nodes.indices where !nodes[node].dead { perform(nodes[node].engine.tick(now: now), at: node) }
        while steps < maxSteps {
            if let until, until(self) { return true }
            if until == nil, nodes.allSatisfy({ $0.completed || $0.lies || $0.dead }) { return true }
            if queue.isEmpty || steps % 500 == 499 {
                now += 10
                for node in nodes.indices where !nodes[node].dead { perform(nodes[node].engine.tick(now: now), at: node) }
                if queue.isEmpty { steps += 500; continue }
            }
            let (to, from, message) = queue.removeFirst()
            steps += 1
            guard links.contains([min(to, from), max(to, from)]) else { continue }
            perform(nodes[to].engine.received(message, from: from), at: to)
        }
        return false
    }
}

@Suite struct SwarmSimulationTests {
    @Test func oneSeederThreeLeechersAllComplete() {
        // One upload slot (plus the optimistic one) at the seeder: the leechers must trade.
        var swarm = SimulatedSwarm(pieceLength: 32768, length: 32768 * 40 + 777, seeders: 1, leechers: 3, seederSlots: 1)
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        for node in swarm.nodes.indices.dropFirst() {
            #expect(swarm.nodes[node].data == swarm.content, "leecher \(node) holds the exact image")
            #expect(swarm.nodes[node].engine.isComplete)
        }
        // Leechers traded among themselves: the seeder did not upload everything three times.
        #expect(swarm.nodes[0].engine.uploaded < Int64(3 * swarm.content.count))
    }

    @Test func aLiarIsBannedAndTheDownloadStillCompletes() {
        var swarm = SimulatedSwarm(pieceLength: 16384, length: 16384 * 30, seeders: 1, leechers: 1, liars: 1, seed: 4)
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        let leecher = swarm.nodes[2]
        #expect(leecher.data == swarm.content)
        #expect(leecher.disconnects.contains { $0.peer == 1 && $0.reason.contains("failed the hash") }, "\(leecher.disconnects)")
        #expect(leecher.engine.wasted > 0)
        #expect(!leecher.engine.accepts(PeerID(bytes: Array(String(format: "-SIM000-%012d", 1).utf8))!))
    }

    @Test func aViolationDisconnectsOnlyThatPeer() {
        var swarm = SimulatedSwarm(pieceLength: 16384, length: 16384 * 4, seeders: 1, leechers: 1)
        swarm.connectAll()
        let actions = swarm.nodes[1].engine.received(.have(PieceIndex(99)), from: 0)
        #expect(actions.contains { if case .disconnect(0, let reason) = $0 { reason.contains("outside") } else { false } })
        #expect(swarm.nodes[1].engine.peerCount == 0)
    }
}
