#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import Dispatch
import Metainfo
import Synchronization

/// Where a piece's bytes may already be on this node: ranges of local files, in order, each
/// followed by zeros where the piece has padding. A candidate is a guess, never trusted: its
/// bytes become the piece only if their SHA-1 is the torrent's hash of it.
public struct PieceCandidate: Hashable, Sendable {
    public struct Extent: Hashable, Sendable {
        /// The local file; nil for zeros (a BEP 47 padding file's share of the piece).
        public let path: String?
        public let offset: Int64
        public let length: Int

        public init(path: String?, offset: Int64, length: Int) {
            self.path = path
            self.offset = offset
            self.length = length
        }
    }

    public let extents: [Extent]
    public var length: Int { extents.reduce(0) { $0 + $1.length } }

    public init(extents: [Extent]) { self.extents = extents }
}

/// Fills a download's missing pieces from data already on this node (a content store, an earlier
/// version of the image) before any peer is asked: each candidate is read, hashed and written
/// only if it matches. The pieces it returns are handed to the runtime as pieces the download
/// already has, the same way a resumed download's verified pieces are, so the engine never learns
/// where they came from and fetches only the rest.
public enum LocalPieces {
    public struct Report: Sendable, Equatable {
        /// Pieces taken from local data, and their bytes.
        public var pieces: Bitfield
        public var bytes: Int64 = 0
        /// Candidates that were read but did not give their piece (changed, truncated or
        /// unreadable files): the piece was then looked for elsewhere or left to peers.
        public var rejected = 0

        public init(pieceCount: Int) { pieces = Bitfield(pieceCount: pieceCount) }
    }

    /// Tries `candidates(piece)` for every piece `have` lacks, on `threads` workers, and writes
    /// the first that hashes right into `store`. Files are opened read-only and never written.
    public static func fill(
        _ store: PieceStore, have: Bitfield, threads: Int, candidates: (PieceIndex) -> [PieceCandidate]
    ) -> Report {
        let info = store.info
        var found: [(PieceIndex, [PieceCandidate])] = []
        for index in 0..<info.pieceCount where !have[PieceIndex(index)] {
            let piece = PieceIndex(index)
            let length = info.layout.length(of: piece)
            let usable = candidates(piece).filter { $0.length == length }
            if !usable.isEmpty { found.append((piece, usable)) }
        }
        let report = Mutex(Report(pieceCount: info.pieceCount))
        let work = found
        guard !work.isEmpty else { return report.withLock { $0 } }
        let workers = max(1, min(threads, work.count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: info.pieceLength, alignment: 64)
            var files = OpenFiles()
            defer {
                buffer.deallocate()
                files.closeAll()
            }
            for position in stride(from: worker, to: work.count, by: workers) {
                let (piece, found) = work[position]
                let data = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<info.layout.length(of: piece)])
                var rejected = 0
                var taken = false
                for candidate in found {
                    guard files.read(candidate, into: data),
                        Insecure.SHA1.hash(data: UnsafeRawBufferPointer(data)).elementsEqual(info.hash(of: piece))
                    else {
                        rejected += 1
                        continue
                    }
                    // A write that fails leaves the piece to peers; the download reports disk errors itself.
                    taken = (try? store.write(piece, data: UnsafeRawBufferPointer(data))) != nil
                    break
                }
                report.withLock { report in
                    report.rejected += rejected
                    if taken {
                        _ = report.pieces.insert(piece)
                        report.bytes += Int64(data.count)
                    }
                }
            }
        }
        return report.withLock { $0 }
    }

    /// The candidates for each piece of `info` in an earlier version of the same image at `path`
    /// (the file, or the folder of a multi-file torrent): the bytes at the same offsets of the same
    /// files. Pieces that did not change since then hash the same and are taken.
    public static func sameOffsets(in path: String, of info: TorrentInfo) -> (PieceIndex) -> [PieceCandidate] {
        { piece in
            let extents = info.layout.segments(of: piece).map { segment in
                let file = info.files[segment.fileIndex]
                let filePath = file.isPadding ? nil : (info.isMultiFile ? ([path] + file.path).joined(separator: "/") : path)
                return PieceCandidate.Extent(path: filePath, offset: segment.offsetInFile, length: segment.length)
            }
            return [PieceCandidate(extents: extents)]
        }
    }
}

extension LocalPieces {
    /// What `moved` found.
    public struct MovedReport: Sendable, Equatable {
        /// Each piece found, as a candidate at the place its data now lies.
        public var candidates: [PieceIndex: PieceCandidate] = [:]
        /// Files scanned, and bytes in them.
        public var files = 0
        public var bytes: Int64 = 0
        /// Weak-checksum hits whose SHA-1 was not the piece's.
        public var falseHits = 0
    }

    /// The pieces `have` lacks whose data lies anywhere in the files at `paths` (a file, or
    /// every regular file under a folder, at most `fileLimit`): each file is scanned at every
    /// offset with the weak `RollingChecksum`s the torrent publishes (`weak`), hits confirmed by
    /// SHA-1 (`MovedPieceFinder`), each file in `threads` ranges side by side. Only full-length
    /// pieces are looked for.
    public static func moved(in paths: [String], of info: TorrentInfo, weak: [UInt32], have: Bitfield, threads: Int = 1,
        fileLimit: Int = 10_000) -> MovedReport {
        var report = MovedReport()
        guard weak.count == info.pieceCount else { return report }
        var wanted = Set((0..<info.pieceCount).map { PieceIndex($0) }.filter { !have[$0] && info.layout.length(of: $0) == info.pieceLength })
        let hashes = info
        for file in regularFiles(under: paths, limit: fileLimit) where !wanted.isEmpty {
            let finder = MovedPieceFinder(pieceLength: info.pieceLength, weak: weak, wanted: wanted, hash: { Array(hashes.hash(of: $0)) })
            guard let found = finder.scan(file: file.path, parts: threads) else { continue }
            report.files += 1
            report.bytes += file.size
            report.falseHits += found.falseHits
            for (piece, offset) in found.offsets {
                wanted.remove(piece)
                report.candidates[piece] = PieceCandidate(extents: [.init(path: file.path, offset: Int64(offset), length: info.pieceLength)])
            }
        }
        return report
    }

    private static func regularFiles(under paths: [String], limit: Int) -> [(path: String, size: Int64)] {
        var files: [(path: String, size: Int64)] = []
        var folders = paths
        while let path = folders.popLast(), files.count < limit {
            var status = stat()
            guard lstat(path, &status) == 0 else { continue }
            if (status.st_mode & S_IFMT) == S_IFREG {
                files.append((path, Int64(status.st_size)))
            } else if (status.st_mode & S_IFMT) == S_IFDIR, let directory = opendir(path) {
                defer { closedir(directory) }
                var names: [String] = []
                while let entry = readdir(directory) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                    if name != "." && name != ".." { names.append(name) }
                }
                folders += names.sorted(by: >).map { path + "/" + $0 }
            }
        }
        return files
    }
}

/// Descriptors of the local files one fill worker has opened, read-only.
private struct OpenFiles {
    private var descriptors: [String: Int32] = [:]

    /// Reads `candidate` into `buffer` (its length); false when a file cannot be opened or is short.
    mutating func read(_ candidate: PieceCandidate, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        var done = 0
        for extent in candidate.extents {
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + extent.length)])
            done += extent.length
            guard let path = extent.path else {
                target.initializeMemory(as: UInt8.self, repeating: 0)
                continue
            }
            guard extent.offset >= 0, let descriptor = descriptor(path) else { return false }
            var read = 0
            while read < target.count {
                let count = pread(descriptor, target.baseAddress! + read, target.count - read, off_t(extent.offset + Int64(read)))
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return false }  // an error, or the file ends early (truncated)
                read += count
            }
        }
        return true
    }

    private mutating func descriptor(_ path: String) -> Int32? {
        if let known = descriptors[path] { return known >= 0 ? known : nil }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        descriptors[path] = descriptor
        return descriptor >= 0 ? descriptor : nil
    }

    mutating func closeAll() {
        for descriptor in descriptors.values where descriptor >= 0 { close(descriptor) }
        descriptors = [:]
    }
}
