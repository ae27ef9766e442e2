import Foundation
import Metainfo
import TestSupport
import Testing

@testable import Storage

/// Reads the fixture payload's bytes for one piece (single-file torrent) or builds them from the
/// files (multi-file, padding as zeros), through a read-only FileSet over the fixture data.
func pieceBytes(_ info: TorrentInfo, _ piece: PieceIndex, from store: PieceStore) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: info.layout.length(of: piece))
    try bytes.withUnsafeMutableBytes { try store.readWire(piece, into: $0) }
    return bytes
}

func torrent(_ name: String) throws -> TorrentInfo {
    try Metainfo(parsing: Data(contentsOf: fixturesURL.appendingPathComponent("torrents/\(name)"))).info
}

@Suite struct PieceStoreTests {
    let payloads = fixturesURL.appendingPathComponent("payloads").path

    @Test func downloadWritesToPartThenRenamesAndResumes() throws {
        let info = try torrent("vm-small.mktorrent.torrent")
        let source = try PieceStore.seed(info, data: payloads + "/vm-small.img")
        #expect(source.verify(threads: 2).isComplete)
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }

        do {
            let store = try PieceStore.download(info, into: folder.path)
            #expect(store.workingPath == folder.file("vm-small.img.part"))
            #expect(store.isNew)
            #expect(store.verify(threads: 2).isEmpty)
            for piece in [0, 3].map(PieceIndex.init) {
                try pieceBytes(info, piece, from: source).withUnsafeBytes { try store.write(piece, data: $0) }
            }
        }
        // A restart (a new store over the same .part, once the first let go of it) finds exactly
        // the written pieces.
        let store = try PieceStore.download(info, into: folder.path)
        #expect(!store.isNew)
        let have = store.verify(threads: 2)
        #expect(have.count == 2 && have[PieceIndex(0)] && have[PieceIndex(3)])
        for piece in info.layout.pieces where !have[piece] {
            try pieceBytes(info, piece, from: source).withUnsafeBytes { try store.write(piece, data: $0) }
        }
        #expect(store.verify(threads: 2).isComplete)
        try store.finish()
        #expect(!FileManager.default.fileExists(atPath: folder.file("vm-small.img.part")))
        #expect(try sha256(folder.file("vm-small.img")) == (try sha256(payloads + "/vm-small.img")))
    }

    @Test func multiFileWithPaddingWritesOnlyRealFiles() throws {
        let info = try torrent("image-bundle.libtorrent-hybrid.torrent")
        let source = try PieceStore.seed(info, data: payloads + "/image-bundle")
        #expect(source.verify(threads: 2).isComplete)
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let store = try PieceStore.download(info, into: folder.path)
        for piece in info.layout.pieces.reversed() {
            try pieceBytes(info, piece, from: source).withUnsafeBytes { try store.write(piece, data: $0) }
        }
        try store.finish()
        for file in info.files where !file.isPadding {
            let path = file.path.joined(separator: "/")
            #expect(try sha256(folder.file("image-bundle/\(path)")) == (try sha256(payloads + "/image-bundle/\(path)")), "\(path)")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.file("image-bundle/.pad")))
    }

    @Test func anExistingFileUnderTheFinalNameIsNeverTouched() throws {
        let info = try torrent("vm-small.mktorrent.torrent")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Data("someone else's file".utf8).write(to: URL(fileURLWithPath: folder.file("vm-small.img")))
        let store = try PieceStore.download(info, into: folder.path)
        #expect(store.isFinished)
        #expect(store.verify(threads: 1).isEmpty)
        #expect(try String(contentsOfFile: folder.file("vm-small.img"), encoding: .utf8) == "someone else's file")
    }
}

@Suite struct FileSetTests {
    @Test func aFileShorterThanTheLayoutIsAnError() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder.file("short")))
        let layout = try PieceLayout(pieceLength: 16, fileLengths: [10])
        let reader = try FileSet(layout: layout, paths: [folder.file("short")])
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 10, alignment: 1)
        defer { buffer.deallocate() }
        #expect(throws: StorageError.fileTooShort(path: folder.file("short"), expectedLength: 10, endedAt: 3)) {
            try reader.read(0..<10, into: buffer)
        }
        #expect(throws: StorageError.self) { try FileSet(layout: layout, paths: [folder.file("absent")]) }
    }

    @Test func paddingReadsAsZeros() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Data([9, 9]).write(to: URL(fileURLWithPath: folder.file("a")))
        let layout = try PieceLayout(pieceLength: 16, fileLengths: [2, 3])
        let reader = try FileSet(layout: layout, paths: [folder.file("a"), nil])
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 5, alignment: 1)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xAA)
        try reader.read(0..<5, into: buffer)
        #expect(Array(buffer) == [9, 9, 0, 0, 0])
    }

    /// Two downloads of one torrent into one folder: the second is refused while the first holds
    /// its `.part` (for a single file and for a folder), and may go on once the first is gone.
    @Test(arguments: ["vm-small.mktorrent.torrent", "image-bundle.libtorrent-hybrid.torrent"])
    func aSecondDownloadIntoTheSameFolderIsRefused(_ name: String) throws {
        let info = try torrent(name)
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let part = folder.file(info.name + ".part")
        do {
            let first = try PieceStore.download(info, into: folder.path)
            #expect(throws: StorageError.locked(path: part)) { try PieceStore.download(info, into: folder.path) }
            #expect(first.isNew)
        }
        let again = try PieceStore.download(info, into: folder.path)
        #expect(!again.isNew)
    }
}

/// The plaintext a key holder writes (the stored form of a transformed store) is for its user only.
@Suite struct PrivateFilesTests {
    @Test func aTransformedDownloadIsCreated0600AndStaysSo() throws {
        let transform = MarkedTransform(chunk: 1020, storedLength: 4000)
        let info = try TorrentInfo(name: "t.img", files: [FileEntry(path: ["t.img"], length: 4016)], isMultiFile: false,
            privacy: .unspecified, pieceLength: 1024, pieceHashes: [UInt8](repeating: 0, count: 4 * 20))
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
        }
        do {
            let store = try PieceStore.download(info, into: folder.path, transform: transform)
            #expect(try mode(store.workingPath) == 0o600)
            try store.finish()
        }
        #expect(try mode(folder.file("t.img")) == 0o600)
        // A .part left world-readable (by an older version, or by hand) is made private when reopened.
        try FileManager.default.moveItem(atPath: folder.file("t.img"), toPath: folder.file("t.img.part"))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: folder.file("t.img.part"))
        _ = try PieceStore.download(info, into: folder.path, transform: transform)
        #expect(try mode(folder.file("t.img.part")) == 0o600)
        // A plain download keeps the usual 0644.
        // (into a folder that does not exist yet: it is created, as before the lock.)
        let plain = try PieceStore.download(info, into: folder.file("plain/deeper"))
        #expect(try mode(plain.workingPath) == 0o644)
    }
}

/// Issue 15, point 7 ("no following of symlinks on create"): a symbolic link planted in a shared
/// output folder at `NAME.part` or `NAME` (or, for a multi-file torrent, at a folder inside
/// `NAME.part`) is refused with an error naming it, and the file it points to is left as it was:
/// not created, not truncated, not chmodded, not written.
@Suite struct SymbolicLinkTests {
    func attributes(_ path: String) throws -> (size: Int, mode: Int) {
        let found = try FileManager.default.attributesOfItem(atPath: path)
        return ((found[.size] as? Int) ?? -1, (found[.posixPermissions] as? Int) ?? -1)
    }

    @Test func aLinkPlantedAtThePartFileIsRefusedAndItsTargetUntouched() throws {
        let info = try torrent("vm-small.mktorrent.torrent")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let manager = FileManager.default
        try manager.createDirectory(atPath: folder.file("out"), withIntermediateDirectories: true)
        let victim = folder.file("victim")
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        try manager.setAttributes([.posixPermissions: 0o644], ofItemAtPath: victim)
        let part = folder.file("out/vm-small.img.part")
        try manager.createSymbolicLink(atPath: part, withDestinationPath: victim)
        #expect(throws: StorageError.symbolicLink(path: part, target: victim)) {
            try PieceStore.download(info, into: folder.file("out"))
        }
        // A sealed image's store (fchmod 0600) and the sealer's writer (FileSet) refuse it too.
        let transform = MarkedTransform(chunk: 1020, storedLength: 4000)
        let sealed = try TorrentInfo(name: "vm-small.img", files: [FileEntry(path: ["vm-small.img"], length: 4016)],
            isMultiFile: false, privacy: .unspecified, pieceLength: 1024, pieceHashes: [UInt8](repeating: 0, count: 4 * 20))
        #expect(throws: StorageError.symbolicLink(path: part, target: victim)) {
            try PieceStore.download(sealed, into: folder.file("out"), transform: transform)
        }
        #expect(throws: StorageError.symbolicLink(path: part, target: victim)) {
            try FileSet(singleFile: part, length: 4000, mode: .readWrite, private: true)
        }
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
        #expect(try attributes(victim).mode == 0o644)

        // A dangling link: following it would create a file of the planter's choosing.
        let absent = folder.file("created-by-the-link")
        try manager.removeItem(atPath: part)
        try manager.createSymbolicLink(atPath: part, withDestinationPath: absent)
        #expect(throws: StorageError.symbolicLink(path: part, target: absent)) {
            try PieceStore.download(info, into: folder.file("out"))
        }
        #expect(!manager.fileExists(atPath: absent))
        #expect(StorageError.symbolicLink(path: part, target: absent).description.contains(part))
    }

    @Test func aLinkPlantedAtTheFinalNameIsRefused() throws {
        let info = try torrent("vm-small.mktorrent.torrent")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let victim = folder.file("victim")
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        try FileManager.default.createSymbolicLink(atPath: folder.file("vm-small.img"), withDestinationPath: victim)
        #expect(throws: StorageError.symbolicLink(path: folder.file("vm-small.img"), target: victim)) {
            try PieceStore.download(info, into: folder.path)
        }
        #expect(!FileManager.default.fileExists(atPath: folder.file("vm-small.img.part")))
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
    }

    @Test func aLinkPlantedInsideAMultiFilePartFolderIsRefused() throws {
        let info = try torrent("image-bundle.libtorrent-hybrid.torrent")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let manager = FileManager.default
        let part = folder.file(info.name + ".part")
        // The .part folder itself as a link to a folder elsewhere.
        try manager.createDirectory(atPath: folder.file("elsewhere"), withIntermediateDirectories: true)
        try manager.createSymbolicLink(atPath: part, withDestinationPath: folder.file("elsewhere"))
        #expect(throws: StorageError.symbolicLink(path: part, target: folder.file("elsewhere"))) {
            try PieceStore.download(info, into: folder.path)
        }
        #expect(try manager.contentsOfDirectory(atPath: folder.file("elsewhere")).isEmpty)
        try manager.removeItem(atPath: part)

        // A file of the torrent, and a folder on the way to one, planted as links in a real .part.
        let file = try #require(info.files.first { !$0.isPadding && $0.path.count > 1 })
        try manager.createDirectory(atPath: part, withIntermediateDirectories: true)
        let victim = folder.file("victim")
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        let planted = ([part] + file.path).joined(separator: "/")
        let first = part + "/" + file.path[0]
        try manager.createSymbolicLink(atPath: first, withDestinationPath: folder.file("elsewhere"))
        #expect(throws: StorageError.symbolicLink(path: first, target: folder.file("elsewhere"))) {
            try PieceStore.download(info, into: folder.path)
        }
        #expect(try manager.contentsOfDirectory(atPath: folder.file("elsewhere")).isEmpty)
        try manager.removeItem(atPath: first)
        try manager.createDirectory(atPath: (planted as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try manager.createSymbolicLink(atPath: planted, withDestinationPath: victim)
        #expect(throws: StorageError.symbolicLink(path: planted, target: victim)) {
            try PieceStore.download(info, into: folder.path)
        }
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
    }

    /// Seeding reads through links on purpose: the operator names the data, and a link to an image
    /// kept elsewhere is a normal way to do it. Nothing is created, resized or written.
    @Test func seedingFollowsALinkTheOperatorMade() throws {
        let info = try torrent("vm-small.mktorrent.torrent")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let image = fixturesURL.appendingPathComponent("payloads/vm-small.img").path
        try FileManager.default.createSymbolicLink(atPath: folder.file("linked.img"), withDestinationPath: image)
        #expect(try PieceStore.seed(info, data: folder.file("linked.img")).verify(threads: 1).isComplete)
    }
}
