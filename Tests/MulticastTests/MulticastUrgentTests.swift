import Metainfo
import TestSupport
import Testing

@testable import Multicast

/// mUFS on the booster: a receiver whose reader waits for pieces asks the sender for them, the
/// sender puts them on the group ahead of its pass, and every receiver keeps them.
@Suite struct MulticastUrgentTests {
    /// A sender and two receivers on one simulated group, advanced 1 ms at a time: every datagram
    /// reaches every other member at once.
    struct Group {
        let image: TestImage
        var sender: MulticastSender
        var receivers: [MulticastReceiver]
        var now = 0.0
        /// Data blocks the sender sent, in order.
        var sent: [MulticastPacket.DataBlock] = []
        /// Pieces each receiver assembled, and when.
        var assembled: [[Int: Double]]

        init(pieces: Int = 40, configuration: MulticastSender.Configuration = .init(rate: 8_000_000)) {
            let image = TestImage(pieces: pieces, pieceLength: 9000)
            self.image = image
            sender = MulticastSender(
                session: testSession, layout: image.layout, have: Bitfield(pieceCount: pieces, all: true),
                configuration: configuration, seed: 1)
            receivers = (0..<2).map {
                MulticastReceiver(session: testSession, layout: image.layout, have: Bitfield(pieceCount: pieces), seed: UInt64(10 + $0))
            }
            assembled = [[:], [:]]
        }

        mutating func deliver(_ events: [MulticastReceiver.Event], from index: Int) {
            for event in events {
                switch event {
                case .sendNack(let bytes):
                    sender.received(bytes, now: now)
                    for other in receivers.indices where other != index { _ = receivers[other].received(bytes, now: now) }
                case .pieceAssembled(let piece, let bytes):
                    #expect(bytes == image.pieces[piece.value])
                    assembled[index][piece.value] = now
                    receivers[index].pieceVerified(piece, now: now)
                default: break
                }
            }
        }

        mutating func step() {
            for action in sender.next(now: now) {
                if case .sendData(let block) = action { sent.append(block) }
                guard let bytes = image.datagram(action, from: sender) else { continue }
                for index in receivers.indices { deliver(receivers[index].received(bytes, now: now), from: index) }
            }
            for index in receivers.indices { deliver(receivers[index].tick(now: now), from: index) }
            now += 0.001
        }

        mutating func run(until end: Double) { while now < end { step() } }
        mutating func run(while condition: (Group) -> Bool) { while condition(self) && now < 60 { step() } }
    }

    @Test func aReadersPiecesGoOutAheadOfThePassAndEveryReceiverKeepsThem() throws {
        var group = Group()
        group.run { $0.sent.count < 10 }  // the pass is at piece 1 or 2 of 40
        let before = group.sent.count
        let asked = group.receivers[0].requestUrgent([PieceIndex(30), PieceIndex(31)], now: group.now)
        let request = try #require(asked)
        guard case .sendNack(let bytes) = request, case .nack(let nack) = try MulticastPacket.decode(bytes).body else {
            Issue.record("not a NACK")
            return
        }
        #expect(nack.urgent && Set(nack.entries.map(\.piece.value)) == [30, 31])
        group.deliver([request], from: 0)
        #expect(group.sender.counters.urgentRequests == 1)
        group.run { $0.assembled[1][31] == nil }

        // Pieces 30 and 31 came next, whole, tagged as another pass and outside its sequence.
        let urgent = Array(group.sent[before..<(before + 14)])
        #expect(urgent.map(\.piece.value) == Array(repeating: 30, count: 7) + Array(repeating: 31, count: 7))
        #expect(urgent.allSatisfy { $0.repair && $0.sequence == 0 && $0.pass != MulticastPacket.DataBlock.passTag(group.sender.pass) })
        // Both receivers hold them, long before the pass gets there, and their view of the pass
        // did not jump ahead: the pieces in between are still the group's.
        for index in 0..<2 {
            #expect(group.assembled[index][30] != nil && group.assembled[index][31] != nil)
            #expect((group.receivers[index].cursor ?? 99) < 10)
            #expect(group.receivers[index].shouldLeaveToMulticast(PieceIndex(20), now: group.now))
        }
        // The pass goes on where it was, its sequence unbroken.
        let pass = group.sent.filter { $0.sequence != 0 || !$0.repair }
        #expect(zip(pass, pass.dropFirst()).allSatisfy { $1.sequence == $0.sequence &+ 1 })
        // The other receiver did not take the request for a loss report of its own.
        #expect(group.receivers[1].otherReportCount == 0)

        // Asked again at once: the receiver holds back (and would ask only what it lacks).
        let again = group.receivers[0].requestUrgent([PieceIndex(30), PieceIndex(31)], now: group.now)
        #expect(again == nil)
        group.run { $0.assembled[0].count < 40 }
        #expect(group.sender.counters.urgentPackets == 14)
        #expect(group.receivers.allSatisfy { $0.have.isComplete })
    }

    @Test func theSenderRepeatsAPieceOnlyAfterAWhileAndWithinItsShare() throws {
        var configuration = MulticastSender.Configuration(rate: 8_000_000)
        configuration.maxUrgentShare = 0.1  // 28 of 280 blocks: four pieces
        var group = Group(configuration: configuration)
        group.run { $0.sent.count < 3 }
        func urgent(_ pieces: [Int], from instance: UInt32) -> [UInt8] {
            MulticastPacket(
                session: testSession, instance: instance,
                body: .nack(.init(target: group.sender.instance, pass: group.sender.pass, lossPermille: 0, missingPieces: 40, urgent: true,
                    entries: pieces.map { .rest(of: PieceIndex($0)) }))
            ).encode()
        }
        group.sender.received(urgent([20], from: 7), now: group.now)
        group.sender.received(urgent([20], from: 8), now: group.now)  // queued already: once
        group.run(until: group.now + 0.02)
        group.sender.received(urgent([20], from: 9), now: group.now)  // sent within 0.05 s: refused
        group.sender.received(urgent([21, 22, 23, 24], from: 9), now: group.now)  // 24 is over the share
        group.run(until: group.now + 0.2)
        #expect(group.sent.filter { $0.piece.value == 20 && $0.repair }.count == 7)
        #expect(Set(group.sent.filter { $0.repair }.map(\.piece.value)) == [20, 21, 22, 23])
        #expect(group.sender.counters.urgentRefused == 2)
    }

    @Test func urgentRequestsEncodeAndHostileOnesAreRefused() throws {
        let nack = MulticastPacket(
            session: testSession, instance: 5,
            body: .nack(.init(target: 9, pass: 3, lossPermille: 0, missingPieces: 1, urgent: true, entries: [.rest(of: PieceIndex(4))])))
        let bytes = nack.encode()
        #expect(try MulticastPacket.decode(bytes) == nack)
        // An urgent request that names nothing, or says it is complete, is malformed.
        var empty = MulticastPacket(
            session: testSession, instance: 5,
            body: .nack(.init(target: 9, pass: 3, lossPermille: 0, missingPieces: 0, urgent: true, entries: []))).encode()
        #expect(throws: MulticastError.self) { try MulticastPacket.decode(empty) }
        empty[7] |= 1  // complete too
        #expect(throws: MulticastError.self) { try MulticastPacket.decode(empty) }
    }
}
