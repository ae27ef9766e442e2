import NIOCore

/// The server side of one NBD connection as a pure state machine: bytes in, events out (bytes to
/// send, reads to answer, the end). It speaks fixed newstyle negotiation (`NBD_OPT_GO`, `INFO`,
/// `LIST`, `EXPORT_NAME`, `ABORT`) and simple replies, and serves one read-only export; the
/// runtime (`NBDServer`) reads the data and writes the replies, in whatever order reads complete
/// (NBD matches replies to requests by handle).
///
/// Every length a client sends is bounded before anything is buffered: options at most
/// `maximumOptionLength`, names at most 4,096 bytes (the protocol's limit), at most `maximumOptions`
/// options before transmission, reads at most the export's maximum block size, and at most
/// `maximumOutstandingReads` reads or `maximumOutstandingBytes` in flight: beyond that the session parses nothing more until
/// reads are answered, and `wantsInput` tells the runtime to stop reading the socket. The payload of
/// a write (refused: the export is read-only) is skipped as it arrives, never held.
public struct NBDServerSession: Sendable {
    public struct Export: Sendable, Equatable {
        public var name: String
        public var size: Int64
        public var description: String
        /// Block size hints (`NBD_INFO_BLOCK_SIZE`): any byte range can be read, 4 KiB is the
        /// natural unit, and a read may be at most `maximumBlock` bytes.
        public var minimumBlock: UInt32 = 1
        public var preferredBlock: UInt32 = 4096
        public var maximumBlock: UInt32 = 32 << 20

        public init(name: String, size: Int64, description: String = "") {
            self.name = name
            self.size = size
            self.description = description
        }
    }

    public enum Event: Equatable, Sendable {
        /// Bytes to write, in order.
        case send(ByteBuffer)
        /// The transmission phase began: requests follow.
        case started
        /// Read `length` bytes at `offset` (inside the export) and answer with `NBDServerSession.reply`.
        case read(handle: UInt64, offset: Int64, length: Int)
        /// `NBD_CMD_CACHE`: the client will want this range soon (already answered).
        case prefetch(offset: Int64, length: Int)
        /// Close the connection once the bytes sent before are written; the reason is for the log.
        case close(String)
    }

    public static let maximumOptionLength = 64 << 10
    public static let maximumOptions = 128
    public static let maximumNameLength = 4096
    public static let maximumOutstandingReads = 64
    public static let maximumOutstandingBytes = 64 << 20

    enum Phase: Sendable {
        case clientFlags
        case options
        case transmission
        case closed
    }

    public let export: Export
    private var phase = Phase.clientFlags
    private var input = ByteBuffer()
    private var noZeroes = false
    private var optionCount = 0
    /// Bytes of a refused write's payload still to be skipped.
    private var skipping = 0
    public private(set) var outstandingReads = 0
    public private(set) var outstandingBytes = 0

    public init(export: Export) {
        self.export = export
    }

    /// The server speaks first: "NBDMAGIC", "IHAVEOPT" and its handshake flags.
    public static func greeting() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(NBDMagic.greeting)
        buffer.writeInteger(NBDMagic.option)
        buffer.writeInteger(NBDHandshakeFlag.fixedNewstyle | NBDHandshakeFlag.noZeroes)
        return buffer
    }

    /// The header of a simple reply: the read's data (exactly its length) follows when `error` is nil.
    public static func reply(handle: UInt64, error: NBDError? = nil) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(16)
        buffer.writeInteger(NBDMagic.simpleReply)
        buffer.writeInteger(error?.rawValue ?? 0)
        buffer.writeInteger(handle)
        return buffer
    }

    public var isClosed: Bool { phase == .closed }
    /// Whether the runtime should read more from the socket: not while the reads in flight are at
    /// their cap (the client's further requests wait in the kernel, not in our memory).
    public var wantsInput: Bool { phase != .closed && !readsAtCap }

    private var readsAtCap: Bool {
        outstandingReads >= Self.maximumOutstandingReads || outstandingBytes >= Self.maximumOutstandingBytes
    }

    var transmissionFlags: UInt16 {
        NBDTransmissionFlag.hasFlags | NBDTransmissionFlag.readOnly | NBDTransmissionFlag.sendFlush
            | NBDTransmissionFlag.sendCache | NBDTransmissionFlag.canMultiConnection
    }

    /// Bytes from the client.
    public mutating func receive(_ bytes: ByteBuffer) -> [Event] {
        guard phase != .closed else { return [] }
        var bytes = bytes
        if skipping > 0 {
            let skipped = min(skipping, bytes.readableBytes)
            bytes.moveReaderIndex(forwardBy: skipped)
            skipping -= skipped
        }
        input.writeBuffer(&bytes)
        return parse()
    }

    /// A read of `length` bytes was answered (its reply written or failed): further requests may
    /// be parsed.
    public mutating func readAnswered(length: Int) -> [Event] {
        outstandingReads = max(0, outstandingReads - 1)
        outstandingBytes = max(0, outstandingBytes - length)
        return parse()
    }

    private mutating func parse() -> [Event] {
        var events: [Event] = []
        while phase != .closed, skipping == 0 {
            let before = input.readableBytes
            switch phase {
            case .clientFlags: events += parseClientFlags()
            case .options: events += parseOption()
            case .transmission:
                guard !readsAtCap else { return events }
                events += parseRequest()
            case .closed: break
            }
            if input.readableBytes == before { break }  // waiting for more bytes
        }
        if phase == .closed { input.clear() }
        input.discardReadBytes()
        return events
    }

    private mutating func close(_ reason: String) -> [Event] {
        phase = .closed
        return [.close(reason)]
    }

    // MARK: Negotiation

    private mutating func parseClientFlags() -> [Event] {
        guard let flags = input.readInteger(as: UInt32.self) else { return [] }
        let known = NBDHandshakeFlag.clientFixedNewstyle | NBDHandshakeFlag.clientNoZeroes
        guard flags & NBDHandshakeFlag.clientFixedNewstyle != 0 else {
            return close("the client does not speak fixed newstyle negotiation (client flags \(flags))")
        }
        guard flags & ~known == 0 else { return close("unknown client flags \(flags)") }
        noZeroes = flags & NBDHandshakeFlag.clientNoZeroes != 0
        phase = .options
        return []
    }

    private mutating func parseOption() -> [Event] {
        guard input.readableBytes >= 16 else { return [] }
        let start = input.readerIndex
        guard let magic = input.getInteger(at: start, as: UInt64.self),
            let option = input.getInteger(at: start + 8, as: UInt32.self),
            let length = input.getInteger(at: start + 12, as: UInt32.self)
        else { return [] }
        guard magic == NBDMagic.option else { return close("an option without the IHAVEOPT magic") }
        guard length <= Self.maximumOptionLength else {
            return close("option \(option) carries \(length) bytes, more than \(Self.maximumOptionLength)")
        }
        guard input.readableBytes >= 16 + Int(length) else { return [] }
        input.moveReaderIndex(forwardBy: 16)
        let data = input.readSlice(length: Int(length)) ?? ByteBuffer()
        optionCount += 1
        guard optionCount <= Self.maximumOptions else {
            return close("more than \(Self.maximumOptions) options without entering transmission")
        }
        switch NBDOption(rawValue: option) {
        case .exportName:
            let name = String(buffer: data)
            guard data.readableBytes <= Self.maximumNameLength, matches(name) else {
                return close("asked for export \"\(name.prefix(64))\", which is not served")
            }
            var answer = ByteBuffer()
            answer.writeInteger(UInt64(export.size))
            answer.writeInteger(transmissionFlags)
            if !noZeroes { answer.writeRepeatingByte(0, count: 124) }
            phase = .transmission
            return [.send(answer), .started]
        case .abort:
            phase = .closed
            return [.send(optionReply(option, NBDReply.ack)), .close("the client aborted negotiation")]
        case .list:
            guard data.readableBytes == 0 else { return [.send(optionReply(option, NBDReply.errorInvalid))] }
            var entry = ByteBuffer()
            entry.writeInteger(UInt32(export.name.utf8.count))
            entry.writeString(export.name)
            return [.send(optionReply(option, NBDReply.server, entry)), .send(optionReply(option, NBDReply.ack))]
        case .info, .go:
            return infoOrGo(option, data)
        case .startTLS:
            return [.send(optionReply(option, NBDReply.errorPolicy))]
        case .structuredReply, .listMetaContext, .setMetaContext, nil:
            return [.send(optionReply(option, NBDReply.errorUnsupported))]
        }
    }

    /// `NBD_OPT_INFO` and `NBD_OPT_GO`: a name, then the information requests (16-bit each).
    private mutating func infoOrGo(_ option: UInt32, _ data: ByteBuffer) -> [Event] {
        var data = data
        guard let nameLength = data.readInteger(as: UInt32.self), nameLength <= Self.maximumNameLength,
            let nameBytes = data.readSlice(length: Int(nameLength)),
            let count = data.readInteger(as: UInt16.self), data.readableBytes == 2 * Int(count)
        else {
            return [.send(optionReply(option, NBDReply.errorInvalid))]
        }
        var requested: Set<UInt16> = []
        for _ in 0..<count { requested.insert(data.readInteger(as: UInt16.self) ?? 0) }
        let name = String(buffer: nameBytes)
        guard matches(name) else { return [.send(optionReply(option, NBDReply.errorUnknown))] }

        var replies: [Event] = []
        var info = ByteBuffer()
        info.writeInteger(NBDInfo.export.rawValue)
        info.writeInteger(UInt64(export.size))
        info.writeInteger(transmissionFlags)
        replies.append(.send(optionReply(option, NBDReply.info, info)))
        // Block sizes are always told: qemu and libnbd size their requests by them.
        var sizes = ByteBuffer()
        sizes.writeInteger(NBDInfo.blockSize.rawValue)
        sizes.writeInteger(export.minimumBlock)
        sizes.writeInteger(export.preferredBlock)
        sizes.writeInteger(export.maximumBlock)
        replies.append(.send(optionReply(option, NBDReply.info, sizes)))
        if requested.contains(NBDInfo.name.rawValue) {
            var named = ByteBuffer()
            named.writeInteger(NBDInfo.name.rawValue)
            named.writeString(export.name)
            replies.append(.send(optionReply(option, NBDReply.info, named)))
        }
        if requested.contains(NBDInfo.description.rawValue), !export.description.isEmpty {
            var described = ByteBuffer()
            described.writeInteger(NBDInfo.description.rawValue)
            described.writeString(String(export.description.prefix(Self.maximumNameLength)))
            replies.append(.send(optionReply(option, NBDReply.info, described)))
        }
        replies.append(.send(optionReply(option, NBDReply.ack)))
        if option == NBDOption.go.rawValue {
            phase = .transmission
            replies.append(.started)
        }
        return replies
    }

    /// The default export ("") and the export's own name both name it.
    private func matches(_ name: String) -> Bool { name.isEmpty || name == export.name }

    private func optionReply(_ option: UInt32, _ type: UInt32, _ data: ByteBuffer = ByteBuffer()) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(NBDMagic.optionReply)
        buffer.writeInteger(option)
        buffer.writeInteger(type)
        buffer.writeInteger(UInt32(data.readableBytes))
        var data = data
        buffer.writeBuffer(&data)
        return buffer
    }

    // MARK: Transmission

    private mutating func parseRequest() -> [Event] {
        guard input.readableBytes >= 28 else { return [] }
        guard let magic = input.readInteger(as: UInt32.self), let _ = input.readInteger(as: UInt16.self),
            let type = input.readInteger(as: UInt16.self), let handle = input.readInteger(as: UInt64.self),
            let offset = input.readInteger(as: UInt64.self), let length = input.readInteger(as: UInt32.self)
        else { return [] }
        guard magic == NBDMagic.request else { return close("a request without the NBD request magic") }
        let inRange = length > 0 && offset <= UInt64(export.size) && UInt64(length) <= UInt64(export.size) - offset
        switch NBDCommand(rawValue: type) {
        case .read:
            guard inRange, length <= export.maximumBlock else {
                return [.send(Self.reply(handle: handle, error: .invalid))]
            }
            outstandingReads += 1
            outstandingBytes += Int(length)
            return [.read(handle: handle, offset: Int64(offset), length: Int(length))]
        case .write:
            // Its payload follows; it is skipped as it arrives, never buffered.
            let buffered = min(Int(length), input.readableBytes)
            input.moveReaderIndex(forwardBy: buffered)
            skipping = Int(length) - buffered
            return [.send(Self.reply(handle: handle, error: .notPermitted))]
        case .trim, .writeZeroes:
            return [.send(Self.reply(handle: handle, error: .notPermitted))]
        case .flush:
            return [.send(Self.reply(handle: handle))]
        case .cache:
            guard inRange else { return [.send(Self.reply(handle: handle, error: .invalid))] }
            return [.send(Self.reply(handle: handle)), .prefetch(offset: Int64(offset), length: Int(length))]
        case .disconnect:
            return close("the client disconnected")
        case .blockStatus, nil:
            // Block status needs a negotiated meta context, which this server never agrees to.
            return [.send(Self.reply(handle: handle, error: .invalid))]
        }
    }
}
