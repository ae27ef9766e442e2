import Metainfo
import TestSupport
import Testing

@testable import Multicast

@Suite struct MulticastReceiverTests {
    static func receiver(_ image: TestImage, configuration: MulticastReceiver.Configuration = .init(), seed: UInt64 = 3)
        -> MulticastReceiver
    {
        MulticastReceiver(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: image.layout.pieceCount),
            configuration: configuration, seed: seed)
    }

    @Test func piecesAssembleFromReorderedAndDuplicatedPackets() {
        let image = TestImage(pieces: 5, pieceLength: 10_000, lastLength: 2500)
        var receiver = Self.receiver(image)
        var random = SplitMix64(seed: 8)
        var packets = image.fullPass()
        packets += packets.filter { _ in random.next() % 3 == 0 }
        packets.shuffle(using: &random)
        _ = receiver.hear([image.announce(phase: .sending, cursor: 0)], now: 1)
        let events = receiver.hear(packets, now: 1)
        let pieces = assembled(in: events)
        #expect(pieces.count == 5, "each piece handed over once")
        for (piece, bytes) in pieces { #expect(bytes == image.pieces[piece.value]) }
        #expect(receiver.counters.duplicates == packets.count - image.fullPass().count)
        #expect(receiver.buffered == 0)
        for piece in image.layout.pieces { receiver.pieceVerified(piece, now: 1) }
        #expect(receiver.have.isComplete)
    }

    /// Random loss in the first pass; once the pass is over (an announce says so) and the NACK
    /// window has passed, the NACKs name exactly the blocks that were lost.
    @Test(arguments: [1, 2, 3, 4]) func nacksNameExactlyTheLostBlocks(seed: UInt64) {
        let image = TestImage(pieces: 30, pieceLength: 9000, lastLength: 100)
        var receiver = Self.receiver(image, seed: seed)
        var random = SplitMix64(seed: seed)
        var lost: [Int: Set<Int>] = [:]
        var events = receiver.hear([image.announce(phase: .announcing, cursor: 0), image.plan()], now: 0)
        for packet in image.fullPass() {
            guard case .data(let block, _) = packet.body else { continue }
            if random.next() % 100 < 8 || (block.piece.value == 7) {
                lost[block.piece.value, default: []].insert(block.block)
            } else {
                let heard = receiver.hear([packet], now: 0.5)
                for (piece, _) in assembled(in: heard) { receiver.pieceVerified(piece, now: 0.5) }
                events += heard
            }
        }
        events += receiver.hear([image.announce(phase: .collecting, cursor: 30)], now: 1)
        for step in 0...30 { events += receiver.tick(now: 1 + Double(step) * 0.01) }
        #expect(assembled(in: events).count == 30 - lost.count)
        #expect(namedBlocks(nacks(in: events), layout: image.layout) == lost)
        #expect(nacks(in: events).allSatisfy { $0.target == 42 && $0.pass == 0 && $0.missingPieces == lost.count })
        #expect(
            nacks(in: events).first?.entries.contains(.rest(of: PieceIndex(7))) == true,
            "a piece never heard is named in 10 bytes")
        let loss = nacks(in: events).first?.lossPermille ?? 0
        #expect(loss > 20 && loss < 200, "loss estimated from sequence gaps: \(loss)")
    }

    @Test func nacksWaitUntilTheSenderHasPassedThePiece() {
        let image = TestImage(pieces: 4, pieceLength: 2800)
        var receiver = Self.receiver(image)
        let pass = image.fullPass()
        // Piece 0's second block is lost; the sender is still on piece 1.
        var events = receiver.hear(
            [image.announce(phase: .sending, cursor: 0), image.plan(), pass[0], pass[2]], now: 0)
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(3), now: 0))
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(0), now: 0), "reported and awaiting repair")
        events += receiver.tick(now: 0.2)
        #expect(namedBlocks(nacks(in: events), layout: image.layout) == [0: [1]])
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(1), now: 0.2), "the piece in progress")
        #expect(receiver.cursor == 1)
    }

    /// With the sender asking for one covering report, a receiver that heard another's NACK naming
    /// every block it misses keeps quiet; one that misses more still reports.
    @Test func nacksCoveredByAnotherReceiverAreSuppressed() {
        let image = TestImage(pieces: 3, pieceLength: 4200)
        let pass = image.fullPass()
        var quiet = Self.receiver(image, seed: 1)
        var loud = Self.receiver(image, seed: 2)
        let start = [image.announce(phase: .sending, cursor: 0, suppressAfter: 1), image.plan()]
        // Both lose block 1 of piece 0; `loud` also loses block 2 of piece 1.
        _ = quiet.hear(start + pass.enumerated().filter { $0.offset != 1 }.map(\.element), now: 0)
        _ = loud.hear(start + pass.enumerated().filter { $0.offset != 1 && $0.offset != 5 }.map(\.element), now: 0)
        _ = quiet.hear([image.announce(phase: .collecting, cursor: 3)], now: 0.01)
        _ = loud.hear([image.announce(phase: .collecting, cursor: 3)], now: 0.01)
        // `loud` reports first (its window is over); `quiet` hears it before its own timer fires.
        let loudNacks = loud.tick(now: 0.2)
        #expect(namedBlocks(nacks(in: loudNacks), layout: image.layout) == [0: [1], 1: [2]])
        for case .sendNack(let bytes) in loudNacks { _ = quiet.received(bytes, now: 0.05) }
        let quietEvents = quiet.tick(now: 0.2)
        #expect(nacks(in: quietEvents).isEmpty && quiet.counters.reportsSuppressed == 1)
        #expect(quiet.shouldLeaveToMulticast(PieceIndex(0), now: 0.2), "a suppressed piece still waits for the repair")

        // Asked for two covering reports, one is not enough.
        var needsTwo = Self.receiver(image, seed: 1)
        let start2 = [image.announce(phase: .sending, cursor: 0, suppressAfter: 2), image.plan()]
        _ = needsTwo.hear(start2 + pass.enumerated().filter { $0.offset != 1 }.map(\.element), now: 0)
        _ = needsTwo.hear([image.announce(phase: .collecting, cursor: 3, suppressAfter: 2)], now: 0.01)
        for case .sendNack(let bytes) in loudNacks { _ = needsTwo.received(bytes, now: 0.05) }
        #expect(namedBlocks(nacks(in: needsTwo.tick(now: 0.2)), layout: image.layout) == [0: [1]])
    }

    /// With a sender that repairs what two receivers lost, a block we alone lost is BitTorrent's a
    /// NACK window after the sender passed it: the partial piece is handed over with exactly the
    /// lost bytes missing. A block another receiver reported too waits for the group's repair.
    @Test func whatTooFewLostIsHandedToBitTorrentAfterTheWindow() throws {
        let image = TestImage(pieces: 3, pieceLength: 4200)
        let pass = image.fullPass()
        var alone = Self.receiver(image, seed: 1)
        var other = Self.receiver(image, seed: 2)
        let start = [image.announce(phase: .sending, cursor: 0, suppressAfter: 2), image.plan()]
        // Both lose block 1 of piece 0; `alone` also loses block 2 of piece 1.
        _ = alone.hear(start + pass.enumerated().filter { $0.offset != 1 && $0.offset != 5 }.map(\.element), now: 0)
        _ = other.hear(start + pass.enumerated().filter { $0.offset != 1 }.map(\.element), now: 0)
        let end = image.announce(phase: .collecting, cursor: 3, suppressAfter: 2)
        _ = alone.hear([end], now: 0.01)
        _ = other.hear([end], now: 0.01)
        // Within the NACK window (0.1 s here) and the margin, both report and hear each other.
        var events: [MulticastReceiver.Event] = []
        for step in 2...15 {
            let now = Double(step) / 100
            for case .sendNack(let bytes) in other.tick(now: now) { _ = alone.received(bytes, now: now) }
            let mine = alone.tick(now: now)
            for case .sendNack(let bytes) in mine { _ = other.received(bytes, now: now) }
            events += mine
        }
        #expect(namedBlocks(nacks(in: events), layout: image.layout) == [0: [1], 1: [2]], "both are reported")
        #expect(!events.contains { if case .handOver = $0 { true } else { false } })
        #expect(alone.shouldLeaveToMulticast(PieceIndex(1), now: 0.15), "until the others' reports are in")
        events = alone.tick(now: 0.01 + 0.1 + MulticastReceiver.judgeMargin + 0.01)
        let handed = events.compactMap { if case .handOver(let partial) = $0 { partial } else { nil } }
        let partial = try #require(handed.first)
        #expect(handed.count == 1 && partial.piece == PieceIndex(1))
        let third = 2 * MulticastPacket.blockLength
        #expect(partial.missing == [third..<4200])
        #expect(partial.bytes[0..<third] == image.pieces[1][0..<third])
        #expect(alone.counters.handedOver == 1)
        #expect(!alone.shouldLeaveToMulticast(PieceIndex(1), now: 0.3), "BitTorrent's now")
        #expect(alone.shouldLeaveToMulticast(PieceIndex(0), now: 0.3), "two reports: the group repairs it")
        // A repair of piece 1 on the group changes nothing now; BitTorrent's copy is the one verified.
        #expect(assembled(in: alone.hear([pass[5]], now: 0.4)).isEmpty)
        alone.pieceVerified(PieceIndex(1), now: 0.5)
        #expect(alone.have[PieceIndex(1)])
    }

    @Test func nacksAreRateLimited() {
        // 400 pieces never heard, and a bitmap per piece: more than one packet's worth.
        let image = TestImage(pieces: 400, pieceLength: 4200)
        var configuration = MulticastReceiver.Configuration()
        configuration.nackRate = 10
        configuration.nackBurst = 2
        var receiver = Self.receiver(image, configuration: configuration)
        let pass = image.fullPass().enumerated().filter { $0.offset % 3 == 1 }.map(\.element)
        _ = receiver.hear([image.announce(phase: .sending, cursor: 0), image.plan()] + pass, now: 0)
        _ = receiver.hear([image.announce(phase: .collecting, cursor: 400)], now: 0)
        var sentAt: [Double] = []
        var all: [MulticastPacket.Nack] = []
        for step in 0..<300 {
            let now = 0.2 + Double(step) * 0.01
            let found = nacks(in: receiver.tick(now: now))
            sentAt += found.map { _ in now }
            all += found
        }
        #expect(sentAt.count >= 4, "\(sentAt.count) packets")
        #expect(sentAt.filter { $0 < 0.5 }.count <= 2 + 3, "a burst of 2, then 10 a second")
        let named = namedBlocks(all, layout: image.layout)
        #expect(named.count == 400 && named.values.allSatisfy { $0 == [0, 2] })
    }

    @Test func aLateJoinerCompletesFromTheCarousel() {
        let image = TestImage(pieces: 12, pieceLength: 5600)
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 12, all: true),
            configuration: .init(rate: 20_000_000, mode: .carousel), seed: 4)
        var receiver = Self.receiver(image)
        var now = 0.0
        var joined = false
        var assembledPieces = 0
        while now < 3 && !receiver.have.isComplete {
            for action in sender.next(now: now) {
                guard let datagram = image.datagram(action, from: sender) else { continue }
                // The receiver joins in the middle of the first full pass.
                if case .sendData(let block) = action, block.piece.value == 6 { joined = true }
                guard joined else { continue }
                for event in receiver.received(datagram, now: now) {
                    if case .pieceAssembled(let piece, let bytes) = event {
                        #expect(bytes == image.pieces[piece.value])
                        receiver.pieceVerified(piece, now: now)
                        assembledPieces += 1
                    }
                }
            }
            for case .sendNack(let bytes) in receiver.tick(now: now) { sender.received(bytes, now: now) }
            now += 0.001
        }
        #expect(receiver.have.isComplete && assembledPieces == 12, "complete at \(now)")
    }

    @Test func garbageAndOtherSessionsAreCountedAndIgnored() {
        let image = TestImage(pieces: 3, pieceLength: 2800)
        var receiver = Self.receiver(image)
        let other = MulticastSession(value: 12345)
        // Another torrent's announce; its data (which names no session) is from an unknown sender.
        var otherAnnounce = image.announce(phase: .sending, cursor: 0)
        otherAnnounce.session = other
        var events = receiver.hear([otherAnnounce] + image.fullPass(session: other), now: 0)
        events += receiver.received([0x56, 0x4D, 0x53], now: 0)
        events += receiver.received([UInt8](repeating: 0xEE, count: 1000), now: 0)
        // Valid structure, our session, but naming a piece the torrent does not have.
        events += receiver.hear(
            [
                MulticastPacket(
                    session: testSession, instance: 42,
                    body: .data(
                        .init(
                            piece: PieceIndex(3),
                            offset: 0, length: 10, sequence: 0, pass: 0, repair: false),
                        payload: [UInt8](repeating: 0, count: 10)))
            ], now: 0)
        #expect(events.isEmpty && receiver.buffered == 0 && receiver.cursor == nil)
        #expect(receiver.counters.otherSession == 1 && receiver.counters.unknownSender == 6)
        #expect(receiver.counters.garbage == 2 && receiver.counters.invalid == 1)
        #expect(!receiver.shouldLeaveToMulticast(PieceIndex(0), now: 0), "no sender heard: BitTorrent fetches")
    }

    @Test func memoryForPartialPiecesIsBoundedOldestFirst() {
        let image = TestImage(pieces: 10, pieceLength: 14000)
        var configuration = MulticastReceiver.Configuration()
        configuration.maxBufferedBytes = 3 * 14000
        var receiver = Self.receiver(image, configuration: configuration)
        _ = receiver.hear([image.announce(phase: .sending, cursor: 0)], now: 0)
        // The first block of every piece only.
        let firsts = image.fullPass().filter {
            if case .data(let block, _) = $0.body { block.offset == 0 } else { false }
        }
        _ = receiver.hear(firsts, now: 0)
        #expect(receiver.buffered == 3 * 14000 && receiver.counters.partialsDropped == 7)
        #expect(receiver.handOver(PieceIndex(0)) == nil, "the oldest were dropped")
        let partial = receiver.handOver(PieceIndex(9))
        let block = MulticastPacket.blockLength
        #expect(partial?.missing == [block..<14000] && partial?.bytes.prefix(block) == image.pieces[9].prefix(block))
        #expect(receiver.buffered == 2 * 14000)
    }

    /// A piece from the group that fails its hash is BitTorrent's from then on: the group's blocks
    /// of it may be forged (anyone on the LAN can send them), so they are not taken or asked for
    /// again, and a forger costs each piece one verification at most.
    @Test func aPieceThatFailsItsHashIsLeftToBitTorrent() {
        let image = TestImage(pieces: 2, pieceLength: 2800)
        var receiver = Self.receiver(image)
        var events = receiver.hear(
            [image.announce(phase: .sending, cursor: 0), image.plan()] + image.fullPass(), now: 0)
        #expect(assembled(in: events).count == 2)
        receiver.pieceVerified(PieceIndex(1), now: 0)
        _ = receiver.hear([image.announce(phase: .collecting, cursor: 2)], now: 0)
        receiver.pieceFailed(PieceIndex(0), now: 0.01)
        events = receiver.tick(now: 0.2)
        #expect(receiver.counters.hashFailures == 1)
        #expect(namedBlocks(nacks(in: events), layout: image.layout) == [:], "not reported to the group")
        #expect(receiver.refuses(PieceIndex(0)) && !receiver.shouldLeaveToMulticast(PieceIndex(0), now: 0.2))
        #expect(assembled(in: receiver.hear(image.fullPass(), now: 0.3)).isEmpty)
    }

    @Test func idleEndedAndObtainedElsewhereHandTheRestToBitTorrent() {
        let image = TestImage(pieces: 4, pieceLength: 2800)
        var receiver = Self.receiver(image)
        _ = receiver.hear([image.announce(phase: .sending, cursor: 0), image.plan()], now: 0)
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(2), now: 1))
        receiver.pieceObtainedElsewhere(PieceIndex(2), now: 1)
        #expect(!receiver.shouldLeaveToMulticast(PieceIndex(2), now: 1))
        #expect(joins(in: receiver.tick(now: 2)).count == 1, "the sender learns we listen")
        #expect(receiver.tick(now: 2.1) == [])
        #expect(receiver.tick(now: 3.5) == [.senderIdle])
        #expect(!receiver.shouldLeaveToMulticast(PieceIndex(3), now: 3.5))
        #expect(receiver.tick(now: 4) == [])
        _ = receiver.hear([image.announce(phase: .sending, cursor: 0)], now: 5)
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(3), now: 5), "heard again")
        // A DONE once the sender fell silent (0.2 s after its last announce) ends the session.
        let events = receiver.hear(
            [MulticastPacket(session: testSession, instance: 42, body: .done(.init(pass: 0)))], now: 5.2)
        #expect(events == [.sessionEnded] && !receiver.shouldLeaveToMulticast(PieceIndex(3), now: 5.2))
        #expect(receiver.tick(now: 10) == [])
    }

    /// Once mode: a piece reported and then left out of the repair plan is BitTorrent's.
    @Test func aPieceTheRepairPassLeavesOutIsDeclined() {
        let image = TestImage(pieces: 3, pieceLength: 2800)
        var receiver = Self.receiver(image)
        let pass = image.fullPass()
        _ = receiver.hear(
            [image.announce(phase: .sending, cursor: 0), image.plan()] + [pass[0], pass[2], pass[4]], now: 0)
        _ = receiver.hear([image.announce(phase: .collecting, cursor: 3)], now: 0)
        #expect(namedBlocks(nacks(in: receiver.tick(now: 0.2)), layout: image.layout) == [0: [1], 1: [1], 2: [1]])
        _ = receiver.hear(
            [image.announce(pass: 1, phase: .sending, cursor: 0), image.plan(pass: 1, pieces: [0, 2])], now: 0.3)
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(2), now: 0.3))
        // Left out once: perhaps our NACK was lost, so it is reported again.
        #expect(namedBlocks(nacks(in: receiver.tick(now: 0.5)), layout: image.layout) == [1: [1]])
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(1), now: 0.5))
        _ = receiver.hear(
            [image.announce(pass: 2, phase: .sending, cursor: 0), image.plan(pass: 2, pieces: [0])], now: 0.6)
        #expect(!receiver.shouldLeaveToMulticast(PieceIndex(1), now: 0.6), "left out twice: BitTorrent's")
        #expect(nacks(in: receiver.tick(now: 1)).allSatisfy { $0.entries.allSatisfy { $0.piece != PieceIndex(1) } })
    }

    /// A restarted sender (a new instance) is followed once the old one is silent; while the old
    /// one is active, the other's data is kept but its passes and DONE move nothing.
    @Test func anotherSenderInstanceIsFollowedOnlyWhenOursIsGone() {
        let image = TestImage(pieces: 4, pieceLength: 2800)
        var receiver = Self.receiver(image)
        _ = receiver.hear([image.announce(phase: .sending, cursor: 0), image.plan()], now: 0)
        let stranger = image.fullPass(instance: 77, pass: 5)
        var events = receiver.hear(
            [image.announce(instance: 77, pass: 5, phase: .sending, cursor: 3), stranger[0], stranger[1]], now: 1)
        events += receiver.hear(
            [MulticastPacket(session: testSession, instance: 77, body: .done(.init(pass: 5)))], now: 1)
        #expect(assembled(in: events).map(\.0) == [PieceIndex(0)], "its data is data")
        #expect(!events.contains(.sessionEnded) && receiver.cursor == 0)
        #expect(receiver.shouldLeaveToMulticast(PieceIndex(1), now: 1))
        events = receiver.hear([image.announce(instance: 77, pass: 6, phase: .sending, cursor: 2)], now: 3.5)
        #expect(receiver.cursor == 2, "the first sender is silent for 3.5 s: the new one is followed")
        #expect(
            receiver.hear([MulticastPacket(session: testSession, instance: 77, body: .done(.init(pass: 6)))], now: 3.7)
                == [.sessionEnded])
    }
}
