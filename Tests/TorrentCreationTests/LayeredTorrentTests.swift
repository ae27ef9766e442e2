import Crypto
import Foundation
import Metainfo
import TestSupport
import Testing

@testable import TorrentCreation

/// `create --align-files`: layers on piece boundaries with BEP 47 padding, a SHA-1 per layer.
@Suite struct LayeredTorrentTests {
    static let pieceLength = 64 << 10

    func layers(_ folder: TemporaryFolder, _ name: String, _ files: [(String, [UInt8])]) throws -> String {
        let path = folder.file(name)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for (file, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: path + "/" + file)) }
        return path
    }

    func aligned(_ path: String) throws -> Metainfo {
        var options = TorrentCreator.Options(threads: 2)
        options.pieceLength = Self.pieceLength
        options.alignFiles = true
        return try TorrentCreator(options: options).create(path)
    }

    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    @Test func everyFileStartsOnAPieceBoundaryWithLibtorrentsPadding() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let base = Self.bytes(200_000, seed: 1), user = Self.bytes(70_000, seed: 2)
        let even = Self.bytes(Self.pieceLength, seed: 3)
        let path = try layers(folder, "image", [("1-base", base), ("2-even", even), ("3-user", user)])
        let info = try aligned(path).info
        let length = Int64(Self.pieceLength)
        #expect(info.files.map(\.path) == [["1-base"], [".pad", "62144"], ["2-even"], ["3-user"], [".pad", "61072"]])
        #expect(info.files.map(\.isPadding) == [false, true, false, false, true])
        for (index, file) in info.files.enumerated() where !file.isPadding {
            #expect(info.layout.fileOffsets[index] % length == 0, "\(file.path)")
        }
        #expect(info.totalLength % length == 0)
        #expect(info.files[0].sha1 == Array(Insecure.SHA1.hash(data: base)))
        #expect(info.files[3].sha1 == Array(Insecure.SHA1.hash(data: user)))
        #expect(info.files.filter(\.isPadding).allSatisfy { $0.sha1 == nil })
    }

    @Test func aLayerHasTheSamePieceHashesInEveryTorrentThatCarriesIt() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let base = Self.bytes(300_001, seed: 7)
        let first = try aligned(try layers(folder, "v1", [("a-site", Self.bytes(10_000, seed: 8)), ("b-base", base)])).info
        let second = try aligned(try layers(folder, "v2", [
            ("0-vendor", Self.bytes(150_000, seed: 9)), ("b-base", base), ("c-user", Self.bytes(99_999, seed: 10)),
        ])).info
        func pieceHashes(of name: String, in info: TorrentInfo) -> [[UInt8]] {
            let index = info.files.firstIndex { $0.path == [name] }!
            return info.layout.pieces(ofFile: index).map { Array(info.hash(of: PieceIndex($0))) }
        }
        let inFirst = pieceHashes(of: "b-base", in: first), inSecond = pieceHashes(of: "b-base", in: second)
        #expect(inFirst.count == 5)
        #expect(inFirst == inSecond)
        // Without alignment the layer's pieces depend on what comes before it.
        var options = TorrentCreator.Options(threads: 2)
        options.pieceLength = Self.pieceLength
        let unaligned = try TorrentCreator(options: options).create(folder.file("v2")).info
        #expect(pieceHashes(of: "b-base", in: unaligned) != inSecond)
    }

    @Test func theDigestsAndPaddingSurviveAReadBack() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let made = try aligned(try layers(folder, "image", [("base", Self.bytes(100_000, seed: 4)), ("user", Self.bytes(5, seed: 5))]))
        let read = try Metainfo(parsing: made.encoded())
        #expect(read.info.files == made.info.files)
        #expect(read.infoHash == made.infoHash)
    }

    @Test func aSingleFileAndAnAlreadyAlignedFolderAreUnchangedButForDigests() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Data(Self.bytes(100_000, seed: 6)).write(to: URL(fileURLWithPath: folder.file("disk.img")))
        var options = TorrentCreator.Options(threads: 2)
        options.pieceLength = Self.pieceLength
        let plain = try TorrentCreator(options: options).create(folder.file("disk.img"))
        #expect(try aligned(folder.file("disk.img")).infoHash == plain.infoHash)
    }

    @Test func aWrongSizedOrTypedSha1IsIgnoredNotRefused() throws {
        func torrent(sha1: String) -> [UInt8] {
            let pieces = String(repeating: "a", count: 20)
            return Array("d4:infod5:filesld6:lengthi5e4:pathl1:ae4:sha1\(sha1)ee4:name1:x12:piece lengthi16384e6:pieces20:\(pieces)ee".utf8)
        }
        #expect(try Metainfo(parsing: torrent(sha1: "3:abc")).info.files[0].sha1 == nil)
        #expect(try Metainfo(parsing: torrent(sha1: "i5e")).info.files[0].sha1 == nil)
        #expect(try Metainfo(parsing: torrent(sha1: "20:" + String(repeating: "b", count: 20))).info.files[0].sha1
            == Array(repeating: UInt8(ascii: "b"), count: 20))
    }
}

/// The qcow2 header parser, on bytes made here (hostile ones included) rather than by qemu-img.
@Suite struct QCOW2HeaderTests {
    /// A version 3 header with cluster bits 16 naming `name` at `offset`.
    static func header(version: UInt32 = 3, clusterBits: UInt32 = 16, offset: UInt64 = 112, nameLength: UInt32? = nil,
                       name: String = "base.qcow2") -> [UInt8] {
        func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.bigEndian, Array.init) }
        var bytes = bigEndian(UInt32(0x5146_49fb)) + bigEndian(version) + bigEndian(name.isEmpty ? 0 : offset)
        bytes += bigEndian(nameLength ?? UInt32(name.utf8.count)) + bigEndian(clusterBits)
        bytes += [UInt8](repeating: 0, count: Int(offset) - bytes.count)
        return bytes + Array(name.utf8)
    }

    @Test func theBackingFileNameIsFound() throws {
        let bytes = Self.header()
        let header = try QCOW2Header(parsing: bytes)
        #expect(header.version == 3 && header.clusterBits == 16)
        let range = try #require(header.backingFileName)
        #expect(String(decoding: bytes[Int(range.lowerBound)..<Int(range.upperBound)], as: UTF8.self) == "base.qcow2")
        #expect(try QCOW2Header(parsing: Self.header(name: "")).backingFileName == nil)
    }

    @Test func hostileHeadersAreRefusedNotTrappedOn() {
        #expect(throws: QCOW2Header.Problem.notQCOW2) { try QCOW2Header(parsing: Array("QFI".utf8)) }
        #expect(throws: QCOW2Header.Problem.notQCOW2) { try QCOW2Header(parsing: [UInt8](repeating: 0, count: 512)) }
        #expect(throws: QCOW2Header.Problem.truncated(length: 40)) { try QCOW2Header(parsing: Self.header().prefix(40)) }
        #expect(throws: QCOW2Header.Problem.unsupportedVersion(9)) { try QCOW2Header(parsing: Self.header(version: 9)) }
        #expect(throws: QCOW2Header.Problem.invalidClusterBits(63)) { try QCOW2Header(parsing: Self.header(clusterBits: 63)) }
        #expect(throws: QCOW2Header.Problem.invalidBackingFileName(offset: 112, length: 5000)) {
            try QCOW2Header(parsing: Self.header(nameLength: 5000))
        }
        #expect(throws: QCOW2Header.Problem.invalidBackingFileName(offset: 65530, length: 10)) {
            try QCOW2Header(parsing: Self.header(offset: 65530))
        }
        // An offset near UInt64.max must not overflow the bound check.
        var huge = Self.header()
        huge.replaceSubrange(8..<16, with: [UInt8](repeating: 0xff, count: 8))
        #expect(throws: QCOW2Header.Problem.invalidBackingFileName(offset: .max, length: 10)) { try QCOW2Header(parsing: huge) }
        var random = SeededRandom(seed: 19)
        for _ in 0..<2000 {
            var bytes = Self.header()
            for _ in 0..<4 { bytes[Int.random(in: 0..<72, using: &random)] = UInt8.random(in: 0...255, using: &random) }
            _ = try? QCOW2Header(parsing: bytes)
        }
    }

    @Test func chainsWithNamesThatResolveOnlyHereAreRefused() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        func write(_ name: String, _ bytes: [UInt8]) throws {
            try Data(bytes).write(to: URL(fileURLWithPath: folder.file(name)))
        }
        for name in ["/var/lib/images/base.qcow2", "nbd://host/base", "json:{}"] {
            try write("top.qcow2", Self.header(name: name))
            #expect(throws: CreationError.self) { try QCOW2Chain.layers(top: folder.file("top.qcow2")) }
        }
        try write("b.qcow2", Self.header(name: "./a.qcow2"))
        try write("a.qcow2", Self.header(name: "b.qcow2"))
        #expect(throws: CreationError.self) { try QCOW2Chain.layers(top: folder.file("a.qcow2")) }
        try write("c.qcow2", Self.header(name: "../missing.qcow2"))
        #expect(throws: CreationError.self) { try QCOW2Chain.layers(top: folder.file("c.qcow2")) }
    }

    /// Relative names, `..` included, are followed, and each layer keeps its path below the
    /// folder the chain shares, so the same names resolve wherever `get` puts the torrent.
    @Test func relativeBackingNamesKeepTheirPathsBelowTheSharedFolder() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        for sub in ["images/base", "images/users/alice"] {
            try FileManager.default.createDirectory(atPath: folder.file(sub), withIntermediateDirectories: true)
        }
        try Data(Self.header(name: "../../base//./raw.img")).write(to: URL(fileURLWithPath: folder.file("images/users/alice/site.qcow2")))
        try Data(Self.header(name: "site.qcow2")).write(to: URL(fileURLWithPath: folder.file("images/users/alice/user.qcow2")))
        try Data("raw".utf8).write(to: URL(fileURLWithPath: folder.file("images/base/raw.img")))
        let chain = try QCOW2Chain.layers(top: folder.file("images/users/alice/user.qcow2"))
        #expect(chain.folder.hasSuffix("/images"))
        #expect(chain.files == [["base", "raw.img"], ["users", "alice", "site.qcow2"], ["users", "alice", "user.qcow2"]])
        let plain = try QCOW2Chain.layers(top: folder.file("images/base/raw.img"))
        #expect(plain.files == [["raw.img"]])
    }
}
