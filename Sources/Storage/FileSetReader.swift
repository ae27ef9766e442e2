#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Metainfo

/// Reads any byte range of a torrent's concatenated data from the files that hold it, with
/// positional reads, so any number of threads may read different ranges at once.
///
/// Padding files (BEP 47) have no path: their bytes read as zeros.
public final class FileSetReader: Sendable {
    public let layout: PieceLayout
    private let paths: [String?]
    private let descriptors: [Int32]

    /// Opens every file of `layout`; `paths[i]` is the file system path of the layout's file `i`,
    /// or nil for a padding file.
    public init(layout: PieceLayout, paths: [String?]) throws(StorageError) {
        precondition(paths.count == layout.fileLengths.count, "one path per file of the layout")
        var opened: [Int32] = []
        for path in paths {
            guard let path else {
                opened.append(-1)
                continue
            }
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                let code = errno
                opened.forEach { if $0 >= 0 { close($0) } }
                throw .open(path: path, errno: code)
            }
            #if canImport(Glibc)
            _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_SEQUENTIAL)
            #endif
            opened.append(descriptor)
        }
        self.layout = layout
        self.paths = paths
        self.descriptors = opened
    }

    deinit {
        for descriptor in descriptors where descriptor >= 0 { close(descriptor) }
    }

    /// Fills `buffer` (exactly `range.count` bytes) with the data of `range`.
    public func read(_ range: Range<Int64>, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        precondition(buffer.count == Int(range.upperBound - range.lowerBound), "buffer size must match the range")
        var written = 0
        for segment in layout.segments(of: range) {
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[written..<(written + segment.length)])
            let descriptor = descriptors[segment.fileIndex]
            if descriptor < 0 {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                try readFully(file: segment.fileIndex, at: segment.offsetInFile, into: target)
            }
            written += segment.length
        }
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
                throw .fileTooShort(
                    path: paths[file] ?? "", expectedLength: layout.fileLengths[file], endedAt: position)
            }
            done += count
        }
    }
}
