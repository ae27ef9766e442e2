#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Metainfo

/// The files of a torrent, open for positional I/O: any byte range of the concatenated data can be
/// read or written from any thread (pread/pwrite never share a file offset).
///
/// Padding files (BEP 47) have no path: they read as zeros and writes to them are dropped.
public final class FileSet: Sendable {
    public enum Mode: Sendable {
        case read
        /// Creates missing files and folders and sizes every file to its length (sparse where the
        /// file system allows), so a crash never leaves a file shorter than the torrent says.
        case readWrite
    }

    public let layout: PieceLayout
    private let paths: [String?]
    private let descriptors: [Int32]

    /// Opens every file of `layout`; `paths[i]` is the file system path of the layout's file `i`,
    /// or nil for a padding file. Files created get `permissions` (before the umask); with
    /// `private`, files opened for writing are also set to 0600 if they already existed, so the
    /// plaintext of a sealed image is never readable by other users, whatever made the file first.
    public init(layout: PieceLayout, paths: [String?], mode: Mode = .read, private isPrivate: Bool = false) throws(StorageError) {
        precondition(paths.count == layout.fileLengths.count, "one path per file of the layout")
        var opened: [Int32] = []
        func fail(_ error: StorageError) -> StorageError {
            opened.forEach { if $0 >= 0 { close($0) } }
            return error
        }
        for (index, path) in paths.enumerated() {
            guard let path else {
                opened.append(-1)
                continue
            }
            if mode == .readWrite, let slash = path.lastIndex(of: "/") {
                let folder = String(path[..<slash])
                if !folder.isEmpty, let problem = Self.makeFolders(folder) { throw fail(problem) }
            }
            // A file opened to be written is never reached through a symbolic link (O_NOFOLLOW):
            // in a shared output folder, a link planted at the name would otherwise make us create,
            // truncate, chmod and overwrite whatever it points to. Reading follows links: a seeder
            // serves what its operator named, links included, and reading changes nothing.
            let flags = mode == .read ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC
            let descriptor = open(path, flags, isPrivate ? 0o600 : 0o644)
            guard descriptor >= 0 else {
                let code = errno
                throw fail(mode == .read ? .open(path: path, errno: code) : StorageError.opening(path, errno: code))
            }
            opened.append(descriptor)
            if mode == .readWrite && isPrivate && fchmod(descriptor, 0o600) != 0 {
                throw fail(.open(path: path, errno: errno))
            }
            if mode == .readWrite {
                var info = stat()
                if fstat(descriptor, &info) == 0, Int64(info.st_size) != layout.fileLengths[index],
                    ftruncate(descriptor, off_t(layout.fileLengths[index])) != 0
                {
                    throw fail(.write(path: path, offset: 0, errno: errno))
                }
            } else {
                #if canImport(Glibc)
                _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_SEQUENTIAL)
                #endif
            }
        }
        self.layout = layout
        self.paths = paths
        self.descriptors = opened
    }

    /// Device and inode of the layout's file `index` as opened (nil for padding or when fstat
    /// fails): what was opened, whatever its path points to by now.
    public func identity(ofFile index: Int) -> [UInt64]? {
        guard descriptors.indices.contains(index), descriptors[index] >= 0 else { return nil }
        var info = stat()
        guard fstat(descriptors[index], &info) == 0 else { return nil }
        return [UInt64(info.st_dev), UInt64(info.st_ino)]
    }

    /// One file of `length` bytes at `path` (a sealed image's plaintext, say), whatever its pieces.
    public convenience init(singleFile path: String, length: Int64, mode: Mode = .read, private isPrivate: Bool = false) throws(StorageError) {
        guard length >= 0, let layout = try? PieceLayout(pieceLength: PieceLayout.maxPieceLength, fileLengths: [length]) else {
            throw .invalidLength(path: path, length: length)
        }
        try self.init(layout: layout, paths: [path], mode: mode, private: isPrivate)
    }

    deinit {
        for descriptor in descriptors where descriptor >= 0 { close(descriptor) }
    }

    /// Fills `buffer` (exactly `range.count` bytes) with the data of `range`.
    public func read(_ range: Range<Int64>, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        precondition(buffer.count == Int(range.upperBound - range.lowerBound), "buffer size must match the range")
        var done = 0
        for segment in layout.segments(of: range) {
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + segment.length)])
            if descriptors[segment.fileIndex] < 0 {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                try readFully(file: segment.fileIndex, at: segment.offsetInFile, into: target)
            }
            done += segment.length
        }
    }

    /// Writes `data` at `offset` of the concatenated data.
    public func write(_ data: UnsafeRawBufferPointer, at offset: Int64) throws(StorageError) {
        var done = 0
        for segment in layout.segments(of: offset..<(offset + Int64(data.count))) {
            defer { done += segment.length }
            let file = segment.fileIndex
            guard descriptors[file] >= 0 else { continue }
            var written = 0
            while written < segment.length {
                let position = segment.offsetInFile + Int64(written)
                let count = pwrite(descriptors[file], data.baseAddress! + done + written, segment.length - written, off_t(position))
                if count < 0 {
                    if errno == EINTR { continue }
                    throw .write(path: paths[file] ?? "", offset: position, errno: errno)
                }
                written += count
            }
        }
    }

    /// Flushes every written file to stable storage, and the folders that hold them (their entries:
    /// a new file whose folder was not synced can vanish in a crash although its data was).
    public func synchronize() throws(StorageError) {
        var folders = Set<String>()
        for (index, descriptor) in descriptors.enumerated() where descriptor >= 0 {
            if fsync(descriptor) != 0 { throw .write(path: paths[index] ?? "", offset: 0, errno: errno) }
            if let path = paths[index], let slash = path.lastIndex(of: "/") { folders.insert(String(path[..<slash])) }
        }
        for folder in folders.sorted() { try Self.synchronizeFolder(folder.isEmpty ? "/" : folder) }
    }

    /// fsync of a folder: makes its entries (files created or renamed in it) durable.
    public static func synchronizeFolder(_ path: String) throws(StorageError) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .open(path: path, errno: errno) }
        defer { close(descriptor) }
        if fsync(descriptor) != 0 { throw .write(path: path, offset: 0, errno: errno) }
    }

    private func readFully(file: Int, at offset: Int64, into target: UnsafeMutableRawBufferPointer) throws(StorageError) {
        var done = 0
        while done < target.count {
            let position = offset + Int64(done)
            let count = pread(descriptors[file], target.baseAddress! + done, target.count - done, off_t(position))
            if count < 0 {
                if errno == EINTR { continue }
                throw .read(path: paths[file] ?? "", offset: position, errno: errno)
            }
            if count == 0 {
                throw .fileTooShort(path: paths[file] ?? "", expectedLength: layout.fileLengths[file], endedAt: position)
            }
            done += count
        }
    }

    static func makeFolders(_ folder: String) -> StorageError? {
        var path = folder.hasPrefix("/") ? "" : "."
        for component in folder.split(separator: "/") {
            path += "/" + component
            if mkdir(path, 0o755) != 0 && errno != EEXIST { return .open(path: path, errno: errno) }
        }
        return nil
    }
}
