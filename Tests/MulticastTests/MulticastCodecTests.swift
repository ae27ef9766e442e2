import Metainfo
import TestSupport
import Testing

@testable import Multicast

/// A torrent of `pieces` pieces of `pieceLength` bytes, the last one `lastLength` long.
func testLayout(pieces: Int = 10, pieceLength: Int = 16 << 10, lastLength: Int? = nil) -> PieceLayout {
    let total = Int64(pieceLength * (pieces - 1) + (lastLength ?? pieceLength))
    return try! PieceLayout(pieceLength: pieceLength, fileLengths: [total])
}

let testSession = MulticastSession(infoHash: InfoHash(bytes: [UInt8](repeating: 7, count: 20))!)

@Suite struct MulticastCodecTests {
    let layout = testLayout(pieces: 10, pieceLength: 16 << 10, lastLength: 3000)

    var samples: [MulticastPacket] {
        let announce = MulticastPacket.Announce(
            pieceCount: 10, pieceLength: 16 << 10, totalLength: layout.totalLength,
            rate: 95_000_000, pass: 3, phase: .sending, cursor: 4, receivers: 12, suppressAfter: 2,
            nackWindowMilliseconds: 200, carousel: true, senderComplete: true)
        let plan = MulticastPacket.Plan(pass: 3, firstPiece: 0, bitCount: 10, bitmap: [0b1010_0000, 0b0100_0000])
        let data = MulticastPacket.DataBlock(
            piece: PieceIndex(9), offset: 0, length: MulticastPacket.blockLength,
            sequence: 77, pass: 3, repair: true)
        let nack = MulticastPacket.Nack(
            target: 0xDEAD_BEEF, pass: 3, lossPermille: 52, missingPieces: 3,
            entries: [
                .rest(of: PieceIndex(2)), .rest(of: PieceIndex(5), from: 4),
                .init(piece: PieceIndex(9), firstBlock: 0, blockCount: 3, bitmap: [0b1010_0000]),
            ])
        return [
            .init(session: testSession, instance: 1, body: .announce(announce)),
            .init(session: testSession, instance: 1, body: .plan(plan)),
            .init(session: .unnamed, instance: 1, body: .data(data, payload: [UInt8](repeating: 0xAB, count: data.length))),
            .init(session: testSession, instance: 2, body: .nack(nack)),
            .init(
                session: testSession, instance: 2,
                body: .nack(
                    .init(
                        target: 1, pass: 0, lossPermille: 0, missingPieces: 0,
                        complete: true, entries: []))),
            .init(session: testSession, instance: 1, body: .done(.init(pass: 3))),
        ]
    }

    @Test func everyPacketTypeRoundTripsAndIsValidForItsTorrent() throws {
        for packet in samples {
            let bytes = packet.encode()
            #expect(bytes.count <= MulticastPacket.maxDatagramLength)
            let decoded = try MulticastPacket.decode(bytes, session: testSession, layout: layout)
            #expect(decoded == packet)
            #expect(decoded.encode() == bytes)
        }
    }

    /// A full data packet fills a 1500-byte Ethernet MTU over IPv4 exactly, and every control
    /// packet fits it too.
    @Test func aFullDataPacketFillsAnEthernetFrame() {
        #expect(MulticastPacket.maxDatagramLength + MulticastPacket.ipv4UDPOverhead == 1500)
        #expect(samples.allSatisfy { $0.encode().count <= MulticastPacket.maxDatagramLength })
        // 16 KiB pieces: 12 blocks, the last one 344 bytes.
        #expect(layout.multicastBlockCount(of: PieceIndex(0)) == 12)
        #expect(layout.multicastBlockLength(of: PieceIndex(0), block: 11) == 16384 - 11 * MulticastPacket.blockLength)
    }

    /// Data packets: the marker, the pass (7 bits) with the repair flag, instance, piece, block,
    /// sequence; no session, no length field.
    @Test func theDataHeaderLayout() {
        let bytes = samples[2].encode()
        #expect(Array(bytes.prefix(14)) == [0xD2, 0x83, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 77])
        #expect(MulticastPacket.isData(bytes) && !MulticastPacket.isData(samples[0].encode()))
    }

    @Test func theDataHeaderIsWrittenInPlaceBeforeThePayload() throws {
        let block = MulticastPacket.DataBlock(
            piece: PieceIndex(9), offset: MulticastPacket.blockLength, length: 1600 - MulticastPacket.blockLength,
            sequence: 5, pass: 0, repair: false)
        let payload = [UInt8](repeating: 0x5A, count: block.length)
        var buffer = [UInt8](repeating: 0xFF, count: MulticastPacket.maxDatagramLength)
        let sender = MulticastSender(
            session: testSession, layout: testLayout(pieces: 10, pieceLength: 16 << 10, lastLength: 1600),
            have: Bitfield(pieceCount: 10, all: true), configuration: .init(rate: 1_000_000), seed: 1)
        let length = payload.withUnsafeBytes { p in
            buffer.withUnsafeMutableBytes { sender.writeData(block, payload: p, into: $0) }
        }
        let expected = MulticastPacket(
            session: .unnamed, instance: sender.instance, body: .data(block, payload: payload)
        ).encode()
        #expect(Array(buffer.prefix(length)) == expected)
    }

    @Test func theSessionDependsOnTheInfoHash() {
        let other = MulticastSession(infoHash: InfoHash(bytes: [UInt8](repeating: 8, count: 20))!)
        #expect(other != testSession)
        #expect(MulticastSession(infoHash: InfoHash(bytes: [UInt8](repeating: 7, count: 20))!) == testSession)
    }

    @Test func hostileDatagramsAreRefusedWithTheReason() {
        let announce = samples[0].encode()
        let data = samples[2].encode()
        func refusal(_ bytes: [UInt8]) -> MulticastError? {
            do {
                _ = try MulticastPacket.decode(bytes, session: testSession, layout: layout)
                return nil
            } catch {
                return error
            }
        }
        let block = MulticastPacket.blockLength
        #expect(refusal([]) == .truncated(needed: 20, got: 0))
        #expect(refusal(Array(data.prefix(14))) == .truncated(needed: 15, got: 14), "a data packet has a payload")
        #expect(refusal(data + [0]) == .tooLong(1473))
        #expect(refusal(announce + [0]) == .wrongLength(expected: 60, got: 61))
        var bytes = announce
        bytes[0] = 0x47
        #expect(refusal(bytes) == .badMagic)
        bytes = data
        bytes[0] = 0xD1
        #expect(refusal(bytes) == .badMagic, "a data marker of another version")
        bytes = announce
        bytes[4] = 1
        #expect(refusal(bytes) == .unsupportedVersion(1))
        bytes[4] = 2
        bytes[5] = 9
        #expect(refusal(bytes) == .unknownType(9))
        bytes[5] = 2
        #expect(refusal(bytes) == .unknownType(2), "data has a header of its own")
        bytes[5] = 1
        bytes[7] = 0x80
        #expect(refusal(bytes) == .unknownFlags(type: 1, flags: 0x80))
        bytes = announce
        bytes[47] = 1
        #expect(refusal(bytes) == .badField("reserved bytes", offset: 47))

        let other = MulticastSession(infoHash: InfoHash(bytes: [UInt8](repeating: 8, count: 20))!)
        let foreign = MulticastPacket(session: other, instance: 1, body: samples[0].body).encode()
        #expect(refusal(foreign) == .otherSession(other))

        func dataPacket(piece: Int, block index: Int, length: Int) -> [UInt8] {
            MulticastPacket(
                session: .unnamed, instance: 1,
                body: .data(
                    .init(
                        piece: PieceIndex(piece), offset: index * block,
                        length: length, sequence: 0, pass: 0, repair: false),
                    payload: [UInt8](repeating: 0, count: length))
            ).encode()
        }
        #expect(refusal(dataPacket(piece: 10, block: 0, length: block)) == .pieceOutOfRange(10))
        #expect(
            refusal(dataPacket(piece: 0, block: 11, length: block))
                == .blockOutOfRange(piece: 0, offset: 11 * block, length: block),
            "the last block of a 16 KiB piece is shorter")
        #expect(
            refusal(dataPacket(piece: 0, block: 12, length: 1))
                == .blockOutOfRange(piece: 0, offset: 12 * block, length: 1))
        #expect(
            refusal(dataPacket(piece: 9, block: 2, length: 300))
                == .blockOutOfRange(piece: 9, offset: 2 * block, length: 300),
            "offset + length beyond the short last piece")
        #expect(refusal(dataPacket(piece: 0, block: 11, length: 16384 - 11 * block)) == nil)

        let badNack = MulticastPacket(
            session: testSession, instance: 2,
            body: .nack(
                .init(
                    target: 1, pass: 0, lossPermille: 0,
                    missingPieces: 1, entries: [.init(piece: PieceIndex(9), firstBlock: 1, blockCount: 8, bitmap: [1])])
            )
        ).encode()
        #expect(refusal(badNack) == .nackEntryOutOfRange(piece: 9, firstBlock: 1, blockCount: 8))
        let wideAnnounce = MulticastPacket(
            session: testSession, instance: 1,
            body: .announce(
                .init(
                    pieceCount: 11,
                    pieceLength: 16 << 10, totalLength: layout.totalLength, rate: 1, pass: 0, phase: .announcing,
                    cursor: 0,
                    receivers: 0, suppressAfter: 1, nackWindowMilliseconds: 0, carousel: false, senderComplete: true))
        ).encode()
        #expect(refusal(wideAnnounce) == .layoutMismatch(field: "piece count", ours: 10, theirs: 11))
        let widePlan = MulticastPacket(
            session: testSession, instance: 1,
            body: .plan(
                .init(
                    pass: 0, firstPiece: 8,
                    bitCount: 3, bitmap: [0xE0]))
        ).encode()
        #expect(refusal(widePlan) == .planOutOfRange(firstPiece: 8, bitCount: 3))
        var spare = samples[1].encode()
        spare[spare.count - 1] |= 1
        #expect(refusal(spare) == .badField("spare bitmap bits", offset: spare.count - 1))
    }

    /// Random datagrams and valid ones with bytes flipped, cut or appended: decoding never traps,
    /// and whatever decodes encodes back to exactly the same bytes (so no field is half-read).
    @Test func fuzzedDatagramsNeverCrashAndDecodeConsistently() {
        var random = SplitMix64(seed: 99)
        var decoded = 0
        var valid = 0
        let seeds = samples.map { $0.encode() }
        for round in 0..<60_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                let length = Int(random.next() % 1500)
                bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                if length >= 6 && round % 8 == 0 { bytes.replaceSubrange(0..<5, with: MulticastPacket.magic + [2]) }
                if length >= 1 && round % 8 == 4 { bytes[0] = MulticastPacket.dataMarker }
            } else {
                bytes = seeds[Int(random.next() % UInt64(seeds.count))]
                for _ in 0..<(1 + random.next() % 4) {
                    guard !bytes.isEmpty else { break }
                    switch random.next() % 4 {
                    case 0: bytes.removeLast(Int(random.next() % UInt64(bytes.count)))
                    case 1: bytes.append(UInt8(truncatingIfNeeded: random.next()))
                    default:
                        bytes[Int(random.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                    }
                }
            }
            guard let packet = try? MulticastPacket.decode(bytes) else { continue }
            decoded += 1
            #expect(packet.encode() == bytes)
            if (try? packet.validate(session: testSession, layout: layout)) != nil { valid += 1 }
        }
        #expect(
            decoded > 1000 && valid > 100,
            "mutations that keep a packet valid happen: \(decoded) decoded, \(valid) valid")
    }
}
