import Metainfo
import Storage

/// Why a torrent could not be made, naming the path or option at fault.
public enum CreationError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(String)
    case unsupportedFileType(String)
    case noFiles(String)
    case invalidName(String)
    case invalidPieceLength(Int)
    case invalidFileList(String)
    case tooLarge(String)
    /// More pieces than `PieceLayout.maxPieceCount`: a larger piece size is needed.
    case tooManyPieces(path: String, count: Int64, pieceLength: Int)
    /// A symbolic link inside the folder; `create` never follows one (docs/security.md).
    case symbolicLink(path: String, target: String)
    /// The file opened for hashing is not the one the scan found (replaced meanwhile, perhaps by a
    /// link out of the folder): nothing of it is hashed.
    case replaced(path: String)
    case storage(StorageError)

    public var description: String {
        switch self {
        case .notFound(let path): "\(path): no such file or directory"
        case .unsupportedFileType(let path): "\(path): not a regular file or directory (devices, sockets and pipes cannot be shared)"
        case .noFiles(let path): "\(path): holds no files to share"
        case .invalidName(let name): "\"\(name)\" cannot be a torrent or file name (empty, '.', '..', or containing '/', '\\' or NUL)"
        case .invalidPieceLength(let length): "piece size \(length) is not a power of two from 16 KiB to \(PieceLayout.maxPieceLength >> 20) MiB"
        case .invalidFileList(let problem): "file list: \(problem)"
        case .tooLarge(let path): "\(path): total size overflows 64 bits"
        case .tooManyPieces(let path, let count, let pieceLength):
            "\(path): \(count) pieces of \(pieceLength) bytes, more than a torrent may have (\(PieceLayout.maxPieceCount)); "
                + "choose a larger piece size"
        case .symbolicLink(let path, let target):
            "\(path): is a symbolic link (to \(target)); vmswarm create does not follow links inside a folder, "
                + "so a torrent never holds data from outside it. Replace the link by the file, or remove it"
        case .replaced(let path):
            "\(path): was replaced while vmswarm create read the folder (by a link or another file); nothing of it "
                + "was hashed. Run create again once the folder is still"
        case .storage(let error): error.description
        }
    }
}
