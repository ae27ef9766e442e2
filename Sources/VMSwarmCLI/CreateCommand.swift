import ArgumentParser
import Foundation
import Metainfo
import Sealing
import TorrentCreation
import Units

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make a .torrent of an image file or a folder.",
        discussion: """
            Hashes the data on every core with bounded memory and writes a v1 torrent whose info-hash \
            matches what mktorrent, Transmission, libtorrent and CTorrent compute for the same name, \
            piece size, file order and private flag.

            Piece size `auto` picks the smallest power of two from 256 KiB to 16 MiB that keeps the \
            torrent at 2,048 pieces or fewer (512 MiB -> 256 KiB, 4 GiB -> 2 MiB, 32 GiB and up -> 16 MiB).
            A folder's files are taken in byte order of their paths unless --files-from lists them.

            Layered images (--align-files): each file of the folder (a base, site and user layer, \
            say; list them base first with --files-from) starts on a piece boundary, with BEP 47 \
            padding files after each, and carries its SHA-1. A layer then has the same pieces in \
            every torrent of that piece size, so nodes that hold it fetch only the other layers \
            (get --cache, docs/reuse.md). Other clients download such torrents as usual.

            Sealed images (--seal-for, --key): the torrent describes the image sealed piece by piece             with AES-256-GCM, so any BitTorrent client can relay it and only key holders can read it             (docs/encryption.md). Nothing sealed is written: seed the plain image with --key.
            """)

    @Argument(help: "The image file or folder to share.", completion: .file())
    var path: String

    @Option(name: [.short, .customLong("tracker")],
        help: "Tracker announce URL. Repeat for backup tiers; separate URLs with commas for one tier (BEP 12).")
    var trackers: [String] = []

    @Option(name: .customLong("piece-size"), help: "Piece size: auto, or a power of two such as 256K, 1M, 4MiB.")
    var pieceSize: String = "auto"

    @Flag(help: "Set the private flag (BEP 27): peers only from the trackers, no DHT/PEX.")
    var `private` = false

    @Flag(help: "Write the private flag as 0 (as Transmission does) instead of leaving it out.")
    var `public` = false

    @Option(help: "Torrent name (default: the file's or folder's name).")
    var name: String?

    @Option(help: "A comment stored in the torrent.")
    var comment: String?

    @Option(name: .customLong("web-seed"), help: "HTTP URL serving the same data (BEP 19). Repeatable.")
    var webSeeds: [String] = []

    @Option(name: [.short, .customLong("output")], help: "Where to write the torrent (default: NAME.torrent).")
    var output: String?

    @Option(name: .customLong("files-from"),
        help: "For a folder: a file listing the relative paths to include, one per line, in torrent order.")
    var filesFrom: String?

    @Flag(name: .customLong("align-files"),
        help: "For a folder of layers: start each file on a piece boundary (BEP 47 padding) and record its SHA-1.")
    var alignFiles = false

    @Flag(name: .customLong("no-date"), help: "Leave out the creation date, making the file reproducible.")
    var noDate = false

    @Option(help: "Hashing threads (default: one per core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Overwrite the output file if it exists.")
    var force = false

    @Flag(help: "Print progress and the result as JSON lines on standard output.")
    var json = false

    @Option(name: .customLong("seal-for"), help: "Seal the image and wrap its key for this site's X25519 .pub key. Repeatable.")
    var sealFor: [String] = []

    @Option(help: "Seal the image with the content key in this file (default with --seal-for: a new key, written to TORRENT.key).")
    var key: String?

    @Option(help: "Sign the sealed torrent with this Ed25519 publisher key.")
    var sign: String?

    @Flag(name: .customLong("rolling-checksums"),
        help: "Publish each piece's weak rolling checksum in the torrent (4 bytes a piece, outside info: the info-hash is unchanged), so get --reuse OLD also finds the pieces whose data moved in OLD (docs/reuse.md).")
    var rollingChecksums = false

    @Option(name: .customLong("boot-profile"),
        help: "Carry this read profile (from get --record-reads) in the torrent: vmswarm nodes fetch what it reads first, first.")
    var bootProfile: String?

    @OptionGroup var settings: ConfigOption

    var sealing: Bool { !sealFor.isEmpty || key != nil }

    func validate() throws {
        if `private` && `public` { throw ValidationError("--private and --public exclude each other.") }
        if pieceSize != "auto" && Format.parseSize(pieceSize) == nil {
            throw ValidationError("--piece-size must be 'auto' or a size such as 256K, 1M, 4MiB (got '\(pieceSize)').")
        }
        if threads < 1 || threads > 1024 { throw ValidationError("--threads must be from 1 to 1024.") }
        if rollingChecksums && sealing { throw ValidationError("--rolling-checksums is not for a sealed image: its pieces are ciphertext, which no old version holds.") }
        if alignFiles && sealing { throw ValidationError("--align-files is for a folder of layers; a sealed image is one file.") }
        if sign != nil && !sealing { throw ValidationError("--sign signs sealed torrents: add --seal-for or --key.") }
        if sealing && (!webSeeds.isEmpty || filesFrom != nil) {
            throw ValidationError("a sealed image is one file with no web seeds: drop --web-seed and --files-from.")
        }
        for url in trackers.flatMap({ $0.split(separator: ",") }) + webSeeds.map({ Substring($0) }) {
            guard let parsed = URL(string: String(url)), parsed.scheme != nil, parsed.host != nil else {
                throw ValidationError("'\(url)' is not an absolute URL.")
            }
        }
    }

    func run() throws {
        var options = TorrentCreator.Options(threads: threads)
        options.name = name
        options.pieceLength = pieceSize == "auto" ? nil : Format.parseSize(pieceSize)
        options.announceTiers = trackers.map { $0.split(separator: ",").map { String($0) } }
        options.privacy = `private` ? .private : (`public` ? .explicitlyPublic : .unspecified)
        options.comment = comment
        options.webSeeds = webSeeds
        options.alignFiles = alignFiles
        options.rollingChecksums = rollingChecksums
        options.createdBy = "vmswarm \(VMSwarm.version)"
        options.creationDate = noDate ? nil : Int64(Date().timeIntervalSince1970)
        if let filesFrom {
            let list = try CLIError.wrap("cannot read \(filesFrom)") { try String(contentsOfFile: filesFrom, encoding: .utf8) }
            options.fileOrder = list.split(whereSeparator: \.isNewline).filter { !$0.isEmpty }
                .map { $0.split(separator: "/", omittingEmptySubsequences: false).map(String.init) }
        }
        let creator = TorrentCreator(options: options)
        let plan = try CLIError.wrap { try creator.plan(path) }
        let target = output ?? "\(name ?? plan.source.baseName).torrent"
        if !force && FileManager.default.fileExists(atPath: target) {
            throw CLIError("\(target) exists; use --force to overwrite it")
        }

        let profile = try bootProfile.map { try ReadProfileFile.read($0) }
        let progress = ProgressReporter(label: sealing ? "sealing" : "hashing", total: plan.totalLength, style: .choose(json: json))
        let started = Date()
        var bytes: [UInt8]
        var keyWritten: String?
        if sealing {
            guard plan.source.files.count == 1, !plan.source.isDirectory else { throw CLIError("\(path): only a single image file can be sealed") }
            let settings = TorrentCreatorSettings(
                pieceLength: options.pieceLength ?? PieceSizeRule.pieceLength(forTotalLength: plan.totalLength), threads: threads,
                announceTiers: options.announceTiers, privacy: options.privacy, comment: comment, createdBy: options.createdBy,
                creationDate: options.creationDate)
            let made = try SealingCreation(sites: sealFor, keyFile: key, signingKey: sign).create(
                image: path, name: name ?? plan.source.baseName, plainLength: plan.totalLength, options: settings, target: target,
                progress: progress)
            (bytes, keyWritten) = (made.torrent, made.keyWritten)
        } else {
            bytes = try CLIError.wrap { try creator.create(path) { progress.update(done: $0) } }.encoded()
        }
        progress.finish()
        let seconds = Date().timeIntervalSince(started)
        if let profile {
            bytes = try CLIError.wrap { try Metainfo.settingBootProfile(profile, inTorrent: bytes) }
        }

        try CLIError.wrap("cannot write \(target)") { try Data(bytes).write(to: URL(fileURLWithPath: target), options: .atomic) }
        if let keyWritten { FileHandle.standardError.write(Data("content key written to \(keyWritten) (mode 0600): seed with --key \(keyWritten)\n".utf8)) }

        // The report is read back from the file just written, by the code `inspect` runs: a report
        // built from `metainfo` would miss what a sealed torrent keeps outside the info dictionary
        // (recipients, signature) and say "a shared key opens it" and "signed by: nobody".
        let report = try TorrentReport.read(target)
        if json {
            print(try JSONLine.encode(CreatedEvent(event: "created", seconds: seconds, torrent: report)))
        } else {
            print("created \(target) in \(Format.duration(seconds)) "
                + "(\(Format.rate(seconds > 0 ? Double(plan.totalLength) / seconds : 0)))")
            print(report.summary)
        }
    }
}

private struct CreatedEvent: Encodable {
    let event: String
    let seconds: Double
    let torrent: TorrentReport
}
