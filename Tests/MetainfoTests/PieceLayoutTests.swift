import Metainfo
import TestSupport
import Testing

@Suite struct PieceLayoutTests {
    @Test func piecesSpanFileBoundaries() throws {
        let layout = try PieceLayout(pieceLength: 10, fileLengths: [4, 0, 13, 3])
        #expect(layout.totalLength == 20)
        #expect(layout.pieceCount == 2)
        #expect(layout.segments(of: PieceIndex(0)) == [
            .init(fileIndex: 0, offsetInFile: 0, length: 4), .init(fileIndex: 2, offsetInFile: 0, length: 6),
        ])
        #expect(layout.segments(of: PieceIndex(1)) == [
            .init(fileIndex: 2, offsetInFile: 6, length: 7), .init(fileIndex: 3, offsetInFile: 0, length: 3),
        ])
        #expect(layout.pieces(ofFile: 1) == 0..<0)
        #expect(layout.pieces(ofFile: 2) == 0..<2)
        #expect(layout.pieces(ofFile: 3) == 1..<2)
    }

    @Test func lastPieceAndBlocks() throws {
        let layout = try PieceLayout(pieceLength: 32768, fileLengths: [32768 * 3 + 100])
        #expect(layout.pieceCount == 4)
        #expect(layout.length(of: PieceIndex(3)) == 100)
        #expect(layout.blockCount(of: PieceIndex(0)) == 2)
        #expect(layout.blockCount(of: PieceIndex(3)) == 1)
        #expect(layout.byteRange(of: PieceIndex(3)) == 98304..<98404)
        #expect(try PieceLayout(pieceLength: 16, fileLengths: [0]).pieceCount == 0)
    }

    @Test func rejectsBadGeometry() {
        #expect(throws: PieceLayout.Problem.pieceLengthOutOfRange(0)) { try PieceLayout(pieceLength: 0, fileLengths: [1]) }
        #expect(throws: PieceLayout.Problem.negativeFileLength(fileIndex: 1)) { try PieceLayout(pieceLength: 16, fileLengths: [1, -1]) }
        #expect(throws: PieceLayout.Problem.totalLengthOverflow(fileIndex: 1)) { try PieceLayout(pieceLength: 16, fileLengths: [.max, 1]) }
    }

    /// Cross-checks segment mapping against a byte-by-byte walk over random layouts.
    @Test func segmentsMatchANaiveWalk() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<300 {
            let lengths = (0..<Int.random(in: 1...6, using: &rng)).map { _ in Int64.random(in: 0...40, using: &rng) }
            let layout = try PieceLayout(pieceLength: Int.random(in: 1...17, using: &rng), fileLengths: lengths)
            var owner: [(Int, Int64)] = []
            for (file, length) in lengths.enumerated() { for offset in 0..<length { owner.append((file, offset)) } }
            for piece in layout.pieces {
                var walked: [(Int, Int64)] = []
                for segment in layout.segments(of: piece) {
                    #expect(segment.length > 0)
                    for k in 0..<Int64(segment.length) { walked.append((segment.fileIndex, segment.offsetInFile + k)) }
                }
                let range = layout.byteRange(of: piece)
                let expected = owner[Int(range.lowerBound)..<Int(range.upperBound)]
                #expect(walked.map(\.0) == expected.map(\.0))
                #expect(walked.map(\.1) == expected.map(\.1))
            }
        }
    }
}
