import Crypto
import Metainfo
import Storage
import Foundation
import TestSupport
import Testing

@Suite struct RollingChecksumTests {
    static func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    static func sha1(_ bytes: ArraySlice<UInt8>) -> [UInt8] { Array(Insecure.SHA1.hash(data: Array(bytes))) }

    /// Rolling one byte at a time gives, at every offset, the checksum computed afresh.
    @Test func rollingMatchesTheChecksumComputedAfreshAtEveryOffset() {
        let data = Self.random(5_000, seed: 1)
        let window = 700
        var rolling = RollingChecksum(Array(data[0..<window]))
        for start in 1...(data.count - window) {
            rolling.roll(out: data[start - 1], in: data[start + window - 1])
            #expect(rolling.value == RollingChecksum(Array(data[start..<(start + window)])).value, "offset \(start)")
        }
        #expect(RollingChecksum([UInt8](repeating: 0, count: 64)).value == 0)
    }

    /// The pieces of a new version are found in the old one wherever they moved (by any number of
    /// bytes), read whole or in small uneven chunks alike; a piece whose data is new is not.
    @Test func piecesAreFoundWhereverTheirDataMoved() {
        let piece = 1_024
        let old = Self.random(20 * piece, seed: 2)
        // New: 3 fresh bytes, then old[5000..<12000], then fresh data, then old[100..<3172].
        let new = Self.random(3, seed: 3) + old[5_000..<12_000] + Self.random(2_000, seed: 4) + old[100..<3_172]
        let pieces = new.count / piece
        let weak = (0..<pieces).map { RollingChecksum(Array(new[($0 * piece)..<(($0 + 1) * piece)])).value }
        let hashes = (0..<pieces).map { Self.sha1(new[($0 * piece)..<(($0 + 1) * piece)]) }
        let finder = MovedPieceFinder(pieceLength: piece, weak: weak, wanted: (0..<pieces).map { PieceIndex($0) },
            hash: { hashes[Int($0.value)] })
        let whole = old.withUnsafeBytes { finder.scan($0) }
        for index in 0..<pieces {
            let bytes = Array(new[(index * piece)..<((index + 1) * piece)])
            let expected = (0...(old.count - piece)).first { Array(old[$0..<($0 + piece)]) == bytes }
            #expect(whole.offsets[PieceIndex(index)] == expected, "piece \(index)")
        }
        #expect(whole.offsets.count >= 7, "\(whole.offsets)")
        var consumed = 0
        var turn = 0
        let chunked = finder.scan { target in
            turn += 1
            let count = min(target.count, old.count - consumed, turn % 3 == 0 ? 1 : 777)
            for index in 0..<count { target[index] = old[consumed + index] }
            consumed += count
            return count
        }
        #expect(chunked == whole)
    }

    /// Old data crafted so that every offset hits a wanted weak checksum (a run of zeros against a
    /// piece whose weak sum is that of zeros but whose hash is not) costs a bounded number of
    /// strong checks and ends.
    @Test func craftedDataCostsABoundedNumberOfHashes() {
        let piece = 512
        let zeros = [UInt8](repeating: 0, count: 64 * piece)
        let finder = MovedPieceFinder(pieceLength: piece, weak: [0], wanted: [PieceIndex(0)], hash: { _ in [UInt8](repeating: 1, count: 20) },
            strongCheckLimit: 10)
        let result = zeros.withUnsafeBytes { finder.scan($0) }
        #expect(result.gaveUp)
        #expect(result.falseHits == 10)
        #expect(result.offsets.isEmpty)
        // Shorter than a piece, or nothing wanted: nothing to do.
        #expect([UInt8](repeating: 0, count: 10).withUnsafeBytes { finder.scan($0) } == .init())
    }

    /// The torrent carries the checksums outside `info` (the info-hash is the same without them),
    /// and a list of the wrong length is refused with the field named.
    @Test func theTorrentCarriesThemOutsideInfoAndRefusesAWrongLength() throws {
        let info = try TorrentInfo(name: "disk.img", files: [FileEntry(path: ["disk.img"], length: 3 * 16_384)], isMultiFile: false,
            privacy: .unspecified, pieceLength: 16_384, pieceHashes: [UInt8](repeating: 7, count: 60))
        var metainfo = Metainfo(info: info)
        let plainHash = metainfo.infoHash
        metainfo.rollingChecksums = [1, 0xdead_beef, 3]
        let parsed = try Metainfo(parsing: metainfo.encoded())
        #expect(parsed.rollingChecksums == [1, 0xdead_beef, 3])
        #expect(parsed.infoHash == plainHash)
        metainfo.rollingChecksums = [1, 2]
        #expect {
            try Metainfo(parsing: metainfo.encoded())
        } throws: { error in
            "\(error)".contains(Metainfo.rollingChecksumsKey) && "\(error)".contains("4 per piece")
        }
    }

    /// A file scanned in ranges side by side finds what one pass finds, a piece straddling a
    /// boundary between ranges included.
    @Test func aFileScannedInRangesFindsWhatOnePassFinds() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let piece = 1_024
        let old = Self.random(64 * piece + 300, seed: 5)
        let path = folder.file("old.img")
        try Data(old).write(to: URL(fileURLWithPath: path))
        // Pieces taken at odd offsets all over the file, one across the middle (a range boundary).
        let starts = [7, 16 * piece - 500, 32 * piece - 511, 32 * piece + 3, 63 * piece + 299]
        let pieces = starts.map { Array(old[$0..<($0 + piece)]) }
        let finder = MovedPieceFinder(pieceLength: piece, weak: pieces.map { RollingChecksum($0).value },
            wanted: pieces.indices.map { PieceIndex($0) }, hash: { Self.sha1(pieces[Int($0.value)][...]) })
        let one = try #require(finder.scan(file: path))
        let four = try #require(finder.scan(file: path, parts: 4))
        #expect(one.offsets == Dictionary(uniqueKeysWithValues: starts.enumerated().map { (PieceIndex($0.offset), $0.element) }))
        #expect(four.offsets == one.offsets)
        #expect(finder.scan(file: folder.file("missing")) == nil)
    }
}
