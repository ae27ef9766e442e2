import Crypto
import Foundation
import Metainfo
import TestSupport
import Testing

@testable import Storage

/// A layered image as `create --align-files` makes it, built here without TorrentCreation: the
/// files written under `folder/name`, and the torrent's info.
func layeredImage(_ folder: TemporaryFolder, _ name: String, pieceLength: Int, aligned: Bool = true,
                  _ layers: [(String, [UInt8])]) throws -> TorrentInfo {
    try FileManager.default.createDirectory(atPath: folder.file(name), withIntermediateDirectories: true)
    var files: [FileEntry] = []
    var data: [UInt8] = []
    for (file, bytes) in layers {
        try Data(bytes).write(to: URL(fileURLWithPath: folder.file("\(name)/\(file)")))
        files.append(FileEntry(path: [file], length: Int64(bytes.count), sha1: aligned ? Array(Insecure.SHA1.hash(data: bytes)) : nil))
        data += bytes
        let padding = (pieceLength - bytes.count % pieceLength) % pieceLength
        if aligned && padding > 0 {
            files.append(.padding(length: Int64(padding)))
            data += [UInt8](repeating: 0, count: padding)
        }
    }
    var hashes: [UInt8] = []
    for start in stride(from: 0, to: data.count, by: pieceLength) {
        hashes += Insecure.SHA1.hash(data: data[start..<min(start + pieceLength, data.count)])
    }
    return try TorrentInfo(name: name, files: files, isMultiFile: true, privacy: .unspecified, pieceLength: pieceLength, pieceHashes: hashes)
}

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var random = SeededRandom(seed: seed)
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
}

@Suite struct ContentStoreTests {
    static let piece = 32 << 10
    let base = randomBytes(5 * piece + 1000, seed: 1)
    let site = randomBytes(3000, seed: 2)
    let user = randomBytes(2 * piece + 7, seed: 3)

    /// The pieces of `name` in `info`.
    func pieces(of name: String, in info: TorrentInfo) -> Set<Int> {
        Set(info.layout.pieces(ofFile: info.files.firstIndex { $0.path == [name] }!))
    }

    /// Downloads `info` into `folder/out` with only the content store as a source; returns what it
    /// reused, after checking every reused piece's bytes against the torrent.
    func fill(_ info: TorrentInfo, from store: ContentStore, into folder: TemporaryFolder) throws -> LocalPieces.Report {
        let download = try PieceStore.download(info, into: folder.file("out"))
        let index = store.load()
        let report = LocalPieces.fill(download, have: Bitfield(pieceCount: info.pieceCount), threads: 3) {
            index.candidates(for: $0, of: info)
        }
        #expect(download.verify(threads: 2) == report.pieces)
        return report
    }

    @Test func aSecondImageSharingALayerTakesExactlyThatLayersPieces() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let first = try layeredImage(folder, "v1", pieceLength: Self.piece, [("base", base), ("site", site)])
        let store = try ContentStore(directory: folder.file("cache"))
        try store.record(first, at: folder.file("v1"))

        let second = try layeredImage(folder, "v2", pieceLength: Self.piece, [("base", base), ("user", user)])
        let report = try fill(second, from: store, into: folder)
        #expect(Set(report.pieces.indices) == pieces(of: "base", in: second))
        #expect(report.bytes == Int64(6 * Self.piece))
        #expect(report.rejected == 0)
    }

    @Test func aLayerIsFoundByItsDigestAtAnotherPieceLength() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let first = try layeredImage(folder, "v1", pieceLength: Self.piece, [("site", site), ("base", base)])
        let store = try ContentStore(directory: folder.file("cache"))
        try store.record(first, at: folder.file("v1"))
        // Same base, twice the piece length: no piece hash matches, the layer digest does.
        let second = try layeredImage(folder, "v2", pieceLength: 2 * Self.piece, [("base", base), ("user", user)])
        let report = try fill(second, from: store, into: folder)
        #expect(Set(report.pieces.indices) == pieces(of: "base", in: second))
    }

    @Test func aCorruptedOrTruncatedCachedFileIsCaughtByTheHash() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let first = try layeredImage(folder, "v1", pieceLength: Self.piece, [("base", base), ("site", site)])
        let store = try ContentStore(directory: folder.file("cache"))
        try store.record(first, at: folder.file("v1"))
        // One byte of piece 1 flipped, and the file cut inside piece 4: pieces 1, 4 and 5 are bad.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: folder.file("v1/base")))
        try handle.seek(toOffset: UInt64(Self.piece + 100))
        try handle.write(contentsOf: [base[Self.piece + 100] ^ 0xff])
        try handle.truncate(atOffset: UInt64(4 * Self.piece + 10))
        try handle.close()

        let second = try layeredImage(folder, "v2", pieceLength: Self.piece, [("base", base), ("user", user)])
        let report = try fill(second, from: store, into: folder)
        #expect(Set(report.pieces.indices) == [0, 2, 3])
        #expect(report.rejected >= 3)
    }

    @Test func piecesOfAnUnchangedEarlierVersionAreTakenAtTheSameOffsets() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        var image = randomBytes(10 * Self.piece + 500, seed: 9)
        try Data(image).write(to: URL(fileURLWithPath: folder.file("old.img")))
        for changed in [2, 7] { image[changed * Self.piece + 3] ^= 0x55 }
        image += randomBytes(Self.piece, seed: 10)  // it grew, too
        var hashes: [UInt8] = []
        for start in stride(from: 0, to: image.count, by: Self.piece) {
            hashes += Insecure.SHA1.hash(data: image[start..<min(start + Self.piece, image.count)])
        }
        let info = try TorrentInfo(name: "disk.img", files: [FileEntry(path: ["disk.img"], length: Int64(image.count))],
            isMultiFile: false, privacy: .unspecified, pieceLength: Self.piece, pieceHashes: hashes)
        let download = try PieceStore.download(info, into: folder.file("out"))
        let report = LocalPieces.fill(download, have: Bitfield(pieceCount: info.pieceCount), threads: 2,
            candidates: LocalPieces.sameOffsets(in: folder.file("old.img"), of: info))
        #expect(Set(report.pieces.indices) == Set(0..<10).subtracting([2, 7]))
        #expect(download.verify(threads: 2) == report.pieces)
    }

    /// The files a node holds under one of a torrent's file names are its earlier versions,
    /// newest first; other files and padding are not.
    @Test func earlierVersionsAreTheFilesHeldUnderTheSameNameNewestFirst() throws {
        func info(_ name: String, _ paths: [[String]]) throws -> TorrentInfo {
            try TorrentInfo(name: name, files: paths.map { FileEntry(path: $0, length: Int64(Self.piece)) },
                isMultiFile: paths.count > 1, privacy: .unspecified, pieceLength: Self.piece,
                pieceHashes: [UInt8](repeating: 1, count: 20 * paths.count))
        }
        var index = ContentIndex()
        index.record(try info("disk.img", [["disk.img"]]), at: "/a/disk.img")
        index.record(try info("v1", [["base.qcow2"], ["user.qcow2"]]), at: "/cache/v1")
        index.record(try info("disk.img", [["disk.img"]]), at: "/b/disk.img")
        index.record(try info("other", [["x.img"], ["y.img"]]), at: "/cache/other")
        #expect(index.earlierVersions(of: try info("disk.img", [["disk.img"]])) == ["/b/disk.img", "/a/disk.img"])
        #expect(index.earlierVersions(of: try info("v2", [["base.qcow2"], ["site.qcow2"]])) == ["/cache/v1/base.qcow2"])
        #expect(index.earlierVersions(of: try info("disk.img", [["disk.img"]]), limit: 1) == ["/b/disk.img"])
    }

    @Test func theIndexReadsBackAndForgetsFilesThatWentAway() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let first = try layeredImage(folder, "v1", pieceLength: Self.piece, [("base", base), ("site", site)])
        let second = try layeredImage(folder, "v2", pieceLength: Self.piece, [("user", user)])
        let store = try ContentStore(directory: folder.file("cache"))
        try store.record(first, at: folder.file("v1"))
        let index = store.load()
        #expect(index.files.count == 2)
        #expect(index.layers.count == 2)
        #expect(index.pieceCount == 7)
        #expect(ContentIndex(parsing: index.encoded()) == index)
        try FileManager.default.removeItem(atPath: folder.file("v1/site"))
        try store.record(second, at: folder.file("v2"))
        #expect(store.load().files.values.map(\.path).sorted() == [folder.file("v1/base"), folder.file("v2/user")])
        // Recording the same image again replaces its entries rather than adding to them.
        try store.record(second, at: folder.file("v2"))
        #expect(store.load().files.count == 2)
    }

    @Test func aDamagedIndexCostsOnlyItsBadLines() {
        let digest = String(repeating: "ab", count: 20)
        let text = """
            vmswarm-content-index 1
            f 0 100 /data/base
            f 0 5 /again/the/same/id
            f x 1 /not/a/number
            l \(digest) 0
            l \(digest) 9
            l ABCD 0
            p \(digest) 0 0 50 64
            p \(digest) 0 90 50 64
            p \(digest) 0 -1 50 64
            p \(digest) 0 0 50 40
            p \(digest) 7 0 50 64
            p zz 0 0 50 64
            \(String(repeating: "x", count: 10_000))
            garbage
            """
        let index = ContentIndex(parsing: Array(text.utf8))
        #expect(index.files.count == 1)
        #expect(index.layers.count == 1)
        #expect(index.pieceCount == 1)
        #expect(index.skipped == 11)
        #expect(ContentIndex(parsing: Array("not an index".utf8)).files.isEmpty)
        #expect(ContentIndex(parsing: [UInt8](repeating: 0xff, count: 1000)).files.isEmpty)
    }
}

extension Bitfield {
    var indices: [Int] {
        var result: [Int] = []
        forEachPiece { result.append($0.value) }
        return result
    }
}
