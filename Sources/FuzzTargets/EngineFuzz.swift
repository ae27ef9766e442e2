// The swarm engine, stateful: up to four peers connect, send messages (structured and raw), answer
// requests with good or bad data, leave; time passes; the harness plays an honest runtime (it hashes
// what the engine asks it to verify, reads what it asks to read) and checks what the engine does.
#if VMSWARM_FUZZ
    import Crypto
    import Metainfo
    import NIOCore
    import PeerWire
    import Swarm

    /// A torrent of one of the fuzz layouts, its real bytes and hashes.
    struct FuzzTorrent {
        let info: TorrentInfo
        let content: [UInt8]

        init(shape: UInt8) {
            let layout = fuzzLayout(shape)
            content = (0..<Int(layout.totalLength)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9 &+ 7) }
            var hashes: [UInt8] = []
            for piece in layout.pieces {
                let range = layout.byteRange(of: piece)
                hashes += Insecure.SHA1.hash(data: content[Int(range.lowerBound)..<Int(range.upperBound)])
            }
            let info = try? TorrentInfo(name: "fuzz.img", files: layout.fileLengths.enumerated().map {
                    FileEntry(path: ["f\($0.offset)"], length: $0.element)
                }, isMultiFile: layout.fileLengths.count > 1, privacy: .unspecified, pieceLength: layout.pieceLength, pieceHashes: hashes)
            guard let info else { fatalError("fuzz torrent invalid") }
            self.info = info
        }

        func bytes(_ block: BlockRequest) -> [UInt8] {
            let start = Int(info.layout.offset(of: block.piece)) + block.begin
            return Array(content[start..<start + block.length])
        }

        func piece(_ piece: PieceIndex) -> [UInt8] {
            let range = info.layout.byteRange(of: piece)
            return Array(content[Int(range.lowerBound)..<Int(range.upperBound)])
        }
    }

    let fuzzTorrents: [FuzzTorrent] = (0..<4).map { FuzzTorrent(shape: UInt8($0)) }

    private struct FakePeer {
        var connected = false
        /// Blocks the engine asked this peer for and has not cancelled.
        var asked: [BlockRequest] = []
        /// What this peer told the engine it holds.
        var pieces: Bitfield
    }

    func fuzzEngine(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let config = reader.byte()
        let torrent = fuzzTorrents[Int(config & 3)]
        let layout = torrent.info.layout
        var have = Bitfield(pieceCount: layout.pieceCount, all: config & 0x0C == 0x0C)
        if config & 0x0C == 0x04 {
            for piece in layout.pieces where piece.value % 2 == 0 { _ = have.insert(piece) }
        }
        let ours = Handshake(infoHash: fuzzInfoHash, peerID: fuzzOurID)
        var engine = SwarmEngine(info: torrent.info, have: have, handshake: ours, seed: UInt64(config))
        var peers = (0..<4).map { _ in FakePeer(pieces: Bitfield(pieceCount: layout.pieceCount)) }
        var truth = have  // pieces the engine may hold: those it started with and those that verified
        var verifying: [(PieceIndex, [UInt8])] = []
        var reads: [(SwarmEngine.Peer, BlockRequest)] = []
        var now = 0.0
        var corrupted = false  // whether any wrong byte has been handed to the engine
        // Which peers (each slot is one identity: the same id and address on every connect) ever
        // sent a wrong byte. A hash failure may drop only those, whatever the others sent.
        var lied = [Bool](repeating: false, count: peers.count)

        func apply(_ actions: [SwarmEngine.Action]) {
            var queue = actions[...]
            while let action = queue.popFirst() {
                switch action {
                case .send(let peer, let message):
                    guard peers[peer].connected else { continue }
                    switch message {
                    case .request(let block):
                        fuzzCheck(layout.isValid(block), "engine asked for an invalid block \(block)")
                        fuzzCheck(!engine.have[block.piece], "engine asked for \(block), a piece it holds")
                        fuzzCheck(peers[peer].pieces[block.piece],
                            "engine asked peer \(peer) for \(block), which it never announced")
                        peers[peer].asked.append(block)
                    case .cancel(let block):
                        peers[peer].asked.removeAll { $0 == block }
                    case .piece(let piece, let begin, let data):
                        let block = BlockRequest(piece: piece, begin: begin, length: data.readableBytes)
                        fuzzCheck(truth[piece], "engine uploaded \(block) of a piece it never verified")
                        fuzzCheck(Array(data.readableBytesView) == torrent.bytes(block), "engine uploaded wrong bytes for \(block)")
                    case .have(let piece):
                        fuzzCheck(truth[piece], "engine announced \(piece), which never verified")
                    case .bitfield(let bytes):
                        fuzzCheck((try? Bitfield(bytes: bytes, pieceCount: layout.pieceCount)) == engine.have, "bitfield is not what we hold")
                    case .haveAll:
                        fuzzCheck(engine.have.isComplete, "have-all while incomplete")
                    default:
                        break
                    }
                case .disconnect(let peer, let reason):
                    if reason.contains("failed the hash") {
                        fuzzCheck(lied[peer], "peer \(peer) dropped for a hash failure though it never sent a bad byte: \(reason)")
                    }
                    peers[peer].connected = false
                    peers[peer].asked = []
                    reads.removeAll { $0.0 == peer }
                    queue += engine.peerDisconnected(peer)  // the runtime reports the closed channel
                case .verify(let piece, let data):
                    fuzzCheck(layout.contains(piece) && data.count == layout.length(of: piece), "verify \(piece) with \(data.count) bytes")
                    fuzzCheck(!verifying.contains { $0.0 == piece }, "\(piece) verified twice at once")
                    verifying.append((piece, data))
                case .readBlock(let peer, let block):
                    fuzzCheck(truth[block.piece] && layout.isValid(block), "engine read \(block), which it does not hold")
                    reads.append((peer, block))
                case .completed:
                    fuzzCheck(engine.have.isComplete, "completed while pieces are missing")
                case .connect(let addresses):
                    fuzzCheck(addresses.count <= 2 * PeerExchange.maxPeers, "asked to dial \(addresses.count) peers at once")
                }
            }
            fuzzCheck(engine.have.fuzzIsSubset(of: truth), "engine holds a piece that never verified")
            fuzzCheck(engine.downloaded >= 0 && engine.uploaded >= 0 && engine.wasted >= 0, "negative counters")
            fuzzCheck(engine.peerCount == peers.count(where: { $0.connected }), "engine has \(engine.peerCount) peers, the runtime \(peers.count(where: { $0.connected }))")
        }

        func blockChoice(_ byte: UInt8, peer: Int) -> BlockRequest {
            let piece = PieceIndex(Int(byte) % layout.pieceCount)
            let blocks = layout.blocks(of: piece)
            return blocks[Int(byte >> 4) % blocks.count]
        }

        func deliver(_ message: PeerMessage, from peer: Int) {
            switch message {
            case .have(let piece) where layout.contains(piece):
                _ = peers[peer].pieces.insert(piece)
            case .bitfield(let bytes):
                if let pieces = try? Bitfield(bytes: bytes, pieceCount: layout.pieceCount) {
                    pieces.forEachPiece { _ = peers[peer].pieces.insert($0) }
                }
            case .haveAll:
                peers[peer].pieces = Bitfield(pieceCount: layout.pieceCount, all: true)
            case .allowedFast(let piece) where layout.contains(piece):
                // A peer that allows a piece may be asked for it while choking; it still has to hold it,
                // but the engine takes allowed-fast as a hint only: do not flag requests for it.
                _ = piece
            case .piece(let piece, let begin, let data):
                // Raw frames can carry blocks too: whatever is not the torrent's bytes is a lie.
                let block = BlockRequest(piece: piece, begin: begin, length: data.readableBytes)
                if !layout.isValid(block) || Array(data.readableBytesView) != torrent.bytes(block) {
                    lied[peer] = true
                    corrupted = true
                }
            default:
                break
            }
            apply(engine.received(message, from: peer))
        }

        var steps = 0
        while !reader.isAtEnd && steps < 400 {
            steps += 1
            let op = reader.byte()
            let peer = Int(op >> 4) & 3
            switch op % 13 {
            case 0:  // a peer connects
                guard !peers[peer].connected else { continue }
                let flags = reader.byte()
                let id = PeerID(bytes: [UInt8](repeating: UInt8(peer + 1), count: 20))!
                let theirs = Handshake(infoHash: fuzzInfoHash, peerID: id, fast: flags & 1 != 0, extensions: flags & 2 != 0)
                peers[peer] = FakePeer(connected: true, pieces: Bitfield(pieceCount: layout.pieceCount))
                let address = PeerAddress(ip: [127, 0, 0, UInt8(peer + 1)], port: 6881)
                apply(engine.peerConnected(peer, handshake: theirs, address: address, outgoing: flags & 4 != 0))
            case 1:  // a peer leaves
                guard peers[peer].connected else { continue }
                peers[peer].connected = false
                peers[peer].asked = []
                reads.removeAll { $0.0 == peer }
                apply(engine.peerDisconnected(peer))
            case 2:  // raw bytes, framed as one message
                let length = Int(reader.byte())
                var frame = ByteBuffer()
                frame.writeInteger(UInt32(length))
                frame.writeBytes(reader.take(length))
                guard peers[peer].connected else { continue }
                guard let message = (try? PeerWireDecoder().next(from: &frame)) ?? nil else {
                    apply([.disconnect(peer, reason: "undecodable")])
                    continue
                }
                deliver(message, from: peer)
            case 3:  // a common message
                guard peers[peer].connected else { continue }
                let kind = reader.byte()
                let piece = PieceIndex(Int(reader.byte()) % (layout.pieceCount + 1))
                let message: PeerMessage
                switch kind % 9 {
                case 0: message = .bitfield(Bitfield(pieceCount: layout.pieceCount, all: true).bytes)
                case 1: message = .haveAll
                case 2: message = .have(piece)
                case 3: message = .unchoke
                case 4: message = .choke
                case 5: message = .interested
                case 6: message = .notInterested
                case 7: message = .allowedFast(piece)
                default: message = .suggest(piece)
                }
                deliver(message, from: peer)
            case 4:  // the peer answers one of our requests, with good or bad bytes
                guard peers[peer].connected, !peers[peer].asked.isEmpty else { continue }
                let choice = reader.byte()
                let block = peers[peer].asked.remove(at: Int(choice & 0x7F) % peers[peer].asked.count)
                var bytes = torrent.bytes(block)
                if choice & 0x80 != 0 { bytes[Int(reader.byte()) % bytes.count] ^= 0xFF }
                deliver(.piece(block.piece, begin: block.begin, block: ByteBuffer(bytes: bytes)), from: peer)
            case 5:  // the peer asks for a block, or cancels one
                guard peers[peer].connected else { continue }
                let block = blockChoice(reader.byte(), peer: peer)
                deliver(reader.bool() ? .request(block) : .cancel(block), from: peer)
            case 6:  // time passes
                let step = reader.byte()
                now += step < 200 ? Double(step) / 20 : Double(step - 199) * 30
                apply(engine.tick(now: now))
            case 7:  // a hash result comes back
                guard !verifying.isEmpty else { continue }
                let (piece, data) = verifying.remove(at: Int(reader.byte()) % verifying.count)
                let valid = data == torrent.piece(piece)
                if !corrupted { fuzzCheck(valid, "\(piece) assembled wrong though no bad byte was sent") }
                if valid { _ = truth.insert(piece) }
                apply(engine.pieceChecked(piece, valid: valid))
            case 8:  // a block read comes back
                guard !reads.isEmpty else { continue }
                let (reader_, block) = reads.remove(at: Int(reader.byte()) % reads.count)
                apply(engine.blockRead(block, data: ByteBuffer(bytes: torrent.bytes(block)), for: reader_))
            case 9:  // a whole piece from the booster, good or bad
                let choice = reader.byte()
                let piece = PieceIndex(Int(choice & 0x7F) % layout.pieceCount)
                var bytes = torrent.piece(piece)
                if choice & 0x80 != 0 {
                    bytes[0] ^= 1
                    corrupted = true
                }
                if let actions = engine.pieceArrived(piece, data: bytes) { apply(actions) }
            case 10:  // the booster defers pieces or avoids a host
                let choice = reader.byte()
                if choice & 1 != 0 {
                    apply(engine.avoidPeers(at: choice & 2 != 0 ? [127, 0, 0, UInt8(peer + 1)] : nil))
                } else if choice & 2 != 0 {
                    apply(engine.deferPieces(nil))
                } else {
                    var deferred = Bitfield(pieceCount: layout.pieceCount)
                    for piece in layout.pieces where (choice >> 2) & (1 << UInt8(piece.value % 6)) != 0 { _ = deferred.insert(piece) }
                    apply(engine.deferPieces(deferred))
                }
            case 11:  // part of a piece from the booster; the missing ranges hold garbage
                let piece = PieceIndex(Int(reader.byte()) % layout.pieceCount)
                let length = layout.length(of: piece)
                var missing: [Range<Int>] = []
                var cursor = 0
                for _ in 0..<Int(reader.byte() % 4) {
                    let start = cursor + Int(reader.u16()) % max(1, length - cursor)
                    let end = min(length, start + 1 + Int(reader.u16()))
                    guard start < end else { break }
                    missing.append(start..<end)
                    cursor = end
                    if cursor >= length { break }
                }
                var bytes = torrent.piece(piece)
                for range in missing { for index in range { bytes[index] = 0xEE } }
                apply(engine.piecePartlyArrived(piece, data: bytes, missing: missing))
            default:  // the peer rejects one of our requests
                guard peers[peer].connected, !peers[peer].asked.isEmpty else { continue }
                let block = peers[peer].asked.remove(at: Int(reader.byte()) % peers[peer].asked.count)
                deliver(.reject(block), from: peer)
            }
        }

    }

    extension Bitfield {
        func fuzzIsSubset(of other: Bitfield) -> Bool { !hasPieces(notIn: other) }
    }
#endif
