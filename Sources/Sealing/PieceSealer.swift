import Crypto
import Foundation
import Metainfo

#if canImport(CCryptoBoringSSL) && !VMSWARM_CRYPTO_API_ONLY
    internal import CCryptoBoringSSL
#endif

/// Seals and opens the pieces of one sealed image: each piece one AES-256-GCM message under the
/// image's piece key, with the piece index as nonce and the image's geometry as associated data.
///
/// Sealing is deterministic, so a node holding the key can keep only plaintext and re-seal a piece
/// when a peer asks for it, producing exactly the bytes the torrent's hashes cover. Opening yields
/// plaintext only for a piece whose tag verified; there is no way to get at unauthenticated bytes.
///
/// The hot path works on caller-owned buffers: a piece is sealed in place in the buffer it is sent
/// from, and opened straight into the buffer it is written from. swift-crypto's `AES.GCM` API
/// returns new buffers and copies the ciphertext into a sealed box before opening it, which on
/// loopback cost as much as AES-GCM itself; so where swift-crypto is built on BoringSSL (Linux), the
/// same BoringSSL AEAD is called directly, in place. Elsewhere the `AES.GCM` API is used with a copy.
/// Tests check that both give the same bytes.
public struct PieceSealer: Sendable {
    public let parameters: SealingParameters
    private let pieceKey: SymmetricKey
    #if canImport(CCryptoBoringSSL) && !VMSWARM_CRYPTO_API_ONLY
        private let context: AEADContext
    #endif

    /// Refuses a key that does not match the parameters' key check, so a wrong key is reported
    /// before any piece is fetched.
    public init(key: ContentKey, parameters: SealingParameters) throws(SealingError) {
        guard parameters.matches(key) else { throw .wrongKey }
        self.parameters = parameters
        self.pieceKey = key.derive(salt: parameters.salt, label: SealingParameters.pieceKeyLabel)
        #if canImport(CCryptoBoringSSL) && !VMSWARM_CRYPTO_API_ONLY
            context = AEADContext(key: pieceKey)
        #endif
    }

    /// The sealed piece (ciphertext then tag) for the piece's plaintext chunk, which must be exactly
    /// `parameters.plaintextLength(of: piece)` bytes.
    public func seal(_ piece: PieceIndex, plaintext: some DataProtocol) throws(SealingError) -> [UInt8] {
        try checkRange(piece)
        let expected = parameters.plaintextLength(of: piece)
        guard plaintext.count == expected else {
            throw .plaintextLength(piece: piece.value, expected: expected, found: plaintext.count)
        }
        var sealed = [UInt8](repeating: 0, count: expected + SealingParameters.tagLength)
        var failure: SealingError?
        sealed.withUnsafeMutableBytes { buffer in
            _ = plaintext.copyBytes(to: buffer)
            do throws(SealingError) { try sealInPlace(piece, buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return sealed
    }

    /// Seals a piece where it lies: `buffer` is `parameters.sealedLength(of: piece)` bytes whose
    /// first `plaintextLength(of: piece)` hold the chunk; on return it holds ciphertext then tag.
    public func sealInPlace(_ piece: PieceIndex, _ buffer: UnsafeMutableRawBufferPointer) throws(SealingError) {
        try checkRange(piece)
        let expected = parameters.sealedLength(of: piece)
        guard buffer.count == expected else {
            throw .sealedPieceLength(piece: piece.value, expected: expected, found: buffer.count)
        }
        let plainCount = expected - SealingParameters.tagLength
        let associatedData = parameters.associatedData(for: piece.value)
        #if canImport(CCryptoBoringSSL) && !VMSWARM_CRYPTO_API_ONLY
            context.seal(buffer, plaintextCount: plainCount, nonce: Self.nonceBytes(piece), associatedData: associatedData)
        #else
            do {
                let box = try AES.GCM.seal(
                    UnsafeRawBufferPointer(rebasing: buffer[0..<plainCount]), using: pieceKey,
                    nonce: try AES.GCM.Nonce(data: Self.nonceBytes(piece)), authenticating: associatedData)
                _ = box.ciphertext.copyBytes(to: buffer)
                _ = box.tag.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: buffer[plainCount...]))
            } catch {
                // Only a key of the wrong size makes GCM fail to seal; the piece key is always 256 bits.
                preconditionFailure("AES-GCM refused to seal with a 256-bit key: \(error)")
            }
        #endif
    }

    /// The plaintext of a sealed piece (ciphertext then tag, exactly
    /// `parameters.sealedLength(of: piece)` bytes), or `authenticationFailed` when the tag does not
    /// verify under this key, index and geometry.
    public func open(_ piece: PieceIndex, sealed: some DataProtocol) throws(SealingError) -> [UInt8] {
        let wire = Array(sealed)
        var plaintext = [UInt8](repeating: 0, count: max(0, wire.count - SealingParameters.tagLength))
        var failure: SealingError?
        wire.withUnsafeBytes { wire in
            plaintext.withUnsafeMutableBytes { plaintext in
                do throws(SealingError) { try open(piece, sealed: wire, into: plaintext) } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return plaintext
    }

    /// Opens a sealed piece into `plaintext` (`parameters.plaintextLength(of: piece)` bytes). Throws
    /// `authenticationFailed` when the tag does not verify; `plaintext` is then all zeros.
    public func open(_ piece: PieceIndex, sealed: UnsafeRawBufferPointer, into plaintext: UnsafeMutableRawBufferPointer) throws(SealingError) {
        try checkRange(piece)
        let expected = parameters.sealedLength(of: piece)
        guard sealed.count == expected else {
            throw .sealedPieceLength(piece: piece.value, expected: expected, found: sealed.count)
        }
        let plainCount = expected - SealingParameters.tagLength
        precondition(plaintext.count == plainCount, "a piece is opened into a buffer of its plaintext length")
        let associatedData = parameters.associatedData(for: piece.value)
        #if canImport(CCryptoBoringSSL) && !VMSWARM_CRYPTO_API_ONLY
            guard context.open(sealed, into: plaintext, nonce: Self.nonceBytes(piece), associatedData: associatedData) else {
                throw .authenticationFailed(piece: piece.value)
            }
        #else
            let opened: Data
            do {
                let box = try AES.GCM.SealedBox(
                    nonce: try AES.GCM.Nonce(data: Self.nonceBytes(piece)), ciphertext: Array(sealed[0..<plainCount]),
                    tag: Array(sealed[plainCount...]))
                opened = try AES.GCM.open(box, using: pieceKey, authenticating: associatedData)
            } catch {
                plaintext.initializeMemory(as: UInt8.self, repeating: 0)
                throw .authenticationFailed(piece: piece.value)
            }
            _ = opened.copyBytes(to: plaintext)
        #endif
    }

    private func checkRange(_ piece: PieceIndex) throws(SealingError) {
        guard parameters.contains(piece) else {
            throw .pieceOutOfRange(piece: piece.value, pieceCount: parameters.pieceCount)
        }
    }

    /// 4 zero bytes, then the piece index as a big-endian 64-bit integer.
    static func nonceBytes(_ piece: PieceIndex) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 4)
        withUnsafeBytes(of: UInt64(piece.value).bigEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }
}

#if canImport(CCryptoBoringSSL) && !VMSWARM_CRYPTO_API_ONLY
    /// BoringSSL's AES-256-GCM AEAD keyed once with a piece key. BoringSSL allows concurrent seal and
    /// open calls on one context, and the context never changes after it is made: hence the
    /// unchecked `Sendable`.
    final class AEADContext: @unchecked Sendable {
        private let context: UnsafeMutablePointer<EVP_AEAD_CTX>

        init(key: SymmetricKey) {
            let made = key.withUnsafeBytes { key in
                CCryptoBoringSSL_EVP_AEAD_CTX_new(
                    CCryptoBoringSSL_EVP_aead_aes_256_gcm(), key.bindMemory(to: UInt8.self).baseAddress, key.count,
                    SealingParameters.tagLength)
            }
            guard let made else { preconditionFailure("BoringSSL refused a 256-bit AES-GCM key") }
            context = made
        }

        deinit { CCryptoBoringSSL_EVP_AEAD_CTX_free(context) }

        /// Encrypts the first `plaintextCount` bytes of `buffer` in place and puts the tag after them.
        func seal(_ buffer: UnsafeMutableRawBufferPointer, plaintextCount: Int, nonce: [UInt8], associatedData: [UInt8]) {
            // The buffer holds at least the tag, so it has an address even for an empty chunk.
            guard let text = buffer.bindMemory(to: UInt8.self).baseAddress else { preconditionFailure("a sealed piece holds a tag") }
            var tagCount = 0
            let sealed = CCryptoBoringSSL_EVP_AEAD_CTX_seal_scatter(
                context, text, text + plaintextCount, &tagCount, SealingParameters.tagLength, nonce, nonce.count,
                text, plaintextCount, nil, 0, associatedData, associatedData.count)
            precondition(sealed == 1 && tagCount == SealingParameters.tagLength, "BoringSSL failed to seal a piece")
        }

        /// Decrypts `sealed` (ciphertext then tag) into `plaintext` if the tag verifies.
        func open(_ sealed: UnsafeRawBufferPointer, into plaintext: UnsafeMutableRawBufferPointer, nonce: [UInt8],
                  associatedData: [UInt8]) -> Bool {
            guard let input = sealed.bindMemory(to: UInt8.self).baseAddress else { return false }  // a sealed piece holds a tag
            let count = sealed.count - SealingParameters.tagLength
            func open(into output: UnsafeMutablePointer<UInt8>) -> Bool {
                CCryptoBoringSSL_EVP_AEAD_CTX_open_gather(
                    context, output, nonce, nonce.count, input, count, input + count, SealingParameters.tagLength,
                    associatedData, associatedData.count) == 1
            }
            // An empty chunk's buffer may have no address; BoringSSL wants one even for 0 bytes.
            if let output = plaintext.bindMemory(to: UInt8.self).baseAddress { return open(into: output) }
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { open(into: $0.baseAddress!) }
        }
    }
#endif
