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
        case .storage(let error): error.description
        }
    }
}
