import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm

/// Pieces a reader of the image in flight waits for (`get --serve`) go ahead of every other piece
/// (issue 20).
@Suite struct UrgentPiecesTests {
    @Test func urgentPiecesAreAskedFirstAndStopBeingUrgentOnceVerified() {
        var leecher = ScriptedLeecher(pieceLength: 256 << 10, pieces: 400)
        let last = PieceIndex(399), middle = PieceIndex(200)
        #expect(leecher.engine.setUrgentPieces([last, middle, last, PieceIndex(400)]).isEmpty)  // no peer yet
        #expect(leecher.engine.urgentPieces == [last, middle])
        let asked = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        // The queue (64 blocks) starts with all 16 blocks of each urgent piece, in that order.
        #expect(asked.prefix(32).map(\.piece) == Array(repeating: last, count: 16) + Array(repeating: middle, count: 16))
        #expect(!asked.dropFirst(32).contains { $0.piece == last || $0.piece == middle })

        // Once the last piece verified it is no longer urgent; the middle one still is.
        let blocks = asked.prefix(16)
        for block in blocks {
            let actions = leecher.engine.received(.piece(block.piece, begin: block.begin, block: ByteBuffer(repeating: 0, count: block.length)), from: 1)
            for case .verify(let piece, _) in actions { _ = leecher.engine.pieceChecked(piece, valid: true) }
        }
        #expect(leecher.engine.have[last])
        #expect(leecher.engine.urgentPieces == [middle])
    }

    /// A new urgent piece jumps the queue: what else was asked of a peer that holds it is cancelled
    /// (a peer serves requests in order), the urgent blocks are asked at once, and the cancelled ones
    /// go back to the picker. An idle peer is then asked for urgent blocks already asked elsewhere, so
    /// one slow holder cannot keep a reader waiting.
    @Test func anUrgentPieceJumpsTheQueueAndIdlePeersDuplicateIt() {
        var leecher = ScriptedLeecher(pieceLength: 256 << 10, pieces: 400)
        let pending = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        let urgent = PieceIndex(321)
        #expect(!pending.isEmpty && !pending.contains { $0.piece == urgent })
        let actions = leecher.engine.setUrgentPieces([urgent])
        let cancelled = actions.compactMap { if case .send(1, .cancel(let block)) = $0 { block } else { nil } }
        #expect(Set(cancelled) == Set(pending))
        let asked = ScriptedLeecher.requests(in: actions, to: 1)
        #expect(asked.prefix(16).allSatisfy { $0.piece == urgent } && asked.count >= 16, "\(asked.prefix(20))")

        // Peer 2 joins: every block of the urgent piece is asked of peer 1; the idle newcomer is
        // asked for a few of them too (end-game for urgent pieces), then for other pieces.
        let second = ScriptedLeecher.requests(in: leecher.connectSeeder(2), to: 2)
        let duplicated = second.filter { $0.piece == urgent }
        #expect(!duplicated.isEmpty && duplicated.count <= 2, "\(second.prefix(4))")
        #expect(second.first?.piece == urgent)
    }

    /// Readers first (`get --serve`): while an urgent piece is held by a peer, everything else
    /// queued at every peer is cancelled and nothing else is asked, so the downlink carries the
    /// reader's blocks alone; once the piece verified the download goes on at every peer.
    @Test func readersFirstPausesTheRestUntilTheReadersPiecesArrive() {
        var configuration = SwarmEngine.Configuration()
        configuration.readersFirst = true
        var leecher = ScriptedLeecher(pieceLength: 32 << 10, pieces: 400, configuration: configuration)
        let first = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        let second = ScriptedLeecher.requests(in: leecher.connectSeeder(2), to: 2)
        #expect(!first.isEmpty && !second.isEmpty)
        let urgent = PieceIndex(333)
        let actions = leecher.engine.setUrgentPieces([urgent])
        for peer in [1, 2] {
            let cancelled = actions.compactMap { if case .send(peer, .cancel(let block)) = $0 { block } else { nil } }
            #expect(!cancelled.isEmpty && cancelled.allSatisfy { $0.piece != urgent }, "peer \(peer)")
            let asked = ScriptedLeecher.requests(in: actions, to: peer)
            #expect(asked.allSatisfy { $0.piece == urgent }, "peer \(peer): \(asked.prefix(4))")
        }
        let asked = ScriptedLeecher.requests(in: actions, to: 1) + ScriptedLeecher.requests(in: actions, to: 2)
        #expect(Set(asked.map(\.begin)) == [0, 16 << 10])
        // The piece arrives (from peer 1) and verifies: both peers are asked for other pieces again.
        var after: [SwarmEngine.Action] = []
        for block in ScriptedLeecher.requests(in: actions, to: 1) {
            let received = leecher.engine.received(.piece(block.piece, begin: block.begin, block: ByteBuffer(repeating: 0, count: block.length)), from: 1)
            after += received
            for case .verify(let piece, _) in received { after += leecher.engine.pieceChecked(piece, valid: true) }
        }
        #expect(leecher.engine.have[urgent] && leecher.engine.urgentPieces.isEmpty)
        #expect(!ScriptedLeecher.requests(in: after, to: 1).isEmpty && !ScriptedLeecher.requests(in: after, to: 2).isEmpty)
    }

    @Test func atMostSixtyFourPiecesAreUrgent() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 400)
        _ = leecher.engine.setUrgentPieces((0..<100).map(PieceIndex.init))
        #expect(leecher.engine.urgentPieces == (0..<64).map(PieceIndex.init))
        _ = leecher.engine.setUrgentPieces([])
        #expect(leecher.engine.urgentPieces.isEmpty)
    }
}

/// A boot profile's order (issue 20): pieces a VM reads first are started first, after urgent
/// ones, without asking a seed for what another peer has.
@Suite struct PieceOrderTests {
    @Test func orderedPiecesAreStartedFirstInOrder() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 400)
        let order = [PieceIndex(300), PieceIndex(7), PieceIndex(300), PieceIndex(9999), PieceIndex(150)]
        #expect(leecher.engine.setPieceOrder(order).isEmpty)
        let asked = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        // 16 KiB pieces are one block each: the first three requests are the profile's, in order.
        #expect(asked.prefix(3).map(\.piece) == [PieceIndex(300), PieceIndex(7), PieceIndex(150)], "\(asked.prefix(4))")
        // An urgent piece still goes first.
        var other = ScriptedLeecher(pieceLength: 16 << 10, pieces: 400)
        _ = other.engine.setPieceOrder(order)
        _ = other.engine.setUrgentPieces([PieceIndex(42)])
        let first = ScriptedLeecher.requests(in: other.connectSeeder(1), to: 1)
        #expect(first.prefix(2).map(\.piece) == [PieceIndex(42), PieceIndex(300)])
    }

    /// Held pieces leave the window, so a long profile is followed to its end.
    @Test func theOrderIsFollowedPastHeldPieces() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 2000)
        let order = (0..<600).map { PieceIndex(1999 - $0) }
        _ = leecher.engine.setPieceOrder(order)
        var asked = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        var received: [PieceIndex] = []
        while received.count < 600, let block = asked.first {
            asked.removeFirst()
            received.append(block.piece)
            let actions = leecher.engine.received(.piece(block.piece, begin: block.begin, block: ByteBuffer(repeating: 0, count: block.length)), from: 1)
            var more = actions
            for case .verify(let piece, _) in actions { more += leecher.engine.pieceChecked(piece, valid: true) }
            asked += ScriptedLeecher.requests(in: more, to: 1)
        }
        #expect(received == order)
    }
}
