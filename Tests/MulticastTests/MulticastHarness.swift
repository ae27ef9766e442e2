import Metainfo
import TestSupport

@testable import Multicast

/// An image with deterministic piece bytes, standing in for the wire form the runtime reads.
struct TestImage {
    let layout: PieceLayout
    let pieces: [[UInt8]]

    init(pieces count: Int, pieceLength: Int, lastLength: Int? = nil, seed: UInt64 = 5) {
        let layout = testLayout(pieces: count, pieceLength: pieceLength, lastLength: lastLength)
        self.layout = layout
        var random = SplitMix64(seed: seed)
        pieces = layout.pieces.map { piece in
            (0..<layout.length(of: piece)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        }
    }

    /// The datagram a runtime would send for a sender action.
    func datagram(_ action: MulticastSender.Action, from sender: MulticastSender) -> [UInt8]? {
        switch action {
        case .sendControl(let bytes): return bytes
        case .finished: return nil
        case .sendData(let block):
            var buffer = [UInt8](repeating: 0, count: MulticastPacket.maxDatagramLength)
            let length = pieces[block.piece.value][block.offset..<(block.offset + block.length)].withUnsafeBytes {
                payload in
                buffer.withUnsafeMutableBytes { sender.writeData(block, payload: payload, into: $0) }
            }
            return Array(buffer.prefix(length))
        }
    }

    /// Every data datagram of one full pass, in order.
    func fullPass(session: MulticastSession = testSession, instance: UInt32 = 42, pass: UInt16 = 0) -> [MulticastPacket]
    {
        var sequence: UInt16 = 0
        var packets: [MulticastPacket] = []
        for piece in layout.pieces {
            for block in 0..<layout.multicastBlockCount(of: piece) {
                let offset = block * MulticastPacket.blockLength
                let length = layout.multicastBlockLength(of: piece, block: block)
                packets.append(
                    MulticastPacket(
                        session: session, instance: instance,
                        body: .data(
                            .init(
                                piece: piece,
                                offset: offset, length: length, sequence: sequence,
                                pass: MulticastPacket.DataBlock.passTag(pass), repair: false),
                            payload: Array(pieces[piece.value][offset..<(offset + length)]))))
                sequence &+= 1
            }
        }
        return packets
    }

    func announce(
        instance: UInt32 = 42, pass: UInt16 = 0, phase: MulticastPacket.Phase, cursor: Int, carousel: Bool = false,
        suppressAfter: Int = 1
    ) -> MulticastPacket {
        MulticastPacket(
            session: testSession, instance: instance,
            body: .announce(
                .init(
                    pieceCount: layout.pieceCount,
                    pieceLength: layout.pieceLength, totalLength: layout.totalLength, rate: 100_000_000, pass: pass,
                    phase: phase,
                    cursor: cursor, receivers: 0, suppressAfter: suppressAfter, nackWindowMilliseconds: 100,
                    carousel: carousel,
                    senderComplete: true)))
    }

    /// A plan naming `pieces` (all when nil), in one chunk.
    func plan(instance: UInt32 = 42, pass: UInt16 = 0, pieces: Set<Int>? = nil) -> MulticastPacket {
        var bitmap = [UInt8](repeating: 0, count: (layout.pieceCount + 7) / 8)
        for bit in 0..<layout.pieceCount where pieces?.contains(bit) ?? true {
            bitmap[bit >> 3] |= 0x80 >> UInt8(bit & 7)
        }
        return MulticastPacket(
            session: testSession, instance: instance,
            body: .plan(
                .init(
                    pass: pass, firstPiece: 0,
                    bitCount: layout.pieceCount, bitmap: bitmap)))
    }
}

extension MulticastReceiver {
    /// Feeds encoded packets; returns the events.
    mutating func hear(_ packets: [MulticastPacket], now: Double) -> [Event] {
        packets.flatMap { received($0.encode(), now: now) }
    }
}

/// The NACKs among the events that report something: missing blocks, or completion. A receiver's
/// first NACK to a sender says only that it listens (`joins(in:)`).
func nacks(in events: [MulticastReceiver.Event]) -> [MulticastPacket.Nack] {
    allNacks(in: events).filter { !$0.entries.isEmpty || $0.complete }
}

/// The NACKs that report nothing: "I listen", sent once to each sender so it counts us.
func joins(in events: [MulticastReceiver.Event]) -> [MulticastPacket.Nack] {
    allNacks(in: events).filter { $0.entries.isEmpty && !$0.complete }
}

func allNacks(in events: [MulticastReceiver.Event]) -> [MulticastPacket.Nack] {
    events.compactMap {
        guard case .sendNack(let bytes) = $0, case .nack(let nack) = try? MulticastPacket.decode(bytes).body else {
            return nil
        }
        return nack
    }
}

func assembled(in events: [MulticastReceiver.Event]) -> [(PieceIndex, [UInt8])] {
    events.compactMap { if case .pieceAssembled(let piece, let bytes) = $0 { (piece, bytes) } else { nil } }
}

/// The blocks named by NACKs, by piece.
func namedBlocks(_ nacks: [MulticastPacket.Nack], layout: PieceLayout) -> [Int: Set<Int>] {
    var result: [Int: Set<Int>] = [:]
    for nack in nacks {
        for entry in nack.entries {
            result[entry.piece.value, default: []].formUnion(
                entry.blocks(inPieceOf: layout.multicastBlockCount(of: entry.piece)))
        }
    }
    return result
}
