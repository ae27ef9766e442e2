import Crypto
import Foundation
import Metainfo
import TestSupport
import Synchronization
import Testing

@testable import Storage

/// A stand-in for sealing: the wire form of a piece is its stored bytes XORed with the piece index,
/// followed by a 4-byte marker; a wire piece whose marker is wrong does not "authenticate".
struct MarkedTransform: PieceTransform {
    let chunk: Int
    let storedLength: Int64
    static let marker: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]

    func storedRange(of piece: PieceIndex) -> Range<Int64> {
        let start = Int64(piece.value * chunk)
        return start..<min(start + Int64(chunk), storedLength)
    }
    func store(_ piece: PieceIndex, wire: UnsafeRawBufferPointer, into stored: UnsafeMutableRawBufferPointer) throws {
        guard Array(wire.suffix(4)) == Self.marker else { throw CocoaError(.coderInvalidValue) }
        for index in stored.indices { stored[index] = wire[index] ^ UInt8(truncatingIfNeeded: piece.value) }
    }
    func makeWire(_ piece: PieceIndex, inPlace buffer: UnsafeMutableRawBufferPointer) throws {
        let stored = buffer.count - 4
        for index in 0..<stored { buffer[index] ^= UInt8(truncatingIfNeeded: piece.value) }
        for (offset, byte) in Self.marker.enumerated() { buffer[stored + offset] = byte }
    }
    func wire(_ piece: PieceIndex, fromStored stored: UnsafeRawBufferPointer) -> [UInt8] {
        stored.map { $0 ^ UInt8(truncatingIfNeeded: piece.value) } + Self.marker
    }
}

@Suite struct TransformedStoreTests {
    /// A 3.5-chunk image, its wire pieces, and the torrent of the wire form.
    func fixture() throws -> (plain: [UInt8], wire: [[UInt8]], info: TorrentInfo, transform: MarkedTransform) {
        let chunk = 1020
        var random = SplitMix64(seed: 9)
        let plain = (0..<(chunk * 3 + 510)).map { _ in UInt8.random(in: 0...255, using: &random) }
        let transform = MarkedTransform(chunk: chunk, storedLength: Int64(plain.count))
        let wire = (0..<4).map { index in
            plain[(index * chunk)..<min((index + 1) * chunk, plain.count)].withUnsafeBytes {
                transform.wire(PieceIndex(index), fromStored: $0)
            }
        }
        let info = try TorrentInfo(name: "t.img", files: [FileEntry(path: ["t.img"], length: Int64(wire.map(\.count).reduce(0, +)))],
            isMultiFile: false, privacy: .unspecified, pieceLength: chunk + 4, pieceHashes: wire.flatMap { Array(Insecure.SHA1.hash(data: $0)) })
        return (plain, wire, info, transform)
    }

    @Test func storesTheStoredFormServesTheWireFormAndResumes() throws {
        let (plain, wire, info, transform) = try fixture()
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        do {
            let store = try PieceStore.download(info, into: folder.path, transform: transform)
            for piece in [0, 2] { try wire[piece].withUnsafeBytes { try store.write(PieceIndex(piece), data: $0) } }
        }
        // A restart re-derives the wire form of what is stored and finds exactly those pieces.
        let store = try PieceStore.download(info, into: folder.path, transform: transform)
        let have = store.verify(threads: 2)
        #expect(have.count == 2 && have[PieceIndex(0)] && have[PieceIndex(2)])
        for piece in [1, 3] { try wire[piece].withUnsafeBytes { try store.write(PieceIndex(piece), data: $0) } }
        // Peers get the wire form, block by block.
        #expect(try pieceBytes(info, PieceIndex(3), from: store) == wire[3])
        try store.finish()
        #expect(try Data(contentsOf: URL(fileURLWithPath: folder.file("t.img"))) == Data(plain))
    }

    @Test func aRefusedPieceIsNeverWritten() throws {
        let (_, wire, info, transform) = try fixture()
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let store = try PieceStore.download(info, into: folder.path, transform: transform)
        var forged = wire[1]
        forged[forged.count - 1] ^= 1
        #expect(throws: StorageError.self) { try forged.withUnsafeBytes { try store.write(PieceIndex(1), data: $0) } }
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: folder.file("t.img.part")))
        #expect(onDisk.allSatisfy { $0 == 0 }, "nothing of the refused piece reached the file")
    }
}

@Suite struct SingleFileTests {
    @Test func aLengthNoFileCanHaveIsAnErrorNotACrash() {
        #expect(throws: StorageError.invalidLength(path: "/nonexistent/x", length: -1)) {
            try FileSet(singleFile: "/nonexistent/x", length: -1)
        }
    }

    /// A seeder's stored piece that changed on disk is refused when read for a peer: `readWire`
    /// throws `pieceChanged`, leaves nothing of the re-made wire form in the buffer, and never
    /// transforms the piece again (for a sealed image, that would be sealing changed plaintext
    /// under the same nonce again), even after the file is put back. Other pieces are still served.
    @Test func aPieceChangedOnDiskIsRefusedAndNeverTransformedAgain() throws {
        let (plain, wire, info, marked) = try TransformedStoreTests().fixture()
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("t.img")
        try Data(plain).write(to: URL(fileURLWithPath: path))
        let transform = CountingTransform(inner: marked)
        let store = try PieceStore.seed(info, data: path, transform: transform)
        #expect(store.verify(threads: 2).isComplete)
        #expect(try pieceBytes(info, PieceIndex(1), from: store) == wire[1])

        // The plaintext of piece 1 changes under the seeder.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 1500)
        try handle.write(contentsOf: [plain[1500] ^ 0x55])
        let before = transform.wireCalls
        var buffer = [UInt8](repeating: 0xAA, count: info.layout.length(of: PieceIndex(1)))
        #expect(throws: StorageError.pieceChanged(piece: 1, path: path)) {
            try buffer.withUnsafeMutableBytes { try store.readWire(PieceIndex(1), into: $0) }
        }
        #expect(buffer.allSatisfy { $0 == 0 }, "nothing of the re-made piece is left to send")
        #expect(transform.wireCalls == before + 1)
        #expect(store.refusedPieceCount == 1)

        // Put back, it is still refused, and not transformed again.
        try handle.seek(toOffset: 1500)
        try handle.write(contentsOf: [plain[1500]])
        try handle.close()
        #expect(throws: StorageError.pieceChanged(piece: 1, path: path)) { _ = try pieceBytes(info, PieceIndex(1), from: store) }
        #expect(transform.wireCalls == before + 1)
        #expect(try pieceBytes(info, PieceIndex(2), from: store) == wire[2])
        #expect(store.refusedPieceCount == 1)
    }
}

/// A transform that counts how often a wire form is made.
final class CountingTransform: PieceTransform {
    let inner: MarkedTransform
    private let calls = Atomic<Int>(0)
    var wireCalls: Int { calls.load(ordering: .relaxed) }

    init(inner: MarkedTransform) { self.inner = inner }

    var storedLength: Int64 { inner.storedLength }
    func storedRange(of piece: PieceIndex) -> Range<Int64> { inner.storedRange(of: piece) }
    func store(_ piece: PieceIndex, wire: UnsafeRawBufferPointer, into stored: UnsafeMutableRawBufferPointer) throws {
        try inner.store(piece, wire: wire, into: stored)
    }
    func makeWire(_ piece: PieceIndex, inPlace buffer: UnsafeMutableRawBufferPointer) throws {
        calls.add(1, ordering: .relaxed)
        try inner.makeWire(piece, inPlace: buffer)
    }
}
