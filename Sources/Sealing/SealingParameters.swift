import Bencode
import Crypto
import Metainfo

/// What a sealed torrent records about its image (docs/encryption.md): the plain length, the chunk
/// length, the salt and the key check, plus the plaintext geometry they imply.
///
/// The plaintext geometry lives here and not in `PieceLayout` because it differs in one point: an
/// empty image still has one piece (the message of the empty chunk). The sealed geometry is the
/// torrent's own `PieceLayout`; parsing checks that the two agree exactly.
public struct SealingParameters: Hashable, Sendable {
    /// The key of the entry in the info dictionary.
    public static let infoKey = "vmswarm-sealed"
    public static let version: Int64 = 1
    public static let cipher = "aes-256-gcm"
    public static let tagLength = 16
    public static let saltLength = 32
    public static let keyCheckLength = 32

    static let pieceKeyLabel = "vmswarm sealed v1 piece key"
    static let keyCheckLabel = "vmswarm sealed v1 key check"

    /// Plaintext bytes per piece (the last piece's chunk may be shorter).
    public let chunkLength: Int
    /// Length of the plain image.
    public let plainLength: Int64
    /// Per-image random salt of the piece-key derivation.
    public let salt: [UInt8]
    /// Commitment to the content key: what `matches(_:)` compares.
    public let keyCheck: [UInt8]
    /// One piece per chunk, and one for an empty image.
    public let pieceCount: Int
    /// The length of the sealed image: what the torrent describes.
    public let sealedLength: Int64

    /// Parameters for sealing a new image of `plainLength` bytes into pieces of `pieceLength` bytes
    /// (a power of two from 16 KiB to `PieceLayout.maxPieceLength`, as `TorrentCreator` requires).
    ///
    /// Leave `salt` to its random default: a fixed salt with a shared content key reuses nonces
    /// across images. Known-answer tests are the one reason to pass one.
    public init(
        plainLength: Int64, pieceLength: Int, key: ContentKey, salt: [UInt8] = SealingParameters.randomSalt()
    ) throws(SealingError) {
        guard pieceLength >= 16 << 10, pieceLength <= PieceLayout.maxPieceLength, pieceLength & (pieceLength - 1) == 0
        else {
            throw .invalidParameters(
                "piece size \(pieceLength) is not a power of two from 16 KiB to \(PieceLayout.maxPieceLength >> 20) MiB"
            )
        }
        guard plainLength >= 0 else { throw .invalidParameters("image length \(plainLength) is negative") }
        guard salt.count == Self.saltLength else {
            throw .invalidParameters("salt has \(salt.count) bytes, not \(Self.saltLength)")
        }
        let chunkLength = pieceLength - Self.tagLength
        guard let geometry = Self.geometry(plainLength: plainLength, chunkLength: chunkLength) else {
            throw .invalidParameters("an image of \(plainLength) bytes is too large to seal")
        }
        self.chunkLength = chunkLength
        self.plainLength = plainLength
        self.salt = salt
        self.keyCheck = key.derive(salt: salt, label: Self.keyCheckLabel).withUnsafeBytes { Array($0) }
        self.pieceCount = geometry.pieceCount
        self.sealedLength = geometry.sealedLength
    }

    /// 32 bytes from the system's secure generator.
    public static func randomSalt() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    /// Piece count and sealed length, or nil when they overflow.
    private static func geometry(plainLength: Int64, chunkLength: Int) -> (pieceCount: Int, sealedLength: Int64)? {
        let chunk = Int64(chunkLength)
        let pieces = plainLength == 0 ? 1 : plainLength / chunk + (plainLength % chunk == 0 ? 0 : 1)
        let (tags, overflow) = pieces.multipliedReportingOverflow(by: Int64(tagLength))
        guard !overflow else { return nil }
        let (sealed, sumOverflow) = plainLength.addingReportingOverflow(tags)
        // The sealed image is a torrent: no more pieces than any torrent may have (which also keeps
        // every `index * chunkLength` below 2^50).
        guard !sumOverflow, pieces <= Int64(PieceLayout.maxPieceCount) else { return nil }
        return (Int(pieces), sealed)
    }

    /// The torrent's piece length: one chunk and its tag.
    public var pieceLength: Int { chunkLength + Self.tagLength }

    public func contains(_ piece: PieceIndex) -> Bool { piece.value >= 0 && piece.value < pieceCount }

    /// Where the piece's plaintext lies in the plain image (empty for the one piece of an empty image).
    public func plaintextRange(of piece: PieceIndex) -> Range<Int64> {
        precondition(contains(piece), "\(piece) outside a sealed image of \(pieceCount) pieces")
        let start = Int64(piece.value) * Int64(chunkLength)
        return start..<min(start + Int64(chunkLength), plainLength)
    }

    public func plaintextLength(of piece: PieceIndex) -> Int {
        let range = plaintextRange(of: piece)
        return Int(range.upperBound - range.lowerBound)
    }

    /// The piece's length in the sealed image: its plaintext and the tag.
    public func sealedLength(of piece: PieceIndex) -> Int { plaintextLength(of: piece) + Self.tagLength }

    /// Whether `key` is the key these parameters were made with (the key commitment).
    public func matches(_ key: ContentKey) -> Bool {
        // SymmetricKey's == compares in constant time.
        key.derive(salt: salt, label: Self.keyCheckLabel) == SymmetricKey(data: keyCheck)
    }

    /// The entry to add to the info dictionary (`TorrentCreator.Options.extraInfoFields`).
    public var infoFields: [String: BencodeValue] {
        [
            Self.infoKey: .dictionary([
                Array("version".utf8): .integer(Self.version),
                Array("cipher".utf8): .string(Self.cipher),
                Array("chunk".utf8): .integer(Int64(chunkLength)),
                Array("length".utf8): .integer(plainLength),
                Array("salt".utf8): .bytes(salt),
                Array("key-check".utf8): .bytes(keyCheck),
            ])
        ]
    }

    /// The associated data of piece `index`: label, version, index, plain length, chunk length.
    func associatedData(for index: Int) -> [UInt8] {
        var data = Array("vmswarm-sealed".utf8)
        data.reserveCapacity(data.count + 1 + 3 * 8)
        data.append(UInt8(Self.version))
        for value in [UInt64(index), UInt64(plainLength), UInt64(chunkLength)] {
            withUnsafeBytes(of: value.bigEndian) { data.append(contentsOf: $0) }
        }
        return data
    }

    /// Reads the `vmswarm-sealed` entry of a torrent's info dictionary and checks it against the
    /// torrent it came from: single file, chunk = piece length − 16, and a plain length that seals to
    /// exactly the torrent's length. `infoNode` is the info dictionary `info` was parsed from;
    /// offsets in errors are those of their input.
    init(parsing entry: BencodeNode, in infoNode: BencodeNode, torrent info: TorrentInfo) throws(SealingError) {
        let reader = SealedFieldReader(prefix: "info.\(Self.infoKey)")
        let fields = try reader.dictionary(entry)

        let versionNode = try reader.required(fields, "version")
        let version = try reader.integer(versionNode, "version")
        guard version == Self.version else {
            throw .unsupported("format version \(version) (this vmswarm reads version \(Self.version))")
        }
        let cipher = try reader.bytes(try reader.required(fields, "cipher"), "cipher")
        guard cipher == Array(Self.cipher.utf8) else {
            throw .unsupported(
                "cipher '\(String(decoding: cipher, as: UTF8.self))' (this vmswarm reads \(Self.cipher))")
        }
        guard !info.isMultiFile else {
            throw .invalidField(
                field: "info.files", problem: "is present, but a sealed torrent describes one file",
                offset: infoNode["files"]?.range.lowerBound)
        }

        let chunkNode = try reader.required(fields, "chunk")
        let chunk = try reader.integer(chunkNode, "chunk")
        let expectedChunk = Int64(info.pieceLength - Self.tagLength)
        guard expectedChunk >= 1 else {
            throw .invalidField(
                field: "info.piece length", problem: "is \(info.pieceLength), too short for a 16-byte tag and data",
                offset: infoNode["piece length"]?.range.lowerBound)
        }
        guard chunk == expectedChunk else {
            throw reader.invalid(
                chunkNode, "chunk",
                "is \(chunk), but pieces of \(info.pieceLength) bytes hold chunks of \(expectedChunk) bytes")
        }

        let lengthNode = try reader.required(fields, "length")
        let length = try reader.integer(lengthNode, "length")
        guard length >= 0 else { throw reader.invalid(lengthNode, "length", "is negative (\(length))") }
        guard let geometry = Self.geometry(plainLength: length, chunkLength: Int(chunk)),
            geometry.sealedLength == info.totalLength
        else {
            throw reader.invalid(
                lengthNode, "length",
                "says \(length) plain bytes, which do not seal to the \(info.totalLength) bytes the torrent holds")
        }

        let salt = try reader.bytes(try reader.required(fields, "salt"), "salt", count: Self.saltLength)
        let keyCheck = try reader.bytes(
            try reader.required(fields, "key-check"), "key-check", count: Self.keyCheckLength)

        self.chunkLength = Int(chunk)
        self.plainLength = length
        self.salt = salt
        self.keyCheck = keyCheck
        self.pieceCount = geometry.pieceCount
        self.sealedLength = geometry.sealedLength
    }
}

/// Reads typed fields of the sealing format from decoded nodes, naming the field and its offset.
struct SealedFieldReader {
    /// The dotted path of the dictionary being read, e.g. `vmswarm-recipients[3]`.
    let prefix: String

    func path(_ field: String) -> String { "\(prefix).\(field)" }

    func dictionary(_ node: BencodeNode) throws(SealingError) -> BencodeNode {
        guard node.entries != nil else { throw wrongType(node, nil, "a dictionary") }
        return node
    }

    func required(_ dictionary: BencodeNode, _ field: String) throws(SealingError) -> BencodeNode {
        guard let node = dictionary[field] else {
            throw .invalidField(field: path(field), problem: "is missing", offset: dictionary.range.lowerBound)
        }
        return node
    }

    func integer(_ node: BencodeNode, _ field: String) throws(SealingError) -> Int64 {
        guard let value = node.integer else { throw wrongType(node, field, "an integer") }
        return value
    }

    func bytes(_ node: BencodeNode, _ field: String) throws(SealingError) -> [UInt8] {
        guard let value = node.bytes else { throw wrongType(node, field, "a byte string") }
        return value
    }

    /// A byte string of exactly `count` bytes.
    func bytes(_ node: BencodeNode, _ field: String, count: Int) throws(SealingError) -> [UInt8] {
        let value = try bytes(node, field)
        guard value.count == count else { throw invalid(node, field, "has \(value.count) bytes, not \(count)") }
        return value
    }

    func invalid(_ node: BencodeNode, _ field: String, _ problem: String) -> SealingError {
        .invalidField(field: path(field), problem: problem, offset: node.range.lowerBound)
    }

    private func wrongType(_ node: BencodeNode, _ field: String?, _ expected: String) -> SealingError {
        .invalidField(
            field: field.map(path) ?? prefix, problem: "should be \(expected) but is \(node.kindName)",
            offset: node.range.lowerBound)
    }
}
