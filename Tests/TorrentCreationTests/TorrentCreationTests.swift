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

    @Test func symlinkCyclesAreNotFollowedForever() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try FileManager.default.createDirectory(atPath: folder.file("d/inner"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder.file("d/inner/a")))
        try FileManager.default.createSymbolicLink(atPath: folder.file("d/inner/loop"), withDestinationPath: folder.file("d"))
        let metainfo = try TorrentCreator(options: options()).create(folder.file("d"))
        #expect(metainfo.info.files.map(\.path) == [["inner", "a"]])
    }
}
