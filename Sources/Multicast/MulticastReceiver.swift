import Metainfo

/// The receiving side of the booster as a pure state machine: keeps what it hears on the group,
/// hands whole pieces over for verification, and reports what it misses.
///
/// The runtime passes every datagram from the group to `received(_:now:)` and calls `tick(now:)`
/// every few tens of milliseconds. A `pieceAssembled` piece goes through the same SHA-1 check and
/// store as a piece from BitTorrent; the runtime answers with `pieceVerified` or `pieceFailed`.
/// The BitTorrent side asks `shouldLeaveToMulticast` before fetching a piece, and tells
/// `pieceObtainedElsewhere` when it got one.
///
/// NACKs (docs/multicast.md): a piece becomes reportable once the sender's pass has gone past it
/// (or it is not in the pass and the sender has it). Each report waits a random part of the
/// sender's NACK window, and is dropped if meanwhile enough other receivers' NACKs (heard on the
/// group) named every block we miss of it; reports leave at a bounded packet rate.
///
/// Who repairs what: the sender re-sends a block when `suppressAfter` receivers reported it (a
/// share of the group, told in every announce). A receiver counts the reports it hears; a NACK
/// window after its own report, a piece with a block too few reported is BitTorrent's at once
/// (`handOver`), so a receiver that alone lost a few datagrams fetches just those bytes from peers
/// while the pass goes on, instead of waiting for a repair pass that will not carry them.
public struct MulticastReceiver: Sendable {
    public struct Configuration: Sendable {
        /// Bytes of partly heard pieces held; beyond it the oldest partial piece is dropped (its
        /// blocks count as missing again), so a receiver that hears little of many pieces (it
        /// joined late, or loses much) has bounded memory.
        public var maxBufferedBytes = 64 << 20
        /// Seconds without a packet from the sender before it counts as gone (`senderIdle`):
        /// BitTorrent then fetches everything.
        public var idleTimeout: Double = 3
        /// NACK packets a second this receiver may send, and how many may go at once.
        public var nackRate: Double = 20
        public var nackBurst = 4
        /// Sender instances remembered (their data is taken). A flood of forged instances evicts
        /// the least recently heard ones, never the sender being followed.
        public var maxKnownSenders = 8
        /// Other receivers whose NACKs are counted in a pass, and (piece, receiver) reports kept:
        /// forged receiver instances cannot grow what we keep of others' reports.
        public var maxOtherReceivers = 64
        public var maxOtherReports = 65_536
        /// BitTorrent waits for the group only while it delivers: a sender heard but bringing no
        /// new block for this many seconds (announces alone, a liar, a stalled pass) holds
        /// nothing back until blocks flow again.
        public var progressTimeout: Double = 5
        /// However the senders behave, BitTorrent is held back at most `deferralGrace` seconds
        /// plus the image's length at `minimumRate` bytes a second, from the first sender heard.
        public var deferralGrace: Double = 30
        public var minimumRate: Double = 1_250_000
        /// Pieces from the group that fail their hash before the group is no longer trusted (its
        /// data dropped, nothing deferred to it) for the rest of the run.
        public var maxHashFailures = 8
        /// Other receivers' NACKs handled a second (and at once): a flood of NACKs costs a bounded
        /// share of the event loop the swarm runs on; beyond it they are dropped undecoded.
        public var maxForeignNacksPerSecond: Double = 300

        public init() {}
    }

    public enum Event: Equatable, Sendable {
        /// Every block of the piece was heard: verify its hash and store it like a BitTorrent piece.
        case pieceAssembled(PieceIndex, [UInt8])
        /// Send this NACK datagram to the group.
        case sendNack([UInt8])
        /// The sender fell silent: BitTorrent takes over (until it is heard again).
        case senderIdle
        /// The sender said it is done: BitTorrent fetches what is missing.
        case sessionEnded
        /// The group will not repair this partly heard piece (too few receivers lost its missing
        /// blocks): BitTorrent fetches just the missing byte ranges. Answered like an assembled
        /// piece, with `pieceVerified` or `pieceFailed`.
        case handOver(PartialPiece)
    }

    public struct Counters: Equatable, Sendable {
        public var packets = 0
        public var dataPackets = 0
        /// Blocks heard again (repairs for others, duplicated datagrams) or of pieces we have.
        public var duplicates = 0
        /// Datagrams that were not a valid packet (bad magic, version, lengths...).
        public var garbage = 0
        public var otherSession = 0
        /// Data packets from a sender instance we have no announce of (so no session): dropped.
        public var unknownSender = 0
        /// Packets of our session that named something outside our torrent.
        public var invalid = 0
        public var piecesAssembled = 0
        public var hashFailures = 0
        /// Partial pieces dropped to stay within `maxBufferedBytes`.
        public var partialsDropped = 0
        public var nacksSent = 0
        /// Partly heard pieces handed to BitTorrent because the group will not repair them.
        public var handedOver = 0
        /// Piece reports left out because other receivers' NACKs had already covered them.
        public var reportsSuppressed = 0
        /// Control packets without a valid authentication tag (sealed sessions, key holders).
        public var unauthenticated = 0
        /// Sender instances forgotten to stay within `maxKnownSenders`.
        public var sendersEvicted = 0
        /// Other receivers' reports not kept (beyond `maxOtherReceivers` or `maxOtherReports`).
        public var reportsDropped = 0
        /// Data dropped because its piece failed a hash before, or the group is distrusted.
        public var refusedData = 0
        /// Announces and plans accepted from the sender being followed.
        public var senderControl = 0
        /// Sessions that went on after a DONE (a forged one, or one the sender took back).
        public var resumed = 0
        /// Other receivers' NACKs dropped beyond `maxForeignNacksPerSecond`.
        public var nacksOverBudget = 0
        /// Urgent requests sent (mUFS: pieces a reader waited for, asked of the group's sender).
        public var urgentRequests = 0
    }

    /// What a partly heard piece holds, for a BitTorrent side that fetches only the rest.
    public struct PartialPiece: Equatable, Sendable {
        public let piece: PieceIndex
        /// The piece's length; bytes outside `heard` are zero.
        public let bytes: [UInt8]
        /// Byte ranges not heard, ascending and merged.
        public let missing: [Range<Int>]
    }

    struct Partial {
        var bytes: [UInt8]
        var heard: BlockSet
        let serial: Int
    }

    /// What we know of the current sender instance.
    struct SenderView {
        let instance: UInt32
        var pass: UInt16
        var cursor = 0
        /// Pieces below this have been considered for reporting in this pass.
        var scanned = 0
        var plan: Bitfield
        var planChunks: Set<Int> = []
        var carousel = false
        var senderComplete = false
        var suppressAfter = 1
        var nackWindow = 0.2
        var lastHeard: Double
        /// When this instance's data was last heard (nil: never), and any packet but a DONE.
        var lastData: Double?
        var lastActivity = 0.0
        var adoptedAt = 0.0
        var idle = false
        var ended = false
        var reportedComplete = false
        /// When we last told this sender we listen (an empty NACK), so it counts us from the start;
        /// repeated while it waits for receivers (its announces say `announcing`), as one may be lost.
        var joinedAt: Double?
        var announcing = false
        /// The last announce said the pass is over (NACKs are being collected): a DONE may follow.
        var collecting = false
        /// Pieces waiting to be reported (and when), and those reported, in this pass.
        var due: [PieceIndex: Double] = [:]
        var reported: Set<PieceIndex> = []
        /// Reportable pieces, and when the other receivers' reports of them are all in: then we judge
        /// whether the group repairs them or BitTorrent must.
        var judge: [PieceIndex: Double] = [:]
        /// Pieces reported and then left out of the next plans (once mode): after `declineAfter`
        /// times they are BitTorrent's.
        var leftOut: [PieceIndex: Int] = [:]
        var declined: Set<PieceIndex> = []
        /// Other receivers' NACKs in this pass: the blocks each named, by piece.
        var othersReports: [PieceIndex: [UInt32: BlockSet]] = [:]
        var completeReportDue: Double?
        /// Data sequence numbers (16 bits, wrapping): the first heard, the highest since then
        /// (unwrapped) and how many were heard, for the loss estimate.
        var firstSequence: UInt16?
        var highestSequence = 0
        var sequencesHeard = 0

        var planKnown: Bool {
            planChunks.count == (plan.pieceCount + MulticastPacket.Plan.maxBits - 1) / MulticastPacket.Plan.maxBits
        }
    }

    public let session: MulticastSession
    public let layout: PieceLayout
    public let configuration: Configuration
    /// Our id in NACKs (so the sender counts receivers, and we skip our own NACKs looped back).
    public let instance: UInt32
    public private(set) var counters = Counters()
    public private(set) var have: Bitfield
    private var verifying: Set<PieceIndex> = []
    /// Pieces given to BitTorrent with what was heard of them; multicast leaves them alone.
    private var handedOver: Set<PieceIndex> = []
    private var partials: [PieceIndex: Partial] = [:]
    private var bufferedBytes = 0
    private var serial = 0
    private var sender: SenderView?
    /// Sender instances whose control packets named our session (the latest few): only their data
    /// packets, which name no session, are taken.
    /// Least recently heard first.
    private(set) var knownSenders: [UInt32] = []
    /// Packets heard of each known instance. The one heard least is forgotten first: a flood of
    /// made-up instances, each heard once, churns among itself and never pushes out a sender that
    /// announces every 0.5 s and sends thousands of blocks.
    private var heardCount: [UInt32: Int] = [:]
    /// Blocks of pieces that failed their hash are not taken from the group again, and after
    /// `maxHashFailures` nothing is.
    private var refused: Set<PieceIndex> = []
    public private(set) var distrusted = false
    /// When the group last brought a block we lacked (or the first sender was heard).
    private var lastProgress: Double?
    /// Past this time nothing is deferred to the group (set when the first sender is heard).
    public private(set) var deferralDeadline: Double?
    /// Other receivers heard in this pass, and the reports kept of them.
    private var otherReceivers: Set<UInt32> = []
    private(set) var otherReportCount = 0
    /// Set for key holders of a sealed image: control packets must carry its tag.
    private let authentication: MulticastAuthentication?
    private var foreignNackBudget = TokenBudget()
    private var random: SeededRandom
    private var nackTokens: Double
    private var lastTick: Double?
    /// Pieces last asked for urgently, and when.
    private var urgentAsked: [PieceIndex: Double] = [:]
    /// Seconds before a piece still missing is asked for urgently again (the sender puts a piece
    /// on the group at most every 0.05 s): a block lost on the way is asked for again soon.
    public static let urgentRepeat = 0.1

    public init(
        session: MulticastSession, layout: PieceLayout, have: Bitfield, configuration: Configuration = Configuration(),
        authentication: MulticastAuthentication? = nil, seed: UInt64
    ) {
        precondition(
            have.pieceCount == layout.pieceCount, "have has \(have.pieceCount) pieces, the torrent \(layout.pieceCount)"
        )
        precondition(layout.fitsMulticast, "pieces of \(layout.pieceLength) bytes are too long for the booster")
        self.session = session
        self.layout = layout
        self.have = have
        self.configuration = configuration
        self.authentication = authentication
        random = SeededRandom(seed: seed)
        instance = UInt32(truncatingIfNeeded: random.next())
        nackTokens = Double(configuration.nackBurst)
    }

    /// Bytes held in partly heard pieces.
    public var buffered: Int { bufferedBytes }
    /// The sender's position in its pass: pieces of the pass below it have been sent.
    public var cursor: Int? { sender?.cursor }
    /// The sender instance being followed.
    public var senderInstance: UInt32? { sender?.instance }

    /// Whether BitTorrent should wait for the group: a sender is heard (neither ended nor idle),
    /// the group brought a new block within `progressTimeout`, the deferral deadline has not
    /// passed and the group is trusted.
    public func senderActive(now: Double) -> Bool {
        guard let sender, !distrusted else { return false }
        guard !sender.ended && !sender.idle && now - sender.lastHeard <= configuration.idleTimeout else { return false }
        if let deadline = deferralDeadline, now >= deadline { return false }
        if let progress = lastProgress, now - progress > configuration.progressTimeout { return false }
        return true
    }

    /// Whether some blocks of the piece were heard and are held, waiting for the rest.
    public func holdsPart(of piece: PieceIndex) -> Bool { partials[piece] != nil }

    /// Whether BitTorrent should leave the piece alone for now: the sender is active and will send
    /// it, later in this pass or in the repair it was asked for. False once the sender passed it
    /// without a repair to come, declined to repair it, went idle or ended, or was never heard.
    public func shouldLeaveToMulticast(_ piece: PieceIndex, now: Double) -> Bool {
        guard layout.contains(piece), !have[piece], !handedOver.contains(piece) else { return false }
        if verifying.contains(piece) { return true }
        guard let sender, senderActive(now: now), !refused.contains(piece), !sender.declined.contains(piece)
        else { return false }
        if sender.due[piece] != nil || sender.reported.contains(piece) { return true }
        guard sender.planKnown else { return sender.senderComplete }
        return sender.plan[piece] && piece.value >= sender.cursor
    }

    // MARK: Packets

    public mutating func received(_ bytes: [UInt8], now: Double) -> [Event] {
        counters.packets += 1
        if MulticastPacket.isNack(bytes),
            !foreignNackBudget.take(now: now, rate: configuration.maxForeignNacksPerSecond)
        {
            counters.nacksOverBudget += 1
            return []
        }
        var datagram = bytes
        if MulticastPacket.isData(bytes) {
        } else if let authentication {
            // A key holder follows only control packets the publisher's key signed.
            guard let opened = authentication.open(bytes) else {
                counters.unauthenticated += 1
                return []
            }
            datagram = opened
        } else {
            // Without the key (a plain session, or a relay of a sealed one) a tag cannot be checked.
            datagram = MulticastAuthentication.strip(bytes)
        }
        let packet: MulticastPacket
        do {
            packet = try MulticastPacket.decode(datagram)
        } catch {
            counters.garbage += 1
            return []
        }
        do {
            try packet.validate(session: session, layout: layout)
        } catch {
            if case .otherSession = error { counters.otherSession += 1 } else { counters.invalid += 1 }
            return []
        }
        return received(packet, now: now)
    }

    /// A decoded packet already validated against this session and layout.
    public mutating func received(_ packet: MulticastPacket, now: Double) -> [Event] {
        guard packet.instance != instance else { return [] }
        var events: [Event] = []
        switch packet.body {
        case .nack(let nack):
            heardNack(nack, from: packet.instance)
            return []
        case .announce(let announce):
            guard heardSender(packet.instance, pass: announce.pass, now: now) else { return [] }
            counters.senderControl += 1
            sender!.lastActivity = now
            if sender!.ended {
                // A sender that announces after its DONE has not ended: the DONE was forged (or
                // it was stopped and started again). A session is never over for good.
                sender!.ended = false
                counters.resumed += 1
            }
            sender!.announcing = announce.phase == .announcing
            sender!.collecting = announce.phase == .collecting
            sender!.carousel = announce.carousel
            sender!.senderComplete = announce.senderComplete
            sender!.suppressAfter = announce.suppressAfter
            sender!.nackWindow = Double(announce.nackWindowMilliseconds) / 1000
            sender!.cursor = max(sender!.cursor, announce.cursor)
        case .plan(let plan):
            guard heardSender(packet.instance, pass: plan.pass, now: now) else { return [] }
            counters.senderControl += 1
            sender!.lastActivity = now
            let chunk = plan.firstPiece / MulticastPacket.Plan.maxBits
            if plan.firstPiece % MulticastPacket.Plan.maxBits == 0, sender!.planChunks.insert(chunk).inserted {
                for bit in 0..<plan.bitCount where plan.contains(PieceIndex(plan.firstPiece + bit)) {
                    sender!.plan.insert(PieceIndex(plan.firstPiece + bit))
                }
                if sender!.planKnown { planBecameKnown(now: now) }
            }
        case .data(let block, let payload):
            // Data names no session: it is ours only from a sender whose announces named ours.
            guard knownSenders.contains(packet.instance) else {
                counters.unknownSender += 1
                return []
            }
            counters.dataPackets += 1
            heardCount[packet.instance, default: 0] += 1
            // The view follows the instance whose data flows: one that only talks (a forged
            // announcer that was adopted while ours was quiet) gives way to one that delivers.
            if let view = sender, view.instance != packet.instance,
                now - (view.lastData ?? view.adoptedAt) > configuration.idleTimeout
            {
                sender = nil
                _ = heardSender(packet.instance, pass: nil, now: now)
            }
            if sender?.instance == packet.instance {
                sender!.lastData = now
                sender!.lastActivity = now
            }
            // A datagram of another pass (delayed, or the next one's before its announce) or of
            // another sender delivers its data but moves nothing.
            if let view = sender, view.instance == packet.instance,
                heardSender(packet.instance, pass: nil, now: now),
                block.pass == MulticastPacket.DataBlock.passTag(view.pass)
            {
                heardSequence(block.sequence)
                sender!.cursor = max(sender!.cursor, block.piece.value)
            }
            events += store(block, payload: payload, now: now)
        case .done:
            guard heardSender(packet.instance, pass: nil, now: now) else { return [] }
            // A sender ends after a pass (its announces said so), or falls silent and then says
            // DONE. A DONE while its data or announces still flow is forged (a plain session names
            // the instance in every datagram) and changes nothing; a later announce undoes any DONE.
            let view = sender!
            guard view.collecting || now - view.lastActivity >= Self.doneQuiet else {
                counters.invalid += 1
                return []
            }
            if !sender!.ended {
                sender!.ended = true
                sender!.due = [:]
                events.append(.sessionEnded)
            }
            return events
        }
        scanPassed(now: now)
        return events
    }

    /// mUFS: asks the sender to put `pieces` (what readers of the image in flight wait for, most
    /// urgent first) on the group next, so they arrive at the group's rate and every receiver
    /// keeps them. Only pieces we lack, are not assembling elsewhere, and the sender can send; a
    /// piece at most every `urgentRepeat` seconds; one NACK, within the NACK rate. nil: nothing to ask.
    public mutating func requestUrgent(_ pieces: [PieceIndex], now: Double) -> Event? {
        guard let view = sender, senderActive(now: now), nackTokens >= 1 else { return nil }
        urgentAsked = urgentAsked.filter { now - $0.value < Self.urgentRepeat }
        var entries: [MulticastPacket.NackEntry] = []
        var length = 0
        let limit = MulticastPacket.maxControlLength - MulticastPacket.headerLength - MulticastPacket.Nack.fixedLength
        for piece in pieces where layout.contains(piece) && !have[piece] && !verifying.contains(piece) && !handedOver.contains(piece)
            && !refused.contains(piece) && urgentAsked[piece] == nil && (view.senderComplete || (view.planKnown && view.plan[piece])) {
            let pieceEntries = Self.entries(for: piece, missing: missingBlocks(of: piece))
            let size = pieceEntries.reduce(0) { $0 + $1.encodedLength }
            guard !pieceEntries.isEmpty, length + size <= limit else { continue }
            entries += pieceEntries
            length += size
            urgentAsked[piece] = now
        }
        guard !entries.isEmpty else { return nil }
        nackTokens -= 1
        counters.urgentRequests += 1
        counters.nacksSent += 1
        let bytes = MulticastPacket(
            session: session, instance: instance,
            body: .nack(.init(target: view.instance, pass: view.pass, lossPermille: lossPermille(view),
                missingPieces: layout.pieceCount - have.count, urgent: true, entries: entries))
        ).encode()
        return .sendNack(authentication?.seal(bytes) ?? bytes)
    }

    /// Time passing: idle detection and the NACKs that are due.
    public mutating func tick(now: Double) -> [Event] {
        if let last = lastTick, now > last {
            nackTokens = min(Double(configuration.nackBurst), nackTokens + (now - last) * configuration.nackRate)
        }
        lastTick = max(lastTick ?? now, now)
        guard !distrusted, var view = sender, !view.ended else { return [] }
        if !view.idle && now - view.lastHeard > configuration.idleTimeout {
            sender!.idle = true
            return [.senderIdle]
        }
        guard !view.idle else { return [] }
        var events: [Event] = []
        let joinDue = view.joinedAt.map { view.announcing && now - $0 >= Self.joinInterval } ?? true
        if joinDue && !have.isComplete && nackTokens >= 1 {
            nackTokens -= 1
            sender!.joinedAt = now
            events.append(.sendNack(nackPacket(view, entries: [], complete: false)))
            counters.nacksSent += 1
        }
        events += judgeReports(now: now)
        view = sender!
        if have.isComplete {
            if !view.reportedComplete, let due = view.completeReportDue, now >= due, nackTokens >= 1 {
                nackTokens -= 1
                sender!.reportedComplete = true
                events.append(.sendNack(nackPacket(view, entries: [], complete: true)))
                counters.nacksSent += 1
            }
            return events
        }
        let ready = view.due.filter { $0.value <= now }.keys.sorted()
        guard !ready.isEmpty else { return events }
        var entries: [MulticastPacket.NackEntry] = []
        var length = 0
        let limit = MulticastPacket.maxControlLength - MulticastPacket.headerLength - MulticastPacket.Nack.fixedLength
        func flush() -> Bool {
            guard !entries.isEmpty else { return true }
            guard nackTokens >= 1 else { return false }
            nackTokens -= 1
            events.append(.sendNack(nackPacket(view, entries: entries, complete: false)))
            counters.nacksSent += 1
            entries = []
            length = 0
            return true
        }
        for piece in ready {
            let missing = missingBlocks(of: piece)
            let suppressed = covered(piece, missing: missing, in: view)
            if suppressed {
                counters.reportsSuppressed += 1
            } else {
                let pieceEntries = Self.entries(for: piece, missing: missing)
                let size = pieceEntries.reduce(0) { $0 + $1.encodedLength }
                if length + size > limit {
                    guard flush() else { break }
                }
                entries += pieceEntries
                length += size
            }
            view.due[piece] = nil
            view.reported.insert(piece)
            if suppressed { view.judge[piece] = nil }
        }
        if !flush() {
            // Out of NACK tokens: the pieces in the unsent packet wait for the next tick.
            for entry in entries {
                view.due[entry.piece] = now
                view.reported.remove(entry.piece)
            }
        }
        sender!.due = view.due
        sender!.reported = view.reported
        sender!.judge = view.judge
        return events
    }

    /// Seconds without data or announces from the sender before a DONE in mid-pass is believed:
    /// a stopping sender sends nothing else after its first DONE, and the last of three comes
    /// 0.2 s later.
    static let doneQuiet = 0.15

    /// Seconds between joins while the sender waits for receivers.
    static let joinInterval = 0.2

    /// Seconds after a NACK window that others' reports may take to arrive.
    static let judgeMargin = 0.05

    /// Pieces whose reports are all in (a NACK window after they became reportable): one with a
    /// missing block that fewer than `suppressAfter` receivers (us included) reported will not be
    /// repaired by the group, so it goes to BitTorrent now, reported or not.
    private mutating func judgeReports(now: Double) -> [Event] {
        guard let view = sender, !view.judge.isEmpty else { return [] }
        var events: [Event] = []
        for (piece, time) in view.judge where time <= now {
            sender!.judge[piece] = nil
            guard !have[piece], !verifying.contains(piece), !handedOver.contains(piece) else { continue }
            let reports = view.othersReports[piece, default: [:]].values
            let lonely = missingBlocks(of: piece).members.contains { block in
                1 + reports.count { $0.contains(block) } < view.suppressAfter
            }
            guard lonely else { continue }
            sender!.declined.insert(piece)
            sender!.reported.remove(piece)
            sender!.due[piece] = nil
            if let partial = handOver(piece) {
                counters.handedOver += 1
                events.append(.handOver(partial))
            }
        }
        return events
    }

    // MARK: What the rest of the node tells us

    /// The assembled piece matched its hash and is stored.
    public mutating func pieceVerified(_ piece: PieceIndex, now: Double) {
        verifying.remove(piece)
        handedOver.remove(piece)
        gotPiece(piece, now: now)
    }

    /// The assembled piece failed its hash (a corrupted datagram, or a hostile sender): it is
    /// dropped and missing again, to be reported like any other.
    ///
    /// What the group sent of a piece that failed is not taken again: BitTorrent fetches it whole
    /// (a forged block costs one piece, once), and after `maxHashFailures` the group is not trusted
    /// for the rest of the run (nothing is deferred to it, its data is dropped).
    public mutating func pieceFailed(_ piece: PieceIndex, now: Double) {
        guard verifying.remove(piece) != nil || handedOver.remove(piece) != nil else { return }
        counters.hashFailures += 1
        refused.insert(piece)
        dropPartial(piece)
        if counters.hashFailures >= configuration.maxHashFailures && !distrusted {
            distrusted = true
            for piece in Array(partials.keys) { dropPartial(piece) }
        }
    }

    /// Whether data for the piece is no longer taken from the group (it failed its hash once).
    public func refuses(_ piece: PieceIndex) -> Bool { distrusted || refused.contains(piece) }

    /// BitTorrent got the piece: forget what we heard of it and stop reporting it.
    public mutating func pieceObtainedElsewhere(_ piece: PieceIndex, now: Double) {
        dropPartial(piece)
        verifying.remove(piece)
        handedOver.remove(piece)
        gotPiece(piece, now: now)
    }

    /// Gives a partly heard piece to the BitTorrent side, which then fetches only its missing byte
    /// ranges; multicast forgets it (as if obtained elsewhere, until `pieceFailed` says otherwise).
    public mutating func handOver(_ piece: PieceIndex) -> PartialPiece? {
        guard let partial = partials[piece] else { return nil }
        dropPartial(piece)
        handedOver.insert(piece)
        var missing: [Range<Int>] = []
        for block in partial.heard.complement {
            let start = block * MulticastPacket.blockLength
            let end = start + layout.multicastBlockLength(of: piece, block: block)
            if let last = missing.last, last.upperBound == start {
                missing[missing.count - 1] = last.lowerBound..<end
            } else {
                missing.append(start..<end)
            }
        }
        return PartialPiece(piece: piece, bytes: partial.bytes, missing: missing)
    }

    // MARK: Internals

    /// Adopts the packet's sender and a newer pass. Returns whether the packet belongs to the
    /// current sender and pass: a datagram of an older pass (delayed or reordered) or of another
    /// instance still delivers its data but moves nothing. Another instance is adopted once ours is
    /// done or silent for `idleTimeout` (a restarted sender), so two senders on one group cannot
    /// make the view flip back and forth; the new view keeps every block heard.
    private mutating func heardSender(_ instance: UInt32, pass: UInt16?, now: Double) -> Bool {
        if deferralDeadline == nil {
            // The clock of the total deferral starts with the first sender, whatever follows.
            deferralDeadline = now + configuration.deferralGrace + Double(layout.totalLength) / configuration.minimumRate
            lastProgress = now
        }
        knownSenders.removeAll { $0 == instance }
        knownSenders.append(instance)
        heardCount[instance, default: 0] += 1
        while knownSenders.count > max(1, configuration.maxKnownSenders) {
            // The least heard, and of those the least recently heard; never the one followed.
            var evict: Int?
            for (index, known) in knownSenders.enumerated() where known != sender?.instance {
                if evict.map({ heardCount[known, default: 0] < heardCount[knownSenders[$0], default: 0] }) ?? true {
                    evict = index
                }
            }
            guard let evict else { break }
            heardCount[knownSenders.remove(at: evict)] = nil
            counters.sendersEvicted += 1
        }
        if let current = sender, current.instance != instance,
            !current.ended && now - current.lastHeard <= configuration.idleTimeout
        {
            // Two senders talking: the one followed keeps the view, unless it never delivered a
            // block and the other is heard far more (a made-up instance heard once, adopted
            // because it happened to come first, gives way to the sender announcing every 20 ms).
            let ours = heardCount[current.instance, default: 0]
            guard current.lastData == nil, heardCount[instance, default: 0] > 2 * ours + 4 else { return false }
        }
        if sender?.instance != instance {
            sender = SenderView(
                instance: instance, pass: pass ?? 0, plan: Bitfield(pieceCount: layout.pieceCount), lastHeard: now)
            sender!.adoptedAt = now
            sender!.lastActivity = now
            otherReceivers = []
            otherReportCount = 0
            if have.isComplete { sender!.completeReportDue = now }
        }
        sender!.lastHeard = now
        sender!.idle = false
        guard let pass, pass != sender!.pass else { return true }
        // Passes wrap at 65,536: one up to half the range ahead is newer.
        guard pass &- sender!.pass < 0x8000 else { return false }
        startPass(pass)
        return true
    }

    /// A new pass. What was reported in the last one stays "reported" until the new plan is known
    /// and shows whether it is repaired.
    private mutating func startPass(_ pass: UInt16) {
        sender!.pass = pass
        sender!.cursor = 0
        sender!.scanned = 0
        sender!.plan = Bitfield(pieceCount: layout.pieceCount)
        sender!.planChunks = []
        sender!.due = [:]
        sender!.judge = [:]
        sender!.othersReports = [:]
        otherReceivers = []
        otherReportCount = 0
    }

    /// Plans in a row that may leave out a piece we reported before it is BitTorrent's: the
    /// sender may have declined it, or our NACK may have been lost, and one more report tells.
    static let declineAfter = 2

    /// In once mode, what we reported and the new plans keep leaving out is BitTorrent's.
    private mutating func planBecameKnown(now: Double) {
        guard var view = sender else { return }
        if !view.carousel {
            for piece in view.reported where !view.plan[piece] {
                view.leftOut[piece, default: 0] += 1
                if view.leftOut[piece]! >= Self.declineAfter { view.declined.insert(piece) }
            }
        }
        view.reported = []
        sender = view
        scanPassed(now: now)
        // Pieces the pass will not send (and the sender has): reportable at once.
        guard view.senderComplete else { return }
        for piece in layout.pieces where !view.plan[piece] { reconsider(piece, now: now) }
    }

    /// Makes the pieces the pass has gone past reportable.
    private mutating func scanPassed(now: Double) {
        guard let view = sender, view.planKnown, !view.ended else { return }
        let end = min(view.cursor, layout.pieceCount)
        guard view.scanned < end else { return }
        sender!.scanned = end
        for index in view.scanned..<end where view.plan[PieceIndex(index)] { reconsider(PieceIndex(index), now: now) }
    }

    /// Schedules a report of the piece if we miss it and the pass will not bring it.
    private mutating func reconsider(_ piece: PieceIndex, now: Double) {
        guard let view = sender, view.planKnown, !view.ended, !have[piece], !verifying.contains(piece),
            !handedOver.contains(piece), !refused.contains(piece), !view.declined.contains(piece), view.due[piece] == nil, !view.reported.contains(piece)
        else { return }
        let ahead = view.plan[piece] && piece.value >= view.cursor
        guard !ahead, view.plan[piece] || view.senderComplete else { return }
        sender!.due[piece] = now + randomDelay(view.nackWindow)
        // Every receiver that lost the same blocks reports them within a window from now.
        if view.suppressAfter > 1 { sender!.judge[piece] = now + view.nackWindow + Self.judgeMargin }
    }

    /// A uniform delay in 0 ... window, in microsecond steps.
    private mutating func randomDelay(_ window: Double) -> Double {
        Double(random.next() % 1_000_001) / 1_000_000 * window
    }

    private mutating func gotPiece(_ piece: PieceIndex, now: Double) {
        guard have.insert(piece) else { return }
        sender?.due[piece] = nil
        sender?.reported.remove(piece)
        if have.isComplete, let window = sender?.nackWindow, sender?.completeReportDue == nil {
            let delay = randomDelay(window)
            sender?.completeReportDue = now + delay
        }
    }

    private mutating func store(_ block: MulticastPacket.DataBlock, payload: [UInt8], now: Double) -> [Event] {
        let piece = block.piece
        guard !distrusted, !refused.contains(piece) else {
            counters.refusedData += 1
            return []
        }
        guard !have[piece], !verifying.contains(piece), !handedOver.contains(piece) else {
            counters.duplicates += 1
            return []
        }
        if partials[piece] == nil {
            let length = layout.length(of: piece)
            makeRoom(for: length)
            serial += 1
            partials[piece] = Partial(
                bytes: [UInt8](repeating: 0, count: length),
                heard: BlockSet(count: layout.multicastBlockCount(of: piece)), serial: serial)
            bufferedBytes += length
        }
        guard partials[piece]!.heard.insert(block.block) else {
            counters.duplicates += 1
            return []
        }
        lastProgress = now
        partials[piece]!.bytes.replaceSubrange(block.offset..<(block.offset + block.length), with: payload)
        guard partials[piece]!.heard.isFull else { return [] }
        let bytes = partials[piece]!.bytes
        dropPartial(piece)
        verifying.insert(piece)
        sender?.due[piece] = nil
        counters.piecesAssembled += 1
        return [.pieceAssembled(piece, bytes)]
    }

    /// Drops the oldest partial pieces until `length` more bytes fit.
    private mutating func makeRoom(for length: Int) {
        while bufferedBytes + length > configuration.maxBufferedBytes,
            let oldest = partials.min(by: { $0.value.serial < $1.value.serial })?.key
        {
            dropPartial(oldest)
            counters.partialsDropped += 1
        }
    }

    private mutating func dropPartial(_ piece: PieceIndex) {
        guard let partial = partials.removeValue(forKey: piece) else { return }
        bufferedBytes -= partial.bytes.count
    }

    private func missingBlocks(of piece: PieceIndex) -> BlockSet {
        let blocks = layout.multicastBlockCount(of: piece)
        guard let heard = partials[piece]?.heard else { return BlockSet(count: blocks, all: true) }
        var missing = BlockSet(count: blocks)
        for block in heard.complement { missing.insert(block) }
        return missing
    }

    /// Whether at least `suppressAfter` other receivers named every block we miss of the piece.
    private func covered(_ piece: PieceIndex, missing: BlockSet, in view: SenderView) -> Bool {
        guard let reports = view.othersReports[piece] else { return false }
        return reports.values.count { missing.isSubset(of: $0) } >= view.suppressAfter
    }

    private mutating func heardNack(_ nack: MulticastPacket.Nack, from receiver: UInt32) {
        // Another reader's urgent request is no loss report: it suppresses none of ours.
        guard let view = sender, nack.target == view.instance, nack.pass == view.pass, !nack.entries.isEmpty, !nack.urgent else { return }
        // Forged receiver instances must not grow what we keep: a bounded number of receivers per
        // pass, and of (piece, receiver) reports.
        if !otherReceivers.contains(receiver) {
            guard otherReceivers.count < configuration.maxOtherReceivers else {
                counters.reportsDropped += nack.entries.count
                return
            }
            otherReceivers.insert(receiver)
        }
        for entry in nack.entries where !have[entry.piece] {
            let blocks = layout.multicastBlockCount(of: entry.piece)
            if sender!.othersReports[entry.piece]?[receiver] == nil {
                guard otherReportCount < configuration.maxOtherReports else {
                    counters.reportsDropped += 1
                    continue
                }
                otherReportCount += 1
            }
            var set = sender!.othersReports[entry.piece]?[receiver] ?? BlockSet(count: blocks)
            set.insert(entry)
            sender!.othersReports[entry.piece, default: [:]][receiver] = set
        }
    }

    private mutating func heardSequence(_ sequence: UInt16) {
        guard let first = sender!.firstSequence else {
            sender!.firstSequence = sequence
            sender!.highestSequence = 0
            sender!.sequencesHeard = 1
            return
        }
        sender!.sequencesHeard += 1
        // Up to half the 16-bit range ahead of the highest is newer (later, across a wrap).
        let highest = UInt16(truncatingIfNeeded: sender!.highestSequence)
        let ahead = Int(Int16(bitPattern: (sequence &- first) &- highest))
        if ahead > 0 { sender!.highestSequence += ahead }
    }

    private func lossPermille(_ view: SenderView) -> Int {
        guard view.firstSequence != nil else { return 0 }
        let expected = view.highestSequence + 1
        return max(0, min(1000, 1000 * (expected - view.sequencesHeard) / expected))
    }

    private func nackPacket(_ view: SenderView, entries: [MulticastPacket.NackEntry], complete: Bool) -> [UInt8] {
        let bytes = MulticastPacket(
            session: session, instance: instance,
            body: .nack(
                .init(
                    target: view.instance, pass: view.pass,
                    lossPermille: lossPermille(view), missingPieces: layout.pieceCount - have.count, complete: complete,
                    entries: entries))
        ).encode()
        return authentication?.seal(bytes) ?? bytes
    }

    /// The entries naming `missing`: "the rest of the piece" when that is what is missing, else
    /// bitmaps of at most 8,000 blocks from the first missing block.
    static func entries(for piece: PieceIndex, missing: BlockSet) -> [MulticastPacket.NackEntry] {
        let members = missing.members
        guard let first = members.first else { return [] }
        if members.count == missing.count - first { return [.rest(of: piece, from: first)] }
        var entries: [MulticastPacket.NackEntry] = []
        var start = first
        while start < missing.count {
            let count = min(8000, missing.count - start)
            var bitmap = [UInt8](repeating: 0, count: (count + 7) / 8)
            var last = -1
            for bit in 0..<count where missing.contains(start + bit) {
                bitmap[bit >> 3] |= 0x80 >> UInt8(bit & 7)
                last = bit
            }
            if last >= 0 {
                let used = last + 1
                entries.append(
                    .init(
                        piece: piece, firstBlock: start, blockCount: used, bitmap: Array(bitmap.prefix((used + 7) / 8)))
                )
            }
            start += count
        }
        return entries
    }
}
