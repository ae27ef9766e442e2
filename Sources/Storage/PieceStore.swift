#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Metainfo

/// A torrent's data on disk, for a download or for seeding.
///
/// A download is written under `NAME.part` (a file, or a folder for a multi-file torrent) and only
/// renamed to `NAME` by `finish()`, once every piece has verified, so a user never finds a
/// half-written image under the real name. Restarting a download opens the same `.part`, and
/// `verify` tells which pieces are already good.
public final class PieceStore: Sendable {
    public let info: TorrentInfo
    /// Where the data ends up (and where a seeder's data is).
    public let finalPath: String
    /// Where a download's data is while it is incomplete; equal to `finalPath` when seeding.
    public let workingPath: String
    /// The download's data did not exist before: there is nothing to verify.
    public let isNew: Bool
    private let files: FileSet

    private init(info: TorrentInfo, finalPath: String, workingPath: String, mode: FileSet.Mode, isNew: Bool = false) throws(StorageError) {
        self.info = info
        self.finalPath = finalPath
        self.workingPath = workingPath
        self.isNew = isNew
        let paths: [String?] = info.files.map { file in
            if file.isPadding { return nil }
            return info.isMultiFile ? ([workingPath] + file.path).joined(separator: "/") : workingPath
        }
        files = try FileSet(layout: info.layout, paths: paths, mode: mode)
    }

    /// Opens (creating as needed) `DIRECTORY/NAME.part` for a download. If `DIRECTORY/NAME` already
    /// exists it is opened read-only instead, never resized or written: the caller verifies it, and
    /// either seeds it (complete) or stops (it is some other data that must not be overwritten).
    public static func download(_ info: TorrentInfo, into directory: String) throws(StorageError) -> PieceStore {
        let finalPath = directory + "/" + info.name
        var status = stat()
        if stat(finalPath, &status) == 0 {
            return try PieceStore(info: info, finalPath: finalPath, workingPath: finalPath, mode: .read)
        }
        let partExists = stat(finalPath + ".part", &status) == 0
        return try PieceStore(info: info, finalPath: finalPath, workingPath: finalPath + ".part", mode: .readWrite, isNew: !partExists)
    }

    /// Opens existing data for seeding: the file itself (single-file torrent) or the folder that holds
    /// the torrent's files (multi-file). Nothing is created or resized.
    public static func seed(_ info: TorrentInfo, data path: String) throws(StorageError) -> PieceStore {
        try PieceStore(info: info, finalPath: path, workingPath: path, mode: .read)
    }

    public var isFinished: Bool { workingPath == finalPath }

    /// Hashes every piece on all cores and returns the ones that match the torrent. Missing or short
    /// files count as missing pieces, not as errors.
    public func verify(threads: Int, progress: (@Sendable (Int64) -> Void)? = nil) -> Bitfield {
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
        precondition(data.count == info.layout.length(of: piece), "a piece is written whole")
        try files.write(data, at: info.layout.offset(of: piece))
    }

    /// Reads one block, for a peer's request.
    public func read(_ request: BlockRequest, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        let start = info.layout.offset(of: request.piece) + Int64(request.begin)
        try files.read(start..<(start + Int64(request.length)), into: buffer)
    }

    /// Flushes the data and gives it its real name. Call only when every piece has verified.
    public func finish() throws(StorageError) {
        try files.synchronize()
        guard workingPath != finalPath else { return }
        if rename(workingPath, finalPath) != 0 { throw .write(path: finalPath, offset: 0, errno: errno) }
    }
}
