import Bencode
import Crypto
import Metainfo

/// A sealed torrent: an ordinary torrent of the sealed image, its sealing parameters (inside the info
/// dictionary), and the recipients and signature kept outside it, where changing them never changes
/// the info-hash.
///
/// Publishing: `TorrentCreator` makes the torrent of the sealed file with `parameters.infoFields`,
/// then `init(metainfo:)`, `addRecipient`, `sign`, `encoded()`. Receiving: `init(parsing:)`,
/// `verifySignature(trusting:)`, `contentKey(for:)`, `pieceSealer(key:)`.
public struct SealedTorrent: Sendable {
    public let metainfo: Metainfo
    public let parameters: SealingParameters
    /// Entries in a suite this implementation knows; others are dropped when re-encoding.
    public private(set) var recipients: [RecipientEntry]
    public private(set) var signature: TorrentSignature?

    /// Reads a .torrent file and its sealing fields; `notSealed` for a plain torrent. Parameters
    /// that contradict the torrent (lengths, chunk size) are refused here, before any transfer.
    public init(parsing bytes: some Collection<UInt8>, mode: BencodeDecoder.Mode = .lenient) throws(SealingError) {
        let input = Array(bytes)
        do {
            self.metainfo = try Metainfo(parsing: input, mode: mode)
        } catch {
            throw .torrent(error)
        }
        let root: BencodeNode
        do {
            root = try BencodeDecoder(mode: mode).decode(input)
        } catch {
            throw .torrent(.malformed(error))  // unreachable: Metainfo has just decoded the same bytes
        }
        guard let info = root["info"], let entry = info[SealingParameters.infoKey] else { throw .notSealed }
        self.parameters = try SealingParameters(parsing: entry, in: info, torrent: metainfo.info)

        var recipients: [RecipientEntry] = []
        if let listNode = root[KeyWrap.listKey] {
            guard let list = listNode.list else {
                throw .invalidField(
                    field: KeyWrap.listKey, problem: "should be a list but is \(listNode.kindName)",
                    offset: listNode.range.lowerBound)
            }
            guard list.count <= KeyWrap.maxRecipients else {
                throw .invalidField(
                    field: KeyWrap.listKey, problem: "has \(list.count) entries, more than \(KeyWrap.maxRecipients)",
                    offset: listNode.range.lowerBound)
            }
            for (index, node) in list.enumerated() {
                if let recipient = try RecipientEntry.parse(node, index: index) { recipients.append(recipient) }
            }
        }
        self.recipients = recipients
        self.signature = try root[TorrentSignature.dictionaryKey].flatMap { node throws(SealingError) in
            try TorrentSignature.parse(signatures: node)
        }
    }

    /// A freshly created torrent (from `TorrentCreator` with `parameters.infoFields`), without
    /// recipients or signature yet.
    public init(metainfo: Metainfo) throws(SealingError) {
        try self.init(parsing: metainfo.encoded())
    }

    /// Whether a torrent carries sealing parameters. A node that was given a key must refuse a torrent
    /// that does not: otherwise a forger could strip the entry and pass ciphertext off as an image.
    public static func isSealed(_ metainfo: Metainfo) -> Bool {
        (try? BencodeDecoder(mode: .lenient).decode(metainfo.infoBytes))?[SealingParameters.infoKey] != nil
    }

    /// Wraps `key` for `site`, replacing an earlier entry for the same key. Refuses a key that is not
    /// the one the image was sealed with.
    public mutating func addRecipient(_ site: SitePublicKey, key: ContentKey) throws(SealingError) {
        guard parameters.matches(key) else { throw .wrongKey }
        let entry = try KeyWrap.wrap(key, for: site, infoBytes: metainfo.infoBytes)
        recipients.removeAll { $0.keyID == entry.keyID }
        recipients.append(entry)
    }

    /// Signs the info dictionary, replacing an earlier vmswarm signature.
    public mutating func sign(with publisher: PublisherKeyPair) {
        signature = TorrentSignature(signing: metainfo.infoBytes, with: publisher)
    }

    /// The trusted key that signed this torrent; `unsigned`, `untrustedPublisher` or `badSignature`
    /// otherwise.
    @discardableResult
    public func verifySignature(trusting trusted: [PublisherPublicKey]) throws(SealingError) -> PublisherPublicKey {
        guard let signature else { throw .unsigned }
        return try signature.verify(infoBytes: metainfo.infoBytes, trusting: trusted)
    }

    /// The content key wrapped for `identity`, checked against the torrent's key check, so a replaced
    /// entry is caught here and not at the first piece.
    public func contentKey(for identity: SiteKeyPair) throws(SealingError) -> ContentKey {
        let key = try KeyWrap.unwrap(recipients, with: identity, infoBytes: metainfo.infoBytes)
        guard parameters.matches(key) else { throw .wrongKey }
        return key
    }

    /// The sealer for this image's pieces; `wrongKey` when `key` is not the image's key.
    public func pieceSealer(key: ContentKey) throws(SealingError) -> PieceSealer {
        try PieceSealer(key: key, parameters: parameters)
    }

    /// The whole .torrent file: `Metainfo.encoded()` (whose `info` bytes are untouched) with the
    /// recipients and signature added.
    public func encoded() -> [UInt8] {
        let base = metainfo.encoded()
        // Metainfo.encoded() is valid bencode by construction; its info bytes may be non-canonical.
        guard let entries = (try? BencodeDecoder(mode: .lenient).decode(base))?.entries else {
            preconditionFailure("Metainfo.encoded() produced invalid bencode")
        }
        var parts = entries.map { (key: $0.key, encoded: Array(base[$0.value.range])) }
        if !recipients.isEmpty {
            parts.append((Array(KeyWrap.listKey.utf8), BencodeValue.list(recipients.map(\.bencoded)).encoded()))
        }
        if let signature {
            let signatures = BencodeValue.dictionary([Array(TorrentSignature.entryKey.utf8): signature.bencoded])
            parts.append((Array(TorrentSignature.dictionaryKey.utf8), signatures.encoded()))
        }
        return Bencode.encodeDictionary(preencoded: parts)
    }
}
