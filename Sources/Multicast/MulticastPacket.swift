import Metainfo

/// One datagram of the multicast booster (docs/multicast.md has the byte layout).
///
/// Control packets (announce, plan, NACK, done) start with the same 20-byte header: magic,
/// version, type, flags, the session (which torrent) and the instance of whoever sent it (a
/// sender's random id for this run, or a receiver's for its NACKs). Data packets, nearly every
/// datagram of a session, have a 14-byte header of their own: a marker byte, the pass and repair
/// flag, the sender's instance, the piece, the block and a sequence number. They carry no session:
/// a receiver takes data only from the sender instance whose announces named our session. The
/// codec is pure and canonical: a datagram that decodes encodes back to the same bytes, so
/// reserved bytes, unknown flags and spare bitmap bits are refused rather than ignored.
public struct MulticastPacket: Hashable, Sendable {
    /// "VMSC".
    public static let magic: [UInt8] = [0x56, 0x4D, 0x53, 0x43]
    public static let version: UInt8 = 2
    public static let headerLength = 20
    /// The first byte of a data packet: 0xD0 and the version.
    public static let dataMarker: UInt8 = 0xD0 | version
    /// Payload bytes per data packet: 1458 + the 14-byte data header + 28 bytes of IPv4 and UDP
    /// headers fill a 1500-byte Ethernet MTU exactly, so no datagram is ever fragmented (a lost
    /// fragment would lose the whole datagram) and headers take 3.8 % of the wire (UDPcast's take
    /// 4.0 %). IPv4 only: IPv6's 40-byte header would not fit.
    public static let blockLength = 1458
    /// A piece has at most this many blocks (the block index is 16 bits): pieces of up to 91 MiB.
    public static let maxBlocksPerPiece = 1 << 16
    /// The longest datagram any packet type may be (a full data packet).
    public static let maxDatagramLength = DataBlock.headerLength + blockLength
    /// The longest control packet before its authentication tag (sealed images append 16 bytes,
    /// `MulticastAuthentication`), so that a tagged packet still fits one Ethernet frame.
    public static let maxControlLength = maxDatagramLength - MulticastAuthentication.tagLength
    /// Bytes of IPv4 and UDP header on the wire for every datagram, counted by the sender's pacing.
    public static let ipv4UDPOverhead = 28

    /// Which torrent. A data packet carries none: decoded, it holds `MulticastSession.unnamed`.
    public var session: MulticastSession
    /// Random per run of a sender (so a restarted sender is recognised and its passes are not
    /// confused with the old one's) or per receiver (so NACKs are counted per receiver).
    public var instance: UInt32
    public var body: Body

    public init(session: MulticastSession, instance: UInt32, body: Body) {
        self.session = session
        self.instance = instance
        self.body = body
    }

    public enum Body: Hashable, Sendable {
        case announce(Announce)
        case plan(Plan)
        case data(DataBlock, payload: [UInt8])
        case nack(Nack)
        case done(Done)
    }

    enum Kind: UInt8 {
        case announce = 1
        case data = 2
        case plan = 3
        case nack = 4
        case done = 5
    }

    /// What the sender is doing, as its announces say.
    public enum Phase: UInt8, Sendable {
        /// Before the first data packet of the session.
        case announcing = 0
        /// Sending the pass's planned blocks.
        case sending = 1
        /// The pass is over; waiting for NACKs before the next pass or the end.
        case collecting = 2
    }

    /// What is being sent, how fast, and where the sender is; repeated during the data phase so
    /// late joiners learn the session and every receiver can tell how far the pass has come.
    public struct Announce: Hashable, Sendable {
        /// The torrent's geometry, checked by every receiver against its own torrent.
        public var pieceCount: Int
        public var pieceLength: Int
        public var totalLength: Int64
        /// The sender's current rate in bits per second (datagrams with IP and UDP headers).
        public var rate: Int
        public var pass: UInt16
        public var phase: Phase
        /// The piece the pass is at: pieces of the plan below it have been sent. `pieceCount` once
        /// the pass is over.
        public var cursor: Int
        /// Distinct receivers the sender has heard from (NACKs and completion reports).
        public var receivers: Int
        /// A receiver keeps quiet about a piece once this many other receivers' NACKs covered what
        /// it misses of it: enough for the sender's repair threshold, so more would change nothing.
        public var suppressAfter: Int
        /// Receivers spread their NACKs over a random delay of up to this many milliseconds.
        public var nackWindowMilliseconds: Int
        /// The sender cycles through the pieces until stopped (late joiners catch up).
        public var carousel: Bool
        /// The sender has every piece, so receivers may report any piece they miss.
        public var senderComplete: Bool

        public init(
            pieceCount: Int, pieceLength: Int, totalLength: Int64, rate: Int, pass: UInt16, phase: Phase,
            cursor: Int, receivers: Int, suppressAfter: Int, nackWindowMilliseconds: Int,
            carousel: Bool, senderComplete: Bool
        ) {
            self.pieceCount = pieceCount
            self.pieceLength = pieceLength
            self.totalLength = totalLength
            self.rate = rate
            self.pass = pass
            self.phase = phase
            self.cursor = cursor
            self.receivers = receivers
            self.suppressAfter = suppressAfter
            self.nackWindowMilliseconds = nackWindowMilliseconds
            self.carousel = carousel
            self.senderComplete = senderComplete
        }

        static let bodyLength = 40
    }

    /// Which pieces a pass sends, as a bitmap chunk (high bit first, as in `Bitfield`): a torrent
    /// with more than `maxBits` pieces needs several chunks.
    public struct Plan: Hashable, Sendable {
        public static let maxBits = 8 * (MulticastPacket.maxControlLength - MulticastPacket.headerLength - 12)
        public var pass: UInt16
        public var firstPiece: Int
        public var bitCount: Int
        public var bitmap: [UInt8]

        public init(pass: UInt16, firstPiece: Int, bitCount: Int, bitmap: [UInt8]) {
            self.pass = pass
            self.firstPiece = firstPiece
            self.bitCount = bitCount
            self.bitmap = bitmap
        }

        public func contains(_ piece: PieceIndex) -> Bool {
            let bit = piece.value - firstPiece
            guard bit >= 0 && bit < bitCount else { return false }
            return bitmap[bit >> 3] & (0x80 >> UInt8(bit & 7)) != 0
        }
    }

    /// The header of a data packet: which bytes of which piece's wire form the payload holds.
    public struct DataBlock: Hashable, Sendable {
        public static let headerLength = 14
        public var piece: PieceIndex
        /// A multiple of `blockLength`, below `maxBlocksPerPiece` blocks.
        public var offset: Int
        /// The payload's length: `blockLength`, or what is left of the piece (the datagram's
        /// length tells it; no field does).
        public var length: Int
        /// Counts every data packet of a sender instance (modulo 65,536), so receivers can measure
        /// their loss.
        public var sequence: UInt16
        /// The pass it belongs to, modulo 128: enough to tell the current pass from a stray one.
        public var pass: UInt8
        /// Sent again because receivers reported it missing.
        public var repair: Bool

        public init(piece: PieceIndex, offset: Int, length: Int, sequence: UInt16, pass: UInt8, repair: Bool) {
            precondition(pass < 0x80, "a data packet holds the pass modulo 128")
            self.piece = piece
            self.offset = offset
            self.length = length
            self.sequence = sequence
            self.pass = pass
            self.repair = repair
        }

        /// The 7 bits of a pass that data packets carry.
        public static func passTag(_ pass: UInt16) -> UInt8 { UInt8(pass & 0x7F) }

        public var block: Int { offset / MulticastPacket.blockLength }
    }

    /// A receiver's report to the group: the blocks it misses, or (with `complete`) that it has
    /// every piece.
    public struct Nack: Hashable, Sendable {
        static let fixedLength = 16
        /// The sender instance the report is for.
        public var target: UInt32
        /// The sender's pass the report was made in.
        public var pass: UInt16
        /// Data packets the receiver lost, per thousand (from gaps in the sequence numbers).
        public var lossPermille: Int
        /// Pieces the receiver still lacks in all (the entries may name only some of them).
        public var missingPieces: Int
        public var complete: Bool
        /// A reader of the image in flight waits for these pieces (mUFS): the sender puts them on
        /// the group next, ahead of its pass, so this receiver and every other keeps them. Not a
        /// loss report: it is no vote for a repair, and other receivers do not count it.
        public var urgent: Bool
        public var entries: [NackEntry]

        public init(
            target: UInt32, pass: UInt16, lossPermille: Int, missingPieces: Int, complete: Bool = false, urgent: Bool = false,
            entries: [NackEntry]
        ) {
            self.target = target
            self.pass = pass
            self.lossPermille = lossPermille
            self.missingPieces = missingPieces
            self.complete = complete
            self.urgent = urgent
            self.entries = entries
        }
    }

    /// Missing blocks of one piece: a bitmap of `blockCount` blocks from `firstBlock` (set bit:
    /// missing), or with `blockCount` 0 every block from `firstBlock` to the end of the piece (a
    /// piece never heard costs 10 bytes, whatever its size).
    public struct NackEntry: Hashable, Sendable {
        static let fixedLength = 10
        public var piece: PieceIndex
        public var firstBlock: Int
        public var blockCount: Int
        public var bitmap: [UInt8]

        public init(piece: PieceIndex, firstBlock: Int, blockCount: Int, bitmap: [UInt8]) {
            self.piece = piece
            self.firstBlock = firstBlock
            self.blockCount = blockCount
            self.bitmap = bitmap
        }

        /// Every block of the piece from `firstBlock` on.
        public static func rest(of piece: PieceIndex, from firstBlock: Int = 0) -> NackEntry {
            NackEntry(piece: piece, firstBlock: firstBlock, blockCount: 0, bitmap: [])
        }

        var encodedLength: Int { Self.fixedLength + bitmap.count }

        /// The blocks it names, given the piece's block count.
        public func blocks(inPieceOf blocks: Int) -> [Int] {
            if blockCount == 0 { return Array(firstBlock..<max(firstBlock, blocks)) }
            return (0..<blockCount).filter { bitmap[$0 >> 3] & (0x80 >> UInt8($0 & 7)) != 0 }.map { firstBlock + $0 }
        }
    }

    /// The sender has finished (once mode) or is stopping: BitTorrent takes over what is missing.
    public struct Done: Hashable, Sendable {
        static let bodyLength = 4
        /// The pass the sender ended in.
        public var pass: UInt16

        public init(pass: UInt16) { self.pass = pass }
    }

    // MARK: Encoding

    /// The datagram.
    public func encode() -> [UInt8] {
        var out = ByteWriter()
        switch body {
        case .announce(let a):
            writeHeader(&out, .announce, flags: (a.carousel ? 1 : 0) | (a.senderComplete ? 2 : 0))
            out.u32(a.pieceCount)
            out.u32(a.pieceLength)
            out.u64(UInt64(a.totalLength))
            out.u64(UInt64(a.rate))
            out.u16(Int(a.pass))
            out.u8(Int(a.phase.rawValue))
            out.u8(0)
            out.u32(a.cursor)
            out.u32(a.receivers)
            out.u16(a.suppressAfter)
            out.u16(a.nackWindowMilliseconds)
        case .plan(let p):
            writeHeader(&out, .plan, flags: 0)
            out.u16(Int(p.pass))
            out.u16(0)
            out.u32(p.firstPiece)
            out.u32(p.bitCount)
            out.bytes.append(contentsOf: p.bitmap)
        case .data(let block, let payload):
            out.bytes = [UInt8](repeating: 0, count: DataBlock.headerLength)
            out.bytes.withUnsafeMutableBytes { Self.writeDataHeader(instance: instance, block, into: $0) }
            out.bytes.append(contentsOf: payload)
        case .nack(let n):
            writeHeader(&out, .nack, flags: (n.complete ? 1 : 0) | (n.urgent ? 2 : 0))
            out.u32(Int(n.target))
            out.u16(Int(n.pass))
            out.u16(n.lossPermille)
            out.u32(n.missingPieces)
            out.u16(n.entries.count)
            out.u16(0)
            for entry in n.entries {
                out.u32(entry.piece.value)
                out.u32(entry.firstBlock)
                out.u16(entry.blockCount)
                out.bytes.append(contentsOf: entry.bitmap)
            }
        case .done(let d):
            writeHeader(&out, .done, flags: 0)
            out.u16(Int(d.pass))
            out.u16(0)
        }
        return out.bytes
    }

    private func writeHeader(_ out: inout ByteWriter, _ kind: Kind, flags: Int) {
        out.bytes.reserveCapacity(Self.maxDatagramLength)
        out.bytes.append(contentsOf: Self.magic)
        out.u8(Int(Self.version))
        out.u8(Int(kind.rawValue))
        out.u16(flags)
        out.u64(session.value)
        out.u32(Int(instance))
    }

    /// Writes a data packet's 14-byte header at the start of `buffer`, so that a runtime can read
    /// the payload from storage straight after it, into the same buffer, with no copy: the
    /// datagram is then `buffer[0 ..< DataBlock.headerLength + block.length]`.
    public static func writeDataHeader(
        instance: UInt32, _ block: DataBlock, into buffer: UnsafeMutableRawBufferPointer
    ) {
        precondition(buffer.count >= DataBlock.headerLength, "a data header needs \(DataBlock.headerLength) bytes")
        precondition(block.length > 0 && block.length <= blockLength, "a block holds 1...\(blockLength) bytes")
        precondition(block.offset % blockLength == 0 && block.block < maxBlocksPerPiece, "block at \(block.offset)")
        var at = 0
        func put(_ value: UInt64, _ width: Int) {
            for index in 0..<width {
                buffer[at + index] = UInt8(truncatingIfNeeded: value >> (8 * (width - 1 - index)))
            }
            at += width
        }
        put(UInt64(dataMarker), 1)
        put(UInt64(block.pass) | (block.repair ? 0x80 : 0), 1)
        put(UInt64(instance), 4)
        put(UInt64(block.piece.value), 4)
        put(UInt64(block.block), 2)
        put(UInt64(block.sequence), 2)
    }

    /// Whether a datagram is a data packet (by its first byte), before decoding it.
    public static func isData(_ bytes: some Collection<UInt8>) -> Bool { bytes.first == dataMarker }

    /// Whether a datagram says it is a NACK (by its magic and type), before decoding it.
    public static func isNack(_ bytes: [UInt8]) -> Bool {
        bytes.count >= headerLength && bytes[0] == magic[0] && bytes[1] == magic[1] && bytes[2] == magic[2]
            && bytes[3] == magic[3] && bytes[5] == Kind.nack.rawValue
    }
}

/// A token bucket of one second's depth, for work done on datagrams anyone can send.
struct TokenBudget: Sendable {
    private var tokens: Double?
    private var last = 0.0

    /// Takes one token if there is one (refilled at `rate` a second, at most `rate` held).
    mutating func take(now: Double, rate: Double) -> Bool {
        let available = min(rate, (tokens ?? rate) + max(0, now - last) * rate)
        last = max(last, now)
        guard available >= 1 else {
            tokens = available
            return false
        }
        tokens = available - 1
        return true
    }
}

/// Big-endian appends; values are range-checked by the types that hold them.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ value: Int) { bytes.append(UInt8(truncatingIfNeeded: value)) }
    mutating func u16(_ value: Int) { append(UInt64(truncatingIfNeeded: value), 2) }
    mutating func u32(_ value: Int) { append(UInt64(truncatingIfNeeded: value), 4) }
    mutating func u64(_ value: UInt64) { append(value, 8) }

    private mutating func append(_ value: UInt64, _ width: Int) {
        for index in 0..<width { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * (width - 1 - index)))) }
    }
}
