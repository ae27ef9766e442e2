import Bencode

/// A .torrent file (BEP 3, v1; hybrid v1+v2 torrents are read through their v1 part): the `info`
/// dictionary with its hash, and the optional fields around it.
///
/// The `info` bytes are kept exactly as read (or as first encoded), and `encoded()` writes them back
/// untouched, so nothing done to the outer fields can ever change the info-hash.
public struct Metainfo: Sendable {
    public let info: TorrentInfo
    /// The bencoded `info` dictionary, byte-for-byte as it appears in the file.
    public let infoBytes: [UInt8]
    public let infoHash: InfoHash

    /// Tracker tiers (BEP 12); within a tier, trackers are tried in order.
    public var announceTiers: [[String]]
    /// Web seeds (BEP 19 `url-list`).
    public var webSeeds: [String]
    public var comment: String?
    public var createdBy: String?
    /// Seconds since 1970.
    public var creationDate: Int64?
    /// The order a VM read the image at boot, a hint for fetching (`ReadProfile`).
    public var bootProfile: ReadProfile?
    /// The weak rolling checksum of each piece (`create --rolling-checksums`, docs/reuse.md): with
    /// them `get --reuse OLD` finds pieces whose data moved in the old image. Outside `info`, a
    /// hint only: a match is taken only when its SHA-1 is the piece's.
    public var rollingChecksums: [UInt32]?

    /// A torrent for freshly made `info`, encoded canonically, with `extraInfoFields` added to the
    /// `info` dictionary (see `TorrentInfo.encoded(adding:)`).
    public init(
        info: TorrentInfo, extraInfoFields: [String: BencodeValue] = [:], announceTiers: [[String]] = [],
        webSeeds: [String] = [], comment: String? = nil, createdBy: String? = nil, creationDate: Int64? = nil
    ) {
        self.info = info
        self.infoBytes = info.encoded(adding: extraInfoFields)
        self.infoHash = InfoHash(hashingInfo: infoBytes)
        self.announceTiers = announceTiers.filter { !$0.isEmpty }
        self.webSeeds = webSeeds
        self.comment = comment
        self.createdBy = createdBy
        self.creationDate = creationDate
    }

    /// Reads a .torrent file. Lenient bencode by default: real-world torrents with unsorted keys or
    /// leading zeros are read, and their info-hash is still the one their maker computed.
    public init(
        parsing bytes: some Collection<UInt8>, mode: BencodeDecoder.Mode = .lenient
    ) throws(MetainfoError) {
        let root: BencodeNode
        do {
            root = try BencodeDecoder(mode: mode).decode(bytes)
        } catch {
            throw .malformed(error)
        }
        let reader = FieldReader()
        try reader.requireDictionary(root, "torrent")
        guard let infoNode = root["info"] else { throw .missingField("info", dictionaryOffset: root.range.lowerBound) }
        self.info = try reader.parseInfo(infoNode)
        let all = Array(bytes)
        self.infoBytes = Array(all[infoNode.range])
        self.infoHash = InfoHash(hashingInfo: infoBytes)

        var tiers: [[String]] = []
        if let list = root["announce-list"] {
            for (tierIndex, tier) in try reader.list(list, "announce-list").enumerated() {
                let urls = try reader.list(tier, "announce-list[\(tierIndex)]").enumerated().map {
                    (index, url) throws(MetainfoError) in
                    try reader.text(url, "announce-list[\(tierIndex)][\(index)]")
                }
                let kept = urls.filter { !$0.isEmpty }
                if !kept.isEmpty { tiers.append(kept) }
            }
        }
        if tiers.isEmpty, let announce = root["announce"] {
            let url = try reader.text(announce, "announce")
            if !url.isEmpty { tiers = [[url]] }
        }
        self.announceTiers = tiers

        var seeds: [String] = []
        if let urlList = root["url-list"] {
            if urlList.bytes != nil {
                seeds = [try reader.text(urlList, "url-list")]
            } else {
                seeds = try reader.list(urlList, "url-list").enumerated().map { (index, url) throws(MetainfoError) in
                    try reader.text(url, "url-list[\(index)]")
                }
            }
        }
        self.webSeeds = seeds.filter { !$0.isEmpty }
        self.comment = try (root["comment.utf-8"] ?? root["comment"]).map { node throws(MetainfoError) in
            try reader.displayText(node, "comment")
        }
        self.createdBy = try root["created by"].map { node throws(MetainfoError) in
            try reader.displayText(node, "created by")
        }
        self.creationDate = try root["creation date"].map { node throws(MetainfoError) in
            try reader.integer(node, "creation date")
        }
        self.bootProfile = try root[Self.bootProfileKey].map { node throws(MetainfoError) in try reader.readProfile(node) }
        let pieceCount = info.pieceCount
        self.rollingChecksums = try root[Self.rollingChecksumsKey].map { node throws(MetainfoError) in
            let raw = try reader.bytes(node, Self.rollingChecksumsKey)
            guard raw.count == 4 * pieceCount else {
                throw .invalidValue(field: Self.rollingChecksumsKey,
                    problem: "\(raw.count) bytes, but 4 per piece make \(4 * pieceCount)", offset: node.range.lowerBound)
            }
            return stride(from: 0, to: raw.count, by: 4).map { (at: Int) -> UInt32 in
                raw[at..<(at + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            }
        }
    }

    /// The whole .torrent file: outer fields canonically ordered around the untouched `info` bytes.
    public func encoded() -> [UInt8] {
        var entries: [(key: [UInt8], encoded: [UInt8])] = [(Array("info".utf8), infoBytes)]
        func add(_ key: String, _ value: BencodeValue) { entries.append((Array(key.utf8), value.encoded())) }
        if let first = announceTiers.first?.first { add("announce", .string(first)) }
        if announceTiers.joined().count > 1 {
            add("announce-list", .list(announceTiers.map { .list($0.map(BencodeValue.string)) }))
        }
        if webSeeds.count == 1 {
            add("url-list", .string(webSeeds[0]))
        } else if webSeeds.count > 1 {
            add("url-list", .list(webSeeds.map(BencodeValue.string)))
        }
        if let comment { add("comment", .string(comment)) }
        if let createdBy { add("created by", .string(createdBy)) }
        if let creationDate { add("creation date", .integer(creationDate)) }
        if let bootProfile { add(Self.bootProfileKey, bootProfile.bencoded) }
        if let rollingChecksums {
            add(Self.rollingChecksumsKey, .bytes(rollingChecksums.flatMap { [UInt8($0 >> 24), UInt8($0 >> 16 & 0xff), UInt8($0 >> 8 & 0xff), UInt8($0 & 0xff)] }))
        }
        return Bencode.encodeDictionary(preencoded: entries)
    }

    /// Where `rollingChecksums` are kept: 4 bytes per piece, big-endian, in piece order.
    public static let rollingChecksumsKey = "vmswarm-rolling-checksums"

    /// Every tracker, tiers flattened, without repeats.
    public var trackers: [String] {
        var seen = Set<String>()
        return announceTiers.joined().filter { seen.insert($0).inserted }
    }

    /// A BEP 9 magnet link: info-hash, display name, trackers and web seeds.
    public var magnetLink: MagnetLink {
        MagnetLink(infoHash: infoHash, name: info.name, trackers: trackers, webSeeds: webSeeds)
    }

    public var magnetURI: String { magnetLink.uri }

    /// The torrent a magnet link's fetched info dictionary makes: the `info` bytes as the peers
    /// sent them (their SHA-1 is the link's hash, checked here), with the link's trackers (one
    /// tier each, tried in order) and web seeds around them.
    public init(infoBytes: [UInt8], from magnet: MagnetLink) throws(MetainfoError) {
        guard InfoHash(hashingInfo: infoBytes) == magnet.infoHash else {
            throw .invalidValue(field: "info", problem: "does not hash to the magnet link's \(magnet.infoHash.hex)", offset: 0)
        }
        // Wrapped as a one-key torrent so the ordinary parser (limits, paths, layout) reads it.
        let torrent = Array("d4:info".utf8) + infoBytes + [UInt8(ascii: "e")]
        var parsed = try Metainfo(parsing: torrent)
        parsed.announceTiers = magnet.trackers.map { [$0] }
        parsed.webSeeds = magnet.webSeeds
        self = parsed
    }
}

/// Reads typed fields out of decoded nodes, turning every mismatch into a `MetainfoError` that names
/// the field and its byte offset.
struct FieldReader {
    /// The most files one torrent may list; far beyond any VM image bundle, and a bound on memory.
    static let maxFiles = 1_000_000

    func requireDictionary(_ node: BencodeNode, _ field: String) throws(MetainfoError) {
        guard node.entries != nil else { throw wrongType(node, field, "a dictionary") }
    }

    func list(_ node: BencodeNode, _ field: String) throws(MetainfoError) -> [BencodeNode] {
        guard let list = node.list else { throw wrongType(node, field, "a list") }
        return list
    }

    func integer(_ node: BencodeNode, _ field: String) throws(MetainfoError) -> Int64 {
        guard let value = node.integer else { throw wrongType(node, field, "an integer") }
        return value
    }

    func bytes(_ node: BencodeNode, _ field: String) throws(MetainfoError) -> [UInt8] {
        guard let value = node.bytes else { throw wrongType(node, field, "a byte string") }
        return value
    }

    /// A byte string that must be UTF-8 (URLs, names).
    func text(_ node: BencodeNode, _ field: String) throws(MetainfoError) -> String {
        let raw = try bytes(node, field)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw .invalidUTF8(field: field, offset: node.range.lowerBound)
        }
        return text
    }

    /// A byte string shown to people only; invalid UTF-8 becomes replacement characters.
    func displayText(_ node: BencodeNode, _ field: String) throws(MetainfoError) -> String {
        String(decoding: try bytes(node, field), as: UTF8.self)
    }

    /// The entry `key`, or its `variant` where present (the `.utf-8` twin some makers add beside a
    /// field in a legacy encoding).
    func required(
        _ dictionary: BencodeNode, _ key: String, _ field: String, preferring variant: String? = nil
    ) throws(MetainfoError) -> BencodeNode {
        if let variant, let node = dictionary[variant] { return node }
        guard let node = dictionary[key] else {
            throw .missingField(field, dictionaryOffset: dictionary.range.lowerBound)
        }
        return node
    }

    private func wrongType(_ node: BencodeNode, _ field: String, _ expected: String) -> MetainfoError {
        .wrongType(field: field, expected: expected, found: node.kindName, offset: node.range.lowerBound)
    }

    /// A path component, preferring the BEP-era `.utf-8` variant where the torrent has one.
    func pathComponent(_ node: BencodeNode, _ field: String) throws(MetainfoError) -> String {
        let name = try text(node, field)
        let forbidden: Set<Character> = ["/", "\\", "\0"]
        if name.isEmpty || name == "." || name == ".." || name.contains(where: forbidden.contains) {
            throw .unsafePath(field: field, component: name, offset: node.range.lowerBound)
        }
        return name
    }

    func parseInfo(_ info: BencodeNode) throws(MetainfoError) -> TorrentInfo {
        try requireDictionary(info, "info")
        let nameNode = try required(info, "name", "info.name", preferring: "name.utf-8")
        let name = try pathComponent(nameNode, "info.name")

        let pieceLengthNode = try required(info, "piece length", "info.piece length")
        let pieceLength = try integer(pieceLengthNode, "info.piece length")
        guard pieceLength > 0 && pieceLength <= Int64(PieceLayout.maxPieceLength) else {
            throw .invalidValue(
                field: "info.piece length",
                problem: "is \(pieceLength), outside 1...\(PieceLayout.maxPieceLength)",
                offset: pieceLengthNode.range.lowerBound)
        }

        guard let piecesNode = info["pieces"] else {
            if info["meta version"] != nil {
                throw .unsupported("v2-only torrent (no v1 'pieces'); vmswarm reads v1 and hybrid torrents",
                    offset: info.range.lowerBound)
            }
            throw .missingField("info.pieces", dictionaryOffset: info.range.lowerBound)
        }
        let pieces = try bytes(piecesNode, "info.pieces")
        guard pieces.count % InfoHash.byteCount == 0 else {
            throw .invalidValue(
                field: "info.pieces", problem: "has \(pieces.count) bytes, not a multiple of 20",
                offset: piecesNode.range.lowerBound)
        }

        let files: [FileEntry]
        let isMultiFile: Bool
        if let filesNode = info["files"] {
            if info["length"] != nil {
                throw .invalidValue(field: "info", problem: "has both 'length' and 'files'", offset: info.range.lowerBound)
            }
            files = try parseFiles(filesNode)
            isMultiFile = true
        } else {
            let lengthNode = try required(info, "length", "info.length")
            let length = try integer(lengthNode, "info.length")
            guard length >= 0 else {
                throw .invalidValue(field: "info.length", problem: "is negative (\(length))",
                    offset: lengthNode.range.lowerBound)
            }
            files = [FileEntry(path: [name], length: length)]
            isMultiFile = false
        }

        var privacy = TorrentInfo.Privacy.unspecified
        if let privateNode = info["private"] {
            privacy = try integer(privateNode, "info.private") == 1 ? .private : .explicitlyPublic
        }

        do {
            return try TorrentInfo(
                name: name, files: files, isMultiFile: isMultiFile, privacy: privacy,
                pieceLength: Int(pieceLength), pieceHashes: pieces)
        } catch {
            switch error {
            case .noFiles:
                throw .invalidValue(field: "info.files", problem: "is empty", offset: info.range.lowerBound)
            case .pieceHashCount(let expected, let found):
                throw .invalidValue(
                    field: "info.pieces",
                    problem: "holds \(found) piece hashes but the files need \(expected)",
                    offset: piecesNode.range.lowerBound)
            case .layout(.tooManyPieces(let count, let limit)):
                let lengthField = isMultiFile ? "info.files" : "info.length"
                throw .invalidValue(
                    field: lengthField,
                    problem: "in pieces of \(pieceLength) bytes makes \(count) pieces, more than \(limit)",
                    offset: (isMultiFile ? info["files"] : info["length"])?.range.lowerBound ?? info.range.lowerBound)
            case .layout(.totalLengthOverflow(let index)):
                throw .invalidValue(
                    field: "info.files[\(index)].length", problem: "makes the total length overflow 64 bits",
                    offset: info["files"]?.list?[index].range.lowerBound ?? info.range.lowerBound)
            case .layout(let problem):
                throw .invalidValue(field: "info", problem: "has an invalid layout (\(problem))",
                    offset: info.range.lowerBound)
            }
        }
    }

    private func parseFiles(_ filesNode: BencodeNode) throws(MetainfoError) -> [FileEntry] {
        let list = try list(filesNode, "info.files")
        guard list.count <= Self.maxFiles else {
            throw .invalidValue(field: "info.files", problem: "lists \(list.count) files, more than \(Self.maxFiles)",
                offset: filesNode.range.lowerBound)
        }
        var files: [FileEntry] = []
        files.reserveCapacity(list.count)
        let places = PathTree()
        for (index, fileNode) in list.enumerated() {
            let field = "info.files[\(index)]"
            try requireDictionary(fileNode, field)
            let lengthNode = try required(fileNode, "length", "\(field).length")
            let length = try integer(lengthNode, "\(field).length")
            guard length >= 0 else {
                throw .invalidValue(field: "\(field).length", problem: "is negative (\(length))",
                    offset: lengthNode.range.lowerBound)
            }
            let pathNode = try required(fileNode, "path", "\(field).path", preferring: "path.utf-8")
            let components = try self.list(pathNode, "\(field).path")
            guard !components.isEmpty else {
                throw .invalidValue(field: "\(field).path", problem: "is empty", offset: pathNode.range.lowerBound)
            }
            let path = try components.enumerated().map { (part, node) throws(MetainfoError) in
                try pathComponent(node, "\(field).path[\(part)]")
            }
            let attributes = try fileNode["attr"].map { node throws(MetainfoError) in
                FileEntry.Attributes(bep47: try bytes(node, "\(field).attr"))
            } ?? []
            // BEP 47's per-file SHA-1; one of another type or length is ignored, not refused: it is
            // only ever a hint (the content store verifies every piece by its own hash).
            let sha1 = fileNode["sha1"]?.bytes
            let entry = FileEntry(path: path, length: length, attributes: attributes, sha1: sha1?.count == 20 ? sha1 : nil)
            // Padding files are never written to disk, and makers give many of them one path
            // (libtorrent's `.pad/N`), so only real files claim a place.
            if !entry.isPadding {
                try places.claim(path, field: "\(field).path", offset: pathNode.range.lowerBound)
            }
            files.append(entry)
        }
        return files
    }

    /// The places a torrent's files take in the download folder, as a tree of path components, so
    /// that each file is checked in time linear in its path's length (a path may have as many
    /// components as the decoder allows values). Components compare as Swift strings, that is
    /// after Unicode canonical equivalence: two spellings of "é" are one place, as they are on
    /// macOS and to people, though ext4 would store both.
    final class PathTree {
        final class Node {
            var children: [String: Node] = [:]
            /// The field of the file that ends here; nil for a folder.
            var file: String?
        }

        let root = Node()

        func claim(_ path: [String], field: String, offset: Int) throws(MetainfoError) {
            var node = root
            for (depth, component) in path.enumerated() {
                if let earlier = node.file {
                    // A file of an earlier entry sits where this path needs a folder.
                    throw .conflictingPath(
                        field: field, path: path.joined(separator: "/"), earlierField: earlier, offset: offset)
                }
                let isLast = depth == path.count - 1
                if let child = node.children[component] {
                    if isLast {
                        // The same path again, or a folder of earlier files that this one would replace.
                        let earlier = child.file ?? Self.anyFile(below: child)
                        throw .conflictingPath(
                            field: field, path: path.joined(separator: "/"), earlierField: earlier, offset: offset)
                    }
                    node = child
                } else {
                    let child = Node()
                    node.children[component] = child
                    node = child
                }
            }
            node.file = field
        }

        /// Some file below a folder node (every folder node leads to one).
        private static func anyFile(below node: Node) -> String {
            var node = node
            while node.file == nil, let next = node.children.values.first { node = next }
            return node.file ?? "an earlier file"
        }
    }
}
