import Crypto
import Foundation
import Metainfo

/// Seals and opens the pieces of one sealed image: each piece one AES-256-GCM message under the
/// image's piece key, with the piece index as nonce and the image's geometry as associated data.
///
/// Sealing is deterministic, so a node holding the key can keep only plaintext and re-seal a piece
/// when a peer asks for it, producing exactly the bytes the torrent's hashes cover. `open` returns
/// plaintext only for a piece whose tag verified; there is no way to get at unauthenticated bytes.
public struct PieceSealer: Sendable {
    public let parameters: SealingParameters
    private let pieceKey: SymmetricKey

    /// Refuses a key that does not match the parameters' key check, so a wrong key is reported
    /// before any piece is fetched.
    public init(key: ContentKey, parameters: SealingParameters) throws(SealingError) {
        guard parameters.matches(key) else { throw .wrongKey }
        self.parameters = parameters
        self.pieceKey = key.derive(salt: parameters.salt, label: SealingParameters.pieceKeyLabel)
    }

    /// The sealed piece (ciphertext then tag) for the piece's plaintext chunk, which must be exactly
    /// `parameters.plaintextLength(of: piece)` bytes.
    public func seal(_ piece: PieceIndex, plaintext: some DataProtocol) throws(SealingError) -> [UInt8] {
        do {
            return try withSealed(piece, plaintext: plaintext) { body in
                [UInt8](unsafeUninitializedCapacity: body.count) { buffer, count in
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(from: body)
                    count = body.count
                }
            }
        } catch let error as SealingError {
            throw error
        } catch {
            preconditionFailure("only sealing itself can fail here: \(error)")
        }
    }

    /// `seal`, lending the sealed piece to `body` straight from the buffer AES-GCM made. Throws a
    /// `SealingError`, or what `body` throws.
    public func withSealed<Result>(
        _ piece: PieceIndex, plaintext: some DataProtocol, _ body: (UnsafeRawBufferPointer) throws -> Result
    ) throws -> Result {
        try checkRange(piece)
        let expected = parameters.plaintextLength(of: piece)
        guard plaintext.count == expected else {
            throw SealingError.plaintextLength(piece: piece.value, expected: expected, found: plaintext.count)
        }
        let box: AES.GCM.SealedBox
        do {
            box = try AES.GCM.seal(
                plaintext, using: pieceKey, nonce: Self.nonce(piece),
                authenticating: parameters.associatedData(for: piece.value))
        } catch {
            // Only a key of the wrong size makes GCM fail to seal; the piece key is always 256 bits.
            preconditionFailure("AES-GCM refused to seal with a 256-bit key: \(error)")
        }
        // The combined form is nonce, ciphertext, tag in one buffer (always present for 12-byte
        // nonces): ciphertext-then-tag is that buffer after the nonce, lent without a copy.
        guard let combined = box.combined else {
            preconditionFailure("AES-GCM gave no combined form for a 12-byte nonce")
        }
        return try combined.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[12...])) }
    }

    /// The plaintext of a sealed piece (ciphertext then tag, exactly
    /// `parameters.sealedLength(of: piece)` bytes), or `authenticationFailed` when the tag does not
    /// verify under this key, index and geometry.
    public func open(_ piece: PieceIndex, sealed: some DataProtocol) throws(SealingError) -> [UInt8] {
        Array(try openedData(piece, sealed: sealed))
    }

    /// `open`, as the `Data` AES-GCM made (no copy into an array).
    func openedData(_ piece: PieceIndex, sealed: some DataProtocol) throws(SealingError) -> Data {
        try checkRange(piece)
        let expected = parameters.sealedLength(of: piece)
        guard sealed.count == expected else {
            throw .sealedPieceLength(piece: piece.value, expected: expected, found: sealed.count)
        }
        let cipherCount = expected - SealingParameters.tagLength
        do {
            let box = try AES.GCM.SealedBox(
                nonce: Self.nonce(piece), ciphertext: sealed.prefix(cipherCount),
                tag: sealed.suffix(SealingParameters.tagLength))
            return try AES.GCM.open(box, using: pieceKey, authenticating: parameters.associatedData(for: piece.value))
        } catch {
            throw .authenticationFailed(piece: piece.value)
        }
    }

    private func checkRange(_ piece: PieceIndex) throws(SealingError) {
        guard parameters.contains(piece) else {
            throw .pieceOutOfRange(piece: piece.value, pieceCount: parameters.pieceCount)
        }
    }

    /// 4 zero bytes, then the piece index as a big-endian 64-bit integer.
    static func nonce(_ piece: PieceIndex) -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 4)
        withUnsafeBytes(of: UInt64(piece.value).bigEndian) { bytes.append(contentsOf: $0) }
        do {
            return try AES.GCM.Nonce(data: bytes)
        } catch {
            preconditionFailure("AES-GCM refused a 12-byte nonce: \(error)")
        }
    }
}
