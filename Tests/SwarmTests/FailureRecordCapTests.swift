import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm

/// Issue 15, point 2 (bounded memory) for smart ban: the digests kept per block of a failed shared
/// piece (to find the liar once the piece verifies) are capped by
/// `SwarmEngine.Configuration.maximumFailureRecords`. Liars that keep failing shared pieces cannot
/// grow that state without bound: past the cap the oldest failed piece's records are dropped (its
/// senders are then neither banned nor kept suspect for it), and the pieces still on record
/// resolve as before: their liars are banned, their honest senders cleared.
@Suite struct FailureRecordCapTests {
    /// Pieces of two blocks, each peer asked one block at a time (as in `ParoleTests`), and a cap
    /// of `cap` recorded blocks.
    static func leecher(pieces: Int, cap: Int) -> ScriptedLeecher {
        var configuration = SwarmEngine.Configuration()
        configuration.requestQueueDepth = 1
        configuration.minimumQueueDepth = 1
        configuration.maximumFailureRecords = cap
        return ScriptedLeecher(pieceLength: 32 << 10, pieces: pieces, configuration: configuration)
    }

    /// Two fresh peers share a piece and `liar` corrupts its block: the piece fails (nobody banned
    /// on the spot, two blocks recorded), is set aside so nobody fetches it again yet, and both
    /// leave. Returns the failed piece.
    static func sharedFailure(_ leecher: inout ScriptedLeecher, honest: Int, liar: Int, aside: inout Bitfield) -> PieceIndex? {
        let actions = leecher.connectSeeder(honest) + leecher.connectSeeder(liar)
        let a = ScriptedLeecher.requests(in: actions, to: honest)
        let b = ScriptedLeecher.requests(in: actions, to: liar)
        guard a.count == 1, b.count == 1, a[0].piece == b[0].piece else {
            Issue.record("peers \(honest) and \(liar) were not given one block each of one piece: \(a) \(b)")
            return nil
        }
        let piece = a[0].piece
        _ = ParoleTests.deliver(&leecher, a[0], from: honest)
        let assembled = ParoleTests.deliver(&leecher, b[0], from: liar, bad: true)
        #expect(ParoleTests.verified(assembled) == [piece])
        #expect(ParoleTests.disconnects(leecher.engine.pieceChecked(piece, valid: false)).isEmpty, "nobody banned on the spot")
        aside.insert(piece)
        _ = leecher.engine.deferPieces(aside)
        _ = leecher.engine.peerDisconnected(honest)
        _ = leecher.engine.peerDisconnected(liar)
        return piece
    }

    @Test func pastTheCapTheOldestFailedPiecesRecordsAreDroppedAndTheRestStillResolve() {
        let failuresKept = 3, failureCount = 20, cap = 2 * failuresKept
        var leecher = Self.leecher(pieces: failureCount + 4, cap: cap)
        var aside = Bitfield(pieceCount: failureCount + 4)
        var failed: [PieceIndex] = []
        for round in 0..<failureCount {
            guard let piece = Self.sharedFailure(&leecher, honest: 2 * round + 1, liar: 2 * round + 2, aside: &aside) else { return }
            failed.append(piece)
            // Two blocks a failure, up to the cap: the state stays bounded however many liars come.
            #expect(leecher.engine.recordedFailureBlocks == min(2 * (round + 1), cap), "after failure \(round + 1)")
        }
        #expect(Set(failed).count == failureCount)
        // The senders of dropped pieces, gone, are forgotten (not kept on parole for nothing);
        // those of the pieces still on record are kept suspect.
        let kept = (failureCount - failuresKept)..<failureCount
        for round in 0..<failureCount {
            let onRecord = kept.contains(round)
            #expect(leecher.engine.isOnParole(ScriptedLeecher.id(2 * round + 1)) == onRecord, "honest sender of failure \(round + 1)")
            #expect(leecher.engine.isOnParole(ScriptedLeecher.id(2 * round + 2)) == onRecord, "liar of failure \(round + 1)")
        }

        // An honest seeder brings every piece, the failed ones included: the pieces still on record
        // show their liars (banned) and clear their honest senders; the dropped ones resolve nothing.
        let honestSeeder = 2 * failureCount + 1
        let actions = leecher.connectSeeder(honestSeeder) + leecher.engine.deferPieces(nil)
        let disconnects = ParoleTests.run(&leecher, actions)
        #expect(disconnects.isEmpty, "nobody connected is dropped: \(disconnects)")
        #expect(leecher.engine.isComplete)
        #expect(leecher.engine.recordedFailureBlocks == 0)
        for round in 0..<failureCount {
            let liar = ScriptedLeecher.id(2 * round + 2), honest = ScriptedLeecher.id(2 * round + 1)
            #expect(leecher.engine.accepts(liar) == !kept.contains(round), "liar of failure \(round + 1): banned only if still on record")
            #expect(leecher.engine.accepts(honest), "honest sender of failure \(round + 1)")
            #expect(!leecher.engine.isOnParole(honest))
        }
        #expect(leecher.engine.accepts(ScriptedLeecher.id(honestSeeder)))
    }

    /// The default keeps 32,768 blocks (1 MiB of digests), as documented.
    @Test func theDefaultCapIs32768Blocks() {
        #expect(SwarmEngine.Configuration().maximumFailureRecords == 32_768)
    }
}
