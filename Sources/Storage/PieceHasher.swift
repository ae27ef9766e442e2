import Crypto
import Dispatch
import Metainfo
import Synchronization

/// Computes the SHA-1 of every piece of a file set, on all cores, holding one piece per worker in
/// memory whatever the size of the data.
///
/// Workers take pieces in order from a shared counter and read them with positional reads, so the
/// files are read front to back (two neighbouring pieces at a time, which the page cache and disk
/// read-ahead handle as one sequential stream).
public struct PieceHasher: Sendable {
    public var threads: Int

    public init(threads: Int) {
        self.threads = max(1, threads)
    }

    /// Returns the concatenated 20-byte digests. `progress` is called with the total bytes hashed so
    /// far, from worker threads, after each piece. With `skipUnreadable`, a piece that cannot be
    /// read (a file missing or too short, as when resuming) gets an all-zero digest instead of
    /// stopping the work.
    public func hashPieces(
        of reader: FileSet, skipUnreadable: Bool = false, progress: (@Sendable (Int64) -> Void)? = nil
    ) throws(StorageError) -> [UInt8] {
        try hash(reader, skipUnreadable: skipUnreadable, rolling: false, progress: progress).digests
    }

    /// `hashPieces`, and each piece's weak `RollingChecksum` from the same read.
    public func hashPiecesWithRollingChecksums(
        of reader: FileSet, progress: (@Sendable (Int64) -> Void)? = nil
    ) throws(StorageError) -> (digests: [UInt8], rolling: [UInt32]) {
        let state = try hash(reader, skipUnreadable: false, rolling: true, progress: progress)
        return (state.digests, state.rolling ?? [])
    }

    private func hash(
        _ reader: FileSet, skipUnreadable: Bool, rolling: Bool, progress: (@Sendable (Int64) -> Void)?
    ) throws(StorageError) -> (digests: [UInt8], rolling: [UInt32]?) {
        let layout = reader.layout
        let state = SharedState(pieceCount: layout.pieceCount, rolling: rolling)
        let workers = min(threads, max(1, layout.pieceCount))
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.pieceLength, alignment: 64)
            defer { buffer.deallocate() }
            while state.failure.withLock({ $0 == nil }) {
                let index = state.next.add(1, ordering: .relaxed).oldValue
                guard index < layout.pieceCount else { return }
                let piece = PieceIndex(index)
                let length = layout.length(of: piece)
                let data = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
                do throws(StorageError) {
                    try reader.read(layout.byteRange(of: piece), into: data)
                } catch {
                    if skipUnreadable {
                        _ = state.bytesDone.add(Int64(length), ordering: .relaxed)
                        continue
                    }
                    state.failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
                var sha = Insecure.SHA1()
                sha.update(bufferPointer: UnsafeRawBufferPointer(data))
                state.digests.store(sha.finalize(), at: index)
                state.rolling?[index] = RollingChecksum(UnsafeRawBufferPointer(data)).value
                let done = state.bytesDone.add(Int64(length), ordering: .relaxed).newValue
                progress?(done)
            }
        }
        if let failure = state.failure.withLock({ $0 }) { throw failure }
        return (state.digests.bytes, state.rolling.map { Array($0) })
    }
}

private final class SharedState: Sendable {
    let next = Atomic<Int>(0)
    let bytesDone = Atomic<Int64>(0)
    let failure = Mutex<StorageError?>(nil)
    let digests: DigestTable
    /// One weak checksum per piece, each slot written by the one worker that hashed the piece.
    nonisolated(unsafe) let rolling: UnsafeMutableBufferPointer<UInt32>?

    init(pieceCount: Int, rolling: Bool) {
        digests = DigestTable(count: pieceCount)
        self.rolling = rolling ? .allocate(capacity: pieceCount) : nil
        self.rolling?.initialize(repeating: 0)
    }

    deinit { rolling?.deallocate() }
}

/// Digest storage that workers fill in disjoint 20-byte slots without locking.
private final class DigestTable: @unchecked Sendable {
    private let storage: UnsafeMutableBufferPointer<UInt8>

    init(count: Int) {
        storage = .allocate(capacity: count * InfoHash.byteCount)
        storage.initialize(repeating: 0)
    }

    deinit { storage.deallocate() }

    func store(_ digest: Insecure.SHA1Digest, at index: Int) {
        digest.withUnsafeBytes { bytes in
            for (offset, byte) in bytes.enumerated() { storage[index * InfoHash.byteCount + offset] = byte }
        }
    }

    var bytes: [UInt8] { Array(storage) }
}
