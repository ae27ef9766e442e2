import Metainfo
import Multicast
import Swarm

/// The multicast booster in a simulated swarm: what `vmswarm seed --multicast` and
/// `vmswarm get --multicast` run beside BitTorrent.
public struct BoosterScenario: Sendable {
    /// Bits per second the sender puts on the wire, IP and UDP headers included, in real bytes
    /// (`tools/bench-distribution` sends at 98 % of the link).
    public var rate: Double
    /// The first pass waits until every listener joined (`--min-receivers`, as the bench runs it).
    public var waitsForReceivers = true

    public init(rate: Double) { self.rate = rate }
}

/// One host's part in the booster: the real `MulticastSender` (the sending seeder) or the real
/// `MulticastReceiver` with the runtime's glue around it (SwarmRuntime.swift, "Multicast booster").
final class BoosterNode {
    var sender: MulticastSender?
    var receiver: MulticastReceiver?
    /// The host's datagrams as far as its own uplink.
    let uplink: Network<SimulatedPacket>.Channel
    /// When the runtime started (its hold-back counts from there).
    let startedAt: Double
    /// Pieces handed to the engine from the group, not yet checked.
    var fromGroup: Set<PieceIndex> = []
    var ticks = 0
    var handedOver = false
    var heardSender = false
    /// Pieces that came whole from the group and verified.
    var piecesFromGroup = 0

    init(uplink: Network<SimulatedPacket>.Channel, startedAt: Double) {
        self.uplink = uplink
        self.startedAt = startedAt
    }
}

extension SwarmSimulation {
    /// A data block's payload: the simulator carries no image.
    private static let zeroBlock = [UInt8](repeating: 0, count: MulticastPacket.blockLength)

    /// The booster's sender is the first seeder; everyone else in its rack listens.
    private var boosterSender: Int { 0 }

    private func listens(_ host: Int) -> Bool {
        host != boosterSender && scenario.seeders > 0 && scenario.network.rack(of: host) == scenario.network.rack(of: boosterSender)
    }

    /// Hosts whose downlink the group reaches: the sender's rack (the testbed's core does not
    /// route multicast between racks).
    /// Found once: the sender's every datagram goes to each of them.
    private var groupMembers: [Int] {
        if let members = boosterMembers { return members }
        let members = nodes.indices.filter(listens)
        boosterMembers = members
        return members
    }

    func startBooster(_ host: Int) {
        guard let booster = scenario.booster, host == boosterSender ? scenario.seeders > 0 : listens(host) else { return }
        let node = nodes[host]
        let state = BoosterNode(uplink: network.openGroupUplink(from: host), startedAt: network.now)
        let session = MulticastSession(infoHash: infoHash)
        let seed = scenario.seed &+ UInt64(host) &* 0x2545_F491
        if host == boosterSender {
            // As MulticastSenderRuntime configures it.
            var configuration = MulticastSender.Configuration(rate: max(1, Int(booster.rate / Double(scenario.byteScale))))
            configuration.collectTime = 0.25
            configuration.maxRepairRounds = 1
            configuration.burst = 0.016
            configuration.announceSpacing = 0.02
            configuration.minReceivers = booster.waitsForReceivers ? groupMembers.count : 0
            state.sender = MulticastSender(session: session, layout: info.layout, have: node.engine.have,
                configuration: configuration, seed: seed)
            node.booster = state
            network.setTimer(host: host, kind: Timer.senderWakeup.rawValue, at: network.now)
        } else {
            // As SwarmRuntime.startMulticast configures it.
            var configuration = MulticastReceiver.Configuration()
            configuration.nackRate = 50
            configuration.nackBurst = 8
            configuration.maxBufferedBytes = max(1 << 20, (256 << 20) / scenario.byteScale)
            state.receiver = MulticastReceiver(session: session, layout: info.layout, have: node.engine.have,
                configuration: configuration, seed: seed)
            node.booster = state
            deferToGroup(host, missing(host))
            network.setTimer(host: host, kind: Timer.boosterTick.rawValue, at: network.now + 0.02)
        }
    }

    private func missing(_ host: Int) -> Bitfield {
        var missing = Bitfield(pieceCount: info.pieceCount, all: true)
        missing.subtract(nodes[host].engine.have)
        return missing
    }

    private func deferToGroup(_ host: Int, _ pieces: Bitfield?) {
        perform(nodes[host].engine.deferPieces(pieces.flatMap { $0.isEmpty ? nil : $0 }), at: host)
    }

    /// Puts a datagram on the group from `host`: it crosses the host's uplink, then every other
    /// member's downlink (`deliveredDatagram`). Receivers' NACKs go to the sender only: they do
    /// not hear each other's, so none is suppressed (small, and the sender's repair vote is the same).
    private func sendToGroup(_ bytes: [UInt8], from host: Int) {
        guard let state = nodes[host].booster else { return }
        network.send(.datagram(bytes), bytes: bytes.count + MulticastPacket.ipv4UDPOverhead, on: state.uplink)
    }

    func deliveredDatagram(_ bytes: [UInt8], on channel: Network<SimulatedPacket>.Channel) {
        if channel.from == channel.to {
            // Left its sender: copied toward the group's members.
            let targets = channel.from == boosterSender ? groupMembers : [boosterSender]
            for target in targets where nodes[target].started && !nodes[target].dead {
                let downlink = groupDownlink(from: channel.from, to: target)
                network.send(.datagram(bytes), bytes: bytes.count + MulticastPacket.ipv4UDPOverhead, on: downlink)
            }
            return
        }
        let host = channel.to
        guard let state = nodes[host].booster else { return }
        if state.sender != nil {
            state.sender!.received(bytes, now: network.now)
            return
        }
        guard state.receiver != nil else { return }
        let (followed, control) = (state.receiver!.senderInstance, state.receiver!.counters.senderControl)
        let events = state.receiver!.received(bytes, now: network.now)
        if state.receiver!.counters.senderControl != control, state.receiver!.senderInstance != followed || !state.heardSender {
            // The sender's address is avoided for BitTorrent while it sends: its link is full.
            state.heardSender = true
            perform(nodes[host].engine.avoidPeers(at: nodes[channel.from].address.ip), at: host)
        }
        handle(events, at: host)
    }

    private func groupDownlink(from: Int, to: Int) -> Network<SimulatedPacket>.Channel {
        let key = from * nodes.count + to
        if let channel = groupChannels[key] { return channel }
        let channel = network.openGroupDownlink(from: from, to: to)
        groupChannels[key] = channel
        return channel
    }

    func wakeSender(_ host: Int) {
        guard let state = nodes[host].booster, state.sender != nil, !nodes[host].dead else { return }
        let now = network.now
        for action in state.sender!.next(now: now) {
            switch action {
            case .sendControl(let bytes):
                sendToGroup(bytes, from: host)
            case .sendData(let block):
                var datagram = [UInt8](repeating: 0, count: MulticastPacket.DataBlock.headerLength + block.length)
                datagram.withUnsafeMutableBytes { target in
                    Self.zeroBlock.withUnsafeBytes { zeros in
                        _ = state.sender!.writeData(block, payload: UnsafeRawBufferPointer(rebasing: zeros[..<block.length]), into: target)
                    }
                }
                sendToGroup(datagram, from: host)
            case .finished:
                return
            }
        }
        guard let wakeup = state.sender!.nextWakeup else { return }
        // At most every millisecond: the runtime's event loop does not wake finer either.
        network.setTimer(host: host, kind: Timer.senderWakeup.rawValue, at: max(wakeup, now + 0.001))
    }

    /// Every 20 ms, as the runtime's multicast timer: the receiver's tick, and five times a second
    /// what peers may be asked for.
    func boosterTick(_ host: Int) {
        let node = nodes[host]
        guard let state = node.booster, state.receiver != nil, !node.dead, !node.engine.isComplete else { return }
        let now = network.now
        network.setTimer(host: host, kind: Timer.boosterTick.rawValue, at: now + 0.02)
        handle(state.receiver!.tick(now: now), at: host)
        state.ticks += 1
        guard state.ticks % 10 == 0, let receiver = state.receiver else { return }
        guard receiver.cursor != nil else {
            // No sender heard yet: peers wait a moment for the first pass, then go on without it.
            deferToGroup(host, now - state.startedAt < 5 ? missing(host) : nil)
            return
        }
        guard receiver.senderActive(now: now) else {
            if !state.handedOver { leaveToPeers(host) }
            return
        }
        state.handedOver = false
        deferAheadOfPass(host)
    }

    /// Peers are not asked for what the pass will bring, nor for partly heard pieces waiting for a repair.
    private func deferAheadOfPass(_ host: Int) {
        guard let receiver = nodes[host].booster?.receiver else { return }
        let have = nodes[host].engine.have, now = network.now
        var deferred = Bitfield(pieceCount: info.pieceCount)
        for piece in info.layout.pieces where !have[piece] && (receiver.shouldLeaveToMulticast(piece, now: now) || receiver.holdsPart(of: piece)) {
            deferred.insert(piece)
        }
        deferToGroup(host, deferred)
    }

    /// The group is done or gone: peers are asked for everything, partly heard pieces only for
    /// what was lost.
    private func leaveToPeers(_ host: Int) {
        guard let state = nodes[host].booster, state.receiver != nil else { return }
        state.handedOver = true
        let have = nodes[host].engine.have
        for piece in info.layout.pieces where !have[piece] && state.receiver!.holdsPart(of: piece) {
            if let partial = state.receiver!.handOver(piece) {
                state.fromGroup.insert(piece)
                perform(nodes[host].engine.piecePartlyArrived(piece, data: partial.bytes, missing: partial.missing), at: host)
            }
        }
        deferToGroup(host, nil)
        perform(nodes[host].engine.avoidPeers(at: nil), at: host)
    }

    private func handle(_ events: [MulticastReceiver.Event], at host: Int) {
        guard let state = nodes[host].booster else { return }
        var handedOver = false
        for event in events {
            switch event {
            case .handOver(let partial):
                state.fromGroup.insert(partial.piece)
                handedOver = true
                perform(nodes[host].engine.piecePartlyArrived(partial.piece, data: partial.bytes, missing: partial.missing), at: host)
            case .pieceAssembled(let piece, let bytes):
                if let actions = nodes[host].engine.pieceArrived(piece, data: bytes, reachedPeers: true) {
                    state.fromGroup.insert(piece)
                    perform(actions, at: host)
                } else {
                    state.receiver?.pieceObtainedElsewhere(piece, now: network.now)
                }
            case .sendNack(let bytes):
                sendToGroup(bytes, from: host)
            case .senderIdle, .sessionEnded:
                leaveToPeers(host)
            }
        }
        if handedOver && !state.handedOver { deferAheadOfPass(host) }
    }

    /// Tells the receiver how a piece fared, whichever way it came.
    func boosterPieceChecked(_ piece: PieceIndex, at host: Int) {
        guard let state = nodes[host].booster, state.receiver != nil else { return }
        if state.fromGroup.remove(piece) != nil {
            state.piecesFromGroup += 1
            state.receiver!.pieceVerified(piece, now: network.now)
        } else {
            state.receiver!.pieceObtainedElsewhere(piece, now: network.now)
        }
        if nodes[host].engine.isComplete { state.receiver = nil }
    }
}
