import Metainfo
import Testing

/// Inputs the fuzz targets (docs/fuzzing.md) found to break the parser, each kept as it was found.
/// Before the fix each of these trapped (arithmetic overflow), taking the whole process down.
@Suite struct FuzzRegressionTests {
    /// metainfo target: `length` Int64.max with `piece length` 1. Rounding the piece count up as
    /// `total + pieceLength - 1` overflowed in PieceLayout.init, and 20 × the count in TorrentInfo.
    @Test func lengthNearInt64MaxIsRefusedNotTrapped() throws {
        let input = Array("d4:infod6:lengthi9223372036854775807e4:name1:h12:piece lengthi1e6:pieces20:\(String(repeating: " ", count: 20))ee".utf8)
        let error = #expect(throws: MetainfoError.self) { try Metainfo(parsing: input) }
        guard case .invalidValue(let field, _, let offset)? = error else {
            Issue.record("expected an invalid info.pieces, got \(String(describing: error))")
            return
        }
        #expect(field == "info.pieces")
        #expect(offset == 72)  // where the pieces string starts
    }

    @Test func pieceCountRoundsUpWithoutOverflow() throws {
        let layout = try PieceLayout(pieceLength: 1 << 20, fileLengths: [Int64.max])
        #expect(layout.pieceCount == Int(Int64.max / (1 << 20)) + 1)
        #expect(layout.length(of: PieceIndex(layout.pieceCount - 1)) == Int(Int64.max % (1 << 20)))
        let exact = try PieceLayout(pieceLength: 16384, fileLengths: [16384 * 3])
        #expect(exact.pieceCount == 3)
    }
}
