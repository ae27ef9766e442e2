import Metainfo
import NIOCore

/// Frames and parses peer wire messages: `<length:UInt32><id:UInt8><payload>`. Pure: bytes in,
/// messages out, usable as a SwiftNIO decoder and tested without sockets.
public struct PeerWireDecoder: Sendable {
    /// The longest message accepted. A `piece` carries at most 128 KiB; a bitfield of a million
    /// pieces is 125 KiB; extension messages (PEX, metadata) stay well under 1 MiB.
    public var maxMessageLength: Int

    public init(maxMessageLength: Int = (1 << 20) + 9) {
        self.maxMessageLength = maxMessageLength
    }

    /// The next whole message, or nil until enough bytes have arrived. A length beyond the limit is
    /// refused as soon as the 4-byte prefix is read, before any payload is buffered.
    public func next(from buffer: inout ByteBuffer) throws(PeerWireError) -> PeerMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        // Clamped: a limit configured beyond 4 GiB (or below 0) must not trap here.
        guard length <= UInt32(clamping: maxMessageLength) else {
            throw .messageTooLong(length: Int(length), limit: maxMessageLength)
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        guard length > 0 else { return .keepAlive }
        guard var payload = buffer.readSlice(length: Int(length)) else { return nil }
        let id = payload.readInteger(as: UInt8.self)!
        return try Self.parse(id: id, payload: &payload)
    }

    private static func parse(id: UInt8, payload: inout ByteBuffer) throws(PeerWireError) -> PeerMessage {
        guard let known = PeerMessage.ID(rawValue: id) else {
            return .unknown(id: id, length: payload.readableBytes)
        }
        func expect(_ size: Int) throws(PeerWireError) {
            guard payload.readableBytes == size else {
                throw .wrongLength(message: "\(known)", length: payload.readableBytes)
            }
        }
        func index() -> PieceIndex { PieceIndex(Int(payload.readInteger(as: UInt32.self)!)) }
        func block() -> BlockRequest {
            let piece = index()
            let begin = Int(payload.readInteger(as: UInt32.self)!)
            let length = Int(payload.readInteger(as: UInt32.self)!)
            return BlockRequest(piece: piece, begin: begin, length: length)
        }
        switch known {
        case .choke: try expect(0); return .choke
        case .unchoke: try expect(0); return .unchoke
        case .interested: try expect(0); return .interested
        case .notInterested: try expect(0); return .notInterested
        case .haveAll: try expect(0); return .haveAll
        case .haveNone: try expect(0); return .haveNone
        case .have: try expect(4); return .have(index())
        case .suggest: try expect(4); return .suggest(index())
        case .allowedFast: try expect(4); return .allowedFast(index())
        case .request: try expect(12); return .request(block())
        case .cancel: try expect(12); return .cancel(block())
        case .reject: try expect(12); return .reject(block())
        case .port: try expect(2); return .port(payload.readInteger(as: UInt16.self)!)
        case .bitfield: return .bitfield(payload.readBytes(length: payload.readableBytes) ?? [])
        case .piece:
            guard payload.readableBytes >= 8 else { throw .wrongLength(message: "piece", length: payload.readableBytes) }
            let piece = index()
            let begin = Int(payload.readInteger(as: UInt32.self)!)
            return .piece(piece, begin: begin, block: payload)
        case .extended:
            guard payload.readableBytes >= 1 else { throw .wrongLength(message: "extended", length: 0) }
            let extensionID = payload.readInteger(as: UInt8.self)!
            return .extended(id: extensionID, payload: payload)
        }
    }
}

/// Frames a connection's reads into messages. Messages are decoded from each read itself (a
/// piece's block stays a slice of it); only a message split across reads is assembled, from its
/// start and just the bytes of the next read that complete it, never the whole read.
public struct PeerWireFramer: Sendable {
    public let decoder: PeerWireDecoder
    /// The start of a message whose end has not arrived.
    private var pending = ByteBuffer()

    public init(decoder: PeerWireDecoder = PeerWireDecoder()) {
        self.decoder = decoder
    }

    /// Bytes held of a message still incomplete.
    public var pendingBytes: Int { pending.readableBytes }

    /// The messages `read` completes, in order. Throws at the first over-long length prefix (as
    /// soon as its 4 bytes are in) or malformed message; the connection is then to be dropped.
    public mutating func messages(in read: ByteBuffer) throws(PeerWireError) -> [PeerMessage] {
        var incoming = read
        var messages: [PeerMessage] = []
        if pending.readableBytes > 0 {
            guard let message = try finishSplitMessage(from: &incoming) else { return [] }
            messages.append(message)
        }
        while let message = try decoder.next(from: &incoming) { messages.append(message) }
        if incoming.readableBytes > 0 {
            var rest = ByteBufferAllocator().buffer(capacity: max(incoming.readableBytes, expectedLength(of: incoming)))
            rest.writeBuffer(&incoming)
            pending = rest
        }
        return messages
    }

    /// Completes the split message, copying only its missing bytes out of `incoming`; nil while
    /// it is still incomplete (`incoming` is then used up).
    private mutating func finishSplitMessage(from incoming: inout ByteBuffer) throws(PeerWireError) -> PeerMessage? {
        while true {
            if let message = try decoder.next(from: &pending) {
                pending = ByteBuffer()
                return message
            }
            guard incoming.readableBytes > 0 else { return nil }
            let wanted = max(1, expectedLength(of: pending) - pending.readableBytes)
            var part = incoming.readSlice(length: min(wanted, incoming.readableBytes))!
            pending.writeBuffer(&part)
        }
    }

    /// The whole length of the message `buffer` starts with (prefix included), or 4 while the
    /// prefix is incomplete; at most the decoder's limit.
    private func expectedLength(of buffer: ByteBuffer) -> Int {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return 4 }
        return 4 + min(Int(length), decoder.maxMessageLength)
    }
}

/// Writes peer wire messages.
public enum PeerWireEncoder {
    /// A `piece` message up to its block: a sender may then write the block from where it lies.
    public static func writePieceHeader(_ piece: PieceIndex, begin: Int, length: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(9 + length))
        buffer.writeInteger(PeerMessage.ID.piece.rawValue)
        buffer.writeInteger(UInt32(piece.value))
        buffer.writeInteger(UInt32(begin))
    }

    public static func write(_ message: PeerMessage, to buffer: inout ByteBuffer) {
        func header(_ id: PeerMessage.ID, _ payloadLength: Int) {
            buffer.writeInteger(UInt32(1 + payloadLength))
            buffer.writeInteger(id.rawValue)
        }
        func block(_ id: PeerMessage.ID, _ request: BlockRequest) {
            header(id, 12)
            buffer.writeInteger(UInt32(request.piece.value))
            buffer.writeInteger(UInt32(request.begin))
            buffer.writeInteger(UInt32(request.length))
        }
        switch message {
        case .keepAlive: buffer.writeInteger(UInt32(0))
        case .choke: header(.choke, 0)
        case .unchoke: header(.unchoke, 0)
        case .interested: header(.interested, 0)
        case .notInterested: header(.notInterested, 0)
        case .haveAll: header(.haveAll, 0)
        case .haveNone: header(.haveNone, 0)
        case .have(let piece): header(.have, 4); buffer.writeInteger(UInt32(piece.value))
        case .suggest(let piece): header(.suggest, 4); buffer.writeInteger(UInt32(piece.value))
        case .allowedFast(let piece): header(.allowedFast, 4); buffer.writeInteger(UInt32(piece.value))
        case .bitfield(let bytes): header(.bitfield, bytes.count); buffer.writeBytes(bytes)
        case .request(let request): block(.request, request)
        case .cancel(let request): block(.cancel, request)
        case .reject(let request): block(.reject, request)
        case .port(let port): header(.port, 2); buffer.writeInteger(port)
        case .piece(let piece, let begin, let data):
            writePieceHeader(piece, begin: begin, length: data.readableBytes, to: &buffer)
            buffer.writeImmutableBuffer(data)
        case .extended(let id, let payload):
            header(.extended, 1 + payload.readableBytes)
            buffer.writeInteger(id)
            buffer.writeImmutableBuffer(payload)
        case .unknown(let id, let length):
            buffer.writeInteger(UInt32(1 + length))
            buffer.writeInteger(id)
            buffer.writeRepeatingByte(0, count: length)
        }
    }
}
