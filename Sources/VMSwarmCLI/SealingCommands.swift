import ArgumentParser
import Foundation
import Metainfo
import Sealing

/// `vmswarm keygen`: key files for sealed images.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make key files for sealed images.",
        discussion: """
            site       an X25519 key pair for a site or node: NAME.key (mode 0600, keep it there) and NAME.pub \
            (hand it to publishers for `create --seal-for`).
            publisher  an Ed25519 key pair for signing torrents: NAME.key for `create --sign`, NAME.pub for \
            `get --trust`.
            content    a shared content key NAME.key for small setups: `create --key` and `get --key`.
            Existing files are never replaced.
            """)

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case site, publisher, content
    }

    @Argument(help: "File name without extension.")
    var name: String

    @Option(help: "site, publisher or content.")
    var kind: Kind = .site

    func run() throws {
        switch kind {
        case .site:
            let pair = SiteKeyPair.generate()
            try CLIError.wrap { try pair.write(to: name + ".key") }
            try CLIError.wrap { try pair.publicKey.write(to: name + ".pub") }
            print("\(name).key \(name).pub \(pair.publicKey)")
        case .publisher:
            let pair = PublisherKeyPair.generate()
            try CLIError.wrap { try pair.write(to: name + ".key") }
            try CLIError.wrap { try pair.publicKey.write(to: name + ".pub") }
            print("\(name).key \(name).pub \(pair.publicKey)")
        case .content:
            try CLIError.wrap { try ContentKey.random().write(to: name + ".key") }
            print("\(name).key")
        }
    }
}

/// Flags of `seed` and `get` for sealed images.
struct KeyOptions: ParsableArguments {
    @Option(help: "This node's or site's X25519 key (vmswarm keygen): opens a sealed image wrapped for it.")
    var identity: String?

    @Option(help: "A file holding the sealed image's content key (a shared key, or the one create wrote).")
    var key: String?

    @Option(help: "An Ed25519 publisher key (.pub); the torrent must carry a signature by one of them. Repeatable.")
    var trust: [String] = []

    var givesKey: Bool { identity != nil || key != nil }

    /// The sealer for a sealed torrent when a key was given (the data is kept as plaintext), nil when
    /// the data is kept as it travels: a plain torrent, or a sealed one held without its key.
    /// Refuses a torrent that is not signed by a trusted publisher (with --trust), a sealed torrent
    /// that no given key opens, and a plain torrent when a key was given: stripping the sealing entry
    /// from a torrent must not pass ciphertext off as the image.
    func sealer(torrentBytes: [UInt8], metainfo: Metainfo, keyRequired: Bool) throws(CLIError) -> PieceSealer? {
        try sealing(torrentBytes: torrentBytes, metainfo: metainfo, keyRequired: keyRequired)?.sealer
    }

    /// `sealer`, and the content key it was made from (the multicast booster derives the key that
    /// authenticates its packets from it).
    func sealing(torrentBytes: [UInt8], metainfo: Metainfo, keyRequired: Bool) throws(CLIError)
        -> (sealer: PieceSealer, contentKey: ContentKey)?
    {
        guard SealedTorrent.isSealed(metainfo) else {
            if givesKey || !trust.isEmpty {
                throw CLIError("\(metainfo.info.name): this torrent is not sealed, yet a key or --trust was given; refusing it")
            }
            return nil
        }
        let sealed = try CLIError.wrap(metainfo.info.name) { try SealedTorrent(parsing: torrentBytes) }
        if !trust.isEmpty {
            let publishers = try trust.map { path throws(CLIError) in try CLIError.wrap { try PublisherPublicKey(readingFile: path) } }
            try CLIError.wrap(metainfo.info.name) { try sealed.verifySignature(trusting: publishers) }
        }
        let contentKey: ContentKey
        if let key {
            contentKey = try CLIError.wrap { try ContentKey(readingFile: key) }
        } else if let identity {
            let pair = try CLIError.wrap { try SiteKeyPair(readingFile: identity) }
            contentKey = try CLIError.wrap(metainfo.info.name) { try sealed.contentKey(for: pair) }
        } else if keyRequired {
            throw CLIError("\(metainfo.info.name) is sealed: give --identity NODE.key or --key FILE to open it, or --relay-only to keep the ciphertext")
        } else {
            return nil
        }
        return (try CLIError.wrap(metainfo.info.name) { try sealed.pieceSealer(key: contentKey) }, contentKey)
    }
}

/// `create --seal-for/--key/--sign`: the torrent of the sealed image, made in one pass over the plain
/// image (nothing sealed is written), with the key wrapped for each site and an optional signature.
struct SealingCreation {
    var sites: [String]
    var keyFile: String?
    var signingKey: String?

    func create(image path: String, name: String, plainLength: Int64, options: TorrentCreatorSettings,
                target: String, progress: ProgressReporter) throws(CLIError) -> (torrent: [UInt8], metainfo: Metainfo, keyWritten: String?) {
        let key = try keyFile.map { file throws(CLIError) in try CLIError.wrap { try ContentKey(readingFile: file) } } ?? ContentKey.random()
        var maker = SealedTorrentMaker(name: name, pieceLength: options.pieceLength, threads: options.threads)
        maker.announceTiers = options.announceTiers
        maker.privacy = options.privacy
        maker.comment = options.comment
        maker.createdBy = options.createdBy
        maker.creationDate = options.creationDate
        var sealed = try CLIError.wrap(path) { try maker.make(image: path, plainLength: plainLength, key: key) { progress.update(done: $0) } }
        for site in sites {
            let recipient = try CLIError.wrap { try SitePublicKey(readingFile: site) }
            try CLIError.wrap(site) { try sealed.addRecipient(recipient, key: key) }
        }
        if let signingKey {
            sealed.sign(with: try CLIError.wrap { try PublisherKeyPair(readingFile: signingKey) })
        }
        var keyWritten: String?
        if keyFile == nil {
            // The publisher keeps the key: it seeds from the plain image, sealing pieces on request.
            keyWritten = target + ".key"
            try CLIError.wrap { try key.write(to: target + ".key") }
        }
        return (sealed.encoded(), sealed.metainfo, keyWritten)
    }
}

/// What `create` settled on, for either kind of torrent.
struct TorrentCreatorSettings {
    var pieceLength: Int
    var threads: Int
    var announceTiers: [[String]]
    var privacy: TorrentInfo.Privacy
    var comment: String?
    var createdBy: String?
    var creationDate: Int64?
}
