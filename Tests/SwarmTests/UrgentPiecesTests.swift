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

    /// A new urgent piece jumps ahead of the normal order as soon as the peer has room again, and an
    /// idle peer is asked for urgent blocks already asked elsewhere, so one slow holder cannot keep a
    /// reader waiting.
    @Test func anIdlePeerDuplicatesUrgentBlocksAskedElsewhere() {
        var leecher = ScriptedLeecher(pieceLength: 256 << 10, pieces: 400)
        let pending = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        let urgent = PieceIndex(321)
        #expect(!pending.contains { $0.piece == urgent })
        #expect(leecher.engine.setUrgentPieces([urgent]).isEmpty)  // the queue is full: nothing yet
        let (_, next) = leecher.deliver(4, of: pending, from: 1)
        #expect(next.count == 4 && next.allSatisfy { $0.piece == urgent }, "\(next)")

        // Peer 2 joins: every block of the urgent piece it could take is asked of peer 1 (or open);
        // its first requests are urgent blocks.
        let second = ScriptedLeecher.requests(in: leecher.connectSeeder(2), to: 2)
        #expect(second.prefix(12).allSatisfy { $0.piece == urgent }, "\(second.prefix(14))")
        let duplicated = second.filter { $0.piece == urgent && next.contains($0) }
        #expect(duplicated.count <= 2)
    }

    @Test func atMostSixtyFourPiecesAreUrgent() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 400)
        _ = leecher.engine.setUrgentPieces((0..<100).map(PieceIndex.init))
        #expect(leecher.engine.urgentPieces == (0..<64).map(PieceIndex.init))
        _ = leecher.engine.setUrgentPieces([])
        #expect(leecher.engine.urgentPieces.isEmpty)
    }
}
