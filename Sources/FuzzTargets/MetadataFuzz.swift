// BEP 9: the magnet link parser, the ut_metadata codec, and a MetadataFetch fed what peers send.
#if VMSWARM_FUZZ
    import Metainfo
    import NIOCore
    import PeerWire

    /// The first byte chooses: 0 a magnet link (the rest as text), 1 one ut_metadata payload, else a
    /// fetch from three peers driven by the rest (who joins with which size, and what each answers).
    func fuzzMetadata(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        switch reader.byte() % 3 {
        case 0: fuzzMagnet(reader.rest())
        case 1: fuzzMetadataMessage(reader.rest())
        default: fuzzMetadataFetch(&reader)
        }
    }

    /// What parses writes back (through `uri`) to a link that parses to the same thing, unless
    /// percent-encoding made it longer than the limit.
    private func fuzzMagnet(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let link = try? MagnetLink(parsing: text) else { return }
        fuzzCheck(link.trackers.count <= MagnetLink.maxTrackers && link.peers.count <= MagnetLink.maxPeers
            && link.webSeeds.count <= MagnetLink.maxWebSeeds, "magnet counts over their caps")
        let uri = link.uri
        guard uri.utf8.count <= MagnetLink.maxLength else { return }
        do {
            let again = try MagnetLink(parsing: uri)
            fuzzCheck(again == link, "magnet re-parsed to another link: \(uri)")
        } catch {
            fuzzCheck(false, "magnet written by uri refused: \(error) (\(uri))")
        }
    }

    private func fuzzMetadataMessage(_ bytes: [UInt8]) {
        guard let message = try? MetadataMessage(payload: ByteBuffer(bytes: bytes)) else { return }
        fuzzCheck(message.piece >= 0 && message.piece < MetadataPiece.maxPieces, "piece \(message.piece) accepted")
        if case .data(_, let size, let data) = message {
            fuzzCheck(size >= 1 && size <= MetadataPiece.maxMetadataSize && data.count <= MetadataPiece.length, "data message out of bounds")
        }
        fuzzCheck((try? MetadataMessage(payload: message.encoded())) == message, "ut_metadata message did not round-trip")
    }

    /// Three peers; peer 0 serves the real dictionary when asked, the others answer as the input
    /// says. Whatever they do: no trap, completion only with bytes of the right hash, no request
    /// for a piece outside the size being fetched.
    private func fuzzMetadataFetch(_ reader: inout FuzzReader) {
        let metadata = (0..<(20_000 + Int(reader.u16()))).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let hash = InfoHash(hashingInfo: metadata)
        var fetch = MetadataFetch(infoHash: hash)
        var now = 0.0
        var connected: Set<Int> = []
        var pending: [(Int, Int)] = []
        func run(_ actions: [MetadataFetch.Action]) {
            for action in actions {
                switch action {
                case .completed(let bytes):
                    fuzzCheck(InfoHash(hashingInfo: bytes) == hash, "completed with bytes of another hash")
                case .disconnect(let peer, _):
                    connected.remove(peer)
                case .send(let peer, .request(let piece)):
                    fuzzCheck(piece >= 0 && piece < MetadataPiece.maxPieces, "asked for piece \(piece)")
                    pending.append((peer, piece))
                case .send:
                    break
                }
            }
        }
        var steps = 0
        while !reader.isAtEnd && steps < 400 && !fetch.isFinished {
            steps += 1
            let op = reader.byte()
            let peer = Int(op >> 6) % 3
            switch op & 7 {
            case 0:
                let size = peer == 0 ? metadata.count : Int(reader.u32())
                connected.insert(peer)
                run(fetch.peerJoined(peer, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: size > 0 ? size : nil), now: now))
            case 1:
                connected.remove(peer)
                run(fetch.peerLeft(peer, now: now))
            case 2:
                now += Double(reader.byte())
                run(fetch.tick(now: now))
            case 3:
                // The oldest request is answered: honestly by peer 0, else with the input's bytes.
                guard !pending.isEmpty else { continue }
                let (asked, piece) = pending.removeFirst()
                guard connected.contains(asked) else { continue }
                if asked == 0, let length = MetadataPiece.length(of: piece, size: metadata.count) {
                    let start = piece * MetadataPiece.length
                    run(fetch.received(.data(piece: piece, totalSize: metadata.count, bytes: Array(metadata[start..<start + length])), from: 0, now: now))
                } else {
                    let length = Int(reader.u16()) % (MetadataPiece.length + 1)
                    run(fetch.received(.data(piece: piece, totalSize: Int(reader.u32()) % (1 << 24), bytes: reader.take(length)), from: asked, now: now))
                }
            default:
                // Anything a peer can send, parsed as the runtime would.
                let payload = reader.take(Int(reader.byte()))
                guard connected.contains(peer), let message = try? MetadataMessage(payload: ByteBuffer(bytes: payload)) else { continue }
                run(fetch.received(message, from: peer, now: now))
            }
        }
    }
#endif
