import Metainfo
import TestSupport
import Testing

@testable import Multicast

@Suite struct MulticastSenderTests {
    static func decoded(_ actions: [MulticastSender.Action]) -> [MulticastPacket.Body] {
        actions.compactMap {
            if case .sendControl(let bytes) = $0 { try? MulticastPacket.decode(bytes).body } else { nil }
        }
    }

    static func blocks(_ actions: [MulticastSender.Action]) -> [MulticastPacket.DataBlock] {
        actions.compactMap { if case .sendData(let block) = $0 { block } else { nil } }
    }

    /// Runs the sender at 1 ms steps until `end` or until it finishes, returning (time, action) pairs.
    static func run(
        _ sender: inout MulticastSender, from start: Double = 0, until end: Double,
        hearing: (Double, [MulticastSender.Action]) -> [[UInt8]] = { _, _ in [] }
    ) -> [(Double, MulticastSender.Action)] {
        var log: [(Double, MulticastSender.Action)] = []
        var now = start
        while now < end && !sender.isFinished {
            let actions = sender.next(now: now)
            log += actions.map { (now, $0) }
            for datagram in hearing(now, actions) { sender.received(datagram, now: now) }
            now += 0.001
        }
        return log
    }

    @Test func pacingHoldsTheRateOverSimulatedTime() {
        let image = TestImage(pieces: 200, pieceLength: 64 << 10)
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 200, all: true),
            configuration: .init(rate: 8_000_000), seed: 1)
        let log = Self.run(&sender, until: 10)
        // 1 MB/s: data from 0.2 s (after the announces) to 10 s is 9.8 MB on the wire, plus at most
        // the bucket (2 ms, or two datagrams) and the announces.
        let total = sender.counters.wireBytes
        #expect(total >= 9_790_000 && total <= 9_800_000 + 4000, "\(total) bytes in 10 s")
        // And no 100 ms window carries more than its share plus the bucket.
        var windows: [Int: Int] = [:]
        for (time, action) in log {
            guard case .sendData(let block) = action else { continue }
            windows[Int(time * 10), default: 0] += block.length + 64
        }
        #expect(windows.values.allSatisfy { $0 <= 100_000 + 4000 }, "\(windows.values.max() ?? 0)")
    }

    @Test func announcesComeFirstThenEveryBlockInOrder() {
        let image = TestImage(pieces: 6, pieceLength: 5000, lastLength: 1500)
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 6, all: true),
            configuration: .init(rate: 100_000_000), seed: 1)
        let log = Self.run(&sender, until: 0.25)
        let firstData = log.firstIndex { if case .sendData = $0.1 { true } else { false } }!
        let announces = Self.decoded(log[..<firstData].map(\.1)).filter {
            if case .announce = $0 { true } else { false }
        }
        #expect(announces.count == 3, "three announces, 0.1 s apart, before any data")
        #expect(log[firstData].0 >= 0.2)
        guard case .announce(let announce) = announces[0] else { return }
        #expect(
            announce.pieceCount == 6 && announce.phase == .announcing && announce.senderComplete && !announce.carousel)
        let blocks = Self.blocks(log.map(\.1))
        let expected = image.layout.pieces.flatMap { piece in
            (0..<image.layout.multicastBlockCount(of: piece)).map { "\(piece.value):\($0 * MulticastPacket.blockLength)" }
        }
        #expect(blocks.map { "\($0.piece.value):\($0.offset)" } == expected)
        #expect(blocks.map(\.sequence) == (0..<UInt16(blocks.count)).map { $0 })
        #expect(blocks.allSatisfy { !$0.repair && $0.pass == 0 })
    }

    @Test func aSenderWithSomePiecesSendsOnlyThoseAndPlansThem() {
        let image = TestImage(pieces: 8, pieceLength: 2800)
        var have = Bitfield(pieceCount: 8)
        for piece in [1, 4, 5] { have.insert(PieceIndex(piece)) }
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: have,
            configuration: .init(rate: 100_000_000), seed: 1)
        let log = Self.run(&sender, until: 0.3).map(\.1)
        #expect(Set(Self.blocks(log).map(\.piece.value)) == [1, 4, 5])
        let plans = Self.decoded(log).compactMap { if case .plan(let plan) = $0 { plan } else { nil } }
        #expect(plans.first.map { plan in (0..<8).filter { plan.contains(PieceIndex($0)) } } == [1, 4, 5])
    }

    /// With `minReceivers`, the pass waits, announcing, until that many receivers joined (an empty
    /// NACK each), and starts as soon as the last one did; or after the start timeout.
    @Test func theFirstPassWaitsForReceiversToJoin() {
        let image = TestImage(pieces: 2, pieceLength: 2800)
        var configuration = MulticastSender.Configuration(rate: 100_000_000)
        configuration.minReceivers = 2
        configuration.startTimeout = 5
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 2, all: true),
            configuration: configuration, seed: 1)
        func join(_ receiver: UInt32) -> [UInt8] {
            MulticastPacket(
                session: testSession, instance: receiver,
                body: .nack(.init(target: sender.instance, pass: 0, lossPermille: 0, missingPieces: 2, entries: [])))
            .encode()
        }
        var log = Self.run(&sender, until: 1)
        #expect(Self.blocks(log.map(\.1)).isEmpty, "nobody joined")
        #expect(Self.decoded(log.map(\.1)).count > 10, "announcing while waiting")
        sender.received(join(7), now: 1)
        sender.received(join(7), now: 1)
        log = Self.run(&sender, from: 1, until: 2)
        #expect(Self.blocks(log.map(\.1)).isEmpty, "one receiver, counted once")
        sender.received(join(8), now: 2)
        log = Self.run(&sender, from: 2, until: 2.01)
        #expect(Self.blocks(log.map(\.1)).count == 4, "the pass starts at once")

        var alone = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 2, all: true),
            configuration: configuration, seed: 2)
        log = Self.run(&alone, until: 5.1)
        let first = log.first { if case .sendData = $0.1 { true } else { false } }
        #expect(first.map { $0.0 >= 5 && $0.0 < 5.1 } == true, "after the timeout: \(String(describing: first?.0))")
    }

    /// Four receivers are known (their completion reports); with a threshold of one half, a block
    /// three of them miss is sent again and a block one misses is left to BitTorrent.
    @Test func repairPassesSendWhatEnoughReceiversMiss() throws {
        let image = TestImage(pieces: 4, pieceLength: 4200)
        var configuration = MulticastSender.Configuration(rate: 100_000_000)
        configuration.repairThreshold = 0.5
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 4, all: true),
            configuration: configuration, seed: 1)
        func nack(from receiver: UInt32, _ entries: [MulticastPacket.NackEntry]) -> [UInt8] {
            MulticastPacket(
                session: testSession, instance: receiver,
                body: .nack(
                    .init(
                        target: sender.instance, pass: 0,
                        lossPermille: 10, missingPieces: entries.count, complete: entries.isEmpty, entries: entries))
            ).encode()
        }
        let firstPass = Self.run(&sender, until: 0.25)
        #expect(Self.blocks(firstPass.map(\.1)).count == 12)
        let block0 = MulticastPacket.NackEntry(piece: PieceIndex(1), firstBlock: 0, blockCount: 1, bitmap: [0x80])
        let block2 = MulticastPacket.NackEntry(piece: PieceIndex(2), firstBlock: 2, blockCount: 1, bitmap: [0x80])
        sender.received(nack(from: 10, [block0]), now: 0.25)
        sender.received(nack(from: 11, [block0, block2]), now: 0.25)
        sender.received(nack(from: 12, [block0]), now: 0.25)
        sender.received(nack(from: 13, []), now: 0.25)
        sender.received(nack(from: 13, []), now: 0.26)
        #expect(
            sender.receiverCount == 4 && sender.counters.nacksReceived == 5 && sender.counters.highestReportedLoss == 10
        )

        let rest = Self.run(&sender, from: 0.25, until: 5).map(\.1)
        let repairs = Self.blocks(rest)
        #expect(repairs.map { "\($0.piece.value):\($0.offset)" } == ["1:0"])
        #expect(repairs.allSatisfy { $0.repair && $0.pass == 1 })
        let bodies = Self.decoded(rest)
        let repairPlan = bodies.compactMap { if case .plan(let plan) = $0, plan.pass == 1 { plan } else { nil } }.first
        #expect(repairPlan.map { plan in (0..<4).filter { plan.contains(PieceIndex($0)) } } == [1])
        let suppress = bodies.compactMap { if case .announce(let a) = $0, a.pass == 1 { a.suppressAfter } else { nil } }
            .first
        #expect(suppress == 2, "receivers stop reporting once 2 of the 4 did")
        #expect(bodies.filter { if case .done = $0 { true } else { false } }.count == 3)
        #expect(rest.last == .finished && sender.isFinished && sender.nextWakeup == nil)
        #expect(sender.counters.repairPackets == 1 && sender.counters.dataPackets == 12 && sender.counters.passes == 2)
    }

    @Test func onceModeEndsAfterTheRoundLimitEvenIfNacksGoOn() {
        let image = TestImage(pieces: 2, pieceLength: 1400)
        var configuration = MulticastSender.Configuration(rate: 100_000_000)
        configuration.maxRepairRounds = 2
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 2, all: true),
            configuration: configuration, seed: 1)
        let instance = sender.instance
        // A receiver that never gets piece 0 and says so after every pass (in that pass's NACKs).
        let log = Self.run(&sender, until: 20) { _, actions in
            let collecting = Self.decoded(actions).compactMap {
                if case .announce(let a) = $0, a.phase == .collecting { a.pass } else { nil }
            }.first
            return collecting.map { pass in
                [
                    MulticastPacket(
                        session: testSession, instance: 9,
                        body: .nack(
                            .init(
                                target: instance, pass: pass, lossPermille: 0,
                                missingPieces: 1, entries: [.rest(of: PieceIndex(0))]))
                    ).encode()
                ]
            } ?? []
        }
        #expect(sender.isFinished && sender.counters.repairPackets == 2 && sender.counters.passes == 3)
        #expect(log.last?.0 ?? 99 < 3)
    }

    @Test func carouselCyclesAndPutsRepairsBeforeTheNextFullPass() {
        let image = TestImage(pieces: 3, pieceLength: 2800)
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 3, all: true),
            configuration: .init(rate: 10_000_000, mode: .carousel), seed: 1)
        let instance = sender.instance
        var asked = false
        let log = Self.run(&sender, until: 0.4) { now, _ in
            guard now > 0.2, !asked else { return [] }
            asked = true
            return [
                MulticastPacket(
                    session: testSession, instance: 9,
                    body: .nack(
                        .init(
                            target: instance, pass: 0, lossPermille: 0,
                            missingPieces: 1,
                            entries: [.init(piece: PieceIndex(2), firstBlock: 1, blockCount: 1, bitmap: [0x80])]))
                ).encode()
            ]
        }
        let blocks = Self.blocks(log.map(\.1))
        let passes = blocks.map(\.pass)
        #expect(!sender.isFinished && Set(passes).count >= 4, "passes go on: \(Set(passes).sorted())")
        let repair = blocks.firstIndex { $0.repair }!
        #expect(blocks[repair].piece == PieceIndex(2) && blocks[repair].offset == MulticastPacket.blockLength)
        #expect(
            blocks[repair + 1].pass == blocks[repair].pass &+ 1 && !blocks[repair + 1].repair
                && blocks[repair + 1].piece == PieceIndex(0),
            "a full pass follows the repair pass")
        sender.stop(now: 0.4)
        let end = Self.run(&sender, from: 0.4, until: 1).map(\.1)
        #expect(
            Self.decoded(end).filter { if case .done = $0 { true } else { false } }.count == 3 && end.last == .finished)
    }

    @Test func packetsThatAreNotNacksForUsAreCountedAndIgnored() {
        let image = TestImage(pieces: 2, pieceLength: 1400)
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 2, all: true),
            configuration: .init(rate: 1_000_000), seed: 1)
        sender.received([1, 2, 3], now: 0)
        sender.received(
            MulticastPacket(
                session: MulticastSession(value: 1), instance: 9,
                body: .nack(
                    .init(
                        target: sender.instance,
                        pass: 0, lossPermille: 0, missingPieces: 0, complete: true, entries: []))
            ).encode(), now: 0)
        sender.received(
            MulticastPacket(
                session: testSession, instance: 9,
                body: .nack(
                    .init(
                        target: sender.instance &+ 1,
                        pass: 0, lossPermille: 0, missingPieces: 0, complete: true, entries: []))
            ).encode(), now: 0)
        sender.received(image.announce(phase: .sending, cursor: 0).encode(), now: 0)
        #expect(sender.counters.ignored == 4 && sender.receiverCount == 0)
    }

    @Test func waitingUntilTheWakeupIsEnough() {
        let image = TestImage(pieces: 20, pieceLength: 14000)
        var sender = MulticastSender(
            session: testSession, layout: image.layout, have: Bitfield(pieceCount: 20, all: true),
            configuration: .init(rate: 2_000_000), seed: 1)
        var now = 0.0
        var calls = 0
        while let wakeup = sender.nextWakeup, calls < 10_000 {
            now = max(now, wakeup)
            _ = sender.next(now: now)
            calls += 1
        }
        #expect(sender.isFinished && sender.counters.dataPackets == 200)
        // 200 datagrams of 1464 bytes at 250 kB/s, after 0.2 s of announces, then 0.5 s collecting.
        #expect(now > 1.7 && now < 2.2, "\(now)")
    }

    /// With a batch, the runtime is woken once per few datagrams (sent back to back), and the
    /// rate over time is the same as with a wake-up per datagram.
    @Test func aBatchWakesOnceForSeveralDatagramsAtTheSameRate() {
        let image = TestImage(pieces: 40, pieceLength: 14000)
        func run(batch: Double) -> (end: Double, wakeups: Int, most: Int) {
            var configuration = MulticastSender.Configuration(rate: 8_000_000)
            configuration.burst = 0.008
            configuration.batch = batch
            var sender = MulticastSender(
                session: testSession, layout: image.layout, have: Bitfield(pieceCount: 40, all: true),
                configuration: configuration, seed: 1)
            var (now, wakeups, most, calls) = (0.0, 0, 0, 0)
            while let wakeup = sender.nextWakeup, calls < 10_000 {
                calls += 1
                now = max(now, wakeup)
                let sent = Self.blocks(sender.next(now: now)).count
                if sent > 0 { wakeups += 1 }
                most = max(most, sent)
            }
            #expect(sender.isFinished && sender.counters.dataPackets == 400)
            return (now, wakeups, most)
        }
        let single = run(batch: 0)
        let batched = run(batch: 0.004)
        // 4 ms of 1 MB/s is 4,000 bytes: two or three datagrams of 1,500 each time; never more
        // than the bucket (8 ms, five datagrams: the first wake-up, with the bucket full).
        #expect(single.most <= 6 && single.wakeups > 390, "\(single)")
        #expect(batched.wakeups > 130 && batched.wakeups < 200 && batched.most <= 6, "\(batched)")
        #expect(abs(batched.end - single.end) < 0.01, "\(batched.end) against \(single.end)")
    }
}
