import Metainfo
import NIOCore
import PeerWire
import Swarm
import Tracker
import TrackerProtocol

/// What to simulate: the testbed's network, one image, who holds it at the start, and the
/// runtime's limits that shape a swarm (peers per node, peers asked of the tracker).
public struct SwarmScenario: Sendable {
    public var network: NetworkShape
    /// The image, in real bytes.
    public var imageLength: Int64
    /// Real bytes per piece (`vmswarm create`'s rule by default, `PieceSizeRule`).
    public var pieceLength: Int
    /// One simulated byte stands for this many real ones: pieces, link rates and hashing rates are
    /// divided by it, delays are not. The engine then moves 16 KiB blocks that stand for
    /// 16 KiB × scale, so a large image costs what a small one does; its piece count and the
    /// swarm's timing are unchanged (docs/simulation.md has the check). 1: exact.
    public var byteScale = 1
    /// Hosts 0..<seeders hold the whole image at the start.
    public var seeders = 1
    /// The runtime's `maxPeers` and the `numwant` it asks the tracker for.
    public var limits = PeerLimits()
    public var numWant = 80
    /// A fixed number of upload slots (`--upload-slots`; nil: the engine's rule, as `vmswarm get` uses).
    public var uploadSlots: Int?
    /// Real bytes per second one node hashes (SHA-1 on one core of this machine: about 1 GB/s).
    public var hashRate: Double = 1.0e9
    /// Nodes join at random times within this many seconds (0: all at once).
    public var joinWithin: Double = 0
    /// The tracker's announce interval and `min interval`.
    public var trackerInterval = 1800
    public var seed: UInt64 = 1
    /// Simulated seconds after which the run gives up.
    public var timeLimit: Double = 36_000
    /// Announces name the node's rack, so the tracker gives each rack one gateway to the others
    /// (docs/racks.md). Off: the tracker knows nothing of racks (a public tracker).
    public var announcesRacks = true
    /// The policy each host's engine starts with, given the host and the piece count (nil: the
    /// mesh): a pool node's two sides, a tree.
    public var policy: @Sendable (_ host: Int, _ pieceCount: Int) -> (any SwarmPolicy)? = { _, _ in nil }
    /// Hosts that connect only with hosts of their own rack, both ways: a private site's nodes,
    /// which have no route out (`get --site-network`).
    public var confined: Set<Int> = []
    /// Hosts that die at a time (a killed process: every connection closes, it never returns).
    public var deaths: [Int: Double] = [:]
    /// The multicast booster beside the swarm (nil: none), as `tools/bench-distribution`'s
    /// `vmswarm-multicast` runs it: the first seeder sends, every other host of its rack listens.
    public var booster: BoosterScenario?

    public init(network: NetworkShape, imageLength: Int64, pieceLength: Int) {
        self.network = network
        self.imageLength = imageLength
        self.pieceLength = pieceLength
    }

    /// The scale at which a run copies at most about 4 GiB of block bytes in all (hosts × image ÷
    /// scale), never so coarse that a piece is less than one block.
    public static func automaticScale(imageLength: Int64, pieceLength: Int, hosts: Int) -> Int {
        var scale = 1
        while Int64(hosts) * imageLength / Int64(scale) > 4 << 30, pieceLength / (scale * 2) >= PieceLayout.blockLength {
            scale *= 2
        }
        return scale
    }

    /// The physical limit: the image over one host's link rate, in seconds.
    public var fOverB: Double { Double(imageLength) / network.rate }
}

/// What the modelled network carries: peer wire messages on connections, datagrams on a
/// multicast group.
public enum SimulatedPacket {
    case peer(PeerMessage)
    case datagram([UInt8])
}

/// What a run measured, in real bytes and simulated seconds.
public struct SwarmOutcome: Sendable {
    /// Per node that did not start with the image, when it held all of it (nil: it never did).
    public var completions: [Double?]
    /// Bytes each host sent on its link (blocks with their TCP/IP and Ethernet headers, as the
    /// testbed counts frames), and the messages it received (without).
    public var sent: [Int64]
    public var received: [Int64]
    /// Per rack, bytes its uplink carried out of it and into it (capped uplinks only).
    public var rackOut: [Int64]
    public var rackIn: [Int64]
    /// Events the model handled, engine actions performed, messages sent.
    public var events: Int
    public var messages: Int
    /// Piece bytes received beyond one copy of each piece (end-game duplicates, late blocks).
    public var wasted: Int64
    /// Per host, the seconds its uplink was busy sending.
    public var uplinkBusy: [Double]
    /// Choke and unchoke messages sent.
    public var chokeFlips: Int
    /// Connections made, and connections refused by a full node.
    public var connections: Int
    public var refusedConnections: Int
    /// Addresses that peer exchange gave a confined host outside its rack (`SwarmScenario.confined`):
    /// a private node told of a peer it has no route to.
    public var leakedAddresses = 0
    /// With the booster: pieces that came whole from the group and verified (all receivers), and
    /// datagrams lost on the way into a receiver.
    public var piecesFromGroup = 0
    public var datagramsLost = 0

    /// The last node's completion over F/B, or nil when one never completed.
    public func timeOverLimit(_ scenario: SwarmScenario) -> Double? {
        guard completions.allSatisfy({ $0 != nil }), let last = completions.compactMap({ $0 }).max() else { return nil }
        return last / scenario.fOverB
    }
}

/// The real `SwarmEngine` of every node, its `PiecePicker` and choker, the real peer wire codec and
/// a real `TrackerState`, over the flow-level `Network`, in virtual time. What stands in for the
/// runtime (SwarmRuntime.swift) is the glue: announce at start, on completion and at the tracker's
/// interval; dial what the tracker and peer exchange name, up to `maxPeers`; refuse connections
/// beyond it; read blocks at once; hash pieces at `hashRate`; tick each engine once a second.
/// Pieces are not checked (no node lies here), so blocks carry zeros and nodes hold no image.
public final class SwarmSimulation {
    public let scenario: SwarmScenario
    public let network: Network<SimulatedPacket>
    let info: TorrentInfo
    let infoHash = InfoHash(bytes: [UInt8](repeating: 7, count: 20))!
    var nodes: [Node] = []
    /// The booster's datagram channels into each member, by sender × hosts + receiver.
    var groupChannels: [Int: Network<SimulatedPacket>.Channel] = [:]
    /// The booster's listeners, once found.
    var boosterMembers: [Int]?
    private var tracker: TrackerState
    private var hostByAddress: [PeerAddress: Int] = [:]
    private let zeros: ByteBuffer
    private var scratch = ByteBuffer()
    private var random: SeededRandom
    private var incomplete: Int
    private var messages = 0
    /// Whether each tick records `probes`.
    public var recordsProbes = false
    private var chokeFlips = 0
    private var connections = 0
    private var refusedConnections = 0
    private var leakedAddresses = 0
    /// Piece bytes each host received.
    private var received: [Int64]
    /// Per host, real piece bytes received in each simulated second.
    public private(set) var timeline: [[Int64]]
    /// Per host, at each tick: peers connected, peers unchoking it, peers holding a piece it lacks,
    /// pieces held (`SIM_TIMELINE`: what a node that fell behind was waiting for).
    public private(set) var probes: [[(peers: Int, unchokingUs: Int, useful: Int, pieces: Int)]]

    enum Timer: Int {
        case start, tick, verified, connect, announce, death, boosterTick, senderWakeup
    }

    final class Node {
        var engine: SwarmEngine
        let address: PeerAddress
        /// Our direction of each connection, by peer host.
        var channels: [Int: Network<SimulatedPacket>.Channel] = [:]
        /// Dials under way, by peer host, with the failures in a row of each address.
        var dialing: [Int: PeerCandidates.Candidate] = [:]
        /// Addresses told and not yet dialled, as the runtime keeps them.
        var candidates = PeerCandidates()
        /// Peers we dialled (the others dialled us).
        var dialled: Set<Int> = []
        var started = false
        var completedAt: Double?
        var hashingUntil: Double = 0
        var announcedCompletion = false
        var dead = false
        /// The runtime's announce schedule: the last answer, the next announce (an earlier one
        /// replaces it), and what decides an early one (no useful peer for 5 s, no progress for 20 s).
        var lastAnswer: Double?
        var nextAnnounce = Double.infinity
        var usefulSince = 0.0
        var lastProgress = 0.0
        var lastDownloaded: Int64 = 0
        /// The booster's state on this host (nil: it neither sends nor listens).
        var booster: BoosterNode?

        init(engine: SwarmEngine, address: PeerAddress) {
            self.engine = engine
            self.address = address
        }
    }

    /// More pieces than any torrent `vmswarm create` makes (4,096 of 16 MiB at 64 GiB, many more
    /// with a small `--piece-size`) and few enough that every engine's bitfields stay small.
    public static let maximumPieces: Int64 = 1 << 20

    /// A scenario that cannot be run, and why.
    public struct ScenarioError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public init(_ scenario: SwarmScenario) throws(ScenarioError) {
        guard scenario.network.hosts >= 1, scenario.network.rate > 0, (scenario.network.uplink ?? 1) > 0 else {
            throw ScenarioError(description: "a network needs at least one host and link rates above zero")
        }
        guard scenario.byteScale >= 1, scenario.imageLength >= 1, scenario.pieceLength >= 1 else {
            throw ScenarioError(description: "the image, its pieces and the byte scale must be at least 1")
        }
        self.scenario = scenario
        let scale = Double(scenario.byteScale)
        var shape = scenario.network
        shape.rate /= scale
        shape.uplink = shape.uplink.map { $0 / scale }
        network = Network(shape: shape, seed: scenario.seed)
        let length = max(1, scenario.imageLength / Int64(scenario.byteScale))
        let pieceLength = max(PieceLayout.blockLength, scenario.pieceLength / scenario.byteScale)
        // Divided, not rounded up by adding: an image near Int64.max bytes must not overflow.
        let pieceCount = length / Int64(pieceLength) + (length % Int64(pieceLength) == 0 ? 0 : 1)
        guard pieceCount <= Self.maximumPieces else {
            throw ScenarioError(description: "\(pieceCount) pieces; at most \(Self.maximumPieces) are simulated")
        }
        let pieces = Int(pieceCount)
        do {
            info = try TorrentInfo(name: "sim.img", files: [FileEntry(path: ["sim.img"], length: length)], isMultiFile: false,
                privacy: .unspecified, pieceLength: pieceLength, pieceHashes: [UInt8](repeating: 0, count: 20 * pieces))
        } catch {
            throw ScenarioError(description: "no torrent has that layout: \(error)")
        }
        zeros = ByteBuffer(repeating: 0, count: PieceLayout.blockLength)
        random = SeededRandom(seed: scenario.seed)
        var configuration = TrackerConfiguration()
        configuration.interval = scenario.trackerInterval
        configuration.minInterval = min(60, scenario.trackerInterval)
        configuration.rackPrefix = 0  // racks are named in announces, as `--rack` does
        tracker = TrackerState(configuration: configuration, seed: scenario.seed)
        received = Array(repeating: 0, count: scenario.network.hosts)
        timeline = Array(repeating: [], count: scenario.network.hosts)
        probes = Array(repeating: [], count: scenario.network.hosts)
        incomplete = scenario.network.hosts - min(scenario.seeders, scenario.network.hosts)

        var engineConfiguration = SwarmEngine.Configuration()
        // Queue depths count blocks, which stand for `byteScale` times the bytes here.
        engineConfiguration.requestQueueDepth = max(2, engineConfiguration.requestQueueDepth / scenario.byteScale)
        engineConfiguration.minimumQueueDepth = max(1, engineConfiguration.minimumQueueDepth / scenario.byteScale)
        engineConfiguration.maximumVerifyingBytes = max(2 * pieceLength, engineConfiguration.maximumVerifyingBytes / scenario.byteScale)
        if let slots = scenario.uploadSlots {
            engineConfiguration.maxUnchoked = max(1, slots)
            engineConfiguration.uploadSlotRate = nil
        }
        // The engine counts simulated bytes: its rate per slot is scaled as the queue depths are.
        engineConfiguration.uploadSlotRate = engineConfiguration.uploadSlotRate.map { $0 / scale }
        for host in 0..<scenario.network.hosts {
            engineConfiguration.policy = scenario.policy(host, pieces) ?? MeshPolicy()
            let address = Self.address(of: host)
            hostByAddress[address] = host
            let seeder = host < scenario.seeders
            let handshake = Handshake(infoHash: infoHash, peerID: Self.peerID(host))
            let engine = SwarmEngine(info: info, have: Bitfield(pieceCount: pieces, all: seeder), handshake: handshake,
                configuration: engineConfiguration, seed: scenario.seed &+ UInt64(host) &* 0x9E37_79B9)
            nodes.append(Node(engine: engine, address: address))
        }
        network.onDeliver = { [unowned self] channel, packet in
            switch packet {
            case .peer(let message): self.delivered(message, on: channel)
            case .datagram(let bytes): self.deliveredDatagram(bytes, on: channel)
            }
        }
        network.onTimer = { [unowned self] host, kind, argument in self.timer(Timer(rawValue: kind)!, host: host, argument: argument) }
        for host in nodes.indices {
            // Seeders first, so the first leechers already find one at the tracker.
            let at = host < scenario.seeders ? 0 : Double.random(in: 0...max(scenario.joinWithin, 0), using: &random) + 0.001
            network.setTimer(host: host, kind: Timer.start.rawValue, at: at)
        }
        for (host, at) in scenario.deaths where nodes.indices.contains(host) {
            network.setTimer(host: host, kind: Timer.death.rawValue, at: at)
        }
    }

    /// Whether a connection between the two may exist (`SwarmScenario.confined`).
    private func reachable(_ a: Int, _ b: Int) -> Bool {
        !(scenario.confined.contains(a) || scenario.confined.contains(b))
            || scenario.network.rack(of: a) == scenario.network.rack(of: b)
    }

    static func address(of host: Int) -> PeerAddress {
        PeerAddress(ip: [10, UInt8(host >> 16 & 0xFF), UInt8(host >> 8 & 0xFF), UInt8(host & 0xFF)], port: 6881)!
    }

    static func peerID(_ host: Int) -> PeerID {
        var bytes = Array("-VS0000-".utf8)
        var value = host
        for _ in 0..<12 {
            bytes.append(UInt8(ascii: "0") + UInt8(value % 10))
            value /= 10
        }
        return PeerID(bytes: bytes)!
    }

    /// Runs until every node holds the image or the time limit passes.
    public func run() -> SwarmOutcome {
        network.run(until: scenario.timeLimit) { incomplete == 0 }
        return outcome
    }

    /// Nodes still without the whole image: how many peers each has, and how many of them hold pieces it lacks.
    public var stragglers: [(host: Int, peers: Int, useful: Int, have: Int)] {
        nodes.indices.filter { nodes[$0].completedAt == nil && !nodes[$0].dead && $0 >= scenario.seeders }.map { host in
            let node = nodes[host]
            return (host, node.channels.count, node.channels.keys.count { nodes[$0].engine.have.count > node.engine.have.count }, node.engine.have.count)
        }
    }

    public var outcome: SwarmOutcome {
        let scale = Int64(scenario.byteScale)
        let racks = network.rackUplinks.count
        return SwarmOutcome(
            completions: nodes.indices.filter { $0 >= scenario.seeders }.map { nodes[$0].completedAt },
            sent: network.uploads.map { $0.bytes * scale },
            received: received.map { $0 * scale },
            rackOut: (0..<racks).map { (network.rackUplinks[$0]?.bytes ?? 0) * scale },
            rackIn: (0..<racks).map { (network.rackDownlinks[$0]?.bytes ?? 0) * scale },
            events: network.handled, messages: messages,
            wasted: nodes.reduce(0) { $0 + $1.engine.wasted } * scale,
            uplinkBusy: network.uploads.map(\.busy),
            chokeFlips: chokeFlips, connections: connections, refusedConnections: refusedConnections, leakedAddresses: leakedAddresses,
            piecesFromGroup: nodes.reduce(0) { $0 + ($1.booster?.piecesFromGroup ?? 0) },
            datagramsLost: groupChannels.values.reduce(0) { $0 + $1.lost })
    }

    // MARK: Events

    private func timer(_ kind: Timer, host: Int, argument: Int) {
        let node = nodes[host]
        guard !node.dead else { return }
        switch kind {
        case .death:
            node.dead = true
            node.started = false
            for peer in node.channels.keys.sorted() { disconnect(host, peer) }
            if node.completedAt == nil && host >= scenario.seeders { incomplete -= 1 }
        case .start:
            node.started = true
            startBooster(host)
            perform(node.engine.tick(now: network.now), at: host)
            announce(host, event: .started)
            network.setTimer(host: host, kind: Timer.tick.rawValue, at: network.now + 1)
        case .tick:
            perform(node.engine.tick(now: network.now), at: host)
            dialMore(host)
            announceEarlyWhenStarved(host)
            if recordsProbes {
                probes[host].append((node.engine.peerCount, node.engine.peersUnchokingUs, node.engine.usefulPeers, node.engine.have.count))
            }
            network.setTimer(host: host, kind: Timer.tick.rawValue, at: network.now + 1)
        case .verified:
            perform(node.engine.pieceChecked(PieceIndex(argument), valid: true), at: host)
            boosterPieceChecked(PieceIndex(argument), at: host)
        case .boosterTick:
            boosterTick(host)
        case .senderWakeup:
            wakeSender(host)
        case .connect:
            connected(host, argument)
        case .announce:
            guard network.now >= node.nextAnnounce else { return }  // replaced by an earlier one
            announce(host, event: .none)
        }
    }

    /// As the runtime: a node whose peers hold nothing it lacks (5 s), or that got nothing (20 s),
    /// asks the tracker again as soon as the tracker's minimum interval allows.
    private func announceEarlyWhenStarved(_ host: Int) {
        let node = nodes[host], now = network.now
        guard !node.engine.isComplete else { return }
        if node.engine.downloaded != node.lastDownloaded {
            node.lastDownloaded = node.engine.downloaded
            node.lastProgress = now
        }
        if node.engine.usefulPeers > 0 { node.usefulSince = now }
        guard now - node.usefulSince >= 5 || now - node.lastProgress >= 20 else { return }
        let allowed = max(now, (node.lastAnswer ?? now) + Double(min(60, scenario.trackerInterval)))
        guard allowed < node.nextAnnounce else { return }
        node.nextAnnounce = allowed
        network.setTimer(host: host, kind: Timer.announce.rawValue, at: allowed)
    }

    private func announce(_ host: Int, event: AnnounceEvent) {
        let node = nodes[host]
        var request = AnnounceRequest(infoHash: infoHash, peerID: Self.peerID(host), port: 6881)
        request.event = event
        request.numWant = scenario.numWant
        request.left = node.engine.isComplete ? 0 : Int64(info.pieceCount - node.engine.have.count) * Int64(info.pieceLength)
        if scenario.network.racks > 1 && scenario.announcesRacks { request.rack = "r\(scenario.network.rack(of: host))" }
        guard let answer = try? tracker.announce(request, from: node.address, now: network.now) else { return }
        node.lastAnswer = network.now
        node.nextAnnounce = network.now + Double(answer.interval)
        network.setTimer(host: host, kind: Timer.announce.rawValue, at: node.nextAnnounce)
        // As the runtime does: a node learns its rack (its hosts stand for the rack's subnet), and
        // stops exchanging peers once the swarm spans racks.
        if answer.rack != nil, let mesh = node.engine.configuration.policy as? MeshPolicy {
            var networks = mesh.rack
            if networks.isEmpty {
                let rack = scenario.network.rack(of: host)
                networks = (0..<scenario.network.hosts).filter { scenario.network.rack(of: $0) == rack }.compactMap { IPNetwork(Self.address(of: $0).host) }
            }
            let policy = MeshPolicy(exchangesPeers: mesh.exchangesPeers && !answer.spansRacks, rack: networks)
            if policy.exchangesPeers != mesh.exchangesPeers || policy.rack != mesh.rack { perform(node.engine.setPolicy(policy), at: host) }
        }
        node.candidates.add(answer.peers.map(\.address))
        dialMore(host)
    }

    /// Dials addresses the node was told of while `PeerLimits` and the 16 dials at a time allow,
    /// as the runtime does (`PeerCandidates`).
    private func dialMore(_ host: Int) {
        let node = nodes[host]
        while node.dialing.count < 16,
            scenario.limits.mayDial(outgoing: node.dialled.count, dialing: node.dialing.count, connected: node.channels.count),
            let candidate = node.candidates.next(now: network.now, skip: { address in
                hostByAddress[address].map { node.channels[$0] != nil || node.dialing[$0] != nil } ?? true
            }) {
            dial(from: host, to: candidate)
        }
    }

    private func dial(from host: Int, to candidate: PeerCandidates.Candidate) {
        guard let peer = hostByAddress[candidate.address], peer != host, reachable(host, peer) else { return }
        let node = nodes[host]
        guard node.engine.dials(candidate.address), node.channels[peer] == nil, node.dialing[peer] == nil else { return }
        node.dialing[peer] = candidate
        // SYN, SYN-ACK, then both handshakes: about a round trip and a half.
        network.setTimer(host: host, kind: Timer.connect.rawValue, argument: peer,
            at: network.now + 3 * scenario.network.delay(from: host, to: peer))
    }

    private func connected(_ host: Int, _ peer: Int) {
        let (dialer, listener) = (nodes[host], nodes[peer])
        let candidate = dialer.dialing.removeValue(forKey: peer)
        defer { if !dialer.dead { dialMore(host) } }
        guard listener.started, !dialer.dead, dialer.channels[peer] == nil, listener.channels[host] == nil,
            scenario.limits.mayAccept(connected: listener.channels.count),
            listener.engine.admits(Self.peerID(host), ip: dialer.address.ip, outgoing: false)
        else {
            refusedConnections += 1
            if let candidate { dialer.candidates.failed(candidate, now: network.now) }
            return
        }
        connections += 1
        dialer.channels[peer] = network.open(from: host, to: peer)
        dialer.dialled.insert(peer)
        listener.channels[host] = network.open(from: peer, to: host)
        let roundTrip = 2 * scenario.network.delay(from: host, to: peer)
        perform(listener.engine.peerConnected(host, handshake: Handshake(infoHash: infoHash, peerID: Self.peerID(host)),
            address: dialer.address, outgoing: false), at: peer)
        listener.engine.peerRoundTrip(host, seconds: roundTrip)
        guard dialer.channels[peer] != nil else { return }
        perform(dialer.engine.peerConnected(peer, handshake: Handshake(infoHash: infoHash, peerID: Self.peerID(peer)),
            address: listener.address, outgoing: true), at: host)
        dialer.engine.peerRoundTrip(peer, seconds: roundTrip)
    }

    private func delivered(_ message: PeerMessage, on channel: Network<SimulatedPacket>.Channel) {
        let host = channel.to
        guard nodes[host].channels[channel.from] != nil else { return }
        if case .piece(_, _, let block) = message {
            received[host] += Int64(13 + block.readableBytes)
            let second = Int(network.now)
            if timeline[host].count <= second { timeline[host] += Array(repeating: 0, count: second + 1 - timeline[host].count) }
            timeline[host][second] += Int64(13 + block.readableBytes) * Int64(scenario.byteScale)
        }
        perform(nodes[host].engine.received(message, from: channel.from), at: host)
    }

    private func disconnect(_ host: Int, _ peer: Int) {
        guard let ours = nodes[host].channels.removeValue(forKey: peer) else { return }
        nodes[host].dialled.remove(peer)
        nodes[peer].dialled.remove(host)
        network.close(ours)
        if let theirs = nodes[peer].channels.removeValue(forKey: host) {
            network.close(theirs)
            perform(nodes[peer].engine.peerDisconnected(host), at: peer)
        }
        perform(nodes[host].engine.peerDisconnected(peer), at: host)
    }

    /// A block's bytes on the wire: TCP over IPv4 on Ethernet adds 66 bytes of headers (14
    /// Ethernet, 20 IP, 32 TCP with timestamps) to each segment of 1,448, and a link's rate (a NIC,
    /// the testbed's tbf) counts frames: 4.6 % more than the message. Smaller messages ride in the
    /// same segments and are not charged.
    static func framed(_ bytes: Int) -> Int { bytes + (bytes * 66 + 1447) / 1448 }

    func perform(_ actions: [SwarmEngine.Action], at host: Int) {
        let node = nodes[host]
        for action in actions {
            switch action {
            case .send(let peer, let message):
                guard let channel = node.channels[peer] else { continue }
                messages += 1
                switch message {
                case .piece(_, _, let block):
                    network.send(.peer(message), bytes: Self.framed(13 + block.readableBytes), on: channel)
                case .choke, .unchoke:
                    chokeFlips += 1
                    fallthrough
                default:
                    // Through the real codec: what arrives is what the bytes decode to.
                    // One scratch buffer for all: a decoded message that keeps a slice of it
                    // (a bitfield, an extension payload) keeps its bytes, as the next write copies.
                    scratch.clear()
                    PeerWireEncoder.write(message, to: &scratch)
                    let bytes = scratch.readableBytes
                    guard let decoded = try? PeerWireDecoder().next(from: &scratch) else { continue }
                    network.send(.peer(decoded), bytes: bytes, on: channel)
                }
            case .disconnect(let peer, _):
                disconnect(host, peer)
            case .verify(let piece, let bytes):
                let seconds = Double(bytes.count) * Double(scenario.byteScale) / scenario.hashRate
                node.hashingUntil = max(node.hashingUntil, network.now) + seconds
                network.setTimer(host: host, kind: Timer.verified.rawValue, argument: piece.value, at: node.hashingUntil)
            case .readBlock(let peer, let request):
                let block = zeros.getSlice(at: 0, length: request.length)!
                perform(node.engine.blockRead(request, data: block, for: peer), at: host)
            case .completed:
                guard node.completedAt == nil else { continue }
                node.completedAt = network.now
                if host >= scenario.seeders { incomplete -= 1 }
                announce(host, event: .completed)
            case .connect(let addresses):
                for address in addresses {
                    if let peer = hostByAddress[address], !reachable(host, peer) { leakedAddresses += 1 }
                }
                node.candidates.add(addresses)
                dialMore(host)
            }
        }
    }
}
