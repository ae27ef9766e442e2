#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Metainfo

/// What a node's content store knows: the local files it has seen complete, the pieces each one
/// holds (by the SHA-1 of the piece's bytes) and the layers they are (by the file's BEP 47 SHA-1).
/// A value, read from and written to text, so lookups and parsing are tested without a disk.
///
/// The index points at files, it does not hold copies: images stay where `get` put them. Nothing
/// in it is trusted: a file may have changed or gone since it was recorded, so every piece found
/// through the index is hashed before it is used (`LocalPieces.fill`).
public struct ContentIndex: Equatable, Sendable {
    public struct File: Equatable, Sendable {
        public let path: String
        public let length: Int64
    }

    /// A piece's bytes: `length` bytes of a file from `offset`, then zeros up to `pieceLength` (the
    /// padding after an aligned layer's last piece).
    public struct Piece: Hashable, Sendable {
        public let file: Int
        public let offset: Int64
        public let length: Int
        public let pieceLength: Int
    }

    /// Files by id (ids ascend in the order files were recorded).
    public private(set) var files: [Int: File] = [:]
    public private(set) var pieces: [[UInt8]: [Piece]] = [:]
    public private(set) var layers: [[UInt8]: [Int]] = [:]
    private var nextID = 0

    /// Bounds, so a huge or hostile index file costs bounded memory: files kept (the oldest go
    /// first), places kept per piece hash and per layer digest.
    public static let maxFiles = 100_000
    public static let maxPieces = 8_000_000
    static let placesPerKey = 4
    static let header = "vmswarm-content-index 1"

    public init() {}

    public var pieceCount: Int { pieces.values.reduce(0) { $0 + $1.count } }

    // MARK: Recording

    /// Records the files of a completed download at `dataPath` (the file, or the folder of a
    /// multi-file torrent): each piece that lies within one file (with only padding after it)
    /// under its hash, and each file with a BEP 47 `sha1` as that layer. A path recorded before is
    /// replaced. Paths with a line break are not recorded (the text form is one entry per line).
    public mutating func record(_ info: TorrentInfo, at dataPath: String) {
        var ids: [Int: Int] = [:]  // the torrent's file index -> our id
        for (index, file) in info.files.enumerated() where !file.isPadding {
            let path = info.isMultiFile ? ([dataPath] + file.path).joined(separator: "/") : dataPath
            guard !path.contains("\n"), !path.contains("\r") else { continue }
            ids[index] = add(File(path: path, length: file.length))
            if let digest = file.sha1, let id = ids[index] { addLayer(digest, id) }
        }
        for piece in info.layout.pieces {
            var segments = info.layout.segments(of: piece)[...]
            while let last = segments.last, info.files[last.fileIndex].isPadding { segments.removeLast() }
            guard segments.count == 1, let segment = segments.first, let id = ids[segment.fileIndex] else { continue }
            addPiece(Array(info.hash(of: piece)),
                Piece(file: id, offset: segment.offsetInFile, length: segment.length, pieceLength: info.layout.length(of: piece)))
        }
        trim()
    }

    /// Forgets files for which `keep` is false (gone or resized), with their pieces and layers.
    public mutating func prune(keeping keep: (File) -> Bool) {
        let gone = Set(files.filter { !keep($0.value) }.keys)
        guard !gone.isEmpty else { return }
        remove(gone)
    }

    private mutating func add(_ file: File) -> Int {
        remove(Set(files.filter { $0.value.path == file.path }.keys))
        let id = nextID
        nextID += 1
        files[id] = file
        return id
    }

    private mutating func addPiece(_ hash: [UInt8], _ piece: Piece) {
        var places = pieces[hash, default: []]
        guard !places.contains(piece) else { return }
        places.insert(piece, at: 0)  // the newest first: the likeliest to be unchanged
        pieces[hash] = Array(places.prefix(Self.placesPerKey))
    }

    private mutating func addLayer(_ digest: [UInt8], _ id: Int) {
        var places = layers[digest, default: []]
        places.removeAll { $0 == id }
        places.insert(id, at: 0)
        layers[digest] = Array(places.prefix(Self.placesPerKey))
    }

    private mutating func remove(_ gone: Set<Int>) {
        guard !gone.isEmpty else { return }
        for id in gone { files[id] = nil }
        pieces = pieces.compactMapValues { places in
            let kept = places.filter { !gone.contains($0.file) }
            return kept.isEmpty ? nil : kept
        }
        layers = layers.compactMapValues { places in
            let kept = places.filter { !gone.contains($0) }
            return kept.isEmpty ? nil : kept
        }
    }

    /// Drops the oldest files while the index is over its bounds.
    private mutating func trim() {
        var count = pieceCount
        guard files.count > Self.maxFiles || count > Self.maxPieces else { return }
        var gone = Set<Int>()
        var perFile: [Int: Int] = [:]
        for places in pieces.values { for place in places { perFile[place.file, default: 0] += 1 } }
        for id in files.keys.sorted() where files.count - gone.count > Self.maxFiles || count > Self.maxPieces {
            gone.insert(id)
            count -= perFile[id] ?? 0
        }
        remove(gone)
    }

    // MARK: Lookup

    /// Where the bytes of `piece` of `info` may be on this node: the places recorded under its
    /// hash, then, when every file it touches is a layer the index knows (by the torrent's BEP 47
    /// `sha1`), those layers at the same offsets, whatever piece length they were recorded with.
    public func candidates(for piece: PieceIndex, of info: TorrentInfo) -> [PieceCandidate] {
        var found: [PieceCandidate] = []
        let length = info.layout.length(of: piece)
        for place in pieces[Array(info.hash(of: piece))] ?? [] where place.pieceLength == length {
            guard let file = files[place.file] else { continue }
            var extents = [PieceCandidate.Extent(path: file.path, offset: place.offset, length: place.length)]
            if place.length < length { extents.append(.init(path: nil, offset: 0, length: length - place.length)) }
            found.append(PieceCandidate(extents: extents))
        }
        var extents: [PieceCandidate.Extent] = []
        for segment in info.layout.segments(of: piece) {
            let entry = info.files[segment.fileIndex]
            if entry.isPadding {
                extents.append(.init(path: nil, offset: 0, length: segment.length))
                continue
            }
            guard let digest = entry.sha1,
                let file = (layers[digest] ?? []).lazy.compactMap({ files[$0] }).first(where: { $0.length == entry.length })
            else { return found }
            extents.append(.init(path: file.path, offset: segment.offsetInFile, length: segment.length))
        }
        let byLayer = PieceCandidate(extents: extents)
        if !found.contains(byLayer) { found.append(byLayer) }
        return found
    }

    /// The files recorded under the same name as one of `info`'s files (`disk.img`, `base.qcow2`),
    /// newest first, at most `limit`: the earlier versions of an image a node holds, where data
    /// that moved is looked for with the torrent's rolling checksums. Only a name ties them to the
    /// image; what is taken from them is hashed like every candidate.
    public func earlierVersions(of info: TorrentInfo, limit: Int = 16) -> [String] {
        let names = Set(info.files.filter { !$0.isPadding }.compactMap { info.isMultiFile ? $0.path.last : info.name })
        var found: [String] = []
        for id in files.keys.sorted(by: >) where found.count < limit {
            guard let file = files[id], let name = file.path.split(separator: "/").last, names.contains(String(name)) else { continue }
            found.append(file.path)
        }
        return found
    }

    // MARK: Text form

    /// One entry per line, fields separated by one space, a path last (it may hold spaces):
    ///
    ///     vmswarm-content-index 1
    ///     f ID LENGTH PATH
    ///     l SHA1-HEX ID
    ///     p SHA1-HEX ID OFFSET LENGTH PIECE-LENGTH
    public func encoded() -> [UInt8] {
        var text = Self.header + "\n"
        for id in files.keys.sorted() {
            let file = files[id]!
            text += "f \(id) \(file.length) \(file.path)\n"
        }
        for (digest, ids) in layers.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            for id in ids.reversed() { text += "l \(Self.hex(digest)) \(id)\n" }
        }
        for (hash, places) in pieces.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            for place in places.reversed() {
                text += "p \(Self.hex(hash)) \(place.file) \(place.offset) \(place.length) \(place.pieceLength)\n"
            }
        }
        return Array(text.utf8)
    }

    /// Reads the text form. A line that does not parse (or names an unknown file, or breaks a
    /// bound) is skipped and counted: the index is a hint, and a damaged one must never stop a
    /// download, only make it fetch more.
    public init(parsing bytes: some Collection<UInt8>) {
        self.init()
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true).makeIterator()
        guard let first = lines.next(), String(decoding: first, as: UTF8.self) == Self.header else {
            skipped = bytes.isEmpty ? 0 : 1
            return
        }
        var count = 0
        while let line = lines.next() {
            guard line.count <= 8192 else {
                skipped += 1
                continue
            }
            let text = String(decoding: line, as: UTF8.self)
            let fields = text.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            switch fields.first.map(String.init) ?? "" {
            case "f" where fields.count == 4:
                guard let id = Int(fields[1]), id >= 0, id < Int.max / 2, let length = Int64(fields[2]), length >= 0,
                    !fields[3].isEmpty, files[id] == nil, files.count < Self.maxFiles
                else { break }
                files[id] = File(path: String(fields[3]), length: length)
                nextID = max(nextID, id + 1)
                continue
            case "l":
                let parts = text.split(separator: " ")
                guard parts.count == 3, let digest = Self.bytes(hex: parts[1]), let id = Int(parts[2]), files[id] != nil else { break }
                addLayer(digest, id)
                continue
            case "p":
                let parts = text.split(separator: " ")
                guard parts.count == 6, count < Self.maxPieces, let hash = Self.bytes(hex: parts[1]), let id = Int(parts[2]),
                    let file = files[id], let offset = Int64(parts[3]), let length = Int(parts[4]), let pieceLength = Int(parts[5]),
                    offset >= 0, length > 0, pieceLength >= length, pieceLength <= PieceLayout.maxPieceLength,
                    offset <= file.length - Int64(length)
                else { break }
                addPiece(hash, Piece(file: id, offset: offset, length: length, pieceLength: pieceLength))
                count += 1
                continue
            default:
                break
            }
            skipped += 1
        }
    }

    /// Lines of the text form that were not understood (not part of the value's equality).
    public private(set) var skipped = 0

    public static func == (lhs: ContentIndex, rhs: ContentIndex) -> Bool {
        lhs.files == rhs.files && lhs.pieces == rhs.pieces && lhs.layers == rhs.layers
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
    }

    static func bytes(hex: Substring) -> [UInt8]? {
        guard hex.utf8.count == 40 else { return nil }
        var result: [UInt8] = []
        result.reserveCapacity(20)
        var high: UInt8?
        for char in hex.utf8 {
            let value: UInt8
            switch char {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = char - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = char - UInt8(ascii: "a") + 10
            default: return nil
            }
            if let first = high {
                result.append(first << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        return result
    }
}

/// A node's content store on disk: a folder holding the index (`.vmswarm-content-index`) of the
/// images the node completed (usually the folder its images are downloaded into, the `cache`
/// setting). Reads are lock-free (the index is replaced by a rename, never rewritten in place);
/// recording takes an exclusive `flock` on `.vmswarm-content-index.lock`, so two downloads that
/// finish together both end up in the index.
public struct ContentStore: Sendable {
    public let directory: String
    public var indexPath: String { directory + "/.vmswarm-content-index" }

    /// The largest index file read (about 60 bytes a piece: 4 million pieces, 8 TiB of 2 MiB pieces).
    static let maxIndexBytes = 256 << 20

    public init(directory: String) throws(StorageError) {
        self.directory = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        if let problem = FileSet.makeFolders(self.directory) { throw problem }
    }

    /// The index as it is now (empty when there is none yet or it cannot be read).
    public func load() -> ContentIndex {
        let descriptor = open(indexPath, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return ContentIndex() }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= Self.maxIndexBytes {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        guard bytes.count <= Self.maxIndexBytes else { return ContentIndex() }
        return ContentIndex(parsing: bytes)
    }

    /// Records a completed image (see `ContentIndex.record`) and forgets files that are gone or no
    /// longer have their recorded length.
    public func record(_ info: TorrentInfo, at dataPath: String) throws(StorageError) {
        let lockPath = indexPath + ".lock"
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard lock >= 0 else { throw .open(path: lockPath, errno: errno) }
        defer { close(lock) }  // closing drops the flock
        while flock(lock, LOCK_EX) != 0 {
            guard errno == EINTR else { throw .open(path: lockPath, errno: errno) }
        }
        var index = load()
        index.record(info, at: Self.absolute(dataPath))
        index.prune { file in
            var status = stat()
            return stat(file.path, &status) == 0 && Int64(status.st_size) == file.length
        }
        let temporary = indexPath + ".\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard descriptor >= 0 else { throw .open(path: temporary, errno: errno) }
        let text = index.encoded()
        var written = 0
        while written < text.count {
            let count = text.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let code = errno
                close(descriptor)
                unlink(temporary)
                throw .write(path: temporary, offset: Int64(written), errno: code)
            }
            written += count
        }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard synced, rename(temporary, indexPath) == 0 else {
            let code = errno
            unlink(temporary)
            throw .write(path: indexPath, offset: 0, errno: code)
        }
    }

    /// Paths are recorded absolute, so the index means the same whichever folder a later run starts in.
    static func absolute(_ path: String) -> String {
        guard !path.hasPrefix("/") else { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let folder = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let relative = path.hasPrefix("./") ? String(path.dropFirst(2)) : path
        return folder == "/" ? "/" + relative : folder + "/" + relative
    }
}
