#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The files a torrent will be made of: one file, or every regular file below a folder, in the
/// order they will appear in the torrent.
public struct TorrentSource: Sendable {
    public struct File: Hashable, Sendable {
        /// Components below the folder (for a single file: just its name).
        public let relativePath: [String]
        public let fullPath: String
        public let length: Int64
    }

    /// The folder's or file's own name: the torrent's default name.
    public let baseName: String
    public let isDirectory: Bool
    public let files: [File]

    /// Scans `path`. A folder's files are taken in byte order of their paths (as mktorrent does),
    /// unless `order` lists the relative paths to take, in the order to take them. Symbolic links are
    /// followed; a link cycle is not.
    public static func scan(_ path: String, order: [[String]]? = nil) throws(CreationError) -> TorrentSource {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let info = statFollowing(trimmed) else { throw .notFound(path) }
        let baseName = (trimmed as NSString).lastPathComponent
        if isRegular(info) {
            guard order == nil else { throw .invalidFileList("only a folder can take a file list") }
            return TorrentSource(
                baseName: baseName, isDirectory: false,
                files: [File(relativePath: [baseName], fullPath: trimmed, length: Int64(info.st_size))])
        }
        guard isDirectory(info) else { throw .unsupportedFileType(path) }

        var files: [File]
        if let order {
            files = try order.map { (components) throws(CreationError) -> File in
                let full = ([trimmed] + components).joined(separator: "/")
                guard components.allSatisfy(isPlainName), let info = statFollowing(full) else {
                    throw .invalidFileList("\(components.joined(separator: "/")) is not a file below \(path)")
                }
                guard isRegular(info) else { throw .unsupportedFileType(full) }
                return File(relativePath: components, fullPath: full, length: Int64(info.st_size))
            }
            guard Set(files.map(\.relativePath)).count == files.count else {
                throw .invalidFileList("a file is listed twice")
            }
        } else {
            files = []
            var visited: Set<[UInt64]> = [identity(info)]
            try walk(directory: trimmed, components: [], into: &files, visited: &visited)
            files.sort { lhs, rhs in
                lhs.relativePath.joined(separator: "/").utf8.lexicographicallyPrecedes(
                    rhs.relativePath.joined(separator: "/").utf8)
            }
        }
        guard !files.isEmpty else { throw .noFiles(path) }
        return TorrentSource(baseName: baseName, isDirectory: true, files: files)
    }

    private static func walk(
        directory: String, components: [String], into files: inout [File], visited: inout Set<[UInt64]>
    ) throws(CreationError) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw .storage(.open(path: directory, errno: EACCES))
        }
        for name in names {
            let full = directory + "/" + name
            // A dangling symbolic link is skipped, as every torrent maker does.
            guard let info = statFollowing(full) else { continue }
            if isRegular(info) {
                files.append(File(relativePath: components + [name], fullPath: full, length: Int64(info.st_size)))
            } else if isDirectory(info) {
                guard visited.insert(identity(info)).inserted else { continue }
                try walk(directory: full, components: components + [name], into: &files, visited: &visited)
            } else {
                throw .unsupportedFileType(full)
            }
        }
    }

    static func isPlainName(_ name: String) -> Bool {
        !(name.isEmpty || name == "." || name == ".." || name.contains("/") || name.contains("\\")
            || name.contains("\0"))
    }

    private static func statFollowing(_ path: String) -> stat? {
        var info = stat()
        return stat(path, &info) == 0 ? info : nil
    }

    private static func isRegular(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFREG }
    private static func isDirectory(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFDIR }
    private static func identity(_ info: stat) -> [UInt64] { [UInt64(info.st_dev), UInt64(info.st_ino)] }
}
