import Bencode
import Metainfo
import Storage

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

        public init(threads: Int) { self.threads = threads }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    /// Scans `path` without reading any data: what will be hashed, and with which piece length.
    public func plan(_ path: String) throws(CreationError) -> (source: TorrentSource, pieceLength: Int, totalLength: Int64) {
        let source = try TorrentSource.scan(path, order: options.fileOrder)
        var total: Int64 = 0
        for file in source.files {
            let (sum, overflow) = total.addingReportingOverflow(file.length)
            guard !overflow else { throw .tooLarge(path) }
            total = sum
        }
        let pieceLength = options.pieceLength ?? PieceSizeRule.pieceLength(forTotalLength: total)
        guard pieceLength >= 16 << 10, pieceLength <= PieceLayout.maxPieceLength, pieceLength & (pieceLength - 1) == 0
        else { throw .invalidPieceLength(pieceLength) }
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

        let files = source.files.map { file in
            FileEntry(path: source.isDirectory ? file.relativePath : [name], length: file.length)
        }
        let hashes: [UInt8]
        do {
            let layout = try PieceLayout(pieceLength: pieceLength, fileLengths: files.map(\.length))
            let reader = try FileSet(layout: layout, paths: source.files.map(\.fullPath))
            for (index, file) in source.files.enumerated() where reader.identity(ofFile: index) != file.identity {
                throw CreationError.replaced(path: file.fullPath)
            }
            hashes = try PieceHasher(threads: options.threads).hashPieces(of: reader, progress: progress)
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
        return Metainfo(
            info: info, extraInfoFields: options.extraInfoFields, announceTiers: options.announceTiers, webSeeds: options.webSeeds,
            comment: options.comment, createdBy: options.createdBy, creationDate: options.creationDate)
    }
}
