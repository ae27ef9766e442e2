import Bencode
import Crypto
import Foundation
import Metainfo
import TestSupport
import Testing
import TorrentCreation

@testable import Sealing

@Suite struct SealedTorrentTests {
    static let plain = KAT.image(2 * KAT.chunk + 3)

    @Test func encodeAndParseRoundTrip() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        var torrent = fixture.torrent
        let site = SiteKeyPair.generate()
        try torrent.addRecipient(site.publicKey, key: KAT.key)
        torrent.sign(with: .generate())

        let parsed = try SealedTorrent(parsing: torrent.encoded())
        #expect(parsed.parameters == fixture.parameters)
        #expect(parsed.recipients == torrent.recipients)
        #expect(parsed.signature == torrent.signature)
        // Recipients and signature live outside the info dictionary.
        #expect(parsed.metainfo.infoHash == fixture.torrent.metainfo.infoHash)
        #expect(parsed.metainfo.infoBytes == fixture.torrent.metainfo.infoBytes)
        #expect(parsed.encoded() == torrent.encoded())
        // Still a torrent any client reads.
        #expect(try Metainfo(parsing: torrent.encoded(), mode: .strict).infoHash == parsed.metainfo.infoHash)
    }

    /// Issue 15: parameters whose sealed image has more pieces than a torrent may hold were accepted,
    /// and the image's layout then failed a precondition in `ImageSealer`.
    @Test func imagesWithTooManyPiecesAreRefused() throws {
        let plainLength: Int64 = 1 << 40  // 2^40 / (16 KiB - 16) is about 67 million pieces
        #expect(throws: SealingError.invalidParameters("an image of \(plainLength) bytes is too large to seal")) {
            try SealingParameters(plainLength: plainLength, pieceLength: 16 << 10, key: KAT.key)
        }
        // The same image in the largest pieces fits.
        let large = try SealingParameters(plainLength: plainLength, pieceLength: PieceLayout.maxPieceLength, key: KAT.key)
        #expect(large.pieceCount <= PieceLayout.maxPieceCount)
        #expect(try PieceLayout(pieceLength: large.pieceLength, fileLengths: [large.sealedLength]).pieceCount == large.pieceCount)
    }

    @Test func plainTorrentsAreNotSealed() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let plain = try SealedFixture.create(fixture.imagePath, fields: [:])
        #expect(throws: SealingError.notSealed) { try SealedTorrent(metainfo: plain) }
        #expect(!SealedTorrent.isSealed(plain))
        #expect(SealedTorrent.isSealed(fixture.torrent.metainfo))
        #expect(throws: SealingError.self) { try SealedTorrent(parsing: Array("d4:infoi1ee".utf8)) }
    }

    /// A receiver's whole path: signature, unwrap, then each piece opened after its SHA-1 check.
    @Test func receiverPath() throws {
        let fixture = try SealedFixture(Self.plain, key: .random(), randomSalt: true)
        defer { fixture.cleanUp() }
        let site = SiteKeyPair.generate()
        let publisher = PublisherKeyPair.generate()
        var torrent = fixture.torrent
        try torrent.addRecipient(site.publicKey, key: fixture.key)
        torrent.sign(with: publisher)

        let received = try SealedTorrent(parsing: torrent.encoded())
        #expect(try received.verifySignature(trusting: [publisher.publicKey]) == publisher.publicKey)
        let sealer = try received.pieceSealer(key: received.contentKey(for: site))
        let sealed = try fixture.sealedBytes
        var image: [UInt8] = []
        for piece in received.metainfo.info.layout.pieces {
            let range = received.metainfo.info.layout.byteRange(of: piece)
            let data = sealed[Int(range.lowerBound)..<Int(range.upperBound)]
            #expect(Array(Insecure.SHA1.hash(data: data)) == Array(received.metainfo.info.hash(of: piece)))
            let plaintext = try sealer.open(piece, sealed: data)
            #expect(Int64(image.count) == received.parameters.plaintextRange(of: piece).lowerBound)
            image += plaintext
        }
        #expect(image == fixture.plain)
    }
}

@Suite struct TamperedTorrentTests {
    static let plain = KAT.image(2 * KAT.chunk + 3)

    func fixture() throws -> SealedFixture { try SealedFixture(Self.plain) }

    @Test func fieldsThatContradictTheTorrentAreRefused() throws {
        let fixture = try fixture()
        defer { fixture.cleanUp() }
        let sealed = try fixture.sealedBytes
        let p = fixture.parameters
        let cases: [(String, BencodeValue?, String)] = [
            ("length", .integer(p.plainLength + 1), "info.vmswarm-sealed.length"),
            ("length", .integer(p.plainLength - 1), "info.vmswarm-sealed.length"),
            ("length", .integer(-1), "info.vmswarm-sealed.length"),
            ("length", .integer(.max), "info.vmswarm-sealed.length"),
            ("length", .string("12"), "info.vmswarm-sealed.length"),
            ("length", nil, "info.vmswarm-sealed.length"),
            ("chunk", .integer(Int64(KAT.chunk - 1)), "info.vmswarm-sealed.chunk"),
            ("chunk", .integer(Int64(KAT.pieceLength)), "info.vmswarm-sealed.chunk"),
            ("salt", .bytes(Array(p.salt.dropLast())), "info.vmswarm-sealed.salt"),
            ("salt", .integer(1), "info.vmswarm-sealed.salt"),
            ("key-check", .bytes(p.keyCheck + [0]), "info.vmswarm-sealed.key-check"),
            ("key-check", nil, "info.vmswarm-sealed.key-check"),
        ]
        for (field, value, named) in cases {
            let error = #expect(throws: SealingError.self, "\(field) = \(String(describing: value))") {
                try SealedFixture.forge(sealed, fields: p.infoFields(replacing: field, with: value))
            }
            guard case .invalidField(let reported, _, let offset) = error else {
                Issue.record("\(field): \(String(describing: error))")
                continue
            }
            #expect(reported == named)
            #expect(offset != nil)
        }
        #expect(throws: SealingError.unsupported("format version 2 (this vmswarm reads version 1)")) {
            try SealedFixture.forge(sealed, fields: p.infoFields(replacing: "version", with: .integer(2)))
        }
        #expect(throws: SealingError.unsupported("cipher 'aes-128-gcm' (this vmswarm reads aes-256-gcm)")) {
            try SealedFixture.forge(sealed, fields: p.infoFields(replacing: "cipher", with: "aes-128-gcm"))
        }
        #expect(throws: SealingError.self) {
            try SealedFixture.forge(sealed, fields: [SealingParameters.infoKey: .list([])])
        }
    }

    @Test func aFlippedSaltIsAWrongKey() throws {
        let fixture = try fixture()
        defer { fixture.cleanUp() }
        let fields = fixture.parameters.infoFields(
            replacing: "salt", with: .bytes(flipped(fixture.parameters.salt, at: 5)))
        let forged = try SealedFixture.forge(try fixture.sealedBytes, fields: fields)
        #expect(throws: SealingError.wrongKey) { try forged.pieceSealer(key: KAT.key) }
    }

    @Test func aFlippedKeyCheckIsAWrongKey() throws {
        let fixture = try fixture()
        defer { fixture.cleanUp() }
        let fields = fixture.parameters.infoFields(
            replacing: "key-check", with: .bytes(flipped(fixture.parameters.keyCheck, at: 31, bit: 3)))
        let forged = try SealedFixture.forge(try fixture.sealedBytes, fields: fields)
        #expect(throws: SealingError.wrongKey) { try forged.pieceSealer(key: KAT.key) }
    }

    /// A piece altered and a torrent forged to match its SHA-1: the SHA-1 check passes, GCM does not.
    @Test func aTamperedPieceInAMatchingForgedTorrent() throws {
        let fixture = try fixture()
        defer { fixture.cleanUp() }
        let tampered = flipped(try fixture.sealedBytes, at: KAT.pieceLength + 10)
        let forged = try SealedFixture.forge(tampered, fields: fixture.parameters.infoFields)
        let sealer = try forged.pieceSealer(key: KAT.key)
        let piece = PieceIndex(1)
        let range = forged.metainfo.info.layout.byteRange(of: piece)
        let data = tampered[Int(range.lowerBound)..<Int(range.upperBound)]
        #expect(Array(Insecure.SHA1.hash(data: data)) == Array(forged.metainfo.info.hash(of: piece)))
        #expect(throws: SealingError.authenticationFailed(piece: 1)) { try sealer.open(piece, sealed: data) }
        // Piece 0 is untouched and still opens.
        #expect(try sealer.open(PieceIndex(0), sealed: tampered[0..<KAT.pieceLength]).count == KAT.chunk)
    }

    /// A consistent lie: the last byte cut off, the length lowered to match, the torrent re-hashed.
    @Test func aTruncatedImageWithAConsistentLengthFailsEveryPiece() throws {
        let fixture = try fixture()
        defer { fixture.cleanUp() }
        let truncated = Array(try fixture.sealedBytes.dropLast())
        let fields = fixture.parameters.infoFields(
            replacing: "length", with: .integer(fixture.parameters.plainLength - 1))
        let forged = try SealedFixture.forge(truncated, fields: fields)
        let sealer = try forged.pieceSealer(key: KAT.key)
        for piece in forged.metainfo.info.layout.pieces {
            let range = forged.metainfo.info.layout.byteRange(of: piece)
            #expect(throws: SealingError.authenticationFailed(piece: piece.value)) {
                try sealer.open(piece, sealed: truncated[Int(range.lowerBound)..<Int(range.upperBound)])
            }
        }
    }

    @Test func multiFileTorrentsAreRefused() throws {
        let fixture = try fixture()
        defer { fixture.cleanUp() }
        let sealed = try fixture.sealedBytes
        let info = try TorrentInfo(
            name: "kat", files: [FileEntry(path: ["a"], length: Int64(sealed.count))], isMultiFile: true,
            privacy: .unspecified, pieceLength: KAT.pieceLength, pieceHashes: fixture.torrent.metainfo.info.pieceHashes)
        let error = #expect(throws: SealingError.self) {
            try SealedTorrent(metainfo: Metainfo(info: info, extraInfoFields: fixture.parameters.infoFields))
        }
        guard case .invalidField("info.files", _, .some) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
    }

    @Test func piecesTooShortForATagAreRefused() throws {
        let parameters = try KAT.parameters(plainLength: 0)
        let info = try TorrentInfo(
            name: "kat", files: [FileEntry(path: ["kat"], length: 16)], isMultiFile: false, privacy: .unspecified,
            pieceLength: 16, pieceHashes: [UInt8](repeating: 0, count: 20))
        let error = #expect(throws: SealingError.self) {
            try SealedTorrent(metainfo: Metainfo(info: info, extraInfoFields: parameters.infoFields))
        }
        guard case .invalidField("info.piece length", _, .some) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
    }
}

@Suite struct RecipientTests {
    static let plain = KAT.image(100)

    @Test func eachRecipientUnwrapsTheKey() throws {
        let fixture = try SealedFixture(Self.plain, key: .random(), randomSalt: true)
        defer { fixture.cleanUp() }
        let sites = (0..<3).map { _ in SiteKeyPair.generate() }
        var torrent = fixture.torrent
        for site in sites { try torrent.addRecipient(site.publicKey, key: fixture.key) }
        try torrent.addRecipient(sites[0].publicKey, key: fixture.key)  // replaces, does not duplicate
        #expect(torrent.recipients.count == 3)
        let parsed = try SealedTorrent(parsing: torrent.encoded())
        for site in sites { #expect(try parsed.contentKey(for: site) == fixture.key) }

        let stranger = SiteKeyPair.generate()
        #expect(throws: SealingError.notARecipient(fingerprint: stranger.publicKey.description)) {
            try parsed.contentKey(for: stranger)
        }
        #expect(throws: SealingError.wrongKey) { try torrent.addRecipient(stranger.publicKey, key: .random()) }
    }

    @Test func anEntryDoesNotOpenInAnotherTorrent() throws {
        let first = try SealedFixture(Self.plain, key: KAT.key, randomSalt: true)
        let second = try SealedFixture(Self.plain, key: KAT.key, randomSalt: true)
        defer {
            first.cleanUp()
            second.cleanUp()
        }
        let site = SiteKeyPair.generate()
        var torrent = first.torrent
        try torrent.addRecipient(site.publicKey, key: KAT.key)
        // Same key (a shared key file), another torrent: the HPKE info differs.
        #expect(throws: SealingError.unwrapFailed(fingerprint: site.publicKey.description)) {
            try KeyWrap.unwrap(torrent.recipients, with: site, infoBytes: second.torrent.metainfo.infoBytes)
        }
    }

    /// Anyone can wrap a key for a public key; the key check catches a substituted entry.
    @Test func aReplacedEntryIsCaughtByTheKeyCheck() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let site = SiteKeyPair.generate()
        let planted = try KeyWrap.wrap(.random(), for: site.publicKey, infoBytes: fixture.torrent.metainfo.infoBytes)
        let torrentBytes = try withRecipients([planted.bencoded], into: fixture.torrent)
        #expect(throws: SealingError.wrongKey) { try SealedTorrent(parsing: torrentBytes).contentKey(for: site) }
    }

    @Test func aTamperedEntryDoesNotOpen() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let site = SiteKeyPair.generate()
        let entry = try KeyWrap.wrap(KAT.key, for: site.publicKey, infoBytes: fixture.torrent.metainfo.infoBytes)
        for (field, bytes) in [("enc", entry.encapsulatedKey), ("ct", entry.wrappedKey)] {
            var value = entry.bencoded.dictionaryValue!
            value[Array(field.utf8)] = .bytes(flipped(bytes, at: 3))
            let torrent = try SealedTorrent(parsing: withRecipients([.dictionary(value)], into: fixture.torrent))
            #expect(throws: SealingError.unwrapFailed(fingerprint: site.publicKey.description), "\(field)") {
                try torrent.contentKey(for: site)
            }
        }
    }

    @Test func hostileEntriesAreRefusedOrSkipped() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let site = SiteKeyPair.generate()
        let good = try KeyWrap.wrap(KAT.key, for: site.publicKey, infoBytes: fixture.torrent.metainfo.infoBytes)
        func replacing(_ field: String, _ value: BencodeValue?) -> BencodeValue {
            var entry = good.bencoded.dictionaryValue!
            entry[Array(field.utf8)] = value
            return .dictionary(entry)
        }
        for hostile in [
            replacing("enc", .bytes([1, 2, 3])), replacing("ct", .bytes(good.wrappedKey + [0])),
            replacing("key-id", .bytes([])), replacing("key-id", nil), replacing("ct", .integer(3)), .integer(7),
            .list([]), replacing("suite", nil),
        ] {
            #expect(throws: SealingError.self, "\(hostile)") {
                try SealedTorrent(parsing: withRecipients([good.bencoded, hostile], into: fixture.torrent))
            }
        }
        #expect(throws: SealingError.self) {
            try SealedTorrent(parsing: withTopLevel(KeyWrap.listKey, .integer(1), into: fixture.torrent))
        }
        // An entry of an unknown suite is skipped; the known one still works.
        let parsed = try SealedTorrent(
            parsing: withRecipients([replacing("suite", "hpke-mlkem-later"), good.bencoded], into: fixture.torrent))
        #expect(parsed.recipients == [good])
        #expect(try parsed.contentKey(for: site) == KAT.key)
    }
}

@Suite struct SignatureTests {
    static let plain = KAT.image(KAT.chunk + 1)

    @Test func signedByTheTrustedPublisher() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let publisher = PublisherKeyPair.generate()
        var torrent = fixture.torrent
        torrent.sign(with: publisher)
        let parsed = try SealedTorrent(parsing: torrent.encoded())
        let other = PublisherKeyPair.generate().publicKey
        #expect(try parsed.verifySignature(trusting: [other, publisher.publicKey]) == publisher.publicKey)
    }

    @Test func unsignedIsRefused() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        #expect(throws: SealingError.unsigned) {
            try SealedTorrent(parsing: fixture.torrent.encoded()).verifySignature(trusting: [
                PublisherKeyPair.generate().publicKey
            ])
        }
        // Other signers' BEP 35 entries do not count.
        let foreign = withTopLevel(
            TorrentSignature.dictionaryKey, .dictionary([Array("someone".utf8): .dictionary([:])]),
            into: fixture.torrent)
        #expect(throws: SealingError.unsigned) {
            try SealedTorrent(parsing: foreign).verifySignature(trusting: [PublisherKeyPair.generate().publicKey])
        }
    }

    @Test func wrongPublisherIsRefused() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let impostor = PublisherKeyPair.generate()
        var torrent = fixture.torrent
        torrent.sign(with: impostor)
        let trusted = PublisherKeyPair.generate().publicKey
        #expect(throws: SealingError.untrustedPublisher(fingerprint: impostor.publicKey.description)) {
            try SealedTorrent(parsing: torrent.encoded()).verifySignature(trusting: [trusted])
        }
    }

    @Test func alteredSignatureOrInfoIsRefused() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let publisher = PublisherKeyPair.generate()
        var torrent = fixture.torrent
        torrent.sign(with: publisher)
        let signature = try #require(torrent.signature)

        // One bit of the signature.
        let bent = withTopLevel(
            TorrentSignature.dictionaryKey,
            .dictionary([
                Array(TorrentSignature.entryKey.utf8): .dictionary([
                    Array("public-key".utf8): .bytes(publisher.publicKey.bytes),
                    Array("signature".utf8): .bytes(flipped(signature.signature, at: 10)),
                ])
            ]), into: fixture.torrent)
        #expect(throws: SealingError.badSignature(fingerprint: publisher.publicKey.description)) {
            try SealedTorrent(parsing: bent).verifySignature(trusting: [publisher.publicKey])
        }

        // The signature moved onto a torrent whose info differs in one field (another salt).
        let other = try SealedFixture(Self.plain, randomSalt: true)
        defer { other.cleanUp() }
        var moved = other.torrent
        moved.sign(with: publisher)
        let transplanted = withTopLevel(
            TorrentSignature.dictionaryKey,
            .dictionary([
                Array(TorrentSignature.entryKey.utf8): .dictionary([
                    Array("public-key".utf8): .bytes(publisher.publicKey.bytes),
                    Array("signature".utf8): .bytes(signature.signature),
                ])
            ]), into: other.torrent)
        #expect(throws: SealingError.badSignature(fingerprint: publisher.publicKey.description)) {
            try SealedTorrent(parsing: transplanted).verifySignature(trusting: [publisher.publicKey])
        }
        #expect(
            try SealedTorrent(parsing: moved.encoded()).verifySignature(trusting: [publisher.publicKey])
                == publisher.publicKey)
    }

    @Test func hostileSignatureEntriesAreRefused() throws {
        let fixture = try SealedFixture(Self.plain)
        defer { fixture.cleanUp() }
        let key = Array(repeating: UInt8(1), count: 32)
        for hostile: BencodeValue in [
            .integer(1),
            .dictionary([Array(TorrentSignature.entryKey.utf8): .integer(1)]),
            .dictionary([Array(TorrentSignature.entryKey.utf8): .dictionary([Array("public-key".utf8): .bytes(key)])]),
            .dictionary([
                Array(TorrentSignature.entryKey.utf8): .dictionary([
                    Array("public-key".utf8): .bytes(Array(key.dropLast())), Array("signature".utf8): .bytes(key + key),
                ])
            ]),
            .dictionary([
                Array(TorrentSignature.entryKey.utf8): .dictionary([
                    Array("public-key".utf8): .bytes(key), Array("signature".utf8): .bytes(key),
                ])
            ]),
        ] {
            #expect(throws: SealingError.self, "\(hostile)") {
                try SealedTorrent(parsing: withTopLevel(TorrentSignature.dictionaryKey, hostile, into: fixture.torrent))
            }
        }
    }
}

// MARK: - Helpers

/// The torrent with a top-level entry added or replaced, as a forger would write it.
func withTopLevel(_ key: String, _ value: BencodeValue, into torrent: SealedTorrent) -> [UInt8] {
    let base = torrent.encoded()
    let root = try! BencodeDecoder(mode: .lenient).decode(base)
    var parts = root.entries!.filter { $0.key != Array(key.utf8) }.map {
        (key: $0.key, encoded: Array(base[$0.value.range]))
    }
    parts.append((Array(key.utf8), value.encoded()))
    return Bencode.encodeDictionary(preencoded: parts)
}

func withRecipients(_ entries: [BencodeValue], into torrent: SealedTorrent) throws -> [UInt8] {
    withTopLevel(KeyWrap.listKey, .list(entries), into: torrent)
}
