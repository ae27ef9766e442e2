import Crypto
import Foundation
import Metainfo
import Sealing
import Storage
import TestSupport
import Testing

@Suite struct KnownAnswerTests {
    @Test func keyCheck() throws {
        let parameters = try KAT.parameters(plainLength: 0)
        #expect(
            HexCoding.encode(parameters.keyCheck) == "b88592c346170d42562586a6af7c9a7cf6ecb46abc1c8f7ee038f33e9e3bcc01")
    }

    @Test func twoPieceImage() throws {
        let plain = KAT.image(KAT.chunk + 5)
        let parameters = try KAT.parameters(plainLength: plain.count)
        let sealer = try PieceSealer(key: KAT.key, parameters: parameters)
        #expect(parameters.pieceCount == 2)
        #expect(parameters.sealedLength == 16_405)

        let first = try sealer.seal(PieceIndex(0), plaintext: plain[0..<KAT.chunk])
        #expect(first.count == KAT.pieceLength)
        #expect(HexCoding.encode(first.suffix(16)) == "9ead138f63203daa3f2e2ade74bed18c")
        let last = try sealer.seal(PieceIndex(1), plaintext: plain[KAT.chunk...])
        #expect(HexCoding.encode(last) == "8abdb27352037f337fb404c75fd4017316ab2121b3")
        #expect(
            HexCoding.encode(SHA256.hash(data: first + last))
                == "ae3ef6b7f2eb3261be7493b96efa5c6a58fc768e105ddcacd7cc463611e9b399")
    }

    @Test func emptyImageIsOnePieceOfJustATag() throws {
        let parameters = try KAT.parameters(plainLength: 0)
        #expect(parameters.pieceCount == 1)
        #expect(parameters.sealedLength == 16)
        #expect(parameters.plaintextRange(of: PieceIndex(0)) == 0..<0)
        let sealed = try PieceSealer(key: KAT.key, parameters: parameters).seal(PieceIndex(0), plaintext: [UInt8]())
        #expect(HexCoding.encode(sealed) == "c85ab0569ea6e4e2421ca5543efbd576")
    }

    @Test func infoHashes() throws {
        for (length, expected) in [
            (KAT.chunk + 5, "fcab3cd79968e6ecf92cb2424be654e8d238ae17"),
            (0, "1aea4718e2fd04eb3ddcf8041ee6b1ca439a46cd"),
        ] {
            let fixture = try SealedFixture(KAT.image(length))
            defer { fixture.cleanUp() }
            #expect(fixture.torrent.metainfo.infoHash.hex == expected, "\(length) bytes")
        }
    }
}

@Suite struct GeometryTests {
    @Test func pieceCountsAndSealedLengths() throws {
        let c = Int64(KAT.chunk)
        for (plain, pieces) in [(0, 1), (1, 1), (c - 1, 1), (c, 1), (c + 1, 2), (3 * c, 3), (3 * c + 1, 4)]
            as [(Int64, Int)]
        {
            let parameters = try SealingParameters(
                plainLength: plain, pieceLength: KAT.pieceLength, key: KAT.key, salt: KAT.salt)
            #expect(parameters.pieceCount == pieces, "\(plain)")
            #expect(parameters.sealedLength == plain + 16 * Int64(pieces), "\(plain)")
            let last = PieceIndex(pieces - 1)
            #expect(parameters.plaintextRange(of: last).upperBound == plain)
            #expect(parameters.sealedLength(of: last) == parameters.plaintextLength(of: last) + 16)
        }
    }

    @Test func badParametersAreRefused() {
        for pieceLength in [0, 16, 100_000, 8 << 10, 512 << 20] {
            #expect(throws: SealingError.self) {
                try SealingParameters(plainLength: 10, pieceLength: pieceLength, key: KAT.key)
            }
        }
        #expect(throws: SealingError.invalidParameters("image length -1 is negative")) {
            try SealingParameters(plainLength: -1, pieceLength: KAT.pieceLength, key: KAT.key)
        }
        #expect(throws: SealingError.invalidParameters("an image of \(Int64.max) bytes is too large to seal")) {
            try SealingParameters(plainLength: .max, pieceLength: KAT.pieceLength, key: KAT.key)
        }
        #expect(throws: SealingError.invalidParameters("salt has 31 bytes, not 32")) {
            try SealingParameters(
                plainLength: 1, pieceLength: KAT.pieceLength, key: KAT.key, salt: Array(KAT.salt.dropLast()))
        }
    }

    @Test func randomSaltsDiffer() {
        #expect(SealingParameters.randomSalt() != SealingParameters.randomSalt())
        #expect(SealingParameters.randomSalt().count == 32)
    }
}

@Suite struct RoundTripTests {
    static let lengths = [0, 1, KAT.chunk - 1, KAT.chunk, KAT.chunk + 1, 3 * KAT.chunk + 7]

    @Test(arguments: lengths)
    func imageFileRoundTrip(_ length: Int) throws {
        let fixture = try SealedFixture(KAT.image(length), key: .random(), randomSalt: true)
        defer { fixture.cleanUp() }
        let sealed = try fixture.sealedBytes
        #expect(Int64(sealed.count) == fixture.parameters.sealedLength)
        #expect(fixture.torrent.metainfo.info.totalLength == fixture.parameters.sealedLength)
        #expect(fixture.torrent.metainfo.info.pieceCount == fixture.parameters.pieceCount)

        let sealer = try fixture.torrent.pieceSealer(key: fixture.key)
        try ImageSealer(sealer: sealer).open(sealedAt: fixture.sealedPath, to: fixture.folder.file("out"))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: fixture.folder.file("out")))) == fixture.plain)
    }

    @Test(arguments: lengths)
    func piecesRoundTripAsTheyArrive(_ length: Int) throws {
        let plain = KAT.image(length)
        let key = ContentKey.random()
        let parameters = try SealingParameters(plainLength: Int64(length), pieceLength: KAT.pieceLength, key: key)
        let sealer = try PieceSealer(key: key, parameters: parameters)
        var opened: [UInt8] = []
        for index in 0..<parameters.pieceCount {
            let piece = PieceIndex(index)
            let range = parameters.plaintextRange(of: piece)
            let sealed = try sealer.seal(piece, plaintext: plain[Int(range.lowerBound)..<Int(range.upperBound)])
            #expect(sealed.count == parameters.sealedLength(of: piece))
            // Deterministic: re-sealing stored plaintext gives the bytes the torrent hashed.
            #expect(try sealer.seal(piece, plaintext: plain[Int(range.lowerBound)..<Int(range.upperBound)]) == sealed)
            opened += try sealer.open(piece, sealed: sealed)
        }
        #expect(opened == plain)
    }
}

@Suite struct TamperTests {
    static let plain = KAT.image(KAT.chunk + 5)

    func sealedPieces() throws -> (PieceSealer, [[UInt8]]) {
        let sealer = try PieceSealer(key: KAT.key, parameters: KAT.parameters(plainLength: Self.plain.count))
        return (
            sealer,
            [
                try sealer.seal(PieceIndex(0), plaintext: Self.plain[0..<KAT.chunk]),
                try sealer.seal(PieceIndex(1), plaintext: Self.plain[KAT.chunk...]),
            ]
        )
    }

    @Test func oneBitOfCiphertextOrTag() throws {
        let (sealer, pieces) = try sealedPieces()
        for (index, piece) in pieces.enumerated() {
            // First and last ciphertext byte, first and last tag byte, a middle bit.
            for position in [0, piece.count - 17, piece.count - 16, piece.count - 1, piece.count / 2] {
                #expect(throws: SealingError.authenticationFailed(piece: index)) {
                    try sealer.open(PieceIndex(index), sealed: flipped(piece, at: position, bit: 7))
                }
            }
            #expect(
                try sealer.open(PieceIndex(index), sealed: piece).count
                    == sealer.parameters.plaintextLength(of: PieceIndex(index)))
        }
    }

    @Test func associatedDataBindsIndexLengthAndChunk() throws {
        let (_, pieces) = try sealedPieces()
        // The same key and salt, but another plain length: every piece's AAD differs.
        for lie in [Self.plain.count - 1, Self.plain.count + 1, Self.plain.count + KAT.chunk] {
            let other = try PieceSealer(key: KAT.key, parameters: KAT.parameters(plainLength: lie))
            #expect(throws: SealingError.authenticationFailed(piece: 0)) {
                try other.open(PieceIndex(0), sealed: pieces[0])
            }
        }
        // Another chunk size (piece length) with the same key and salt.
        let bigger = try PieceSealer(
            key: KAT.key,
            parameters: SealingParameters(
                plainLength: Int64(Self.plain.count), pieceLength: 32 << 10, key: KAT.key, salt: KAT.salt))
        #expect(throws: SealingError.self) { try bigger.open(PieceIndex(0), sealed: pieces[0]) }
    }

    @Test func piecesCannotBeSwappedOrMovedBetweenImages() throws {
        let twoFull = KAT.image(2 * KAT.chunk)
        let sealer = try PieceSealer(key: KAT.key, parameters: KAT.parameters(plainLength: twoFull.count))
        let zero = try sealer.seal(PieceIndex(0), plaintext: twoFull[0..<KAT.chunk])
        #expect(throws: SealingError.authenticationFailed(piece: 1)) { try sealer.open(PieceIndex(1), sealed: zero) }

        // Same key, same length, another salt: another image.
        let otherImage = try PieceSealer(
            key: KAT.key,
            parameters: SealingParameters(plainLength: Int64(twoFull.count), pieceLength: KAT.pieceLength, key: KAT.key)
        )
        #expect(throws: SealingError.authenticationFailed(piece: 0)) {
            try otherImage.open(PieceIndex(0), sealed: zero)
        }
    }

    @Test func wrongKey() throws {
        let (_, pieces) = try sealedPieces()
        let wrong = ContentKey.random()
        #expect(throws: SealingError.wrongKey) {
            try PieceSealer(key: wrong, parameters: KAT.parameters(plainLength: Self.plain.count))
        }
        // Past the key check (parameters made for the wrong key), GCM itself refuses.
        let sealer = try PieceSealer(key: wrong, parameters: KAT.parameters(plainLength: Self.plain.count, key: wrong))
        #expect(throws: SealingError.authenticationFailed(piece: 1)) {
            try sealer.open(PieceIndex(1), sealed: pieces[1])
        }
        #expect(
            SealingError.authenticationFailed(piece: 7).description
                == "piece 7 failed authentication: wrong key or tampered data")
    }

    @Test func wrongLengthsAndIndices() throws {
        let (sealer, pieces) = try sealedPieces()
        #expect(throws: SealingError.sealedPieceLength(piece: 1, expected: 21, found: 20)) {
            try sealer.open(PieceIndex(1), sealed: pieces[1].dropLast())
        }
        #expect(throws: SealingError.sealedPieceLength(piece: 0, expected: KAT.pieceLength, found: 21)) {
            try sealer.open(PieceIndex(0), sealed: pieces[1])
        }
        #expect(throws: SealingError.pieceOutOfRange(piece: 2, pieceCount: 2)) {
            try sealer.open(PieceIndex(2), sealed: pieces[1])
        }
        #expect(throws: SealingError.pieceOutOfRange(piece: -1, pieceCount: 2)) {
            try sealer.seal(PieceIndex(-1), plaintext: [UInt8]())
        }
        #expect(throws: SealingError.plaintextLength(piece: 1, expected: 5, found: 4)) {
            try sealer.seal(PieceIndex(1), plaintext: Self.plain.suffix(4))
        }
    }

    @Test func openingATamperedFileLeavesNoPlaintext() throws {
        let fixture = try SealedFixture(KAT.image(3 * KAT.chunk))
        defer { fixture.cleanUp() }
        let tampered = flipped(try fixture.sealedBytes, at: 2 * KAT.pieceLength + 100)
        try Data(tampered).write(to: URL(fileURLWithPath: fixture.sealedPath))
        let output = fixture.folder.file("out")
        #expect(throws: SealingError.authenticationFailed(piece: 2)) {
            try ImageSealer(sealer: PieceSealer(key: KAT.key, parameters: fixture.parameters))
                .open(sealedAt: fixture.sealedPath, to: output)
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func anImageThatChangedIsRefused() throws {
        let fixture = try SealedFixture(KAT.image(100))
        defer { fixture.cleanUp() }
        try Data(KAT.image(101)).write(to: URL(fileURLWithPath: fixture.imagePath))
        #expect(throws: SealingError.imageChanged(path: fixture.imagePath, expected: 100, found: 101)) {
            try ImageSealer(sealer: PieceSealer(key: KAT.key, parameters: fixture.parameters))
                .seal(imageAt: fixture.imagePath, to: fixture.folder.file("again"))
        }
    }
}

/// A key holder seeds the plain image and seals each piece when a peer asks for it. If the plain
/// image changes on disk, sealing it again would put new plaintext under the piece's old nonce (GCM
/// nonce reuse: the XOR of both plaintexts, and a forgery key, to whoever sees both). The re-sealed
/// piece is checked against the torrent's hash first, and refused.
@Suite struct KeyHolderTests {
    @Test func aChangedPlainPieceIsRefusedNotSent() throws {
        let fixture = try SealedFixture(KAT.image(3 * KAT.chunk + 7))
        defer { fixture.cleanUp() }
        let info = fixture.torrent.metainfo.info
        let sealer = try fixture.torrent.pieceSealer(key: fixture.key)
        let store = try PieceStore.seed(info, data: fixture.imagePath, transform: sealer)
        #expect(store.verify(threads: 2).isComplete)
        let sealed = try fixture.sealedBytes
        func read(_ piece: Int) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0xAA, count: info.layout.length(of: PieceIndex(piece)))
            do {
                try bytes.withUnsafeMutableBytes { try store.readWire(PieceIndex(piece), into: $0) }
            } catch {
                #expect(bytes.allSatisfy { $0 == 0 }, "a refused piece leaves nothing in the buffer")
                throw error
            }
            return bytes
        }
        let range = { (piece: Int) in (piece * KAT.pieceLength)..<min((piece + 1) * KAT.pieceLength, sealed.count) }
        #expect(try read(2) == Array(sealed[range(2)]))

        // One byte of piece 2's plaintext changes on disk.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: fixture.imagePath))
        try handle.seek(toOffset: UInt64(2 * KAT.chunk + 100))
        try handle.write(contentsOf: [fixture.plain[2 * KAT.chunk + 100] ^ 1])
        try handle.close()
        #expect(throws: StorageError.pieceChanged(piece: 2, path: fixture.imagePath)) { try read(2) }
        #expect(throws: StorageError.pieceChanged(piece: 2, path: fixture.imagePath)) { try read(2) }
        #expect(store.refusedPieceCount == 1)
        #expect(try read(1) == Array(sealed[range(1)]), "unchanged pieces are still served")
    }
}
