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
            piece: PieceIndex(9), offset: 1400, length: 1400,
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
            .init(session: testSession, instance: 1, body: .data(data, payload: [UInt8](repeating: 0xAB, count: 1400))),
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

    @Test func aFullDataPacketFitsAnEthernetFrame() {
        #expect(MulticastPacket.maxDatagramLength + MulticastPacket.ipv4UDPOverhead <= 1500)
        #expect(MulticastPacket.maxDatagramLength + 48 <= 1500, "and over IPv6")
    }

    @Test func theDataHeaderIsWrittenInPlaceBeforeThePayload() throws {
        let block = MulticastPacket.DataBlock(
            piece: PieceIndex(9), offset: 1400, length: 1600 - 1400, sequence: 5, pass: 0, repair: false)
        let payload = [UInt8](repeating: 0x5A, count: block.length)
        var buffer = [UInt8](repeating: 0xFF, count: MulticastPacket.maxDatagramLength)
        let sender = MulticastSender(
            session: testSession, layout: testLayout(pieces: 10, pieceLength: 16 << 10, lastLength: 1600),
            have: Bitfield(pieceCount: 10, all: true), configuration: .init(rate: 1_000_000), seed: 1)
        let length = payload.withUnsafeBytes { p in
            buffer.withUnsafeMutableBytes { sender.writeData(block, payload: p, into: $0) }
        }
        let expected = MulticastPacket(
            session: testSession, instance: sender.instance, body: .data(block, payload: payload)
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
        #expect(refusal([]) == .truncated(needed: 20, got: 0))
        #expect(refusal(Array(data.prefix(30))) == .truncated(needed: 36, got: 30))
        #expect(refusal(Array(data.dropLast())) == .truncated(needed: 1436, got: 1435))
        #expect(refusal(data + [0]) == .tooLong(1437))
        #expect(refusal(announce + [0]) == .wrongLength(expected: 60, got: 61))
        var bytes = data
        bytes[0] = 0x47
        #expect(refusal(bytes) == .badMagic)
        bytes = data
        bytes[4] = 2
        #expect(refusal(bytes) == .unsupportedVersion(2))
        bytes[4] = 1
        bytes[5] = 9
        #expect(refusal(bytes) == .unknownType(9))
        bytes[5] = 2
        bytes[7] = 0x80
        #expect(refusal(bytes) == .unknownFlags(type: 2, flags: 0x80))
        bytes = announce
        bytes[47] = 1
        #expect(refusal(bytes) == .badField("reserved bytes", offset: 47))

        let other = MulticastSession(infoHash: InfoHash(bytes: [UInt8](repeating: 8, count: 20))!)
        let foreign = MulticastPacket(session: other, instance: 1, body: samples[2].body).encode()
        #expect(refusal(foreign) == .otherSession(other))

        func dataPacket(piece: Int, offset: Int, length: Int) -> [UInt8] {
            MulticastPacket(
                session: testSession, instance: 1,
                body: .data(
                    .init(
                        piece: PieceIndex(piece), offset: offset,
                        length: length, sequence: 0, pass: 0, repair: false),
                    payload: [UInt8](repeating: 0, count: length))
            ).encode()
        }
        #expect(refusal(dataPacket(piece: 10, offset: 0, length: 1400)) == .pieceOutOfRange(10))
        #expect(
            refusal(dataPacket(piece: 0, offset: 700, length: 1400))
                == .blockOutOfRange(piece: 0, offset: 700, length: 1400))
        #expect(
            refusal(dataPacket(piece: 0, offset: 15400, length: 1400))
                == .blockOutOfRange(piece: 0, offset: 15400, length: 1400),
            "the last block of a 16 KiB piece is 984 bytes")
        #expect(
            refusal(dataPacket(piece: 0, offset: 16800, length: 1))
                == .blockOutOfRange(piece: 0, offset: 16800, length: 1))
        #expect(
            refusal(dataPacket(piece: 9, offset: 2800, length: 300))
                == .blockOutOfRange(piece: 9, offset: 2800, length: 300),
            "offset + length beyond the short last piece")
        #expect(refusal(dataPacket(piece: 0, offset: 15400, length: 984)) == nil)

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
                if length >= 6 && round % 8 == 0 { bytes.replaceSubrange(0..<5, with: MulticastPacket.magic + [1]) }
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
