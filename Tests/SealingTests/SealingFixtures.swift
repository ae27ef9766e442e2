import Bencode
import Crypto
import Foundation
import Metainfo
import Sealing
import TestSupport
import TorrentCreation

/// The fixed inputs of the known-answer tests. The expected values in the tests were computed
/// independently with Python's `cryptography` (HKDF, AESGCM) from docs/encryption.md.
enum KAT {
    static let key = ContentKey(bytes: Array(0..<32 as Range<UInt8>))!
    static let salt = Array(32..<64 as Range<UInt8>)
    static let pieceLength = 16 << 10
    static let chunk = pieceLength - 16

    /// Byte `i` is `i * 31 + 7` (mod 256): easy to reproduce in any language.
    static func image(_ length: Int) -> [UInt8] { (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) } }

    static func parameters(plainLength: Int, key: ContentKey = key) throws -> SealingParameters {
        try SealingParameters(plainLength: Int64(plainLength), pieceLength: pieceLength, key: key, salt: salt)
    }
}

/// A sealed image made on disk through the path `vmswarm create --seal-for` takes.
struct SealedFixture {
    let folder: TemporaryFolder
    let plain: [UInt8]
    let key: ContentKey
    let parameters: SealingParameters
    let torrent: SealedTorrent

    var imagePath: String { folder.file("image") }
    var sealedPath: String { folder.file("image.sealed") }
    var sealedBytes: [UInt8] { get throws { Array(try Data(contentsOf: URL(fileURLWithPath: sealedPath))) } }

    /// Seals `plain` with the KAT key and salt (or `key` and a random salt) and makes the torrent.
    init(_ plain: [UInt8], key: ContentKey = KAT.key, randomSalt: Bool = false) throws {
        folder = try TemporaryFolder()
        self.plain = plain
        self.key = key
        try Data(plain).write(to: URL(fileURLWithPath: folder.file("image")))
        parameters =
            randomSalt
            ? try SealingParameters(plainLength: Int64(plain.count), pieceLength: KAT.pieceLength, key: key)
            : try KAT.parameters(plainLength: plain.count, key: key)
        try ImageSealer(sealer: PieceSealer(key: key, parameters: parameters))
            .seal(imageAt: folder.file("image"), to: folder.file("image.sealed"))
        torrent = try SealedTorrent(metainfo: Self.create(folder.file("image.sealed"), fields: parameters.infoFields))
    }

    /// A torrent of the file at `path` named `kat.img`, with `fields` in its info dictionary.
    static func create(_ path: String, fields: [String: BencodeValue]) throws -> Metainfo {
        var options = TorrentCreator.Options(threads: 2)
        options.name = "kat.img"
        options.pieceLength = KAT.pieceLength
        options.extraInfoFields = fields
        return try TorrentCreator(options: options).create(path)
    }

    /// A torrent of `sealed` bytes with the given info fields, hashed here (a forger's torrent).
    static func forge(_ sealed: [UInt8], fields: [String: BencodeValue]) throws -> SealedTorrent {
        var hashes: [UInt8] = []
        var offset = 0
        repeat {
            let end = min(offset + KAT.pieceLength, sealed.count)
            hashes += Array(Insecure.SHA1.hash(data: sealed[offset..<end]))
            offset = end
        } while offset < sealed.count
        let info = try TorrentInfo(
            name: "kat.img", files: [FileEntry(path: ["kat.img"], length: Int64(sealed.count))], isMultiFile: false,
            privacy: .unspecified, pieceLength: KAT.pieceLength, pieceHashes: hashes)
        return try SealedTorrent(metainfo: Metainfo(info: info, extraInfoFields: fields))
    }

    func cleanUp() { folder.cleanUp() }
}

extension SealingParameters {
    /// The `vmswarm-sealed` entry with one field replaced (or removed, for nil): a tampered torrent.
    func infoFields(replacing field: String, with value: BencodeValue?) -> [String: BencodeValue] {
        var entry = infoFields[SealingParameters.infoKey]!.dictionaryValue!
        entry[Array(field.utf8)] = value
        return [SealingParameters.infoKey: .dictionary(entry)]
    }
}

/// `bytes` with bit `bit` of byte `index` flipped.
func flipped(_ bytes: [UInt8], at index: Int, bit: Int = 0) -> [UInt8] {
    var copy = bytes
    copy[index] ^= 1 << UInt8(bit)
    return copy
}
