import Metainfo
import TestSupport
import Testing

@testable import Swarm

/// 8 pieces of 2 blocks each (32 KiB pieces), the last one short (1 block).
let layout = try! PieceLayout(pieceLength: 32768, fileLengths: [32768 * 7 + 100])

func bits(_ pieces: [Int]) -> Bitfield {
    var field = Bitfield(pieceCount: layout.pieceCount)
    for piece in pieces { field.insert(PieceIndex(piece)) }
    return field
}

let everything = Bitfield(pieceCount: layout.pieceCount, all: true)

@Suite struct PiecePickerTests {
    @Test func onlyAsksForPiecesThePeerHasAndWeLack() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1]), seed: 1)
        let requests = picker.requests(for: 1, peerPieces: bits([1, 2, 3]), count: 100)
        #expect(Set(requests.map(\.piece.value)) == [2, 3])
        #expect(requests.count == 4)
        #expect(picker.requests(for: 1, peerPieces: bits([1, 2, 3]), count: 100).isEmpty, "nothing asked twice outside end-game")
    }

    @Test func rarestPieceFirstOnceWeHaveAFew() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3]), seed: 1)
        picker.peerAdded(everything)
        picker.peerAdded(everything)
        picker.peerAdded(bits([4, 5, 7]))
        picker.peerAdded(bits([4, 7]))
        // Piece 6 is held by 2 peers, piece 5 by 3, pieces 4 and 7 by 4.
        let first = picker.requests(for: 9, peerPieces: everything, count: 2)
        #expect(first.map(\.piece.value) == [6, 6])
        #expect(picker.requests(for: 9, peerPieces: everything, count: 2).map(\.piece.value) == [5, 5])
    }

    @Test func amongEquallyRarePiecesThePeersNewestAnnouncementIsTaken() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3]), seed: 1)
        picker.peerAdded(everything)
        picker.peerAdded(bits([4, 5, 6, 7]))
        // Pieces 4 to 7 are equally rare; the peer announced 7, then 5, then 6 last.
        let recent = [7, 5, 6].map(PieceIndex.init)
        #expect(picker.requests(for: 9, peerPieces: everything, count: 2, recent: recent).map(\.piece.value) == [6, 6])
        #expect(picker.requests(for: 9, peerPieces: everything, count: 2, recent: recent).map(\.piece.value) == [5, 5])
        // A rarer piece still comes first: only the first peer holds piece 1 of a fresh picker.
        var rarer = PiecePicker(layout: layout, have: bits([0, 2, 3, 4]), seed: 1)
        rarer.peerAdded(everything)
        rarer.peerAdded(bits([5, 6, 7]))
        #expect(rarer.requests(for: 9, peerPieces: everything, count: 2, recent: [PieceIndex(6)]).map(\.piece.value) == [1, 1])
        // While we hold too few pieces for rarity to count, the newest announcement wins too.
        var fresh = PiecePicker(layout: layout, have: Bitfield(pieceCount: layout.pieceCount), seed: 1)
        fresh.peerAdded(bits([3]))
        #expect(fresh.requests(for: 9, peerPieces: everything, count: 1, recent: [PieceIndex(2), PieceIndex(5)]).map(\.piece.value) == [5])
    }

    @Test func randomFirstPiecesSpreadAFreshSwarm() {
        var firsts = Set<Int>()
        for seed in 0..<40 {
            var picker = PiecePicker(layout: layout, have: Bitfield(pieceCount: layout.pieceCount), seed: UInt64(seed))
            picker.peerAdded(everything)
            firsts.insert(picker.requests(for: 1, peerPieces: everything, count: 1)[0].piece.value)
        }
        #expect(firsts.count >= 5, "first pieces chosen: \(firsts)")
    }

    @Test func startedPiecesAreFinishedFirst() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3]), seed: 3)
        let a = picker.requests(for: 1, peerPieces: everything, count: 1)
        let b = picker.requests(for: 2, peerPieces: everything, count: 1)
        #expect(a[0].piece == b[0].piece)
        #expect(a[0].begin != b[0].begin)
    }

    /// A piece the booster partly delivered: only the lost byte ranges are asked for, in blocks of
    /// at most 16 KiB, and their arrival completes the piece. A block peers delivered before stays.
    @Test func anAdoptedPieceIsFetchedByItsMissingRangesOnly() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3]), seed: 1)
        let completeAtOnce = picker.adopt(PieceIndex(5), missing: [1400..<2800, 9800..<30000])
        #expect(!completeAtOnce)
        let requests = picker.requests(for: 1, peerPieces: everything, count: 3)
        #expect(requests == [
            BlockRequest(piece: PieceIndex(5), begin: 1400, length: 1400),
            BlockRequest(piece: PieceIndex(5), begin: 9800, length: 16384),
            BlockRequest(piece: PieceIndex(5), begin: 26184, length: 3816),
        ])
        let arrivals = [requests[0], BlockRequest(piece: PieceIndex(5), begin: 1000, length: 400), requests[1], requests[2]]
            .map { picker.received($0, from: 1).completePiece }
        // The second is a range that is no block: ignored.
        #expect(arrivals == [nil, nil, nil, PieceIndex(5)])

        // Piece 4 in progress on the 16 KiB grid, its first block in: the booster's gaps that block
        // covers are not asked for again.
        let grid = picker.requests(for: 2, peerPieces: bits([4]), count: 2)
        #expect(grid.map(\.begin) == [0, 16384])
        _ = picker.received(grid[0], from: 2)
        let adopted = picker.adopt(PieceIndex(4), missing: [0..<1400, 16000..<17400])
        #expect(!adopted)
        let rest = picker.requests(for: 3, peerPieces: bits([4]), count: 5)
        #expect(rest == [
            BlockRequest(piece: PieceIndex(4), begin: 16384, length: 1016)
        ])
        let nothingMissing = picker.adopt(PieceIndex(6), missing: [])
        #expect(nothingMissing, "nothing missing: complete at once")
    }

    @Test func receivingVerifyingAndFailing() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3, 4, 5, 6]), seed: 1)
        let requests = picker.requests(for: 1, peerPieces: everything, count: 10)
        #expect(requests == [BlockRequest(piece: PieceIndex(7), begin: 0, length: 100)])
        #expect(picker.received(requests[0], from: 1).completePiece == PieceIndex(7))
        picker.pieceFailed(PieceIndex(7))
        #expect(picker.requests(for: 2, peerPieces: everything, count: 10) == requests, "a failed piece is fetched again")
        _ = picker.received(requests[0], from: 2)
        picker.pieceVerified(PieceIndex(7))
        #expect(picker.isComplete)
    }

    @Test func aDepartingPeersRequestsGoBackToThePool() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3]), seed: 1)
        picker.peerAdded(everything)
        let mine = picker.requests(for: 1, peerPieces: everything, count: 3)
        picker.peerRemoved(1, pieces: everything)
        #expect(picker.availability.allSatisfy { $0 == 0 })
        let theirs = picker.requests(for: 2, peerPieces: everything, count: 3)
        #expect(Set(theirs) == Set(mine))
    }

    /// A released block is open again, for the next peer and for the end-game test; releasing a
    /// block a peer was not asked for changes nothing.
    @Test func aReleasedBlockIsOpenAgain() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3, 4, 5]), seed: 1)
        let first = picker.requests(for: 1, peerPieces: everything, count: 5)
        #expect(first.count == 3)
        #expect(picker.isEndGame)
        picker.released(first[0], by: 2)
        #expect(picker.isEndGame, "peer 2 was never asked")
        picker.released(first[0], by: 1)
        #expect(!picker.isEndGame)
        #expect(picker.requests(for: 2, peerPieces: everything, count: 5, endGameCount: 0) == [first[0]])
        #expect(picker.isEndGame)
        _ = picker.received(first[0], from: 2)
        picker.released(first[0], by: 2)
        #expect(picker.isEndGame, "a received block stays closed")
    }

    @Test func endGameAsksASecondPeerAndCancelsTheOther() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3, 4, 5, 6]), seed: 1)
        let first = picker.requests(for: 1, peerPieces: everything, count: 5)
        #expect(picker.isEndGame)
        let second = picker.requests(for: 2, peerPieces: everything, count: 5)
        #expect(second == first)
        #expect(picker.requests(for: 3, peerPieces: everything, count: 5).isEmpty, "at most two peers per block")
        let outcome = picker.received(first[0], from: 2)
        #expect(outcome.cancelAt == [1])
        #expect(outcome.completePiece == PieceIndex(7))
    }

    /// A duplicate, a block of the wrong length and a block from someone other than the peer
    /// fetching the piece alone are not accepted: their bytes must not enter the piece.
    @Test func onlyTheFirstCopyOfABlockIsAccepted() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3, 4, 5, 6]), seed: 1)
        let first = picker.requests(for: 1, peerPieces: everything, count: 5)
        #expect(first == [BlockRequest(piece: PieceIndex(7), begin: 0, length: 100)])
        #expect(!picker.received(BlockRequest(piece: PieceIndex(7), begin: 0, length: 99), from: 1).accepted, "wrong length")
        #expect(picker.received(first[0], from: 1).accepted)
        let again = picker.received(first[0], from: 2)
        #expect(!again.accepted && again.completePiece == nil)
    }

    /// A peer on parole is given only untouched pieces and keeps them: nobody else is asked for
    /// their blocks, not even in end-game, and blocks others send for them are refused. Once it
    /// is disowned (parole over, stalled, gone) the piece is open to all.
    @Test func aPeerOnParoleFetchesWholePiecesAlone() {
        var picker = PiecePicker(layout: layout, have: bits([0, 1, 2, 3, 4]), seed: 1)
        // Peer 1 starts piece 5 and gets one of its two blocks; the paroled peer 2 must not join it.
        let shared = picker.requests(for: 1, peerPieces: bits([5]), count: 1)
        #expect(shared == [BlockRequest(piece: PieceIndex(5), begin: 0, length: 16384)])
        let alone = picker.requests(for: 2, peerPieces: bits([5, 6]), count: 4, alone: true)
        #expect(Set(alone.map(\.piece)) == [PieceIndex(6)], "only a piece nobody else touched")
        #expect(alone.count == 2)
        // Nobody else gets blocks of piece 6, even in end-game.
        _ = picker.requests(for: 1, peerPieces: everything, count: 10)
        #expect(picker.isEndGame)
        #expect(!picker.requests(for: 3, peerPieces: everything, count: 10).contains { $0.piece == PieceIndex(6) })
        #expect(picker.requests(for: 2, peerPieces: everything, count: 10, alone: true).isEmpty, "no duplicates for it either")
        #expect(!picker.received(alone[0], from: 3).accepted, "a stale block from another peer is refused")
        #expect(picker.received(alone[0], from: 2).accepted)
        // Disowned, its last block may go to anyone in end-game.
        picker.disown(2)
        #expect(picker.requests(for: 3, peerPieces: bits([6]), count: 10) == [alone[1]])
    }

    /// A whole download against random peers: every piece completes, nothing is received twice
    /// outside end-game, and no block is ever asked of more than two peers.
    @Test func simulatedDownloadCompletes() {
        var rng = SplitMix64(seed: 5)
        let big = try! PieceLayout(pieceLength: 65536, fileLengths: [65536 * 60 + 12345])
        var picker = PiecePicker(layout: big, have: Bitfield(pieceCount: big.pieceCount), seed: 9)
        var peers: [Int: Bitfield] = [:]
        for peer in 0..<6 {
            var field = Bitfield(pieceCount: big.pieceCount)
            for piece in 0..<big.pieceCount where Int.random(in: 0..<3, using: &rng) > 0 || peer == 0 { field.insert(PieceIndex(piece)) }
            peers[peer] = field
            picker.peerAdded(field)
        }
        var pending: [(Int, BlockRequest)] = []
        var rounds = 0
        while !picker.isComplete && rounds < 10_000 {
            rounds += 1
            for (peer, field) in peers { pending += picker.requests(for: peer, peerPieces: field, count: 4).map { (peer, $0) } }
            pending.shuffle(using: &rng)
            let batch = pending.prefix(5)
            pending.removeFirst(batch.count)
            for (peer, block) in batch {
                if let piece = picker.received(block, from: peer).completePiece { picker.pieceVerified(piece) }
            }
        }
        #expect(picker.isComplete, "after \(rounds) rounds")
    }
}
