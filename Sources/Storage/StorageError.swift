#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed file operation, naming the file, the offset and the system's reason.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case open(path: String, errno: Int32)
    case read(path: String, offset: Int64, errno: Int32)
    case write(path: String, offset: Int64, errno: Int32)
    /// The file ended before the torrent says it should (it shrank, or is not the torrent's data).
    case fileTooShort(path: String, expectedLength: Int64, endedAt: Int64)
    /// A file was to be opened with a length no file can have.
    case invalidLength(path: String, length: Int64)
    /// A piece's transform (opening a sealed piece) refused it, although its hash matched.
    case pieceRefused(piece: Int, reason: String)
    /// A piece we verified no longer matches the torrent's hash when read to be sent: its data
    /// changed on disk. It is not sent, and (for a sealed image) never sealed again.
    case pieceChanged(piece: Int, path: String)
    /// Another process (a second `get` of the same torrent into the same folder) holds the lock on
    /// this download's `.part`.
    case locked(path: String)
    /// A file or folder a download (or any writer) would create or write is a symbolic link, to
    /// `target`: it is not followed, so a link planted in a shared output folder cannot make us
    /// create, truncate, chmod or overwrite the file it points to.
    case symbolicLink(path: String, target: String)

    public var description: String {
        switch self {
        case .open(let path, let code):
            return "cannot open \(path): \(Self.message(code))"
        case .read(let path, let offset, let code):
            return "cannot read \(path) at byte \(offset): \(Self.message(code))"
        case .write(let path, let offset, let code):
            return "cannot write \(path) at byte \(offset): \(Self.message(code))"
        case .fileTooShort(let path, let expected, let endedAt):
            return "\(path) ends at byte \(endedAt) but should hold \(expected) bytes (was it changed while being read?)"
        case .invalidLength(let path, let length):
            return "\(path): \(length) is not a valid file length"
        case .pieceRefused(let piece, let reason):
            return "piece \(piece) matched the torrent's hash but was refused: \(reason)"
        case .locked(let path):
            return "\(path) is being written by another download of this torrent into the same folder; wait for it to finish or choose another --output"
        case .symbolicLink(let path, let target):
            return "\(path) is a symbolic link (to \(target)); refusing to write through it: remove it or choose another --output"
        case .pieceChanged(let piece, let path):
            return "piece \(piece) of \(path) changed on disk and no longer matches the torrent's hash; it is not served"
        }
    }

    static func message(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// The error for a failed open of `path`: `symbolicLink` when `path` is a link (opened with
    /// O_NOFOLLOW, which fails with ELOOP there), else `open` with the system's reason.
    static func opening(_ path: String, errno code: Int32) -> StorageError {
        if let target = symbolicLinkTarget(path) { return .symbolicLink(path: path, target: target) }
        return .open(path: path, errno: code)
    }

    /// Where `path` points when it is itself a symbolic link (its last component), else nil.
    static func symbolicLinkTarget(_ path: String) -> String? {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & 0o170000 == 0o120000 else { return nil }  // S_IFMT, S_IFLNK
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return "?" }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
