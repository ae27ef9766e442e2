#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import Dispatch
import Metainfo
import Synchronization

/// A torrent's data on disk, for a download or for seeding.
///
/// A download is written under `NAME.part` (a file, or a folder for a multi-file torrent) and only
/// renamed to `NAME` by `finish()`, once every piece has verified, so a user never finds a
/// half-written image under the real name. Restarting a download opens the same `.part`, and
/// `verify` tells which pieces are already good.
///
/// With a `PieceTransform` (a sealed image) the file holds the stored form of the pieces: a piece is
/// transformed after its hash verified and before it is written, and back when a peer asks for it.
public final class PieceStore: Sendable {
    public let info: TorrentInfo
    /// Where the data ends up (and where a seeder's data is).
    public let finalPath: String
    /// Where a download's data is while it is incomplete; equal to `finalPath` when seeding.
    public let workingPath: String
    /// The download's data did not exist before: there is nothing to verify.
    public let isNew: Bool
    private let files: FileSet
    private let transform: (any PieceTransform)?
    /// Wire forms of the last pieces we verified that peers may ask for (16 MiB of them, at least
    /// 4), until one does: a piece that just arrived is what other peers ask for next, so it is
    /// kept as it came instead of being read back and transformed again. It has to outlast the
    /// requests queued ahead of it (up to 8 MiB per peer), hence twice that. `readWire`'s caller
    /// keeps what it reads for the peers that ask next, so the first read takes the piece out.
    private let recentWireForms = Mutex<[(PieceIndex, [UInt8])]>([])
    private let recentWireFormCount: Int
    /// Pieces whose stored form no longer gives their hash (the plaintext of a sealed image changed
    /// on disk). They are never transformed again: re-sealing changed plaintext under the piece's
    /// fixed nonce is GCM nonce reuse, which gives away the XOR of the two plaintexts, and the
    /// authentication key to anyone holding both ciphertexts.
    private let refused: Mutex<Set<Int>> = Mutex([])
    /// The last `wireTagLength` bytes of the wire form of every piece whose hash verified (a sealed
    /// piece's GCM tag), and which pieces have them: a wire form made again for a peer is checked
    /// against them, which costs a 16-byte compare where a SHA-1 of the piece cost about a third of
    /// a key holder's serving time. Empty when the transform has no tag (or there is none).
    private let wireTags: Mutex<(tags: [UInt8], known: Bitfield)>
    private let wireTagLength: Int
    /// A descriptor of the `.part` holding an exclusive `flock` while a download writes it (-1:
    /// none), so two downloads into one folder never interleave their writes.
    private let lock: Int32

    private init(info: TorrentInfo, finalPath: String, workingPath: String, mode: FileSet.Mode, isNew: Bool = false,
                 transform: (any PieceTransform)?, lock: Int32 = -1) throws(StorageError) {
        self.lock = lock
        self.info = info
        self.finalPath = finalPath
        self.workingPath = workingPath
        self.isNew = isNew
        self.transform = transform
        recentWireFormCount = max(4, (16 << 20) / info.pieceLength)
        wireTagLength = transform?.wireTagLength ?? 0
        wireTags = Mutex(([UInt8](repeating: 0, count: info.pieceCount * wireTagLength),
            Bitfield(pieceCount: wireTagLength > 0 ? info.pieceCount : 0)))
        if let transform {
            precondition(!info.isMultiFile, "a transformed torrent is one file")
            // The stored form of a transformed (sealed) image is its plaintext: for the user only.
            files = try FileSet(singleFile: workingPath, length: transform.storedLength, mode: mode, private: true)
            return
        }
        let paths: [String?] = info.files.map { file in
            if file.isPadding { return nil }
            return info.isMultiFile ? ([workingPath] + file.path).joined(separator: "/") : workingPath
        }
        if mode == .readWrite && info.isMultiFile {
            // The files' own names are opened O_NOFOLLOW by FileSet; the folders between them and
            // the `.part` folder must not be links either (`NAME.part/sub` -> elsewhere).
            for file in info.files where !file.isPadding {
                var folder = workingPath
                for component in file.path.dropLast() {
                    folder += "/" + component
                    if let target = StorageError.symbolicLinkTarget(folder) { throw .symbolicLink(path: folder, target: target) }
                }
            }
        }
        files = try FileSet(layout: info.layout, paths: paths, mode: mode)
    }

    /// Opens (creating as needed) `DIRECTORY/NAME.part` for a download. If `DIRECTORY/NAME` already
    /// exists it is opened read-only instead, never resized or written: the caller verifies it, and
    /// either seeds it (complete) or stops (it is some other data that must not be overwritten).
    /// `name` replaces the torrent's name on disk (a relay keeps a sealed image's ciphertext under
    /// a name of its own).
    public static func download(_ info: TorrentInfo, into directory: String, name: String? = nil,
                                transform: (any PieceTransform)? = nil) throws(StorageError) -> PieceStore {
        let finalPath = directory + "/" + (name ?? info.name)
        // Neither NAME nor NAME.part is followed when it is a symbolic link: someone else who can
        // write the output folder could otherwise point our writes (or our reads and our seeding,
        // for NAME) at a file of their choosing. A link in the output folder's own path (the
        // operator's `--output`) is followed as usual.
        if let target = StorageError.symbolicLinkTarget(finalPath) { throw .symbolicLink(path: finalPath, target: target) }
        var status = stat()
        if stat(finalPath, &status) == 0 {
            return try PieceStore(info: info, finalPath: finalPath, workingPath: finalPath, mode: .read, transform: transform)
        }
        let workingPath = finalPath + ".part"
        let partExists = stat(workingPath, &status) == 0
        let lock = try lockWorkingPath(workingPath, folder: info.isMultiFile && transform == nil, private: transform != nil)
        do {
            return try PieceStore(info: info, finalPath: finalPath, workingPath: workingPath, mode: .readWrite,
                isNew: !partExists, transform: transform, lock: lock)
        } catch {
            close(lock)
            throw error
        }
    }

    /// Creates the `.part` (file or folder) if needed and takes an exclusive, non-blocking `flock` on
    /// it, held until the store is released (the kernel drops it if the process dies, so a killed
    /// download never leaves a stale lock). A second download of the same torrent into the same
    /// folder gets `locked` instead of writing the same file.
    private static func lockWorkingPath(_ path: String, folder: Bool, private isPrivate: Bool) throws(StorageError) -> Int32 {
        // The output folder is created as FileSet would (a caller may name one that does not exist yet).
        if folder {
            if let problem = FileSet.makeFolders(path) { throw problem }
        } else if let slash = path.lastIndex(of: "/"), slash != path.startIndex,
            let problem = FileSet.makeFolders(String(path[..<slash]))
        {
            throw problem
        }
        let descriptor = folder
            ? open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            : open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, isPrivate ? 0o600 : 0o644)
        guard descriptor >= 0 else { throw StorageError.opening(path, errno: errno) }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            close(descriptor)
            if code == EWOULDBLOCK { throw .locked(path: path) }
            throw .open(path: path, errno: code)
        }
        return descriptor
    }

    deinit {
        if lock >= 0 { close(lock) }
    }

    /// Opens existing data for seeding: the file itself (single-file torrent) or the folder that holds
    /// the torrent's files (multi-file). Nothing is created or resized.
    public static func seed(_ info: TorrentInfo, data path: String, transform: (any PieceTransform)? = nil) throws(StorageError) -> PieceStore {
        try PieceStore(info: info, finalPath: path, workingPath: path, mode: .read, transform: transform)
    }

    public var isFinished: Bool { workingPath == finalPath }

    /// Pieces refused since the store was opened because their data changed on disk (`readWire`
    /// threw `pieceChanged` for them), for the runtime to report.
    public var refusedPieceCount: Int { refused.withLock { $0.count } }

    // MARK: The image as stored, for readers (an NBD client of an image in flight)

    /// Bytes of the data as it is kept on disk: the torrent's content, or a sealed image's plaintext.
    public var storedLength: Int64 { transform?.storedLength ?? info.totalLength }

    /// The pieces whose stored forms hold the stored bytes `range` (non-empty, inside
    /// `storedLength`): only once all of them verified may the range be read.
    public func pieces(holdingStored range: Range<Int64>) -> ClosedRange<Int> {
        precondition(!range.isEmpty && range.lowerBound >= 0 && range.upperBound <= storedLength, "a range inside the data")
        guard let transform else {
            let length = Int64(info.pieceLength)
            return Int(range.lowerBound / length)...Int((range.upperBound - 1) / length)
        }
        // Stored ranges ascend with the piece index: the first piece ending after an offset holds it.
        func piece(holding offset: Int64) -> Int {
            var low = 0, high = info.pieceCount - 1
            while low < high {
                let middle = (low + high) / 2
                if transform.storedRange(of: PieceIndex(middle)).upperBound > offset { high = middle } else { low = middle + 1 }
            }
            return low
        }
        return piece(holding: range.lowerBound)...piece(holding: range.upperBound - 1)
    }

    /// Reads stored bytes (a sealed image's plaintext). The caller makes sure the pieces holding
    /// them have verified: nothing here tells verified bytes from a `.part`'s unwritten ones.
    public func readStored(_ range: Range<Int64>, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        try files.read(range, into: buffer)
    }

    /// Hashes every piece on all cores and returns the ones that match the torrent. Missing or short
    /// files count as missing pieces, not as errors.
    public func verify(threads: Int, progress: (@Sendable (Int64) -> Void)? = nil) -> Bitfield {
        if transform != nil { return verifyTransformed(threads: threads, progress: progress) }
        var have = Bitfield(pieceCount: info.pieceCount)
        let digests = (try? PieceHasher(threads: threads).hashPieces(of: files, skipUnreadable: true, progress: progress)) ?? []
        guard digests.count == info.pieceHashes.count else { return have }
        for piece in info.layout.pieces {
            let start = piece.value * InfoHash.byteCount
            if digests[start..<(start + InfoHash.byteCount)] == info.hash(of: piece) { have.insert(piece) }
        }
        return have
    }

    /// Writes a whole piece whose hash the caller has checked.
    public func write(_ piece: PieceIndex, data: UnsafeRawBufferPointer) throws(StorageError) {
        try write(piece, data: data) { Array(data) }
    }

    /// Writes a whole piece whose hash the caller has checked; a transformed store keeps `bytes`
    /// (its wire form), without a copy, for the peers that ask for it next, unless the caller knows
    /// none will (every connected peer has it).
    public func write(_ piece: PieceIndex, bytes: [UInt8], peersMayAsk: Bool = true) throws(StorageError) {
        try bytes.withUnsafeBytes { data in
            Result { () throws(StorageError) in try write(piece, data: data) { peersMayAsk ? bytes : nil } }
        }.get()
    }

    private func write(_ piece: PieceIndex, data: UnsafeRawBufferPointer, wireForm: () -> [UInt8]?) throws(StorageError) {
        precondition(data.count == info.layout.length(of: piece), "a piece is written whole")
        guard let transform else { return try files.write(data, at: info.layout.offset(of: piece)) }
        let range = transform.storedRange(of: piece)
        // malloc's own alignment: a 64-byte aligned allocation per piece went through memalign and
        // fragmented the heap (a sealed leecher's peak RSS rose from about 78 to 95 MiB).
        let stored = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(range.upperBound - range.lowerBound), alignment: 16)
        defer { stored.deallocate() }
        do {
            try transform.store(piece, wire: data, into: stored)
        } catch {
            throw .pieceRefused(piece: piece.value, reason: "\(error)")
        }
        try files.write(UnsafeRawBufferPointer(stored), at: range.lowerBound)
        rememberTag(of: piece, wire: data)
        if let wireForm = wireForm() { remember(piece, wireForm: wireForm) }
    }

    /// Reads a whole piece as peers are sent it (for a transformed store, its wire form), to serve
    /// their requests for its blocks from one read.
    ///
    /// A transformed piece is checked against the torrent's hash before it is handed out: if its
    /// stored form changed on disk, `pieceChanged` is thrown, `buffer` is zeroed (it held the piece
    /// sealed again under its old nonce, which must never leave the process), and the piece is never
    /// transformed again by this store: later reads throw `pieceChanged` at once, buffer zeroed.
    public func readWire(_ piece: PieceIndex, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        precondition(buffer.count == info.layout.length(of: piece), "a piece is read whole")
        guard transform != nil else {
            let start = info.layout.offset(of: piece)
            return try files.read(start..<(start + Int64(buffer.count)), into: buffer)
        }
        let cached = recentWireForms.withLock { recent in recent.firstIndex { $0.0 == piece }.map { recent.remove(at: $0).1 } }
        if let cached {
            return cached.withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
        if refused.withLock({ $0.contains(piece.value) }) {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            throw .pieceChanged(piece: piece.value, path: workingPath)
        }
        try makeWire(of: piece, in: buffer)
        guard wireIsUnchanged(piece, UnsafeRawBufferPointer(buffer)) else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            refused.withLock { _ = $0.insert(piece.value) }
            throw .pieceChanged(piece: piece.value, path: workingPath)
        }
    }

    /// Whether a wire form made again from the stored form is the one the torrent's hash covers:
    /// its tag compared with the one kept when the piece verified, or else its SHA-1.
    private func wireIsUnchanged(_ piece: PieceIndex, _ wire: UnsafeRawBufferPointer) -> Bool {
        let length = wireTagLength
        if length > 0 {
            let same: Bool? = wireTags.withLock { kept in
                guard kept.known[piece], wire.count >= length else { return nil }
                let start = piece.value * length
                return kept.tags[start..<(start + length)].elementsEqual(wire[(wire.count - length)...])
            }
            if let same { return same }
        }
        return Insecure.SHA1.hash(data: wire).elementsEqual(info.hash(of: piece))
    }

    /// Keeps the tag of a wire form whose hash verified (see `wireTags`).
    private func rememberTag(of piece: PieceIndex, wire: UnsafeRawBufferPointer) {
        let length = wireTagLength
        guard length > 0, wire.count >= length else { return }
        wireTags.withLock { kept in
            let start = piece.value * length
            kept.tags.withUnsafeMutableBytes { tags in
                UnsafeMutableRawBufferPointer(rebasing: tags[start..<(start + length)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: wire[(wire.count - length)...]))
            }
            _ = kept.known.insert(piece)
        }
    }

    private func remember(_ piece: PieceIndex, wireForm: [UInt8]) {
        recentWireForms.withLock { recent in
            recent.removeAll { $0.0 == piece }
            recent.append((piece, wireForm))
            if recent.count > recentWireFormCount { recent.removeFirst() }
        }
    }

    /// Reads a stored piece into `buffer` (the piece's length) and turns it into its wire form there.
    private func makeWire(of piece: PieceIndex, in buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        guard let transform else { preconditionFailure("only transformed pieces have a separate wire form") }
        let range = transform.storedRange(of: piece)
        try files.read(range, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(range.upperBound - range.lowerBound)]))
        do {
            try transform.makeWire(piece, inPlace: buffer)
        } catch {
            throw .pieceRefused(piece: piece.value, reason: "\(error)")
        }
    }

    /// `verify` for transformed data: each stored piece is turned back into its wire form and hashed.
    private func verifyTransformed(threads: Int, progress: (@Sendable (Int64) -> Void)?) -> Bitfield {
        let pieceCount = info.pieceCount
        let found = Mutex((have: Bitfield(pieceCount: pieceCount), bytes: Int64(0)))
        let workers = max(1, min(threads, pieceCount))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: info.pieceLength, alignment: 64)
            defer { buffer.deallocate() }
            for index in stride(from: worker, to: pieceCount, by: workers) {
                let piece = PieceIndex(index)
                let wire = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<info.layout.length(of: piece)])
                var good = false
                if (try? makeWire(of: piece, in: wire)) != nil {
                    good = Insecure.SHA1.hash(data: UnsafeRawBufferPointer(wire)).elementsEqual(info.hash(of: piece))
                    if good { rememberTag(of: piece, wire: UnsafeRawBufferPointer(wire)) }
                }
                let bytes = found.withLock { found in
                    if good { found.have.insert(piece) }
                    found.bytes += Int64(info.layout.length(of: piece))
                    return found.bytes
                }
                progress?(bytes)
            }
        }
        return found.withLock { $0.have }
    }

    /// Flushes the data and gives it its real name. Call only when every piece has verified.
    ///
    /// The files and their folders are synced before the rename and the output folder after it,
    /// so after a crash the name `NAME` never points at data that did not reach the disk.
    public func finish() throws(StorageError) {
        try files.synchronize()
        guard workingPath != finalPath else { return }
        if info.isMultiFile && transform == nil { try FileSet.synchronizeFolder(workingPath) }
        if rename(workingPath, finalPath) != 0 { throw .write(path: finalPath, offset: 0, errno: errno) }
        let slash = finalPath.lastIndex(of: "/")
        try FileSet.synchronizeFolder(slash.map { String(finalPath[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? ".")
    }
}
