import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm

/// Bytes from the multicast booster count as a contributor of their own: anyone on the LAN can
/// forge them, so a piece that mixes them with a peer's blocks and fails its hash bans nobody
/// (issue 15, point 4). Before, the one peer that filled the gaps was the only contributor the
/// engine knew of, and was banned at once.
@Suite struct ExternalContributorTests {
    @Test func aFailedPieceWithMulticastBytesBansNoPeer() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 4)
        let piece = PieceIndex(0)
        // The booster heard all of piece 0 but its first 1458 bytes (forged bytes, as it turns out).
        _ = leecher.engine.piecePartlyArrived(piece, data: [UInt8](repeating: 0xEE, count: 16 << 10), missing: [0..<1458])
        let actions = leecher.connectSeeder(1)
        let gap = ScriptedLeecher.requests(in: actions, to: 1).filter { $0.piece == piece }
        #expect(gap == [BlockRequest(piece: piece, begin: 0, length: 1458)])
        let answer = leecher.engine.received(.piece(piece, begin: 0, block: ByteBuffer(repeating: 1, count: 1458)), from: 1)
        #expect(answer.contains { if case .verify(piece, _) = $0 { true } else { false } })

        let checked = leecher.engine.pieceChecked(piece, valid: false)
        #expect(!checked.contains { if case .disconnect = $0 { true } else { false } }, "\(checked)")
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1)))
        #expect(leecher.engine.externalHashFailures == 1)
        // The piece is fetched whole from peers now, and a peer's own bad data is blamed as ever.
        let again = ScriptedLeecher.requests(in: checked, to: 1).filter { $0.piece == piece }
        #expect(again.map(\.length).reduce(0, +) == 16 << 10)
    }

    @Test func aFailedWholeMulticastPieceBansNoPeerThatSentPartOfIt() {
        var leecher = ScriptedLeecher(pieceLength: 32 << 10, pieces: 1)
        let actions = leecher.connectSeeder(1)
        let asked = ScriptedLeecher.requests(in: actions, to: 1)
        #expect(!asked.isEmpty)
        // The peer has sent one of the piece's two blocks when the booster delivers the whole
        // (forged) piece.
        let block = asked[0]
        _ = leecher.engine.received(.piece(block.piece, begin: block.begin, block: ByteBuffer(repeating: 1, count: block.length)), from: 1)
        let verify = leecher.engine.pieceArrived(block.piece, data: [UInt8](repeating: 0xEE, count: 32 << 10))
        #expect(verify != nil)
        let checked = leecher.engine.pieceChecked(block.piece, valid: false)
        #expect(!checked.contains { if case .disconnect = $0 { true } else { false } }, "\(checked)")
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1)))
    }
}
