import Bencode
import Crypto
import Dispatch
import Metainfo
import Storage
import Synchronization

/// Makes a torrent of a file or folder: what `vmswarm create` does, minus the terminal.
public struct TorrentCreator: Sendable {
    public struct Options: Sendable {
        /// The torrent's name; the file's or folder's own name when nil.
        public var name: String?
        /// Bytes per piece: a power of two from 16 KiB; the `PieceSizeRule` when nil.
        public var pieceLength: Int?
        public var announceTiers: [[String]] = []
        public var privacy: TorrentInfo.Privacy = .unspecified
        public var comment: String?
        public var webSeeds: [String] = []
        public var createdBy: String?
        /// Seconds since 1970; omitted when nil.
        public var creationDate: Int64?
        /// For a folder: the relative paths to include, in torrent order. Byte order of all files when nil.
        public var fileOrder: [[String]]?
        public var threads: Int
        /// Entries added to the `info` dictionary beside the BEP 3 fields, covered by the info-hash
        /// (a sealed image's `vmswarm-sealed` parameters).
        public var extraInfoFields: [String: BencodeValue] = [:]
        /// For a folder (of image layers): start every file on a piece boundary with BEP 47 padding
        /// files after each one (the last too, as libtorrent 2 does), and record each file's SHA-1
        /// (BEP 47 `sha1`). A file's pieces then hold its bytes alone, zero-padded at its end, so
        /// a layer has the same piece hashes in every torrent of the same piece length that carries
        /// it, and a node that holds the layer can take them from its content store (docs/reuse.md).
        public var alignFiles = false
        /// Publish each piece's weak rolling checksum beside `info` (4 bytes a piece), so that a
        /// node holding an older version finds the pieces whose data moved (docs/reuse.md).
        public var rollingChecksums = false

        public init(threads: Int) { self.threads = threads }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    /// Scans `path` without reading any data: what will be hashed, and with which piece length.
    public func plan(_ path: String) throws(CreationError) -> (source: TorrentSource, pieceLength: Int, totalLength: Int64) {
        let source: TorrentSource
        if let chain = try chainSource(path) { source = chain } else { source = try TorrentSource.scan(path, order: options.fileOrder) }
        var total: Int64 = 0
        for file in source.files {
            let (sum, overflow) = total.addingReportingOverflow(file.length)
            guard !overflow else { throw .tooLarge(path) }
            total = sum
        }
        // The piece length is chosen for the data, before padding, so aligning a folder never
        // changes the piece length `auto` picks for it.
        let pieceLength = options.pieceLength ?? PieceSizeRule.pieceLength(forTotalLength: total)
        guard pieceLength >= 16 << 10, pieceLength <= PieceLayout.maxPieceLength, pieceLength & (pieceLength - 1) == 0
        else { throw .invalidPieceLength(pieceLength) }
        if options.alignFiles && source.isDirectory {
            total = 0
            for file in source.files {
                guard file.length < Int64.max - Int64(pieceLength) else { throw .tooLarge(path) }
                let (sum, overflow) = total.addingReportingOverflow(file.length + Self.padding(after: file.length, pieceLength: pieceLength))
                guard !overflow else { throw .tooLarge(path) }
                total = sum
            }
        }
        let count = total / Int64(pieceLength) + (total % Int64(pieceLength) == 0 ? 0 : 1)
        guard count <= Int64(PieceLayout.maxPieceCount) else {
            throw .tooManyPieces(path: path, count: count, pieceLength: pieceLength)
        }
        return (source, pieceLength, total)
    }

    /// Hashes the data and returns the torrent. `progress` gets the bytes hashed so far.
    public func create(_ path: String, progress: (@Sendable (Int64) -> Void)? = nil) throws(CreationError) -> Metainfo {
        let (source, pieceLength, _) = try plan(path)
        return try create(path, source: source, pieceLength: pieceLength, progress: progress)
    }

    /// Hashes what `plan` found. Each file is checked, once open, to be the file scanned: a file
    /// swapped between the scan and the read (for a link to `/etc/shadow`, say) is refused, so the
    /// checks of `TorrentSource.scan` cannot be raced.
    func create(_ path: String, source: TorrentSource, pieceLength: Int, progress: (@Sendable (Int64) -> Void)?) throws(CreationError) -> Metainfo {
        let name = options.name ?? source.baseName
        guard TorrentSource.isPlainName(name) else { throw .invalidName(name) }

        let align = options.alignFiles && source.isDirectory
        // Each source file, and where it sits in `files` (padding files have no source).
        var files: [FileEntry] = []
        var sourceIndex: [Int?] = []
        for (origin, file) in source.files.enumerated() {
            files.append(FileEntry(path: source.isDirectory ? file.relativePath : [name], length: file.length))
            sourceIndex.append(origin)
            let padding = align ? Self.padding(after: file.length, pieceLength: pieceLength) : 0
            if padding > 0 {
                files.append(.padding(length: padding))
                sourceIndex.append(nil)
            }
        }
        let hashes: [UInt8]
        var rolling: [UInt32]?
        do {
            let layout = try PieceLayout(pieceLength: pieceLength, fileLengths: files.map(\.length))
            let reader = try FileSet(layout: layout, paths: sourceIndex.map { $0.map { source.files[$0].fullPath } })
            for (index, origin) in sourceIndex.enumerated() {
                guard let origin else { continue }
                if reader.identity(ofFile: index) != source.files[origin].identity {
                    throw CreationError.replaced(path: source.files[origin].fullPath)
                }
            }
            let hasher = PieceHasher(threads: options.threads)
            if options.rollingChecksums {
                (hashes, rolling) = try hasher.hashPiecesWithRollingChecksums(of: reader, progress: progress)
            } else {
                hashes = try hasher.hashPieces(of: reader, progress: progress)
            }
            if align {
                let digests = try Self.sha1Digests(of: reader, files: sourceIndex.indices.filter { sourceIndex[$0] != nil },
                    threads: options.threads)
                for (index, digest) in digests {
                    files[index] = FileEntry(path: files[index].path, length: files[index].length, sha1: digest)
                }
            }
        } catch let error as StorageError {
            throw .storage(error)
        } catch let error as CreationError {
            throw error
        } catch {
            throw .tooLarge(path)  // `plan` checked the total and the piece count; nothing is left to fail
        }
        let info: TorrentInfo
        do {
            info = try TorrentInfo(
                name: name, files: files, isMultiFile: source.isDirectory, privacy: options.privacy,
                pieceLength: pieceLength, pieceHashes: hashes)
        } catch {
            throw .noFiles(path)  // hashes and layout come from the same files; only emptiness can fail
        }
        var metainfo = Metainfo(
            info: info, extraInfoFields: options.extraInfoFields, announceTiers: options.announceTiers, webSeeds: options.webSeeds,
            comment: options.comment, createdBy: options.createdBy, creationDate: options.creationDate)
        metainfo.rollingChecksums = rolling
        return metainfo
    }

    /// With `alignFiles`, a qcow2 image with a backing file is its whole chain: the images below it
    /// (base first) and itself, in one folder-like torrent named after it without `.qcow2`, each at
    /// its path below the folder they share, so the backing names resolve where `get` puts them.
    func chainSource(_ path: String) throws(CreationError) -> TorrentSource? {
        guard options.alignFiles, options.fileOrder == nil else { return nil }
        let single = try TorrentSource.scan(path)
        guard !single.isDirectory else { return nil }
        let chain = try QCOW2Chain.layers(top: path)
        guard chain.files.count > 1 else { return nil }
        let layers = try TorrentSource.scan(chain.folder, order: chain.files)
        let name = single.baseName.hasSuffix(".qcow2") && single.baseName.count > 6 ? String(single.baseName.dropLast(6)) : single.baseName + ".layers"
        return TorrentSource(baseName: name, isDirectory: true, files: layers.files)
    }

    /// Bytes of padding after a file of `length` so the next file starts on a piece boundary.
    static func padding(after length: Int64, pieceLength: Int) -> Int64 {
        let remainder = length % Int64(pieceLength)
        return remainder == 0 ? 0 : Int64(pieceLength) - remainder
    }

    /// The SHA-1 of each of the layout's files `indices` (BEP 47 `sha1`), a file per worker, read
    /// in 1 MiB positional reads through the same `FileSet` the pieces were hashed from (whose
    /// files were checked to be the ones scanned).
    static func sha1Digests(of reader: FileSet, files indices: [Int], threads: Int) throws(StorageError) -> [(Int, [UInt8])] {
        let results = Mutex<[(Int, Result<[UInt8], StorageError>)]>([])
        let chunk = 1 << 20
        DispatchQueue.concurrentPerform(iterations: max(1, min(threads, indices.count))) { worker in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
            defer { buffer.deallocate() }
            for position in stride(from: worker, to: indices.count, by: max(1, min(threads, indices.count))) {
                let index = indices[position]
                let start = reader.layout.fileOffsets[index]
                let end = start + reader.layout.fileLengths[index]
                var hasher = Insecure.SHA1()
                var offset = start
                let outcome = Result { () throws(StorageError) -> [UInt8] in
                    while offset < end {
                        let count = Int(min(Int64(chunk), end - offset))
                        let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                        try reader.read(offset..<(offset + Int64(count)), into: part)
                        hasher.update(bufferPointer: UnsafeRawBufferPointer(part))
                        offset += Int64(count)
                    }
                    return Array(hasher.finalize())
                }
                results.withLock { $0.append((index, outcome)) }
            }
        }
        var digests: [(Int, [UInt8])] = []
        for (index, outcome) in results.withLock({ $0 }).sorted(by: { $0.0 < $1.0 }) {
            digests.append((index, try outcome.get()))
        }
        return digests
    }
}
