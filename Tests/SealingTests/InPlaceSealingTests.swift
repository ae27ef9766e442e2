import Crypto
import Foundation
import Metainfo
import TestSupport
import Testing

@testable import Sealing

/// `PieceSealer` seals and opens in caller buffers (through BoringSSL's AEAD on Linux); these check
/// it against swift-crypto's `AES.GCM` API, the reference the known answers were made with.
@Suite struct InPlaceSealingTests {
    static let lengths = [0, 1, KAT.chunk - 1, KAT.chunk, KAT.chunk + 1, 3 * KAT.chunk + 7]

    @Test(arguments: lengths)
    func sealingInPlaceMatchesTheAESGCMAPI(length: Int) throws {
        let plain = KAT.image(length)
        let parameters = try KAT.parameters(plainLength: plain.count)
        let sealer = try PieceSealer(key: KAT.key, parameters: parameters)
        let pieceKey = KAT.key.derive(salt: parameters.salt, label: SealingParameters.pieceKeyLabel)
        for piece in (0..<parameters.pieceCount).map(PieceIndex.init) {
            let range = parameters.plaintextRange(of: piece)
            let chunk = Array(plain[Int(range.lowerBound)..<Int(range.upperBound)])
            let box = try AES.GCM.seal(chunk, using: pieceKey, nonce: AES.GCM.Nonce(data: PieceSealer.nonceBytes(piece)),
                authenticating: parameters.associatedData(for: piece.value))
            var buffer = chunk + [UInt8](repeating: 0xAA, count: SealingParameters.tagLength)
            try buffer.withUnsafeMutableBytes { try sealer.sealInPlace(piece, $0) }
            #expect(buffer == Array(box.ciphertext) + Array(box.tag), "piece \(piece.value) of \(length) bytes")

            var opened = [UInt8](repeating: 0x55, count: chunk.count)
            try buffer.withUnsafeBytes { sealed in try opened.withUnsafeMutableBytes { try sealer.open(piece, sealed: sealed, into: $0) } }
            #expect(opened == chunk)
        }
    }

    @Test func aPieceThatFailsToOpenLeavesNothingOfItInTheBuffer() throws {
        let plain = KAT.image(KAT.chunk)
        let sealer = try PieceSealer(key: KAT.key, parameters: try KAT.parameters(plainLength: plain.count))
        var sealed = try sealer.seal(PieceIndex(0), plaintext: plain)
        sealed[100] ^= 0x01
        var opened = [UInt8](repeating: 0x55, count: plain.count)
        #expect(throws: SealingError.authenticationFailed(piece: 0)) {
            try sealed.withUnsafeBytes { sealed in try opened.withUnsafeMutableBytes { try sealer.open(PieceIndex(0), sealed: sealed, into: $0) } }
        }
        #expect(opened.allSatisfy { $0 == 0 }, "no plaintext of the unauthenticated piece is left")
    }

    @Test func buffersOfTheWrongLengthAreRefused() throws {
        let sealer = try PieceSealer(key: KAT.key, parameters: try KAT.parameters(plainLength: KAT.chunk))
        var short = [UInt8](repeating: 0, count: KAT.pieceLength - 1)
        #expect(throws: SealingError.sealedPieceLength(piece: 0, expected: KAT.pieceLength, found: KAT.pieceLength - 1)) {
            try short.withUnsafeMutableBytes { try sealer.sealInPlace(PieceIndex(0), $0) }
        }
        #expect(throws: SealingError.pieceOutOfRange(piece: 1, pieceCount: 1)) {
            try short.withUnsafeMutableBytes { try sealer.sealInPlace(PieceIndex(1), $0) }
        }
    }
}
