import Metainfo

/// The sending side of the booster as a pure state machine: what to put on the group and when.
///
/// The runtime calls `next(now:)` whenever `nextWakeup` has come (every few milliseconds while
/// sending) and hands it every datagram heard on the group with `received(_:now:)`. Actions name
/// control datagrams (already encoded) and data blocks; for a block the runtime reads those bytes
/// of the piece's wire form (ciphertext for a sealed image) and writes the datagram with
/// `writeData(_:payload:into:)`. A pass sends its pieces in ascending order and a piece's blocks
/// one after another, so a runtime can read each piece once.
///
/// Phases (docs/multicast.md): a few announces, then passes (the first sends every piece we have;
/// repair passes send the blocks enough receivers reported missing), each followed in `once` mode
/// by a short wait for NACKs; then DONE packets. In `carousel` mode passes never stop: a full pass,
/// then a repair pass if NACKs asked for one, then a full pass again, so a node that joins at any
/// time is served.
public struct MulticastSender: Sendable {
    public enum Mode: Sendable, Equatable {
        /// One full pass, repair passes until no NACK asks for more (or the round limit), done.
        case once
        /// Full and repair passes until `stop(now:)`: late joiners catch the next pass.
        case carousel
    }

    public struct Configuration: Sendable {
        /// Bits per second on the wire (datagrams plus IPv4 and UDP headers). The CLI's default is
        /// 95 % of the interface's speed: the rest is left for BitTorrent repairs and control.
        public var rate: Int
        public var mode: Mode
        /// Announces before the first data packet, this many seconds apart, so receivers that
        /// started with the sender learn the plan before data flows.
        public var announcements = 3
        public var announceSpacing: Double = 0.1
        /// Seconds between announces (with the plan) while sending: how soon a late joiner learns
        /// the session and how far the pass has come.
        public var announceInterval: Double = 0.5
        /// Receivers delay each NACK by a random time up to this, so that reports of a loss that hit
        /// everyone spread out and later ones can be suppressed.
        public var nackWindow: Double = 0.2
        /// Seconds to wait after a pass for the last NACKs (once mode): at least the NACK window
        /// plus a round trip.
        public var collectTime: Double = 0.5
        /// A block is sent again when at least this fraction of the receivers heard from reported
        /// it missing (and always when one did, with a fraction of 0). Data fewer receivers miss is
        /// left to BitTorrent: a repair on the group costs every receiver's downlink a datagram,
        /// while each receiver that lost a block can fetch it from the many that did not, over
        /// their idle uplinks, and finish with the group instead of a repair pass later. Only what
        /// most lost (a burst at the sender's side) has too few holders for that.
        public var repairThreshold: Double = 0.5
        /// However large the group, this many reports are enough for a repair: every report is a
        /// NACK on the group, and receivers stay quiet only once this many others spoke.
        public var maxRepairVotes = 8
        /// Repair passes after the first pass in once mode; what is still missing then is
        /// BitTorrent's.
        public var maxRepairRounds = 8
        /// The first pass waits (announcing every `announceSpacing`) until this many receivers
        /// said they listen, or `startTimeout` seconds passed (as udp-sender's --min-receivers).
        public var minReceivers = 0
        public var startTimeout: Double = 60
        /// DONE packets sent at the end, `announceSpacing` apart (one may be lost).
        public var doneCount = 3
        /// Seconds of rate the pacer may send back to back: small, so switch queues never see a
        /// burst they drop.
        public var burst: Double = 0.002
        /// Seconds of rate the pacer lets accumulate before `nextWakeup` (at most half of the
        /// bucket): the runtime then wakes once for several datagrams, sent back to back, instead
        /// of once for each. 0: a wake-up as soon as one datagram may go.
        public var batch: Double = 0
        /// A repair pass carries at most this share of the image's blocks (those most reported
        /// first): NACKs, forged or not, cannot make the sender put the image on the group again
        /// and again. What is left out is BitTorrent's.
        public var maxRepairShare = 0.25
        /// Receivers tracked (least recently heard forgotten first), and (piece, receiver)
        /// reports kept per plan: forged receiver instances cannot grow the sender's state.
        public var maxReceivers = 1024
        public var maxReports = 65_536
        /// NACKs handled a second (and at once): a flood costs the pacing thread a bounded share;
        /// beyond it NACKs are dropped undecoded (an honest receiver sends at most 20 to 50 a second,
        /// and repeats what it still misses).
        public var maxNacksPerSecond: Double = 1000
        /// Urgent requests (mUFS: pieces a reader of the image in flight waits for) are put on the
        /// group ahead of the pass, at most this share of the image's blocks per pass, and a piece
        /// at most once every `urgentRepeat` seconds: forged requests can reorder the pass a little,
        /// never stall it or multiply it.
        public var maxUrgentShare = 0.25
        public var urgentRepeat: Double = 0.05
        /// Pieces waiting to go out urgently at once; later requests wait for room.
        public var maxUrgentQueue = 32

        public init(rate: Int, mode: Mode = .once) {
            self.rate = rate
            self.mode = mode
        }
    }

    public enum Action: Equatable, Sendable {
        /// Send this datagram (announce, plan or done) to the group.
        case sendControl([UInt8])
        /// Read these bytes of the piece's wire form and send them with `writeData`.
        case sendData(MulticastPacket.DataBlock)
        /// The session is over (once mode after its repairs, or after `stop`).
        case finished
    }

    /// What the sender did, for logs and the benchmark's repair-traffic figure.
    public struct Counters: Equatable, Sendable {
        /// Data packets of full passes and of repair passes.
        public var dataPackets = 0
        public var repairPackets = 0
        public var dataBytes: Int64 = 0
        public var repairBytes: Int64 = 0
        /// Announce, plan and done packets.
        public var controlPackets = 0
        /// Everything sent, with IP and UDP headers: what the pacer counts.
        public var wireBytes: Int64 = 0
        public var passes = 0
        public var nacksReceived = 0
        /// Datagrams heard that were not a NACK for us (other torrents, garbage, other senders).
        public var ignored = 0
        /// The highest loss a receiver reported in its latest NACK, per thousand.
        public var highestReportedLoss = 0
        /// NACKs for another pass than the current one (replayed, or delayed): ignored.
        public var staleNacks = 0
        /// NACKs without a valid tag in an authenticated session: counted as joins, never votes.
        public var unauthenticated = 0
        /// Receivers forgotten to stay within `maxReceivers`; reports not kept beyond `maxReports`.
        public var receiversEvicted = 0
        public var reportsDropped = 0
        /// Reported blocks a repair pass left out to stay within `maxRepairShare`.
        public var repairsOverBudget = 0
        /// NACKs dropped beyond `maxNacksPerSecond`.
        public var nacksOverBudget = 0
        /// Urgent requests heard, and the data packets and bytes sent for them (mUFS).
        public var urgentRequests = 0
        public var urgentPackets = 0
        public var urgentBytes: Int64 = 0
        /// Urgent pieces not sent: over the pass's share, asked again too soon, or no room.
        public var urgentRefused = 0
    }

    enum Phase: Equatable {
        case announcing(sent: Int)
        case sending
        case collecting(until: Double)
        case ending(sent: Int)
        case finished
    }

    /// NACKs for one piece since its repair was last planned: each receiver's missing blocks.
    struct Reports {
        var byReceiver: [UInt32: BlockSet] = [:]
    }

    public let session: MulticastSession
    public let instance: UInt32
    public let layout: PieceLayout
    public let configuration: Configuration
    public private(set) var counters = Counters()
    private let have: Bitfield
    private var phase: Phase = .announcing(sent: 0)
    public private(set) var pass: UInt16 = 0
    /// The current pass: its pieces ascending, and for a repair pass the blocks of each.
    private var passPieces: [PieceIndex] = []
    private var passBlocks: [PieceIndex: [Int]] = [:]
    private var passPlan: Bitfield
    private var isRepairPass = false
    private var pieceCursor = 0
    private var blockCursor = 0
    private var repairRounds = 0
    private var reports: [PieceIndex: Reports] = [:]
    /// Receivers heard from, and when they were last heard.
    private var receivers: [UInt32: Double] = [:]
    private var reportCount = 0
    /// When the current pass began, and the pass before it: NACKs of the previous pass are taken
    /// for a NACK window after the change (they were on their way), later ones are stale.
    private var passChangedAt: Double = 0
    private let authentication: MulticastAuthentication?
    private var nackBudget = TokenBudget()
    private var sequence: UInt16 = 0
    private var tokens: Double
    private var lastRefill: Double?
    private var nextControl: Double = 0
    private var nextAnnounce: Double = 0
    private var startedAt: Double?
    /// Urgent pieces to put on the group before the pass goes on, each with the blocks asked for.
    private var urgentQueue: [(piece: PieceIndex, blocks: [Int])] = []
    private var urgentBlockCursor = 0
    private var urgentSentAt: [PieceIndex: Double] = [:]
    private var urgentBlocksThisPass = 0
    private let urgentBudget: Int

    /// `have` is what we can send (a pool node may not have everything); `seed` makes the
    /// instance id (tests pass a constant, the runtime a random one).
    public init(
        session: MulticastSession, layout: PieceLayout, have: Bitfield, configuration: Configuration,
        authentication: MulticastAuthentication? = nil, seed: UInt64
    ) {
        precondition(
            have.pieceCount == layout.pieceCount, "have has \(have.pieceCount) pieces, the torrent \(layout.pieceCount)"
        )
        precondition(configuration.rate > 0, "a rate of \(configuration.rate) bits/s")
        precondition(layout.fitsMulticast, "pieces of \(layout.pieceLength) bytes are too long for the booster")
        precondition(!have.isEmpty, "a sender needs a piece to send")
        self.session = session
        self.layout = layout
        self.have = have
        self.configuration = configuration
        self.authentication = authentication
        var random = SeededRandom(seed: seed)
        instance = UInt32(truncatingIfNeeded: random.next())
        passPlan = Bitfield(pieceCount: layout.pieceCount)
        tokens = 0
        urgentBudget = max(1, Int(configuration.maxUrgentShare * Double(layout.pieces.reduce(0) { $0 + layout.multicastBlockCount(of: $1) })))
        tokens = capacity
        planFullPass()
    }

    public var isFinished: Bool { phase == .finished }
    /// Distinct receivers heard from (NACKs and completion reports).
    public var receiverCount: Int { receivers.count }

    /// When `next(now:)` has something to do; nil once finished.
    public var nextWakeup: Double? {
        switch phase {
        case .announcing, .ending: return nextControl
        case .collecting(let until):
            guard let block = urgentBlock() else { return min(until, nextAnnounce) }
            return min(until, nextAnnounce, sendable(block))
        case .finished: return nil
        case .sending:
            guard let block = urgentBlock() ?? currentBlock() else { return nextAnnounce }
            return min(nextAnnounce, sendable(block))
        }
    }

    /// When the pacer has the tokens for `block`, and for the batch.
    private func sendable(_ block: MulticastPacket.DataBlock) -> Double {
        let batch = min(capacity / 2, bytesPerSecond * configuration.batch)
        let needed = max(Double(cost(dataLength: block.length)), batch) - tokens
        return (lastRefill ?? 0) + max(0, needed) / bytesPerSecond
    }

    // MARK: Events

    /// Everything due by `now`: control packets on schedule, then data as far as the rate allows.
    public mutating func next(now: Double) -> [Action] {
        refill(now)
        if startedAt == nil { startedAt = now }
        var actions: [Action] = []
        loop: while true {
            switch phase {
            case .finished:
                break loop
            case .announcing(let sent):
                guard now >= nextControl else { break loop }
                actions += announce(now: now)
                if sent + 1 >= configuration.announcements && !waitingForReceivers(now: now) {
                    phase = .sending
                    nextAnnounce = now + configuration.announceInterval
                } else {
                    phase = .announcing(sent: sent + 1)
                    nextControl = now + configuration.announceSpacing
                }
            case .ending(let sent):
                guard now >= nextControl else { break loop }
                actions.append(control(.done(.init(pass: pass))))
                if sent + 1 >= configuration.doneCount {
                    phase = .finished
                    actions.append(.finished)
                } else {
                    phase = .ending(sent: sent + 1)
                    nextControl = now + configuration.announceSpacing
                }
            case .collecting(let until):
                if now >= until {
                    endCollecting(now: now)
                    continue loop
                }
                if now >= nextAnnounce { actions += announce(now: now) }
                // Readers' pieces go out while the sender waits for NACKs, too.
                guard let block = urgentBlock(), pay(for: block) else { break loop }
                actions.append(.sendData(block))
                advanceUrgent(block)
            case .sending:
                if now >= nextAnnounce { actions += announce(now: now) }
                if let block = urgentBlock() {
                    guard pay(for: block) else { break loop }
                    actions.append(.sendData(block))
                    advanceUrgent(block)
                    continue loop
                }
                guard let block = currentBlock() else {
                    actions += endPass(now: now)
                    continue loop
                }
                guard pay(for: block) else { break loop }
                actions.append(.sendData(block))
                count(block)
                advance()
            }
        }
        return actions
    }

    /// A datagram heard on the group. Only NACKs for this instance matter; the rest (our own
    /// packets looped back, other torrents, garbage) is counted and ignored. With
    /// authentication, a NACK without a valid tag (a relay without the key, or a forger) counts
    /// its receiver but carries no repair votes.
    public mutating func received(_ bytes: [UInt8], now: Double) {
        if MulticastPacket.isNack(bytes), !nackBudget.take(now: now, rate: configuration.maxNacksPerSecond) {
            counters.nacksOverBudget += 1
            return
        }
        var datagram = bytes
        var votes = true
        if let authentication {
            if let opened = authentication.open(bytes) {
                datagram = opened
            } else if MulticastAuthentication.isTagged(bytes) {
                // A tag that is wrong is a forgery, not a relay without the key.
                counters.unauthenticated += 1
                return
            } else {
                votes = false
            }
        } else {
            datagram = MulticastAuthentication.strip(bytes)
        }
        let packet: MulticastPacket
        do {
            packet = try MulticastPacket.decode(datagram, session: session, layout: layout)
        } catch {
            // Not ours, or not a packet: nothing on a group is trusted, and nothing here is fatal.
            counters.ignored += 1
            return
        }
        if !votes, case .nack = packet.body { counters.unauthenticated += 1 }
        received(packet, votes: votes, now: now)
    }

    /// A decoded packet already validated against this session and layout (and, in an
    /// authenticated session, authenticated).
    public mutating func received(_ packet: MulticastPacket, now: Double) {
        received(packet, votes: true, now: now)
    }

    private mutating func received(_ packet: MulticastPacket, votes: Bool, now: Double) {
        guard case .nack(let nack) = packet.body, nack.target == instance, packet.instance != instance else {
            counters.ignored += 1
            return
        }
        // The pass is the NACK's epoch: one of an older pass (a replay, or one delayed past the
        // next plan) says nothing about what this pass should repair. A carousel starts its next
        // pass the moment one ends, so the last NACKs of a pass are still on their way then: they
        // are taken for a NACK window. Once mode waits for them before it plans.
        let previousPassGrace =
            configuration.mode == .carousel && nack.pass == pass &- 1
            && now < passChangedAt + configuration.nackWindow + 0.1
        guard nack.pass == pass || previousPassGrace else {
            counters.staleNacks += 1
            return
        }
        counters.nacksReceived += 1
        heard(receiver: packet.instance, now: now)
        guard votes else { return }
        if nack.urgent {
            queueUrgent(nack, now: now)
            return
        }
        if case .announcing(let sent) = phase, sent >= configuration.announcements, !waitingForReceivers(now: now) {
            nextControl = now  // the last receiver we waited for: start at once
        }
        counters.highestReportedLoss = max(counters.highestReportedLoss, nack.lossPermille)
        for entry in nack.entries where have[entry.piece] {
            let blocks = layout.multicastBlockCount(of: entry.piece)
            if reports[entry.piece]?.byReceiver[packet.instance] == nil {
                guard reportCount < configuration.maxReports else {
                    counters.reportsDropped += 1
                    continue
                }
                reportCount += 1
            }
            var set = reports[entry.piece, default: Reports()].byReceiver[packet.instance] ?? BlockSet(count: blocks)
            set.insert(entry)
            reports[entry.piece, default: Reports()].byReceiver[packet.instance] = set
        }
    }

    /// Takes the pacer's tokens for `block`, if it has them.
    private mutating func pay(for block: MulticastPacket.DataBlock) -> Bool {
        let price = Double(cost(dataLength: block.length))
        // A byte of slack: at the wake-up time float rounding may leave the bucket a hair short.
        guard tokens >= price - 1 else { return false }
        tokens -= price
        return true
    }

    /// An urgent request (mUFS): the pieces go on the group next, within the pass's share, each
    /// at most once every `urgentRepeat` seconds.
    private mutating func queueUrgent(_ nack: MulticastPacket.Nack, now: Double) {
        counters.urgentRequests += 1
        for entry in nack.entries where have[entry.piece] {
            let piece = entry.piece
            let blocks = entry.blocks(inPieceOf: layout.multicastBlockCount(of: piece))
            // Asked again while queued: it goes out once.
            if urgentQueue.contains(where: { $0.piece == piece }) { continue }
            guard !blocks.isEmpty, now >= (urgentSentAt[piece] ?? -.infinity) + configuration.urgentRepeat,
                urgentQueue.count < configuration.maxUrgentQueue, urgentBlocksThisPass + blocks.count <= urgentBudget
            else {
                counters.urgentRefused += 1
                continue
            }
            urgentSentAt[piece] = now
            urgentBlocksThisPass += blocks.count
            urgentQueue.append((piece, blocks))
        }
    }

    /// The next urgent block: another pass's tag (receivers keep its data, their view of the
    /// pass does not move) and no sequence number of the pass (their loss count stays true).
    private func urgentBlock() -> MulticastPacket.DataBlock? {
        guard let first = urgentQueue.first else { return nil }
        let block = first.blocks[urgentBlockCursor]
        return MulticastPacket.DataBlock(
            piece: first.piece, offset: block * MulticastPacket.blockLength, length: layout.multicastBlockLength(of: first.piece, block: block),
            sequence: 0, pass: MulticastPacket.DataBlock.passTag(pass &+ 64), repair: true)
    }

    private mutating func advanceUrgent(_ block: MulticastPacket.DataBlock) {
        counters.urgentPackets += 1
        counters.urgentBytes += Int64(block.length)
        counters.wireBytes += Int64(cost(dataLength: block.length))
        urgentBlockCursor += 1
        if urgentBlockCursor >= urgentQueue[0].blocks.count {
            urgentQueue.removeFirst()
            urgentBlockCursor = 0
        }
    }

    /// Counts a receiver; beyond `maxReceivers` the least recently heard is forgotten.
    private mutating func heard(receiver: UInt32, now: Double) {
        if receivers[receiver] == nil, receivers.count >= max(1, configuration.maxReceivers),
            let oldest = receivers.min(by: { $0.value < $1.value })?.key
        {
            receivers[oldest] = nil
            counters.receiversEvicted += 1
        }
        receivers[receiver] = now
    }

    /// Ends the session (carousel shutdown, or a once session cut short): DONE packets follow.
    public mutating func stop(now: Double) {
        guard phase != .finished else { return }
        if case .ending = phase { return }
        phase = .ending(sent: 0)
        nextControl = now
    }

    /// Writes the datagram for a `sendData` action: the header, then the payload (the block's bytes
    /// of the piece's wire form). Returns its length. A runtime that reads from storage straight
    /// into the buffer can instead call `MulticastPacket.writeDataHeader` and read after it.
    public func writeData(
        _ block: MulticastPacket.DataBlock, payload: UnsafeRawBufferPointer,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        precondition(payload.count == block.length, "payload of \(payload.count) bytes for a block of \(block.length)")
        let total = MulticastPacket.DataBlock.headerLength + block.length
        precondition(buffer.count >= total, "a buffer of \(buffer.count) bytes for a \(total)-byte datagram")
        MulticastPacket.writeDataHeader(instance: instance, block, into: buffer)
        UnsafeMutableRawBufferPointer(rebasing: buffer[MulticastPacket.DataBlock.headerLength..<total]).copyMemory(
            from: payload)
        return total
    }

    /// Whether the first pass still waits for receivers to join.
    private func waitingForReceivers(now: Double) -> Bool {
        receivers.count < configuration.minReceivers && now < (startedAt ?? now) + configuration.startTimeout
    }

    // MARK: Passes

    private mutating func planFullPass() {
        isRepairPass = false
        passPieces = layout.pieces.filter { have[$0] }
        passBlocks = [:]
        passPlan = have
        pieceCursor = 0
        blockCursor = 0
    }

    /// The blocks that at least `suppressAfter` receivers reported missing, by piece; the rest of
    /// the reports are dropped (BitTorrent's).
    private mutating func planRepairPass() -> Bool {
        let needed = suppressAfter
        var candidates: [(votes: Int, piece: PieceIndex, block: Int)] = []
        for (piece, pieceReports) in reports {
            var votes = [Int](repeating: 0, count: layout.multicastBlockCount(of: piece))
            for set in pieceReports.byReceiver.values { for block in set.members { votes[block] += 1 } }
            for block in votes.indices where votes[block] >= needed { candidates.append((votes[block], piece, block)) }
        }
        reports = [:]
        reportCount = 0
        // The budget: most reported blocks first, then in piece order.
        let budget = max(1, Int(configuration.maxRepairShare * Double(totalBlocks)))
        if candidates.count > budget {
            candidates.sort { ($0.votes, $1.piece, $1.block) > ($1.votes, $0.piece, $0.block) }
            counters.repairsOverBudget += candidates.count - budget
            candidates.removeLast(candidates.count - budget)
        }
        var blocks: [PieceIndex: [Int]] = [:]
        for candidate in candidates { blocks[candidate.piece, default: []].append(candidate.block) }
        for piece in blocks.keys { blocks[piece]!.sort() }
        guard !blocks.isEmpty else { return false }
        isRepairPass = true
        passPieces = blocks.keys.sorted()
        passBlocks = blocks
        passPlan = Bitfield(pieceCount: layout.pieceCount)
        for piece in passPieces { passPlan.insert(piece) }
        pieceCursor = 0
        blockCursor = 0
        return true
    }

    /// Blocks of the whole image.
    private var totalBlocks: Int { layout.pieces.reduce(0) { $0 + layout.multicastBlockCount(of: $1) } }

    /// The number of reports that make a block worth sending again: the threshold's share of the
    /// receivers heard from, at least one and at most `maxRepairVotes`. Told to receivers, who stop
    /// reporting a piece once that many others did, and leave to BitTorrent what fewer reported.
    private var suppressAfter: Int {
        let share = Int((configuration.repairThreshold * Double(receivers.count)).rounded(.up))
        return max(1, min(share, configuration.maxRepairVotes, Int(UInt16.max)))
    }

    private mutating func endPass(now: Double) -> [Action] {
        counters.passes += 1
        switch configuration.mode {
        case .once:
            phase = .collecting(until: now + configuration.collectTime)
        case .carousel:
            // Repairs first while they are wanted, but never two repair passes in a row, so a
            // stream of NACKs cannot starve the full passes late joiners wait for.
            if isRepairPass || !planRepairPass() { planFullPass() }
            pass &+= 1
            passChangedAt = now
            urgentBlocksThisPass = 0
        }
        return announce(now: now)
    }

    private mutating func endCollecting(now: Double) {
        if repairRounds < configuration.maxRepairRounds && planRepairPass() {
            repairRounds += 1
            pass &+= 1
            passChangedAt = now
            urgentBlocksThisPass = 0
            phase = .sending
            nextAnnounce = now
        } else {
            reports = [:]
            reportCount = 0
            phase = .ending(sent: 0)
            nextControl = now
        }
    }

    private func currentBlock() -> MulticastPacket.DataBlock? {
        guard pieceCursor < passPieces.count else { return nil }
        let piece = passPieces[pieceCursor]
        let block = passBlocks[piece].map { $0[blockCursor] } ?? blockCursor
        let offset = block * MulticastPacket.blockLength
        return MulticastPacket.DataBlock(
            piece: piece, offset: offset, length: layout.multicastBlockLength(of: piece, block: block),
            sequence: sequence, pass: MulticastPacket.DataBlock.passTag(pass), repair: isRepairPass)
    }

    private mutating func advance() {
        sequence &+= 1
        let piece = passPieces[pieceCursor]
        let blocks = passBlocks[piece]?.count ?? layout.multicastBlockCount(of: piece)
        blockCursor += 1
        if blockCursor >= blocks {
            blockCursor = 0
            pieceCursor += 1
        }
    }

    private mutating func count(_ block: MulticastPacket.DataBlock) {
        if block.repair {
            counters.repairPackets += 1
            counters.repairBytes += Int64(block.length)
        } else {
            counters.dataPackets += 1
            counters.dataBytes += Int64(block.length)
        }
        counters.wireBytes += Int64(cost(dataLength: block.length))
    }

    // MARK: Control packets

    /// An announce and the pass's plan in as many chunks as it takes.
    private mutating func announce(now: Double) -> [Action] {
        nextAnnounce = now + configuration.announceInterval
        let cursor: Int
        let announcePhase: MulticastPacket.Phase
        switch phase {
        case .announcing: (announcePhase, cursor) = (.announcing, passPieces.first?.value ?? layout.pieceCount)
        case .sending where pieceCursor < passPieces.count:
            (announcePhase, cursor) = (.sending, passPieces[pieceCursor].value)
        default: (announcePhase, cursor) = (.collecting, layout.pieceCount)
        }
        var actions = [
            control(
                .announce(
                    .init(
                        pieceCount: layout.pieceCount, pieceLength: layout.pieceLength,
                        totalLength: layout.totalLength, rate: configuration.rate, pass: pass, phase: announcePhase,
                        cursor: cursor,
                        receivers: receivers.count, suppressAfter: suppressAfter,
                        nackWindowMilliseconds: min(Int(UInt16.max), Int(configuration.nackWindow * 1000)),
                        carousel: configuration.mode == .carousel, senderComplete: have.isComplete)))
        ]
        let bits = MulticastPacket.Plan.maxBits
        for first in stride(from: 0, to: layout.pieceCount, by: bits) {
            let count = min(bits, layout.pieceCount - first)
            var bitmap = [UInt8](repeating: 0, count: (count + 7) / 8)
            for bit in 0..<count where passPlan[PieceIndex(first + bit)] { bitmap[bit >> 3] |= 0x80 >> UInt8(bit & 7) }
            actions.append(control(.plan(.init(pass: pass, firstPiece: first, bitCount: count, bitmap: bitmap))))
        }
        return actions
    }

    /// Control packets are few and small; they take tokens like data (and may borrow them, so an
    /// announce is never late).
    private mutating func control(_ body: MulticastPacket.Body) -> Action {
        let plain = MulticastPacket(session: session, instance: instance, body: body).encode()
        let bytes = authentication?.seal(plain) ?? plain
        let price = bytes.count + MulticastPacket.ipv4UDPOverhead
        tokens -= Double(price)
        counters.controlPackets += 1
        counters.wireBytes += Int64(price)
        return .sendControl(bytes)
    }

    // MARK: Pacing

    private var bytesPerSecond: Double { Double(configuration.rate) / 8 }

    /// The token bucket's depth: `burst` seconds of rate, at least two full datagrams.
    private var capacity: Double {
        max(
            bytesPerSecond * configuration.burst,
            Double(2 * (MulticastPacket.maxDatagramLength + MulticastPacket.ipv4UDPOverhead)))
    }

    private func cost(dataLength: Int) -> Int {
        MulticastPacket.DataBlock.headerLength + dataLength + MulticastPacket.ipv4UDPOverhead
    }

    private mutating func refill(_ now: Double) {
        if let last = lastRefill, now > last { tokens = min(capacity, tokens + (now - last) * bytesPerSecond) }
        if lastRefill.map({ now > $0 }) ?? true { lastRefill = now }
    }
}
