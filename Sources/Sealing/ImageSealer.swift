import Metainfo
import Storage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Turns a plain image file into its sealed image file and back, one piece at a time, holding one
/// chunk and one sealed piece in memory whatever the image size.
///
/// `seal` is what `create --seal-for` runs before hashing the sealed file into a torrent; `open`
/// decrypts a sealed image kept whole (a relay that is later given the key). A receiver in a swarm
/// does not use this type: it opens each piece with `PieceSealer` as the piece arrives.
public struct ImageSealer: Sendable {
    public let sealer: PieceSealer

    public init(sealer: PieceSealer) { self.sealer = sealer }

    private var parameters: SealingParameters { sealer.parameters }

    /// Seals the image at `imagePath`, which must be `parameters.plainLength` bytes long, into
    /// `sealedPath` (created or replaced). `progress` gets the plain bytes sealed so far. On failure
    /// the sealed file is removed.
    public func seal(
        imageAt imagePath: String, to sealedPath: String, progress: (@Sendable (Int64) -> Void)? = nil
    ) throws(SealingError) {
        let found = try Self.fileLength(imagePath)
        guard found == parameters.plainLength else {
            throw .imageChanged(path: imagePath, expected: parameters.plainLength, found: found)
        }
        try transform(
            sealing: true, from: imagePath, to: sealedPath, progress: progress
        ) { (piece, input) throws(SealingError) in
            try sealer.seal(piece, plaintext: input)
        }
    }

    /// Opens every piece of the sealed image at `sealedPath` and writes the plain image to
    /// `imagePath` (created or replaced). Stops at the first piece that fails authentication and
    /// removes `imagePath`, so no unauthenticated plaintext is ever left behind.
    public func open(
        sealedAt sealedPath: String, to imagePath: String, progress: (@Sendable (Int64) -> Void)? = nil
    ) throws(SealingError) {
        let found = try Self.fileLength(sealedPath)
        guard found == parameters.sealedLength else {
            throw .imageChanged(path: sealedPath, expected: parameters.sealedLength, found: found)
        }
        try transform(
            sealing: false, from: sealedPath, to: imagePath, progress: progress
        ) { (piece, input) throws(SealingError) in
            try sealer.open(piece, sealed: input)
        }
    }

    /// The sealed image's layout is the torrent's. (Plaintext ranges come from `parameters`: an empty
    /// image has one empty chunk there.)
    private var sealedLayout: PieceLayout {
        do {
            return try PieceLayout(pieceLength: parameters.pieceLength, fileLengths: [parameters.sealedLength])
        } catch {
            // SealingParameters has checked both: pieces of 17 B to 256 MiB, lengths >= 0.
            preconditionFailure("sealing parameters make an invalid layout: \(error)")
        }
    }

    /// Reads each piece's input range (its chunk when `sealing`, else its sealed piece), transforms
    /// it, writes the output range; removes the output file on any failure.
    private func transform(
        sealing: Bool, from inputPath: String, to outputPath: String, progress: (@Sendable (Int64) -> Void)?,
        _ body: (PieceIndex, UnsafeRawBufferPointer) throws(SealingError) -> [UInt8]
    ) throws(SealingError) {
        let sealedLayout = self.sealedLayout
        let (inputLength, outputLength) = sealing
            ? (parameters.plainLength, parameters.sealedLength) : (parameters.sealedLength, parameters.plainLength)
        let input: FileSet
        let output: FileSet
        do {
            // The input first: a missing input must not leave an empty output behind.
            input = try FileSet(singleFile: inputPath, length: inputLength)
            // Opened plaintext is for this user only (0600), like a key holder's download.
            output = try FileSet(singleFile: outputPath, length: outputLength, mode: .readWrite, private: !sealing)
        } catch {
            throw .storage(error)
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: parameters.pieceLength, alignment: 64)
        defer { buffer.deallocate() }
        do throws(SealingError) {
            var done: Int64 = 0
            for index in 0..<parameters.pieceCount {
                let piece = PieceIndex(index)
                let plain = parameters.plaintextRange(of: piece)
                let sealed = sealedLayout.byteRange(of: piece)
                let (inputRange, outputStart) = sealing ? (plain, sealed.lowerBound) : (sealed, plain.lowerBound)
                let data = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<inputRange.count])
                do throws(StorageError) { try input.read(inputRange, into: data) } catch { throw .storage(error) }
                let result = try body(piece, UnsafeRawBufferPointer(data))
                var failure: StorageError?
                result.withUnsafeBytes { bytes in
                    do throws(StorageError) { try output.write(bytes, at: outputStart) } catch { failure = error }
                }
                if let failure { throw .storage(failure) }
                done += Int64(plain.count)
                progress?(done)
            }
            do throws(StorageError) { try output.synchronize() } catch { throw .storage(error) }
        } catch {
            unlink(outputPath)
            throw error
        }
    }

    private static func fileLength(_ path: String) throws(SealingError) -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else { throw .storage(.open(path: path, errno: errno)) }
        return Int64(info.st_size)
    }
}
