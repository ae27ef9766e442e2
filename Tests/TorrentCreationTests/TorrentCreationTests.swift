import Crypto
import Foundation
import Metainfo
import Storage
import TestSupport
import Synchronization
import Testing

@testable import TorrentCreation

@Suite struct PieceSizeRuleTests {
    static let kib: Int64 = 1 << 10
    static let examples: [(total: Int64, expected: Int64)] = [
        (0, 256 * kib), (1 << 20, 256 * kib), (512 << 20, 256 * kib), ((512 << 20) + 1, 512 * kib),
        (4 << 30, 2048 * kib), (32 << 30, 16384 * kib), (64 << 30, 16384 * kib), (1 << 50, 16384 * kib),
    ]

    @Test func autoPieceLength() {
        for example in Self.examples {
            #expect(Int64(PieceSizeRule.pieceLength(forTotalLength: example.total)) == example.expected, "\(example.total)")
        }
    }

    @Test func imagesFrom512MiBTo64GiBGetASensiblePieceCount() {
        var size: Int64 = 512 << 20
        while size <= 64 << 30 {
            let length = PieceSizeRule.pieceLength(forTotalLength: size)
            let count = (size + Int64(length) - 1) / Int64(length)
            #expect((1024...4096).contains(count), "\(size) bytes -> \(count) pieces")
            size += 384 << 20
        }
    }
}

@Suite struct TorrentCreatorTests {
    static let tracker = "http://tracker.example:6969/announce"

    func options(threads: Int = 2, privacy: TorrentInfo.Privacy = .unspecified) -> TorrentCreator.Options {
        var options = TorrentCreator.Options(threads: threads)
        options.pieceLength = 64 << 10
        options.announceTiers = [[Self.tracker]]
        options.privacy = privacy
        return options
    }

    /// mktorrent orders files by bytes and omits an unset private flag, as vmswarm does by default.
    @Test(arguments: FixtureTorrent.all.filter { $0.maker == "mktorrent" })
    func reproducesMktorrentsInfoHash(_ fixture: FixtureTorrent) throws {
        let creator = TorrentCreator(options: options(privacy: fixture.isPrivate ? .private : .unspecified))
        let metainfo = try creator.create(fixturesURL.appendingPathComponent("payloads/\(fixture.name)").path)
        #expect(metainfo.infoHash.hex == fixture.infoHash)
    }

    @Test func threadCountDoesNotChangeTheResult() throws {
        let path = fixturesURL.appendingPathComponent("payloads/image-bundle").path
        let one = try TorrentCreator(options: options(threads: 1)).create(path)
        let many = try TorrentCreator(options: options(threads: 7)).create(path)
        #expect(one.infoBytes == many.infoBytes)
    }

    @Test func hashesMatchANaiveHashOfTheConcatenation() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        var rng = SplitMix64(seed: 99)
        let sizes = [0, 70_000, 0, 1, 65_536, 131_071, 3]
        var all: [UInt8] = []
        try FileManager.default.createDirectory(atPath: folder.file("data/sub"), withIntermediateDirectories: true)
        for (index, size) in sizes.enumerated() {
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            all += bytes
            try Data(bytes).write(to: URL(fileURLWithPath: folder.file("data/sub/f\(index)")))
        }
        var progressSeen = Int64(0)
        let seen = Mutex(Int64(0))
        let metainfo = try TorrentCreator(options: options(threads: 3)).create(folder.file("data")) { done in
            seen.withLock { $0 = max($0, done) }
        }
        progressSeen = seen.withLock { $0 }
        #expect(progressSeen == Int64(all.count))
        #expect(metainfo.info.files.map(\.length) == sizes.map(Int64.init))
        var expected: [UInt8] = []
        var offset = 0
        while offset < all.count {
            let end = min(offset + (64 << 10), all.count)
            expected += Array(Insecure.SHA1.hash(data: all[offset..<end]))
            offset = end
        }
        #expect(metainfo.info.pieceHashes == expected)
    }

    @Test func fileOrderCanBeGiven() throws {
        var options = options()
        options.fileOrder = [["disk.qcow2"], ["config", "vm.xml"]]
        let metainfo = try TorrentCreator(options: options).create(fixturesURL.appendingPathComponent("payloads/image-bundle").path)
        #expect(metainfo.info.files.map(\.path) == [["disk.qcow2"], ["config", "vm.xml"]])
        #expect(metainfo.info.totalLength == 150_001 + 1_234)
    }

    @Test func badFileListsAreRefused() {
        let bundle = fixturesURL.appendingPathComponent("payloads/image-bundle").path
        for order in [[["..", "vm-small.img"]], [["missing"]], [["config"]], [["disk.qcow2"], ["disk.qcow2"]]] {
            var options = options()
            options.fileOrder = order
            #expect(throws: CreationError.self) { try TorrentCreator(options: options).create(bundle) }
        }
    }

    @Test func clearErrorsForBadSources() throws {
        #expect(throws: CreationError.notFound("/nonexistent/image")) { try TorrentCreator(options: options()).create("/nonexistent/image") }
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        #expect(throws: CreationError.noFiles(folder.path)) { try TorrentCreator(options: options()).create(folder.path) }
        var bad = options()
        bad.pieceLength = 100_000
        #expect(throws: CreationError.invalidPieceLength(100_000)) {
            try TorrentCreator(options: bad).create(fixturesURL.appendingPathComponent("payloads/vm-small.img").path)
        }
        var badName = options()
        badName.name = ".."
        #expect(throws: CreationError.invalidName("..")) {
            try TorrentCreator(options: badName).create(fixturesURL.appendingPathComponent("payloads/vm-small.img").path)
        }
        #expect(mkfifo(folder.file("pipe"), 0o600) == 0)
        #expect(throws: CreationError.unsupportedFileType(folder.file("pipe"))) { try TorrentCreator(options: options()).create(folder.path) }
    }

    /// The scan refuses links, but a file could be swapped for one after the scan and before the
    /// read: the file opened must be the file scanned, or nothing of it is hashed.
    @Test func aFileSwappedForALinkAfterTheScanIsRefused() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let manager = FileManager.default
        try manager.createDirectory(atPath: folder.file("d"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder.file("d/a")))
        try Data(Array("sec".utf8)).write(to: URL(fileURLWithPath: folder.file("secret")))
        let creator = TorrentCreator(options: options())
        let (source, pieceLength, _) = try creator.plan(folder.file("d"))
        try manager.removeItem(atPath: folder.file("d/a"))
        try manager.createSymbolicLink(atPath: folder.file("d/a"), withDestinationPath: folder.file("secret"))
        #expect(throws: CreationError.replaced(path: folder.file("d/a"))) {
            try creator.create(folder.file("d"), source: source, pieceLength: pieceLength, progress: nil)
        }
        // Unchanged, the same plan hashes.
        try manager.removeItem(atPath: folder.file("d/a"))
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder.file("d/a")))
        let again = try creator.plan(folder.file("d"))
        #expect(try creator.create(folder.file("d"), source: again.source, pieceLength: again.pieceLength, progress: nil).info.totalLength == 3)
    }

    /// mktorrent and transmission-create follow links inside the folder, out of it too; vmswarm
    /// refuses every one (to a file, to a folder, dangling, a cycle, or on the way of `fileOrder`),
    /// naming the link, and still follows the path the user named.
    @Test func symbolicLinksInsideTheFolderAreRefused() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let manager = FileManager.default
        try manager.createDirectory(atPath: folder.file("d/inner"), withIntermediateDirectories: true)
        try manager.createDirectory(atPath: folder.file("outside"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder.file("d/inner/a")))
        try Data(Array("secret".utf8)).write(to: URL(fileURLWithPath: folder.file("outside/secret")))
        #expect(try TorrentCreator(options: options()).create(folder.file("d")).info.files.map(\.path) == [["inner", "a"]])

        let cases: [(link: String, target: String)] = [
            ("d/inner/file-link", folder.file("outside/secret")),  // a file out of the tree
            ("d/folder-link", folder.file("outside")),  // a folder out of the tree
            ("d/dangling", folder.file("nowhere")),
            ("d/inner/loop", folder.file("d")),  // a cycle
            ("d/inner/b", "a"),  // even a link that stays inside
        ]
        for (link, target) in cases {
            try manager.createSymbolicLink(atPath: folder.file(link), withDestinationPath: target)
            #expect(throws: CreationError.symbolicLink(path: folder.file(link), target: target), "\(link)") {
                try TorrentCreator(options: options()).create(folder.file("d"))
            }
            try manager.removeItem(atPath: folder.file(link))
        }

        // A file list may not pass through a linked folder either.
        try manager.createSymbolicLink(atPath: folder.file("d/via"), withDestinationPath: folder.file("outside"))
        var listed = options()
        listed.fileOrder = [["inner", "a"], ["via", "secret"]]
        #expect(throws: CreationError.symbolicLink(path: folder.file("d/via"), target: folder.file("outside"))) {
            try TorrentCreator(options: listed).create(folder.file("d"))
        }
        try manager.removeItem(atPath: folder.file("d/via"))

        // The path named on the command line is the user's choice, and is followed.
        try manager.createSymbolicLink(atPath: folder.file("named"), withDestinationPath: folder.file("d"))
        #expect(try TorrentCreator(options: options()).create(folder.file("named")).info.files.map(\.path) == [["inner", "a"]])
    }

    /// A sparse file near Int64.max bytes: the piece size rule and the piece count used to trap in
    /// `total + length - 1`; now `plan` says the piece size is too small.
    @Test func hugeTotalsGiveATypedErrorNotATrap() {
        #expect(PieceSizeRule.pieceLength(forTotalLength: .max) == PieceSizeRule.maximum)
        #expect(PieceSizeRule.pieceLength(forTotalLength: .max - 1) == PieceSizeRule.maximum)
    }

    /// 1 TiB (sparse) in 16 KiB pieces is 2^26 pieces: refused by `plan`, before any read, with a
    /// message that says what to change.
    @Test func tooManyPiecesIsRefusedBeforeHashing() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("sparse.img")
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, 1 << 40) == 0)
        var small = options()
        small.pieceLength = 16 << 10
        #expect(throws: CreationError.tooManyPieces(path: path, count: 1 << 26, pieceLength: 16 << 10)) {
            try TorrentCreator(options: small).plan(path)
        }
        #expect(CreationError.tooManyPieces(path: path, count: 1 << 26, pieceLength: 16 << 10).description
            .contains("choose a larger piece size"))
        // The automatic piece size (16 MiB for 1 TiB) stays under the limit.
        var auto = options()
        auto.pieceLength = nil
        #expect(try TorrentCreator(options: auto).plan(path).pieceLength == 16 << 20)
    }
}
