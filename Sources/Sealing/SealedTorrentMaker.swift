import Crypto
import Dispatch
import Metainfo
import Storage
import Synchronization

/// A sealed piece store reads and writes plaintext; peers get (and the hashes cover) ciphertext.
extension PieceSealer: PieceTransform {
    public var storedLength: Int64 { parameters.plainLength }
    public func storedRange(of piece: PieceIndex) -> Range<Int64> { parameters.plaintextRange(of: piece) }
    public func store(_ piece: PieceIndex, wire: UnsafeRawBufferPointer, into stored: UnsafeMutableRawBufferPointer) throws {
        try open(piece, sealed: wire, into: stored)
    }
    public func makeWire(_ piece: PieceIndex, inPlace buffer: UnsafeMutableRawBufferPointer) throws {
        try sealInPlace(piece, buffer)
    }
    /// GCM's tag: under one key and nonce, changed plaintext gives another tag (but with odds of
    /// about 2^-128 per piece), so comparing it catches what a SHA-1 of the piece would, for free.
    public var wireTagLength: Int { SealingParameters.tagLength }
}

/// Makes the torrent of a sealed image in one pass over the plain image: each chunk is sealed in
/// memory and its ciphertext hashed, on every core. The sealed image is never written: a publisher
/// seeds from the plain image with the key, sealing pieces as peers ask for them.
public struct SealedTorrentMaker: Sendable {
    public var name: String
    public var pieceLength: Int
    public var announceTiers: [[String]] = []
    public var privacy: TorrentInfo.Privacy = .unspecified
    public var comment: String?
    public var createdBy: String?
    public var creationDate: Int64?
    public var threads: Int

    public init(name: String, pieceLength: Int, threads: Int) {
        self.name = name
        self.pieceLength = pieceLength
        self.threads = threads
    }

    /// `progress` gets the plain bytes done so far.
    public func make(image path: String, plainLength: Int64, key: ContentKey, salt: [UInt8] = SealingParameters.randomSalt(),
                     progress: (@Sendable (Int64) -> Void)? = nil) throws(SealingError) -> SealedTorrent {
        let parameters = try SealingParameters(plainLength: plainLength, pieceLength: pieceLength, key: key, salt: salt)
        let sealer = try PieceSealer(key: key, parameters: parameters)
        let files: FileSet
        do {
            files = try FileSet(singleFile: path, length: plainLength)
        } catch {
            throw .storage(error)
        }
        let count = parameters.pieceCount
        let state = Mutex((hashes: [UInt8](repeating: 0, count: count * Insecure.SHA1.byteCount), done: Int64(0), failure: SealingError?.none))
        let workers = max(1, min(threads, count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            // One piece-sized buffer per worker: the chunk is read into it and sealed in place.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: parameters.pieceLength, alignment: 64)
            defer { buffer.deallocate() }
            for index in stride(from: worker, to: count, by: workers) {
                let piece = PieceIndex(index)
                let range = parameters.plaintextRange(of: piece)
                let digest: Insecure.SHA1Digest
                do {
                    let length = Int(range.upperBound - range.lowerBound)
                    try files.read(range, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]))
                    let sealed = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(length + SealingParameters.tagLength)])
                    try sealer.sealInPlace(piece, sealed)
                    digest = Insecure.SHA1.hash(data: UnsafeRawBufferPointer(sealed))
                } catch {
                    state.withLock { $0.failure = $0.failure ?? ((error as? StorageError).map(SealingError.storage) ?? (error as? SealingError)) }
                    return
                }
                let done = state.withLock { state in
                    let start = index * Insecure.SHA1.byteCount
                    state.hashes.replaceSubrange(start..<(start + Insecure.SHA1.byteCount), with: Array(digest))
                    state.done += range.upperBound - range.lowerBound
                    return state.done
                }
                progress?(done)
            }
        }
        let (hashes, failure) = state.withLock { ($0.hashes, $0.failure) }
        if let failure { throw failure }
        let info: TorrentInfo
        do {
            info = try TorrentInfo(name: name, files: [FileEntry(path: [name], length: parameters.sealedLength)], isMultiFile: false,
                privacy: privacy, pieceLength: pieceLength, pieceHashes: hashes)
        } catch {
            throw .invalidParameters("the sealed image's torrent cannot be made: \(error)")
        }
        let metainfo = Metainfo(info: info, extraInfoFields: parameters.infoFields, announceTiers: announceTiers,
            comment: comment, createdBy: createdBy, creationDate: creationDate)
        return try SealedTorrent(metainfo: metainfo)
    }
}
