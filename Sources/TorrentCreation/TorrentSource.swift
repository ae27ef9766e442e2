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
        /// Device and inode when scanned: the file opened for hashing must be this one, or it was
        /// swapped (for a link out of the folder, say) between the scan and the read.
        public let identity: [UInt64]
    }

    /// The folder's or file's own name: the torrent's default name.
    public let baseName: String
    public let isDirectory: Bool
    public let files: [File]

    /// Scans `path`. A folder's files are taken in byte order of their paths (as mktorrent does),
    /// unless `order` lists the relative paths to take, in the order to take them.
    ///
    /// `path` itself may be a symbolic link (the user named it), but nothing inside the folder is
    /// followed: a link there, to a file or a folder, dangling or not, is refused with
    /// `symbolicLink`. mktorrent and transmission-create follow such links, even out of the folder,
    /// so a stray `disk.img -> /etc/shadow` or `cache -> /` would publish what the folder never held;
    /// refusing (not skipping) keeps an image from silently losing a file the user expected in it.
    public static func scan(_ path: String, order: [[String]]? = nil) throws(CreationError) -> TorrentSource {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let info = statFollowing(trimmed) else { throw .notFound(path) }
        let baseName = (trimmed as NSString).lastPathComponent
        if isRegular(info) {
            guard order == nil else { throw .invalidFileList("only a folder can take a file list") }
            return TorrentSource(
                baseName: baseName, isDirectory: false,
                files: [File(relativePath: [baseName], fullPath: trimmed, length: Int64(info.st_size), identity: identity(info))])
        }
        guard isDirectory(info) else { throw .unsupportedFileType(path) }

        var files: [File]
        if let order {
            files = try order.map { (components) throws(CreationError) -> File in
                let full = ([trimmed] + components).joined(separator: "/")
                guard !components.isEmpty, components.allSatisfy(isPlainName) else {
                    throw .invalidFileList("\(components.joined(separator: "/")) is not a file below \(path)")
                }
                // Every folder on the way is checked too: `a/b` with `a -> /etc` leaves the tree.
                var info = stat()
                for depth in 1...components.count {
                    let prefix = ([trimmed] + components[0..<depth]).joined(separator: "/")
                    guard let found = statNotFollowing(prefix) else {
                        throw .invalidFileList("\(components.joined(separator: "/")) is not a file below \(path)")
                    }
                    if isSymbolicLink(found) { throw .symbolicLink(path: prefix, target: linkTarget(prefix)) }
                    info = found
                }
                guard isRegular(info) else { throw .unsupportedFileType(full) }
                return File(relativePath: components, fullPath: full, length: Int64(info.st_size), identity: identity(info))
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
            // lstat: a link is seen as a link, never as what it points to.
            guard let info = statNotFollowing(full) else {
                throw .storage(.open(path: full, errno: errno))
            }
            if isSymbolicLink(info) {
                throw .symbolicLink(path: full, target: linkTarget(full))
            } else if isRegular(info) {
                files.append(File(relativePath: components + [name], fullPath: full, length: Int64(info.st_size), identity: identity(info)))
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

    private static func statNotFollowing(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    /// What a link points to, for the error message; "?" when it cannot be read.
    private static func linkTarget(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return "?" }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func isSymbolicLink(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFLNK }
    private static func isRegular(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFREG }
    private static func isDirectory(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFDIR }
    static func identity(_ info: stat) -> [UInt64] { [UInt64(info.st_dev), UInt64(info.st_ino)] }
}
