import Bencode

/// One file of a torrent, in torrent order.
public struct FileEntry: Hashable, Sendable {
    /// Path components below the torrent's folder (multi-file) or the single file name. Every
    /// component has been checked to be a plain name: never empty, `.`, `..`, nor containing `/`.
    public let path: [String]
    public let length: Int64
    public let attributes: Attributes
    /// BEP 47's optional SHA-1 of the file's whole content (20 bytes), or nil. A layer's digest:
    /// a node's content store finds a cached copy of the file by it. It is a hint to look, never
    /// proof: every piece taken from a copy is verified by its piece hash.
    public let sha1: [UInt8]?

    /// BEP 47 file attributes.
    public struct Attributes: OptionSet, Hashable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// Filler that aligns the next file to a piece boundary; never written to disk.
        public static let padding = Attributes(rawValue: 1)
        public static let executable = Attributes(rawValue: 2)
        public static let hidden = Attributes(rawValue: 4)
        public static let symlink = Attributes(rawValue: 8)

        init(bep47 text: [UInt8]) {
            var attributes: Attributes = []
            for char in text {
                switch char {
                case UInt8(ascii: "p"): attributes.insert(.padding)
                case UInt8(ascii: "x"): attributes.insert(.executable)
                case UInt8(ascii: "h"): attributes.insert(.hidden)
                case UInt8(ascii: "l"): attributes.insert(.symlink)
                default: break  // unknown attributes are ignored, as BEP 47 asks
                }
            }
            self = attributes
        }

        var bep47: String {
            var text = ""
            if contains(.executable) { text += "x" }
            if contains(.hidden) { text += "h" }
            if contains(.padding) { text += "p" }
            if contains(.symlink) { text += "l" }
            return text
        }
    }

    public init(path: [String], length: Int64, attributes: Attributes = [], sha1: [UInt8]? = nil) {
        precondition(sha1 == nil || sha1?.count == 20, "a SHA-1 digest is 20 bytes")
        self.path = path
        self.length = length
        self.attributes = attributes
        self.sha1 = sha1
    }

    /// The padding file BEP 47 puts after a file to align the next one to a piece boundary, named
    /// as libtorrent names it (`.pad/LENGTH`), so both makers write the same `info` dictionary.
    public static func padding(length: Int64) -> FileEntry {
        FileEntry(path: [".pad", String(length)], length: length, attributes: .padding)
    }

    public var isPadding: Bool { attributes.contains(.padding) }
}

/// The contents of a torrent's `info` dictionary: what the info-hash identifies.
public struct TorrentInfo: Hashable, Sendable {
    /// The suggested file name (single-file) or folder name (multi-file).
    public let name: String
    public let files: [FileEntry]
    /// True when the torrent describes a folder (`files`), false for a single file (`length`).
    public let isMultiFile: Bool
    public let privacy: Privacy
    /// Concatenated 20-byte SHA-1 digests, one per piece.
    public let pieceHashes: [UInt8]
    public let layout: PieceLayout

    /// The BEP 27 `private` flag. Absent and `0` both mean public, but they hash differently, so a
    /// torrent remembers which it was (Transmission always writes `private 0`; most tools omit it).
    public enum Privacy: Hashable, Sendable {
        case unspecified
        case explicitlyPublic
        /// Peers come only from the torrent's trackers: no DHT, PEX or local discovery.
        case `private`
    }

    public enum Problem: Error, Equatable, Sendable {
        case layout(PieceLayout.Problem)
        case pieceHashCount(expected: Int, found: Int)
        case noFiles
    }

    public init(
        name: String, files: [FileEntry], isMultiFile: Bool, privacy: Privacy, pieceLength: Int,
        pieceHashes: [UInt8]
    ) throws(Problem) {
        guard !files.isEmpty else { throw .noFiles }
        let layout: PieceLayout
        do {
            layout = try PieceLayout(pieceLength: pieceLength, fileLengths: files.map(\.length))
        } catch {
            throw .layout(error)
        }
        // A torrent of 10^18 one-byte pieces would overflow the product: such a count never matches.
        let (hashBytes, overflow) = layout.pieceCount.multipliedReportingOverflow(by: InfoHash.byteCount)
        guard !overflow, pieceHashes.count == hashBytes else {
            throw .pieceHashCount(expected: layout.pieceCount, found: pieceHashes.count / InfoHash.byteCount)
        }
        self.name = name
        self.files = files
        self.isMultiFile = isMultiFile
        self.privacy = privacy
        self.pieceHashes = pieceHashes
        self.layout = layout
    }

    public var isPrivate: Bool { privacy == .private }
    public var pieceLength: Int { layout.pieceLength }
    public var totalLength: Int64 { layout.totalLength }
    public var pieceCount: Int { layout.pieceCount }

    /// The expected SHA-1 of a piece.
    public func hash(of piece: PieceIndex) -> ArraySlice<UInt8> {
        precondition(layout.contains(piece), "\(piece) outside a torrent of \(pieceCount) pieces")
        let start = piece.value * InfoHash.byteCount
        return pieceHashes[start..<(start + InfoHash.byteCount)]
    }

    /// The canonical bencoding of this `info` dictionary, as a torrent maker writes it.
    ///
    /// `extraFields` are entries of formats built on top of BEP 3 (a sealed image's parameters) that
    /// the info-hash must cover; they may not replace a field this type owns.
    public func encoded(adding extraFields: [String: BencodeValue] = [:]) -> [UInt8] {
        var dictionary: [[UInt8]: BencodeValue] = [
            Array("name".utf8): .string(name),
            Array("piece length".utf8): .integer(Int64(pieceLength)),
            Array("pieces".utf8): .bytes(pieceHashes),
        ]
        switch privacy {
        case .unspecified: break
        case .explicitlyPublic: dictionary[Array("private".utf8)] = .integer(0)
        case .private: dictionary[Array("private".utf8)] = .integer(1)
        }
        if isMultiFile {
            dictionary[Array("files".utf8)] = .list(
                files.map { file in
                    var entry: [[UInt8]: BencodeValue] = [
                        Array("length".utf8): .integer(file.length),
                        Array("path".utf8): .list(file.path.map(BencodeValue.string)),
                    ]
                    if !file.attributes.isEmpty { entry[Array("attr".utf8)] = .string(file.attributes.bep47) }
                    if let sha1 = file.sha1 { entry[Array("sha1".utf8)] = .bytes(sha1) }
                    return .dictionary(entry)
                })
        } else {
            dictionary[Array("length".utf8)] = .integer(files[0].length)
        }
        for (key, value) in extraFields {
            precondition(dictionary[Array(key.utf8)] == nil, "extra info field '\(key)' would replace a BEP 3 field")
            dictionary[Array(key.utf8)] = value
        }
        return BencodeValue.dictionary(dictionary).encoded()
    }
}
