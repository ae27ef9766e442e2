import Metainfo

/// Why a datagram was refused. Nothing on a multicast group is trusted: another program, another
/// torrent's sender or a corrupted frame may be there, so every refusal is a value that is counted,
/// never a crash. Offsets are byte offsets within the datagram.
public enum MulticastError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(needed: Int, got: Int)
    case tooLong(Int)
    case badMagic
    case unsupportedVersion(UInt8)
    case unknownType(UInt8)
    case unknownFlags(type: UInt8, flags: UInt16)
    /// The datagram's length disagrees with what its fields declare.
    case wrongLength(expected: Int, got: Int)
    /// A field holds a value its type forbids (reserved bytes, spare bitmap bits, zero lengths).
    case badField(String, offset: Int)
    case otherSession(MulticastSession)
    /// An announce describes a torrent with another geometry than ours.
    case layoutMismatch(field: String, ours: Int64, theirs: Int64)
    case pieceOutOfRange(Int)
    /// A data block that is not one of the piece's `blockLength` blocks.
    case blockOutOfRange(piece: Int, offset: Int, length: Int)
    case nackEntryOutOfRange(piece: Int, firstBlock: Int, blockCount: Int)
    case planOutOfRange(firstPiece: Int, bitCount: Int)

    public var description: String {
        switch self {
        case .truncated(let needed, let got): "truncated: \(got) bytes where \(needed) are needed"
        case .tooLong(let length): "\(length) bytes, longer than any packet (\(MulticastPacket.maxDatagramLength))"
        case .badMagic: "not a vmswarm multicast packet (bad magic)"
        case .unsupportedVersion(let version):
            "protocol version \(version) (this build speaks \(MulticastPacket.version))"
        case .unknownType(let type): "unknown packet type \(type)"
        case .unknownFlags(let type, let flags): "unknown flags 0x\(String(flags, radix: 16)) on packet type \(type)"
        case .wrongLength(let expected, let got): "\(got) bytes where the fields declare \(expected)"
        case .badField(let field, let offset): "invalid \(field) at byte \(offset)"
        case .otherSession(let session): "packet of another torrent (\(session))"
        case .layoutMismatch(let field, let ours, let theirs):
            "announce for another torrent: \(field) \(theirs), ours is \(ours)"
        case .pieceOutOfRange(let piece): "piece \(piece) is outside the torrent"
        case .blockOutOfRange(let piece, let offset, let length):
            "block [\(offset)+\(length)] is not a block of piece \(piece)"
        case .nackEntryOutOfRange(let piece, let first, let count):
            "NACK of blocks \(first)+\(count) outside piece \(piece)"
        case .planOutOfRange(let first, let count): "plan of pieces \(first)+\(count) outside the torrent"
        }
    }
}

extension MulticastPacket {
    /// Parses a datagram's structure (no torrent needed): magic, version, type, flags, exact
    /// lengths, reserved bytes and spare bits. `validate(session:layout:)` then checks it against
    /// a torrent.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(MulticastError) -> MulticastPacket {
        guard bytes.count <= maxDatagramLength else { throw .tooLong(bytes.count) }
        var reader = ByteReader(bytes: bytes)
        if bytes.first == dataMarker {
            try reader.need(DataBlock.headerLength + 1)
            reader.at = 1
            let flags = reader.u8()
            let instance = UInt32(reader.u32())
            let piece = reader.u32()
            let block = reader.u16()
            let sequence = UInt16(reader.u16())
            let payload = Array(bytes[DataBlock.headerLength...])
            return MulticastPacket(
                session: .unnamed, instance: instance,
                body: .data(
                    DataBlock(
                        piece: PieceIndex(piece), offset: block * blockLength, length: payload.count,
                        sequence: sequence, pass: flags & 0x7F, repair: flags & 0x80 != 0), payload: payload))
        }
        guard bytes.count >= headerLength else { throw .truncated(needed: headerLength, got: bytes.count) }
        guard bytes[0] == magic[0], bytes[1] == magic[1], bytes[2] == magic[2], bytes[3] == magic[3] else {
            throw .badMagic
        }
        reader.at = 4
        let version = reader.u8()
        guard version == Self.version else { throw .unsupportedVersion(version) }
        let type = reader.u8()
        guard let kind = Kind(rawValue: type) else { throw .unknownType(type) }
        let flags = UInt16(reader.u16())
        let session = MulticastSession(value: reader.u64())
        let instance = UInt32(reader.u32())
        let allowedFlags: UInt16 =
            switch kind {
            case .announce: 3
            case .nack: 3
            case .plan, .done: 0
            case .data: throw .unknownType(type)  // data packets have a header of their own
            }
        guard flags & ~allowedFlags == 0 else { throw .unknownFlags(type: type, flags: flags) }

        let body: Body
        switch kind {
        case .announce:
            try reader.expectTotal(headerLength + Announce.bodyLength)
            let pieceCount = reader.u32()
            let pieceLength = reader.u32()
            let totalOffset = reader.at
            let total = reader.u64()
            guard total <= UInt64(Int64.max) else { throw .badField("total length", offset: totalOffset) }
            let rateOffset = reader.at
            let rate = reader.u64()
            guard rate > 0 && rate <= UInt64(Int64.max) else { throw .badField("rate", offset: rateOffset) }
            let pass = UInt16(reader.u16())
            let phaseOffset = reader.at
            guard let phase = Phase(rawValue: reader.u8()) else { throw .badField("phase", offset: phaseOffset) }
            try reader.reserved(1)
            let cursor = reader.u32()
            let receivers = reader.u32()
            let suppressOffset = reader.at
            let suppressAfter = reader.u16()
            guard suppressAfter >= 1 else { throw .badField("suppress-after count", offset: suppressOffset) }
            let window = reader.u16()
            body = .announce(
                Announce(
                    pieceCount: pieceCount, pieceLength: pieceLength, totalLength: Int64(total),
                    rate: Int(rate), pass: pass, phase: phase, cursor: cursor, receivers: receivers,
                    suppressAfter: suppressAfter, nackWindowMilliseconds: window,
                    carousel: flags & 1 != 0, senderComplete: flags & 2 != 0))
        case .plan:
            try reader.need(headerLength + 12)
            let pass = UInt16(reader.u16())
            try reader.reserved(2)
            let firstPiece = reader.u32()
            let countOffset = reader.at
            let bitCount = reader.u32()
            guard bitCount >= 1 && bitCount <= Plan.maxBits else {
                throw .badField("plan bit count", offset: countOffset)
            }
            try reader.expectTotal(reader.at + (bitCount + 7) / 8)
            let bitmap = try reader.bitmap(bits: bitCount)
            body = .plan(Plan(pass: pass, firstPiece: firstPiece, bitCount: bitCount, bitmap: bitmap))
        case .data:
            preconditionFailure("data packets are decoded above")
        case .nack:
            try reader.need(headerLength + Nack.fixedLength)
            let target = UInt32(reader.u32())
            let pass = UInt16(reader.u16())
            let lossOffset = reader.at
            let loss = reader.u16()
            guard loss <= 1000 else { throw .badField("loss per mille", offset: lossOffset) }
            let missing = reader.u32()
            let countOffset = reader.at
            let count = reader.u16()
            try reader.reserved(2)
            let complete = flags & 1 != 0, urgent = flags & 2 != 0
            guard !complete || (count == 0 && missing == 0) else {
                throw .badField("completion report with missing pieces", offset: countOffset)
            }
            guard !urgent || (count > 0 && !complete) else {
                throw .badField("an urgent request names no piece", offset: countOffset)
            }
            var entries: [NackEntry] = []
            for _ in 0..<count {
                try reader.need(reader.at + NackEntry.fixedLength)
                let piece = reader.u32()
                let firstBlock = reader.u32()
                let blockCount = reader.u16()
                try reader.need(reader.at + (blockCount + 7) / 8)
                let bitmap = try reader.bitmap(bits: blockCount)
                entries.append(
                    NackEntry(piece: PieceIndex(piece), firstBlock: firstBlock, blockCount: blockCount, bitmap: bitmap))
            }
            try reader.expectTotal(reader.at)
            body = .nack(
                Nack(
                    target: target, pass: pass, lossPermille: loss, missingPieces: missing, complete: complete, urgent: urgent,
                    entries: entries))
        case .done:
            try reader.expectTotal(headerLength + Done.bodyLength)
            let pass = UInt16(reader.u16())
            try reader.reserved(2)
            body = .done(Done(pass: pass))
        }
        return MulticastPacket(session: session, instance: instance, body: body)
    }

    public static func decode(_ bytes: [UInt8]) throws(MulticastError) -> MulticastPacket {
        // `withUnsafeBytes` rethrows untyped errors; a Result keeps the type.
        try bytes.withUnsafeBytes { raw in Result { () throws(MulticastError) in try decode(raw) } }.get()
    }

    /// Decodes and checks against our torrent: the whole path a received datagram takes.
    public static func decode(_ bytes: [UInt8], session: MulticastSession, layout: PieceLayout) throws(MulticastError)
        -> MulticastPacket
    {
        let packet = try decode(bytes)
        try packet.validate(session: session, layout: layout)
        return packet
    }

    /// Checks that the packet is of our session and that every index, offset and length lies
    /// within our torrent, so that no later step can be made to index out of bounds. A data packet
    /// names no session: its sender instance must be one whose control packets passed this check.
    public func validate(session ours: MulticastSession, layout: PieceLayout) throws(MulticastError) {
        if case .data = body {} else { guard session == ours else { throw .otherSession(session) } }
        switch body {
        case .announce(let a):
            guard a.pieceCount == layout.pieceCount else {
                throw .layoutMismatch(field: "piece count", ours: Int64(layout.pieceCount), theirs: Int64(a.pieceCount))
            }
            guard a.pieceLength == layout.pieceLength else {
                throw .layoutMismatch(
                    field: "piece length", ours: Int64(layout.pieceLength), theirs: Int64(a.pieceLength))
            }
            guard a.totalLength == layout.totalLength else {
                throw .layoutMismatch(field: "total length", ours: layout.totalLength, theirs: a.totalLength)
            }
            guard a.cursor <= layout.pieceCount else { throw .pieceOutOfRange(a.cursor) }
        case .plan(let p):
            guard p.firstPiece < layout.pieceCount, p.bitCount <= layout.pieceCount - p.firstPiece else {
                throw .planOutOfRange(firstPiece: p.firstPiece, bitCount: p.bitCount)
            }
        case .data(let block, _):
            guard layout.contains(block.piece) else { throw .pieceOutOfRange(block.piece.value) }
            let pieceLength = layout.length(of: block.piece)
            guard block.offset % Self.blockLength == 0, block.offset < pieceLength,
                block.length == min(Self.blockLength, pieceLength - block.offset)
            else { throw .blockOutOfRange(piece: block.piece.value, offset: block.offset, length: block.length) }
        case .nack(let n):
            guard n.missingPieces <= layout.pieceCount else { throw .pieceOutOfRange(n.missingPieces) }
            for entry in n.entries {
                guard layout.contains(entry.piece) else { throw .pieceOutOfRange(entry.piece.value) }
                let blocks = layout.multicastBlockCount(of: entry.piece)
                guard entry.firstBlock < blocks, entry.blockCount <= blocks - entry.firstBlock else {
                    throw .nackEntryOutOfRange(
                        piece: entry.piece.value, firstBlock: entry.firstBlock, blockCount: entry.blockCount)
                }
            }
        case .done:
            break
        }
    }
}

/// Big-endian reads from a datagram. Callers check lengths first (`need`), so reads never run past
/// the end.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var at = 0

    mutating func u8() -> UInt8 {
        defer { at += 1 }
        return bytes[at]
    }

    mutating func u16() -> Int { Int(read(2)) }
    mutating func u32() -> Int { Int(read(4)) }
    mutating func u64() -> UInt64 { read(8) }

    private mutating func read(_ width: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<width { value = value << 8 | UInt64(bytes[at + index]) }
        at += width
        return value
    }

    func need(_ total: Int) throws(MulticastError) {
        guard bytes.count >= total else { throw .truncated(needed: total, got: bytes.count) }
    }

    /// The datagram must be exactly `total` bytes: shorter is truncated, longer has trailing bytes.
    func expectTotal(_ total: Int) throws(MulticastError) {
        try need(total)
        guard bytes.count == total else { throw .wrongLength(expected: total, got: bytes.count) }
    }

    mutating func reserved(_ width: Int) throws(MulticastError) {
        let start = at
        guard read(width) == 0 else { throw .badField("reserved bytes", offset: start) }
    }

    /// `ceil(bits / 8)` bytes with the spare low bits of the last byte clear.
    mutating func bitmap(bits: Int) throws(MulticastError) -> [UInt8] {
        let length = (bits + 7) / 8
        let result = Array(bytes[at..<(at + length)])
        at += length
        if bits % 8 != 0, let last = result.last, last & (0xFF >> UInt8(bits % 8)) != 0 {
            throw .badField("spare bitmap bits", offset: at - 1)
        }
        return result
    }
}
