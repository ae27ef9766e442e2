// The peer wire, stateful: a handshake, a byte stream cut into reads at fuzz-chosen points and framed,
// and a PeerSession fed every message, as one connection of a node would see them.
#if VMSWARM_FUZZ
    import Metainfo
    import NIOCore
    import PeerWire

    /// Small torrents of a few shapes: one block per piece, several, a short last piece, one piece.
    func fuzzLayout(_ choice: UInt8) -> PieceLayout {
        let shapes: [(Int, [Int64])] = [
            (16 << 10, [5 * (16 << 10)]),
            (64 << 10, [100_000, 1, 0, 60_000]),
            (32 << 10, [32 << 10]),
            (16 << 10 + 3, [3 * (16 << 10) + 100]),
        ]
        let (pieceLength, files) = shapes[Int(choice) % shapes.count]
        // The shapes are valid layouts; a failure here is a bug in this table.
        guard let layout = try? PieceLayout(pieceLength: pieceLength, fileLengths: files) else {
            fuzzCheck(false, "fuzz layout \(choice) invalid")
            fatalError("unreachable")
        }
        return layout
    }

    let fuzzInfoHash = InfoHash(bytes: [UInt8](repeating: 0x11, count: 20))!
    let fuzzOurID = PeerID(bytes: Array("-VS0100-ourselves-00".utf8))!

    func fuzzPeerWire(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let config = reader.byte()
        let cuts = reader.u16()
        let layout = fuzzLayout(config >> 4)
        let ours = Handshake(infoHash: fuzzInfoHash, peerID: fuzzOurID, fast: config & 1 != 0, extensions: true)
        var stream = reader.rest()

        // The handshake, when the input brings one (bit 3); else a fixed one with the fast bit from bit 1.
        var theirs = Handshake(infoHash: fuzzInfoHash, peerID: PeerID(bytes: [UInt8](repeating: 0x22, count: 20))!,
            fast: config & 2 != 0, extensions: true)
        if config & 8 != 0 {
            var buffer = ByteBuffer(bytes: stream)
            do {
                guard let read = try Handshake.read(from: &buffer) else { return }
                fuzzCheck(buffer.readerIndex == Handshake.length, "handshake read \(buffer.readerIndex) bytes")
                var again = ByteBuffer()
                read.write(to: &again)
                fuzzCheck(Array(again.readableBytesView) == Array(stream.prefix(Handshake.length)), "handshake re-encoding differs")
                theirs = read
                stream.removeFirst(Handshake.length)
            } catch {
                return
            }
        }

        // The reference: the whole stream decoded from one buffer.
        let decoder = PeerWireDecoder()
        var whole = ByteBuffer(bytes: stream)
        var reference: [PeerMessage] = []
        var referenceFailed = false
        do {
            while let message = try decoder.next(from: &whole) { reference.append(message) }
        } catch {
            referenceFailed = true
        }

        // The same stream in reads of fuzz-chosen sizes (1 byte up to 4 KiB, from the seeded cuts).
        var framer = PeerWireFramer(decoder: decoder)
        var framed: [PeerMessage] = []
        var framerFailed = false
        var random = SeededRandom(seed: UInt64(cuts) &* 0x9E37_79B9_7F4A_7C15 | 1)
        var offset = 0
        while offset < stream.count && !framerFailed {
            let size = cuts == 0 ? stream.count : 1 + Int(random.next() % (config & 4 != 0 ? 16 : 4096))
            let end = min(stream.count, offset + size)
            do {
                framed += try framer.messages(in: ByteBuffer(bytes: stream[offset..<end]))
            } catch {
                framerFailed = true
            }
            fuzzCheck(framer.pendingBytes <= 4 + decoder.maxMessageLength, "framer holds \(framer.pendingBytes) bytes")
            offset = end
        }
        fuzzCheck(framerFailed == referenceFailed, "framer failed: \(framerFailed), one-buffer decoder failed: \(referenceFailed)")
        if !framerFailed {
            fuzzCheck(framed == reference, "split reads gave \(framed.count) messages, one buffer \(reference.count)")
        } else {
            fuzzCheck(framed.count <= reference.count && Array(reference.prefix(framed.count)) == framed,
                "split reads gave messages the one-buffer decoder did not")
        }

        // Every message we can decode encodes back to bytes that decode to it.
        for message in reference {
            if case .unknown = message { continue }
            var buffer = ByteBuffer()
            PeerWireEncoder.write(message, to: &buffer)
            let again = try? decoder.next(from: &buffer)
            fuzzCheck(again == message && buffer.readableBytes == 0, "\(message) does not survive re-encoding")
        }

        // The session: we unchoked the peer (bit 2 of the cuts) and asked for the first piece's blocks.
        var session = PeerSession(layout: layout, ourHandshake: ours, theirHandshake: theirs)
        var asked: Set<BlockRequest> = []
        if cuts & 0x8000 != 0 { session.sent(.unchoke) }
        if cuts & 0x4000 != 0 {
            session.sent(.interested)
            for block in layout.blocks(of: PieceIndex(0)) + layout.blocks(of: PieceIndex(layout.pieceCount - 1)) {
                session.sent(.request(block))
                asked.insert(block)
            }
            if cuts & 0x2000 != 0, let first = asked.first {
                session.sent(.cancel(first))
            }
        }
        for message in reference {
            let events: [PeerSession.Event]
            do {
                events = try session.receive(message)
            } catch {
                break  // the connection is dropped: nothing after this is read
            }
            for event in events {
                switch event {
                case .requested(let request):
                    fuzzCheck(layout.isValid(request), "session passed on an invalid request \(request)")
                    fuzzCheck(!session.amChoking, "session passed on a request while we choke")
                case .block(let block, let data):
                    fuzzCheck(asked.contains(block), "session passed on a block we never asked for: \(block)")
                    fuzzCheck(data.readableBytes == block.length && layout.isValid(block), "block \(block) with \(data.readableBytes) bytes")
                case .has(let piece), .suggested(let piece), .allowedFast(let piece):
                    fuzzCheck(layout.contains(piece), "session passed on \(piece), outside the torrent")
                case .hasPieces(let pieces):
                    fuzzCheck(pieces.pieceCount == layout.pieceCount, "piece set of \(pieces.pieceCount)")
                case .rejected(let request), .lateBlock(let request):
                    fuzzCheck(asked.contains(request), "reject or late block for \(request), never asked")
                default:
                    break
                }
            }
            fuzzCheck(session.peerRequests.count <= PeerSession.maxPeerRequests, "\(session.peerRequests.count) queued requests")
            fuzzCheck(session.outstanding.isSubset(of: asked), "outstanding requests we never made")
            fuzzCheck(session.peerPieces.pieceCount == layout.pieceCount, "peer piece set size")
        }
    }
#endif
