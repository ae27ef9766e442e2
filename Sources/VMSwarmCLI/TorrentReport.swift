import Foundation
import Metainfo
import Sealing
import Units

/// What `inspect` (and `create`) tell about a torrent, as text for people and JSON for programs.
struct TorrentReport: Encodable {
    struct File: Encodable {
        let path: String
        let length: Int64
        let padding: Bool
        /// BEP 47's SHA-1 of the file (a layer's digest, docs/reuse.md), in hex; absent when the torrent has none.
        var sha1: String?
    }

    let file: String
    let name: String
    let infoHash: String
    let magnet: String
    let totalLength: Int64
    let pieceLength: Int
    let pieceCount: Int
    let `private`: Bool
    let multiFile: Bool
    let trackerTiers: [[String]]
    let webSeeds: [String]
    /// It carries a weak rolling checksum per piece (`create --rolling-checksums`).
    let rollingChecksums: Bool
    let comment: String?
    let createdBy: String?
    let creationDate: Int64?
    let files: [File]
    let sealed: Sealed?

    /// A sealed image: what the plain image is, who can open it, who signed it.
    struct Sealed: Encodable {
        let plainLength: Int64
        let cipher: String
        let recipients: [String]
        let signedBy: String?

        enum CodingKeys: String, CodingKey {
            case cipher, recipients
            case plainLength = "plain_length"
            case signedBy = "signed_by"
        }
    }

    enum CodingKeys: String, CodingKey {
        case file, name, magnet, comment, files, sealed
        case infoHash = "info_hash"
        case totalLength = "total_length"
        case pieceLength = "piece_length"
        case pieceCount = "piece_count"
        case `private`
        case multiFile = "multi_file"
        case trackerTiers = "tracker_tiers"
        case webSeeds = "web_seeds"
        case rollingChecksums = "rolling_checksums"
        case createdBy = "created_by"
        case creationDate = "creation_date"
    }

    /// The report on a torrent file as it is on disk: `inspect` and `create` (on the file it just
    /// wrote) both come here, so what `create` says is what the file holds. A sealed image's
    /// recipients and signature live outside the info dictionary, so they are read from the file's
    /// own bytes, never from a re-encoded `Metainfo` (which drops them).
    static func read(_ path: String, strict: Bool = false) throws(CLIError) -> TorrentReport {
        let bytes = try InspectCommand.readTorrent(path)
        let metainfo = try CLIError.wrap("\(path)") {
            try Metainfo(parsing: bytes, mode: strict ? .strict : .lenient)
        }
        return TorrentReport(metainfo, file: path, bytes: bytes)
    }

    /// `bytes`: the whole torrent file, read for a sealed image's recipients and signature.
    private init(_ metainfo: Metainfo, file: String, bytes: [UInt8]) {
        let info = metainfo.info
        self.file = file
        name = info.name
        infoHash = metainfo.infoHash.hex
        magnet = metainfo.magnetURI
        totalLength = info.totalLength
        pieceLength = info.pieceLength
        pieceCount = info.pieceCount
        `private` = info.isPrivate
        multiFile = info.isMultiFile
        trackerTiers = metainfo.announceTiers
        webSeeds = metainfo.webSeeds
        rollingChecksums = metainfo.rollingChecksums != nil
        comment = metainfo.comment
        createdBy = metainfo.createdBy
        creationDate = metainfo.creationDate
        files = info.files.map {
            File(path: $0.path.joined(separator: "/"), length: $0.length, padding: $0.isPadding,
                 sha1: $0.sha1.map { $0.map { String(format: "%02x", $0) }.joined() })
        }
        sealed = (try? SealedTorrent(parsing: bytes)).map { torrent in
            Sealed(plainLength: torrent.parameters.plainLength, cipher: SealingParameters.cipher,
                recipients: torrent.recipients.map { "x25519:" + HexCoding.encode($0.keyID) },
                signedBy: torrent.signature.map { "\($0.publicKey)" })
        }
    }

    var summary: String {
        var lines: [(String, String)] = [
            ("name", name),
            ("info-hash", infoHash),
            ("magnet", magnet),
            ("size", "\(Format.bytes(totalLength)) (\(totalLength) bytes)"),
            ("pieces", "\(pieceCount) x \(Format.bytes(Int64(pieceLength)))"),
            ("private", `private` ? "yes" : "no"),
        ]
        if trackerTiers.isEmpty {
            lines.append(("trackers", "none (trackerless: peers must be given with --peer)"))
        }
        for (index, tier) in trackerTiers.enumerated() {
            lines.append((index == 0 ? "trackers" : "", "tier \(index + 1): " + tier.joined(separator: ", ")))
        }
        for (index, seed) in webSeeds.enumerated() { lines.append((index == 0 ? "web seeds" : "", seed)) }
        if rollingChecksums { lines.append(("rolling sums", "one per piece: get --reuse finds data that moved")) }
        if let createdBy { lines.append(("created by", createdBy)) }
        if let creationDate {
            let date = Date(timeIntervalSince1970: TimeInterval(creationDate))
            lines.append(("created", ISO8601DateFormatter().string(from: date)))
        }
        if let comment { lines.append(("comment", comment)) }
        if let sealed {
            lines.append(("sealed", "\(sealed.cipher) per piece; the plain image is \(Format.bytes(sealed.plainLength)) (\(sealed.plainLength) bytes)"))
            lines.append(("recipients", sealed.recipients.isEmpty ? "none (a shared key opens it)" : sealed.recipients.joined(separator: ", ")))
            lines.append(("signed by", sealed.signedBy ?? "nobody"))
        }
        var text = lines.map { label, value in
            (label.isEmpty ? "" : label + ":").padding(toLength: 12, withPad: " ", startingAt: 0) + value
        }
        text.append("files (\(files.count)):")
        for file in files {
            let size = Format.bytes(file.length)
            text.append("  " + size.padding(toLength: 12, withPad: " ", startingAt: 0) + file.path
                + (file.padding ? "  [padding]" : "") + (file.sha1.map { "  sha1 \($0)" } ?? ""))
        }
        return text.joined(separator: "\n")
    }
}
