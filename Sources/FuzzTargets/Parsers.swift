// Stateless targets: each parses one input and checks what a successful parse promises.
#if VMSWARM_FUZZ
    import Bencode
    import Crypto
    import Metainfo
    import NIOCore
    import PeerWire
    @testable import Sealing
    import TrackerProtocol

    // MARK: Bencode

    /// Strict decoding accepts only canonical bencode, so what it accepts re-encodes to the same bytes;
    /// what lenient decoding accepts re-encodes to canonical bencode that strict decoding takes back.
    func fuzzBencode(_ input: [UInt8]) {
        let lenient = BencodeDecoder(mode: .lenient)
        let strict = BencodeDecoder(mode: .strict)
        if let value = try? strict.decodeValue(input) {
            fuzzCheck(value.encoded() == input, "strict bencode did not re-encode to its input")
        }
        guard let node = try? lenient.decode(input) else { return }
        fuzzCheck(node.range == 0..<input.count, "root node spans \(node.range), input is \(input.count) bytes")
        checkRanges(node, within: node.range)
        let canonical = node.value.encoded()
        let again: BencodeValue
        do {
            again = try strict.decodeValue(canonical)
        } catch {
            fuzzCheck(false, "canonical re-encoding refused by the strict decoder: \(error)")
            return
        }
        fuzzCheck(again == node.value, "canonical re-encoding decoded to another value")
    }

    /// Every child lies inside its parent: the metainfo parser cuts the info bytes by these ranges.
    private func checkRanges(_ node: BencodeNode, within parent: Range<Int>) {
        fuzzCheck(node.range.lowerBound >= parent.lowerBound && node.range.upperBound <= parent.upperBound,
            "node \(node.range) outside its parent \(parent)")
        if let list = node.list {
            for child in list { checkRanges(child, within: node.range) }
        } else if let entries = node.entries {
            for entry in entries {
                fuzzCheck(node.range.contains(entry.keyOffset), "key offset \(entry.keyOffset) outside \(node.range)")
                checkRanges(entry.value, within: node.range)
            }
        }
    }

    // MARK: Metainfo

    func fuzzMetainfo(_ input: [UInt8]) {
        for mode in [BencodeDecoder.Mode.lenient, .strict] {
            guard let metainfo = try? Metainfo(parsing: input, mode: mode) else { continue }
            checkMetainfo(metainfo)
            // encoded() keeps the info bytes, so the info-hash survives any edit of the outer fields.
            guard let again = try? Metainfo(parsing: metainfo.encoded(), mode: .lenient) else {
                fuzzCheck(false, "a parsed torrent's encoding does not parse")
                return
            }
            fuzzCheck(again.infoHash == metainfo.infoHash, "re-encoding changed the info-hash")
            fuzzCheck(again.info == metainfo.info, "re-encoding changed the info dictionary")
            _ = metainfo.magnetURI
        }
    }

    /// What a parsed torrent promises every later stage: consistent geometry that no arithmetic on it
    /// can overflow, and safe path components.
    func checkMetainfo(_ metainfo: Metainfo) {
        let info = metainfo.info
        let layout = info.layout
        fuzzCheck(metainfo.infoHash == InfoHash(hashingInfo: metainfo.infoBytes), "info-hash is not SHA-1 of the info bytes")
        fuzzCheck(layout.pieceLength >= 1 && layout.pieceLength <= PieceLayout.maxPieceLength, "piece length \(layout.pieceLength)")
        var total: Int64 = 0
        for file in info.files {
            fuzzCheck(file.length >= 0, "file length \(file.length)")
            let (sum, overflow) = total.addingReportingOverflow(file.length)
            fuzzCheck(!overflow, "file lengths overflow Int64")
            total = sum
            for component in file.path {
                fuzzCheck(!component.isEmpty && component != "." && component != ".." && !component.contains("/")
                    && !component.contains("\\") && !component.contains("\0"), "unsafe path component \(component.debugDescription)")
            }
        }
        fuzzCheck(total == layout.totalLength, "files add up to \(total), layout says \(layout.totalLength)")
        let expectedPieces = total == 0 ? 0 : Int((total - 1) / Int64(layout.pieceLength)) + 1
        fuzzCheck(layout.pieceCount == expectedPieces, "\(layout.pieceCount) pieces for \(total) bytes of \(layout.pieceLength)")
        fuzzCheck(info.pieceHashes.count == 20 * layout.pieceCount, "piece hashes for \(layout.pieceCount) pieces")
        guard layout.pieceCount > 0 else { return }
        // The first and last pieces: lengths, ranges, blocks and file segments agree.
        for piece in Set([PieceIndex(0), PieceIndex(layout.pieceCount - 1)]) {
            let length = layout.length(of: piece)
            fuzzCheck(length >= 1 && length <= layout.pieceLength, "\(piece) is \(length) bytes")
            let range = layout.byteRange(of: piece)
            fuzzCheck(range.count == Int64(length), "\(piece) range \(range) for \(length) bytes")
            fuzzCheck(range.upperBound <= layout.totalLength, "\(piece) ends past the torrent")
            let blocks = layout.blocks(of: piece)
            fuzzCheck(blocks.count == layout.blockCount(of: piece), "block count of \(piece)")
            fuzzCheck(blocks.reduce(0) { $0 + $1.length } == length, "blocks of \(piece) do not cover it")
            fuzzCheck(blocks.allSatisfy(layout.isValid), "an invalid block of \(piece)")
            // Segment lists are bounded by the file count; a torrent of many empty files is legal,
            // so look only when the list is small.
            if info.files.count <= 4096 {
                let segments = layout.segments(of: piece)
                fuzzCheck(segments.reduce(0) { $0 + $1.length } == length, "segments of \(piece) do not cover it")
                for segment in segments {
                    fuzzCheck(segment.fileIndex >= 0 && segment.fileIndex < info.files.count, "segment file \(segment.fileIndex)")
                    fuzzCheck(segment.offsetInFile >= 0
                        && segment.offsetInFile + Int64(segment.length) <= info.files[segment.fileIndex].length,
                        "segment \(segment) outside its file")
                }
            }
        }
        let lastRequest = BlockRequest(piece: PieceIndex(layout.pieceCount), begin: 0, length: 1)
        fuzzCheck(!layout.isValid(lastRequest), "a request past the last piece is valid")
    }

    // MARK: Sealed torrents

    /// A fixed identity and publisher: unwrapping and signature checks run on hostile input too.
    private let fuzzSite = SiteKeyPair(privateKeyBytes: [UInt8](repeating: 7, count: 32))!
    private let fuzzPublisher = PublisherKeyPair(privateKeyBytes: [UInt8](repeating: 9, count: 32))!

    func fuzzSealedTorrent(_ input: [UInt8]) {
        guard let sealed = try? SealedTorrent(parsing: input) else { return }
        checkMetainfo(sealed.metainfo)
        let parameters = sealed.parameters
        let info = sealed.metainfo.info
        fuzzCheck(parameters.pieceCount == info.pieceCount, "sealing says \(parameters.pieceCount) pieces, torrent \(info.pieceCount)")
        fuzzCheck(parameters.pieceLength == info.pieceLength, "sealed piece length \(parameters.pieceLength) vs \(info.pieceLength)")
        fuzzCheck(parameters.sealedLength == info.totalLength, "sealed length \(parameters.sealedLength) vs \(info.totalLength)")
        if parameters.pieceCount > 0 {
            for piece in Set([PieceIndex(0), PieceIndex(parameters.pieceCount - 1)]) {
                let plain = parameters.plaintextRange(of: piece)
                fuzzCheck(plain.lowerBound >= 0 && plain.upperBound <= parameters.plainLength, "plaintext of \(piece): \(plain)")
                fuzzCheck(parameters.sealedLength(of: piece) == info.layout.length(of: piece),
                    "\(piece) seals to \(parameters.sealedLength(of: piece)) bytes, the torrent has \(info.layout.length(of: piece))")
            }
        }
        _ = try? sealed.verifySignature(trusting: [fuzzPublisher.publicKey])
        _ = try? sealed.contentKey(for: fuzzSite)
        // Recipients and signature sit outside the info dictionary: re-encoding keeps the info-hash.
        guard let again = try? SealedTorrent(parsing: sealed.encoded()) else {
            fuzzCheck(false, "a parsed sealed torrent's encoding does not parse")
            return
        }
        fuzzCheck(again.metainfo.infoHash == sealed.metainfo.infoHash, "re-encoding changed the info-hash")
        fuzzCheck(again.parameters == parameters, "re-encoding changed the sealing parameters")
    }

    // MARK: Key files

    func fuzzKeyFile(_ input: [UInt8]) {
        for kind in KeyFileKind.allCases {
            guard let key = try? KeyFile.decode(input, expecting: kind, path: "fuzz") else { continue }
            fuzzCheck(key.count == KeyFile.keyLength, "a \(kind.label) file gave \(key.count) bytes")
            let written = KeyFile.encode(key, kind: kind)
            fuzzCheck((try? KeyFile.decode(written, expecting: kind, path: "fuzz")) == key, "a written \(kind.label) file reads back differently")
            switch kind {
            case .sitePrivate: _ = SiteKeyPair(privateKeyBytes: key)
            case .sitePublic: _ = SitePublicKey(bytes: key)
            case .publisherPrivate: _ = PublisherKeyPair(privateKeyBytes: key)
            case .publisherPublic: _ = PublisherPublicKey(bytes: key)
            case .contentKey: fuzzCheck(ContentKey(bytes: key) != nil, "32 bytes are not a content key")
            }
        }
    }

    // MARK: BEP 10 and BEP 11 payloads

    func fuzzExtensions(_ input: [UInt8]) {
        let payload = ByteBuffer(bytes: input)
        if let handshake = try? ExtensionHandshake(payload: payload) {
            // What we decoded we can encode, and the encoding decodes (the client name is cut at 100
            // bytes, so equality is checked on the fields that survive exactly).
            guard let again = try? ExtensionHandshake(payload: ByteBuffer(bytes: handshake.encoded())) else {
                fuzzCheck(false, "an extension handshake's encoding does not decode")
                return
            }
            fuzzCheck(again.messageIDs == handshake.messageIDs && again.listenPort == handshake.listenPort
                && again.requestQueue == handshake.requestQueue, "extension handshake changed by re-encoding")
        }
        if let pex = try? PeerExchange(payload: payload) {
            fuzzCheck(pex.added.count <= 2 * PeerExchange.maxPeers && pex.dropped.count <= 2 * PeerExchange.maxPeers,
                "PEX gave \(pex.added.count) added, \(pex.dropped.count) dropped")
            guard let again = try? PeerExchange(payload: ByteBuffer(bytes: pex.encoded())) else {
                fuzzCheck(false, "a PEX message's encoding does not decode")
                return
            }
            // The same peers, as sets: a v4-mapped address in `added6` is an IPv4 peer and goes out in
            // `added`, so the order of the lists may change (the first crash of this target was that).
            fuzzCheck(Set(again.added) == Set(pex.added) && Set(again.dropped) == Set(pex.dropped),
                "PEX message changed by re-encoding")
        }
    }

    // MARK: Tracker answers (the client side)

    func fuzzTrackerAnswer(_ input: [UInt8]) {
        if let answer = try? AnnounceResponse(decoding: input) {
            fuzzCheck(answer.interval >= 0, "negative interval")
            fuzzCheck(answer.peers.count <= AnnounceResponse.maxPeers, "\(answer.peers.count) peers")
            for compact in [true, false] {
                let encoded = answer.encoded(compact: compact, includePeerIDs: !compact)
                guard let again = try? AnnounceResponse(decoding: encoded) else {
                    fuzzCheck(false, "an announce answer's encoding (compact \(compact)) does not decode")
                    return
                }
                fuzzCheck(again.interval == answer.interval && again.peers.count == answer.peers.count,
                    "announce answer changed by re-encoding (compact \(compact))")
                fuzzCheck(again.treeParents == answer.treeParents, "tree parents changed by re-encoding (compact \(compact))")
            }
        }
        if let scrape = try? ScrapeResponse(decoding: input) {
            guard let again = try? ScrapeResponse(decoding: scrape.encoded()) else {
                fuzzCheck(false, "a scrape answer's encoding does not decode")
                return
            }
            fuzzCheck(again == scrape, "scrape answer changed by re-encoding")
        }
    }
#endif
