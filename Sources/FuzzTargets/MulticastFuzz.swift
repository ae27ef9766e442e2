// The multicast booster: packet decoding (stateless), and a genuine sender and receiver on a lossy
// group with a forger beside them (stateful): forged announces, plans, data, DONE and NACKs under
// instances of the forger's choosing, replays of genuine datagrams, and time passing.
#if VMSWARM_FUZZ
    import Metainfo
    import Multicast

    let fuzzSession = MulticastSession(infoHash: fuzzInfoHash)

    func fuzzMulticastPacket(_ input: [UInt8]) {
        guard let packet = try? MulticastPacket.decode(input) else { return }
        // Everything that decodes encodes back to a datagram that decodes to it.
        let encoded = packet.encode()
        fuzzCheck(encoded.count <= MulticastPacket.maxDatagramLength, "a packet encodes to \(encoded.count) bytes")
        fuzzCheck((try? MulticastPacket.decode(encoded)) == packet, "\(packet.body) does not survive re-encoding")
        for shape in 0..<4 {
            let layout = fuzzLayout(UInt8(shape))
            guard (try? packet.validate(session: packet.session, layout: layout)) != nil else { continue }
            if case .data(let block, let payload) = packet.body {
                fuzzCheck(layout.contains(block.piece), "valid data for \(block.piece), outside the torrent")
                fuzzCheck(block.offset + payload.count <= layout.length(of: block.piece), "valid data past its piece")
                fuzzCheck(payload.count == layout.multicastBlockLength(of: block.piece, block: block.block), "valid data of a wrong length")
            }
            if case .nack(let nack) = packet.body {
                for entry in nack.entries {
                    fuzzCheck(layout.contains(entry.piece), "valid NACK for \(entry.piece), outside the torrent")
                    let blocks = entry.blocks(inPieceOf: layout.multicastBlockCount(of: entry.piece))
                    fuzzCheck(blocks.allSatisfy { $0 >= 0 && $0 < layout.multicastBlockCount(of: entry.piece) }, "NACK names blocks outside its piece")
                }
            }
        }
    }

    func fuzzMulticast(_ input: [UInt8]) {
        var reader = FuzzReader(input)
        let config = reader.byte()
        let torrent = fuzzTorrents[Int(config & 3)]
        let layout = torrent.info.layout
        // 2 Mbit/s: a time step of at most 1.3 s is at most ~220 datagrams, so inputs stay fast.
        var senderConfiguration = MulticastSender.Configuration(rate: 2_000_000, mode: config & 4 != 0 ? .carousel : .once)
        senderConfiguration.minReceivers = Int(config >> 6)
        var sender = MulticastSender(session: fuzzSession, layout: layout, have: Bitfield(pieceCount: layout.pieceCount, all: true),
            configuration: senderConfiguration, seed: 1)
        var receiverConfiguration = MulticastReceiver.Configuration()
        receiverConfiguration.maxBufferedBytes = config & 8 != 0 ? 64 << 10 : 4 << 20
        var receiver = MulticastReceiver(session: fuzzSession, layout: layout, have: Bitfield(pieceCount: layout.pieceCount),
            configuration: receiverConfiguration, seed: 2)
        var verified = Bitfield(pieceCount: layout.pieceCount)
        var now = 0.0
        var loss: UInt8 = 0
        var lossCursor = 0
        var forged = false  // whether a forged data packet or payload reached the receiver
        var captured: [[UInt8]] = []  // genuine datagrams, for replays
        var datagram = [UInt8](repeating: 0, count: MulticastPacket.maxDatagramLength)

        func lost() -> Bool {
            lossCursor += 1
            return loss & (1 << UInt8(lossCursor % 8)) != 0
        }

        func toReceiver(_ bytes: [UInt8]) {
            handle(receiver.received(bytes, now: now))
            fuzzCheck(receiver.buffered <= receiverConfiguration.maxBufferedBytes + layout.pieceLength,
                "receiver buffers \(receiver.buffered) bytes, its cap is \(receiverConfiguration.maxBufferedBytes)")
        }

        func handle(_ events: [MulticastReceiver.Event]) {
            for event in events {
                switch event {
                case .pieceAssembled(let piece, let bytes):
                    fuzzCheck(layout.contains(piece) && bytes.count == layout.length(of: piece), "assembled \(piece) of \(bytes.count) bytes")
                    if bytes == torrent.piece(piece) {
                        receiver.pieceVerified(piece, now: now)
                        _ = verified.insert(piece)
                    } else {
                        fuzzCheck(forged, "\(piece) assembled wrong with no forged packet")
                        receiver.pieceFailed(piece, now: now)
                    }
                case .sendNack(let bytes):
                    fuzzCheck(bytes.count <= MulticastPacket.maxDatagramLength, "a NACK of \(bytes.count) bytes")
                    if !lost() { sender.received(bytes, now: now) }
                case .handOver(let partial):
                    let length = layout.length(of: partial.piece)
                    fuzzCheck(partial.bytes.count == length, "hand-over of \(partial.bytes.count) bytes for \(length)")
                    fuzzCheck(zip(partial.missing, partial.missing.dropFirst()).allSatisfy { $0.upperBound < $1.lowerBound }
                        && partial.missing.allSatisfy { !$0.isEmpty && $0.lowerBound >= 0 && $0.upperBound <= length },
                        "hand-over ranges \(partial.missing) in \(length) bytes")
                    // BitTorrent fetches the rest and the piece verifies (or not, with forged bytes).
                    var bytes = partial.bytes
                    let truth = torrent.piece(partial.piece)
                    for range in partial.missing { bytes.replaceSubrange(range, with: truth[range]) }
                    if bytes == truth {
                        receiver.pieceVerified(partial.piece, now: now)
                        _ = verified.insert(partial.piece)
                    } else {
                        fuzzCheck(forged, "hand-over of \(partial.piece) holds wrong bytes with no forged packet")
                        receiver.pieceFailed(partial.piece, now: now)
                    }
                case .senderIdle, .sessionEnded:
                    break
                }
            }
            fuzzCheck(!receiver.have.hasPieces(notIn: verified), "receiver holds a piece that never verified")
        }

        func runSender() {
            for action in sender.next(now: now) {
                switch action {
                case .sendControl(let bytes):
                    fuzzCheck(bytes.count <= MulticastPacket.maxDatagramLength, "control packet of \(bytes.count) bytes")
                    if captured.count < 16 { captured.append(bytes) }
                    if !lost() { toReceiver(bytes) }
                case .sendData(let block):
                    fuzzCheck(layout.contains(block.piece) && block.length > 0
                        && block.offset + block.length <= layout.length(of: block.piece), "sender sends \(block)")
                    let start = Int(layout.offset(of: block.piece)) + block.offset
                    let payload = Array(torrent.content[start..<start + block.length])
                    let count = payload.withUnsafeBytes { source in
                        datagram.withUnsafeMutableBytes { sender.writeData(block, payload: source, into: $0) }
                    }
                    let bytes = Array(datagram[0..<count])
                    if captured.count < 16 { captured.append(bytes) } else { captured[Int(block.sequence) % 16] = bytes }
                    if !lost() { toReceiver(bytes) }
                case .finished:
                    break
                }
            }
            // Forged NACKs may ask a once sender for repairs, but only so many rounds of them (a
            // carousel sends for ever, by design).
            let sent = sender.counters.dataBytes + sender.counters.repairBytes
            fuzzCheck(senderConfiguration.mode == .carousel
                || sent <= Int64(senderConfiguration.maxRepairRounds + 2) * layout.totalLength + 1,
                "sender sent \(sent) bytes of a \(layout.totalLength)-byte image in \(sender.counters.passes) passes")
            // Urgent requests, forged or not, get at most the share of each pass.
            let urgentBound = Double(senderConfiguration.maxRepairRounds + 2) * senderConfiguration.maxUrgentShare * Double(layout.totalLength)
            fuzzCheck(senderConfiguration.mode == .carousel || sender.counters.urgentBytes <= Int64(urgentBound) + 2 * Int64(layout.pieceLength),
                "sender sent \(sender.counters.urgentBytes) urgent bytes of a \(layout.totalLength)-byte image")
        }

        var steps = 0
        while !reader.isAtEnd && steps < 300 {
            steps += 1
            let op = reader.byte()
            switch op % 10 {
            case 0, 1:  // time passes: the sender sends what is due, the receiver ticks
                loss = reader.byte()
                now += Double(reader.byte()) / 200
                runSender()
                handle(receiver.tick(now: now))
            case 2:  // raw bytes at the receiver
                let bytes = reader.take(Int(reader.u16()) % (MulticastPacket.maxDatagramLength + 8))
                forged = forged || MulticastPacket.isData(bytes)
                toReceiver(bytes)
            case 3:  // raw bytes at the sender
                sender.received(reader.take(Int(reader.u16()) % (MulticastPacket.maxDatagramLength + 8)), now: now)
            case 4:  // a forged NACK for the genuine sender, from an instance of the forger's choosing
                let from = reader.u32()
                var entries: [MulticastPacket.NackEntry] = []
                for _ in 0..<Int(reader.byte() % 6) {
                    let piece = PieceIndex(Int(reader.byte()) % (layout.pieceCount + 1))
                    entries.append(MulticastPacket.NackEntry.rest(of: piece, from: Int(reader.byte() % 8)))
                }
                let complete = reader.bool()
                let nack = MulticastPacket.Nack(target: sender.instance, pass: reader.u16() % 4, lossPermille: Int(reader.u16() % 1001),
                    missingPieces: Int(reader.byte()), complete: complete, urgent: !complete && !entries.isEmpty && reader.bool(), entries: entries)
                sender.received(MulticastPacket(session: fuzzSession, instance: from, body: .nack(nack)).encode(), now: now)
            case 5:  // a forged announce, from the genuine sender's instance or another
                let instance = reader.bool() ? sender.instance : reader.u32()
                let phase = MulticastPacket.Phase(rawValue: reader.byte() % 4) ?? .sending
                let announce = MulticastPacket.Announce(pieceCount: layout.pieceCount, pieceLength: layout.pieceLength,
                    totalLength: layout.totalLength, rate: Int(reader.u32()), pass: reader.u16() % 4, phase: phase,
                    cursor: Int(reader.byte()) % (layout.pieceCount + 2), receivers: Int(reader.byte()),
                    suppressAfter: Int(reader.byte()), nackWindowMilliseconds: Int(reader.u16()),
                    carousel: reader.bool(), senderComplete: reader.bool())
                toReceiver(MulticastPacket(session: fuzzSession, instance: instance, body: .announce(announce)).encode())
            case 6:  // forged data under some instance, with bytes that are not the image's
                let instance = reader.bool() ? sender.instance : reader.u32()
                let piece = PieceIndex(Int(reader.byte()) % layout.pieceCount)
                let block = Int(reader.byte()) % layout.multicastBlockCount(of: piece)
                let length = layout.multicastBlockLength(of: piece, block: block)
                let data = MulticastPacket.DataBlock(piece: piece, offset: block * MulticastPacket.blockLength, length: length,
                    sequence: reader.u16(), pass: reader.byte() & 0x7F, repair: reader.bool())
                forged = true
                toReceiver(MulticastPacket(session: fuzzSession, instance: instance,
                    body: .data(data, payload: [UInt8](repeating: reader.byte(), count: length))).encode())
            case 7:  // a forged DONE
                let instance = reader.bool() ? sender.instance : reader.u32()
                toReceiver(MulticastPacket(session: fuzzSession, instance: instance, body: .done(.init(pass: reader.u16() % 4))).encode())
            case 8:  // a replayed genuine datagram
                guard !captured.isEmpty else { continue }
                toReceiver(captured[Int(reader.byte()) % captured.count])
            default:  // BitTorrent asks for a partly heard piece, or got a piece itself, or a reader waits for pieces
                let piece = PieceIndex(Int(reader.byte()) % layout.pieceCount)
                if reader.byte() % 4 == 0 {
                    let pieces = (0..<Int(reader.byte() % 20)).map { _ in PieceIndex(Int(reader.byte()) % (layout.pieceCount + 1)) }
                    if let request = receiver.requestUrgent([piece] + pieces, now: now) { handle([request]) }
                } else if reader.bool() {
                    if let partial = receiver.handOver(piece) { handle([.handOver(partial)]) }
                } else {
                    receiver.pieceObtainedElsewhere(piece, now: now)
                    _ = verified.insert(piece)
                }
            }
        }
    }
#endif
