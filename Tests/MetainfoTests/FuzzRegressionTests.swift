import Metainfo
import Testing

/// Inputs the fuzz targets (docs/fuzzing.md) found to break the parser, each kept as it was found.
/// Before the fix each of these trapped (arithmetic overflow), taking the whole process down.
@Suite struct FuzzRegressionTests {
    /// metainfo target: `length` Int64.max with `piece length` 1. Rounding the piece count up as
    /// `total + pieceLength - 1` overflowed in PieceLayout.init, and 20 × the count in TorrentInfo.
    /// Now the count is refused as over `PieceLayout.maxPieceCount`, at the `length` integer.
    @Test func lengthNearInt64MaxIsRefusedNotTrapped() throws {
        let input = Array("d4:infod6:lengthi9223372036854775807e4:name1:h12:piece lengthi1e6:pieces20:\(String(repeating: " ", count: 20))ee".utf8)
        let error = #expect(throws: MetainfoError.self) { try Metainfo(parsing: input) }
        guard case .invalidValue(let field, _, let offset)? = error else {
            Issue.record("expected an invalid info.length, got \(String(describing: error))")
            return
        }
        #expect(field == "info.length")
        #expect(offset == 16)  // where the length integer starts
    }

    @Test func pieceCountRoundsUpWithoutOverflow() throws {
        #expect(throws: PieceLayout.Problem.tooManyPieces(count: Int64.max / (1 << 20) + 1, limit: PieceLayout.maxPieceCount)) {
            try PieceLayout(pieceLength: 1 << 20, fileLengths: [Int64.max])
        }
        let largest = Int64(PieceLayout.maxPieceCount - 1) * (1 << 20) + 7
        let layout = try PieceLayout(pieceLength: 1 << 20, fileLengths: [largest])
        #expect(layout.pieceCount == PieceLayout.maxPieceCount)
        #expect(layout.length(of: PieceIndex(layout.pieceCount - 1)) == 7)
        let exact = try PieceLayout(pieceLength: 16384, fileLengths: [16384 * 3])
        #expect(exact.pieceCount == 3)
    }
}
