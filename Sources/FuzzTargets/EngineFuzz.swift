// The swarm engine, stateful: up to four peers connect, send messages (structured and raw), answer
// requests with good or bad data, leave; time passes; the harness plays an honest runtime (it hashes
// what the engine asks it to verify, reads what it asks to read) and checks what the engine does.
// The runtime also changes the topology (`setPolicy`: a mesh, a mesh without peer exchange, a tree
// with chosen parents and children), urgent pieces, the piece order and the round trip it measured;
// peers fetch the info dictionary over ut_metadata from an engine that serves it.
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
        /// We unchoked it (and have not choked it since).
        var unchoked = false
        /// Its latest extension handshake (BEP 10), as the engine's session read it.
        var extensions: ExtensionHandshake?
        /// ut_metadata data answers sent to it on this connection.
        var metadataAnswers = 0
    }

    /// The identity of fuzz peer `slot`: the same id on every connect.
    private func fuzzPeerID(_ slot: Int) -> PeerID { PeerID(bytes: [UInt8](repeating: UInt8(slot + 1), count: 20))! }
    private func fuzzPeerAddress(_ slot: Int) -> PeerAddress { PeerAddress(ip: [127, 0, 0, UInt8(slot + 1)], port: 6881)! }

    /// Round trips a transport could report, the nonsense ones first.
    private let fuzzRoundTrips: [Double] = [
        .nan, .signalingNaN, .infinity, -.infinity, -1, -0.0, 0, .leastNonzeroMagnitude, 1e-6, 0.05, 0.3, 1, 5, 5.000_001, 1e9,
        .greatestFiniteMagnitude,
    ]

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
        // The info dictionary served over ut_metadata (BEP 9), as the runtime sets it for a torrent.
        let infoBytes = torrent.info.encoded()
        if config & 0x10 != 0 { engine.metadata = MetadataServer(metadata: infoBytes) }
        // The topology the runtime last gave the engine (`setPolicy`); the engine starts with a mesh.
        var policy: any SwarmPolicy = MeshPolicy()
        var peers = (0..<4).map { _ in FakePeer(pieces: Bitfield(pieceCount: layout.pieceCount)) }
        var truth = have  // pieces the engine may hold: those it started with and those that verified
        var verifying: [(PieceIndex, [UInt8])] = []
        var reads: [(SwarmEngine.Peer, BlockRequest)] = []
        var now = 0.0
        var corrupted = false  // whether any wrong byte has been handed to the engine
        // Which peers (each slot is one identity: the same id and address on every connect) ever
        // sent a wrong byte. A hash failure may drop only those, whatever the others sent.
        var lied = [Bool](repeating: false, count: peers.count)

        func facts(_ slot: Int) -> PeerFacts { PeerFacts(id: fuzzPeerID(slot)) }

        /// A ut_metadata message the engine sent: a piece of the info dictionary as it is, or a reject.
        func checkMetadataAnswer(_ payload: ByteBuffer, to peer: Int) {
            guard let message = try? MetadataMessage(payload: payload) else {
                fuzzCheck(false, "engine sent peer \(peer) a ut_metadata message that does not decode")
                return
            }
            switch message {
            case .data(let piece, let totalSize, let bytes):
                guard let server = engine.metadata else {
                    fuzzCheck(false, "engine serves metadata it was not given")
                    return
                }
                let start = piece * MetadataPiece.length
                fuzzCheck(totalSize == infoBytes.count && start < infoBytes.count
                    && bytes == Array(infoBytes[start..<min(infoBytes.count, start + MetadataPiece.length)]),
                    "metadata piece \(piece) (\(bytes.count) bytes of \(totalSize)) is not the info dictionary's")
                peers[peer].metadataAnswers += 1
                fuzzCheck(peers[peer].metadataAnswers <= server.maxAnswersPerPeer, "\(peers[peer].metadataAnswers) metadata answers to one peer")
            case .reject:
                break
            case .request:
                fuzzCheck(false, "engine asked peer \(peer) for metadata")
            }
        }

        func apply(_ actions: [SwarmEngine.Action]) {
            var queue = actions[...]
            while let action = queue.popFirst() {
                switch action {
                case .send(let peer, let message):
                    guard peers[peer].connected else { continue }
                    switch message {
                    case .request(let block):
                        fuzzCheck(policy.asks(facts(peer)), "engine asked peer \(peer) for \(block), which its policy does not ask")
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
                    case .interested:
                        fuzzCheck(policy.asks(facts(peer)), "engine told peer \(peer) it is interested, though its policy does not ask it")
                    case .unchoke:
                        fuzzCheck(policy.serves(facts(peer)), "engine unchoked peer \(peer), which its policy does not serve")
                        peers[peer].unchoked = true
                    case .choke:
                        peers[peer].unchoked = false
                    case .extended(let id, let payload) where id != 0:
                        let named = peers[peer].extensions?.messageIDs ?? [:]
                        fuzzCheck(named.values.contains(id), "engine sent extension message \(id) to peer \(peer), which never named it")
                        if id == named["ut_pex"] && id != named["ut_metadata"] {
                            fuzzCheck(policy.exchangesPeers, "peer exchange sent under a policy without it")
                        }
                        if id == named["ut_metadata"] && id != named["ut_pex"] { checkMetadataAnswer(payload, to: peer) }
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
                    fuzzCheck(policy.exchangesPeers && addresses.allSatisfy { policy.dials($0) }, "asked to dial \(addresses) against the policy")
                }
            }
            for slot in peers.indices where peers[slot].connected {
                let known = facts(slot)
                fuzzCheck(policy.admits(known), "peer \(slot) stays connected though the policy does not admit it")
                fuzzCheck(!peers[slot].unchoked || policy.serves(known), "peer \(slot) stays unchoked though the policy does not serve it")
                fuzzCheck(policy.asks(known) || engine.waitingSince(slot) == nil,
                    "requests stay outstanding at peer \(slot), which the policy does not ask")
            }
            let urgent = engine.urgentPieces
            fuzzCheck(urgent.count <= SwarmEngine.maximumUrgentPieces && Set(urgent).count == urgent.count
                && urgent.allSatisfy { layout.contains($0) && !engine.have[$0] }, "urgent pieces \(urgent) (holding \(engine.have))")
            fuzzCheck(engine.have.fuzzIsSubset(of: truth), "engine holds a piece that never verified")
            fuzzCheck(engine.downloaded >= 0 && engine.uploaded >= 0 && engine.wasted >= 0, "negative counters")
            fuzzCheck(engine.peerCount == peers.count(where: { $0.connected }), "engine has \(engine.peerCount) peers, the runtime \(peers.count(where: { $0.connected }))")
        }

        /// Pieces named by the input: in range, out of it (either side) or repeated.
        func pieceList(_ count: Int) -> [PieceIndex] {
            (0..<count).map { _ in PieceIndex(Int(Int8(bitPattern: reader.byte())) % (layout.pieceCount + 2)) }
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
            case .extended(0, let payload):
                if let handshake = try? ExtensionHandshake(payload: payload) { peers[peer].extensions = handshake }
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
            switch op % 18 {
            case 0:  // a peer connects
                guard !peers[peer].connected else { continue }
                let flags = reader.byte()
                let theirs = Handshake(infoHash: fuzzInfoHash, peerID: fuzzPeerID(peer), fast: flags & 1 != 0, extensions: flags & 2 != 0)
                peers[peer] = FakePeer(connected: true, pieces: Bitfield(pieceCount: layout.pieceCount))
                apply(engine.peerConnected(peer, handshake: theirs, address: fuzzPeerAddress(peer), outgoing: flags & 4 != 0))
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
                // The group brought it to our peers too (its `have`s wait for the tick), or a web seed to us alone.
                if let actions = engine.pieceArrived(piece, data: bytes, reachedPeers: reader.byte() & 1 != 0) { apply(actions) }
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
            case 12:  // the peer rejects one of our requests
                guard peers[peer].connected, !peers[peer].asked.isEmpty else { continue }
                let block = peers[peer].asked.remove(at: Int(reader.byte()) % peers[peer].asked.count)
                deliver(.reject(block), from: peer)
            case 13:  // the runtime changes the topology: a mesh, a mesh without peer exchange, a pool node, a tree
                let choice = reader.byte()
                switch choice & 3 {
                case 0:
                    policy = MeshPolicy()
                case 1:
                    // Without peer exchange; with some fuzz peers in our rack (the rest across its
                    // uplink) when the choice says so.
                    let rack = (0..<4).filter { choice & (4 << $0) != 0 }.compactMap { IPNetwork(fuzzPeerAddress($0).host) }
                    policy = MeshPolicy(exchangesPeers: false, rack: rack)
                case 3:
                    // A pool node: some fuzz peers in the site (near), some of those its sibling pool
                    // nodes; the rest of the peers are the WAN (far). Siblings come and go as peers do.
                    let more = reader.byte()
                    let site = (0..<4).filter { choice & (4 << $0) != 0 }.compactMap { IPNetwork(fuzzPeerAddress($0).host) }
                    let siblings = (0..<4).filter { more & (1 << $0) != 0 }.map { fuzzPeerAddress($0).ip }
                    policy = PoolPolicy(site: site + [IPNetwork("127.0.0.9")!], ownAddress: [127, 0, 0, 9], siblings: siblings,
                        pieceCount: layout.pieceCount)
                default:
                    // Parents and children among the fuzz peers (a parent known by address or by id
                    // alone), maybe a parent that never connects; strangers served or refused.
                    let more = reader.byte()
                    var parents: [PeerID: PeerAddress?] = [:]
                    var children: [PeerID: PeerAddress?] = [:]
                    for slot in 0..<4 {
                        if choice & (4 << slot) != 0 {
                            parents.updateValue(more & (1 << slot) != 0 ? fuzzPeerAddress(slot) : nil, forKey: fuzzPeerID(slot))
                        } else if more & (16 << slot) != 0 {
                            children.updateValue(nil, forKey: fuzzPeerID(slot))
                        }
                    }
                    if choice & 0x80 != 0 { parents[PeerID(bytes: [UInt8](repeating: 0x77, count: 20))!] = PeerAddress(ip: [10, 9, 9, 9], port: 1)! }
                    policy = TreePolicy(parents: parents, children: children, strangers: choice & 0x40 != 0 ? .refuse : .serve)
                }
                apply(engine.setPolicy(policy))
            case 14:  // readers wait for pieces (any list: out of range, repeated, held)
                let count = Int(reader.byte())
                var pieces = pieceList(count % 8)
                if count & 0x80 != 0 { pieces = (0..<70).flatMap { _ in pieces + layout.pieces } }
                apply(engine.setUrgentPieces(pieces))
            case 15:  // a boot profile's piece order
                let count = Int(reader.byte())
                apply(engine.setPieceOrder(count & 0x80 != 0 ? layout.pieces.reversed() + pieceList(count % 4) : pieceList(count % 16)))
            case 16:  // the transport's round trip to a peer, connected or not: any Double at all
                let choice = reader.byte()
                let seconds = choice & 0x80 != 0 ? Double(bitPattern: UInt64(reader.u32()) << 32 | UInt64(reader.u32()))
                    : fuzzRoundTrips[Int(choice) % fuzzRoundTrips.count]
                engine.peerRoundTrip(peer, seconds: seconds)
            default:  // BEP 9: the peer names ut_metadata, or asks for a piece of the info dictionary
                guard peers[peer].connected else { continue }
                let choice = reader.byte()
                switch choice % 4 {
                case 0:  // an extension handshake with ids of its choosing (0 disables)
                    let handshake = ExtensionHandshake(messageIDs: ["ut_metadata": reader.byte(), "ut_pex": reader.byte()])
                    deliver(.extended(id: 0, payload: ByteBuffer(bytes: handshake.encoded())), from: peer)
                case 1:  // a request, for a piece that may not exist
                    let piece = Int(Int8(bitPattern: reader.byte()))
                    deliver(.extended(id: ExtensionHandshake.metadataID, payload: MetadataMessage.request(piece: piece).encoded()), from: peer)
                case 2:  // data or a reject sent to a node that fetches nothing
                    let piece = Int(reader.byte() % 4)
                    let message: MetadataMessage = choice & 4 != 0 ? .reject(piece: piece)
                        : .data(piece: piece, totalSize: infoBytes.count, bytes: Array(infoBytes.prefix(MetadataPiece.length)))
                    deliver(.extended(id: ExtensionHandshake.metadataID, payload: message.encoded()), from: peer)
                default:  // any payload under the id
                    let length = Int(reader.byte())
                    deliver(.extended(id: ExtensionHandshake.metadataID, payload: ByteBuffer(bytes: reader.take(length))), from: peer)
                }
            }
        }

    }

    extension Bitfield {
        func fuzzIsSubset(of other: Bitfield) -> Bool { !hasPieces(notIn: other) }
    }
#endif
