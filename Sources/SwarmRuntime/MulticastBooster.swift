import Logging
import Metainfo
import Multicast
import NIOCore
import NIOPosix
import Storage

/// Where and how the multicast booster sends or listens (docs/multicast.md).
public struct MulticastOptions: Sendable {
    /// An IPv4 multicast group, such as 239.255.42.1.
    public var group: String
    public var port: Int
    /// The network device to send and listen on (nil: the route for the group decides).
    public var interface: String?
    public var ttl: UInt8 = 1
    /// Sending rate in bits per second, IP and UDP headers included.
    public var rate = 95_000_000
    /// Keep cycling through the pieces for nodes that join late, instead of one pass and repairs.
    public var carousel = false
    /// Receivers to wait for (they join on the group) before the first pass, at most 60 s.
    public var minReceivers = 0
    /// A sealed image's content key, for the publisher and key holders: booster control packets
    /// are then authenticated with a key derived from it (`MulticastAuthentication`), so key
    /// holders follow only the publisher's sender. Nil for plain images and relays.
    public var contentKey: [UInt8]?

    public init(group: String, port: Int) {
        self.group = group
        self.port = port
    }
}

/// The booster's sockets: one bound to the group's port and joined to the group, which only reads
/// (datagrams in go to `onDatagram`, on the channel's loop), and one that only writes to the group.
/// They are apart because a refused send (EPERM from a firewall that drops it) closes a channel in
/// SwiftNIO, and must never take the listening socket, and with it the group membership, along.
/// A closed sending socket is opened again on the next write.
final class MulticastLink: @unchecked Sendable {
    let channel: any Channel
    let groupAddress: SocketAddress
    private let options: MulticastOptions
    private let device: NIONetworkDevice?
    private var sender: (any Channel)?
    private var reopening = false

    var allocator: ByteBufferAllocator { channel.allocator }
    static let vectorReads = 32

    private init(channel: any Channel, groupAddress: SocketAddress, options: MulticastOptions, device: NIONetworkDevice?) {
        self.channel = channel
        self.groupAddress = groupAddress
        self.options = options
        self.device = device
    }

    /// `onDatagram` gets each datagram and the address it came from. `dropsData`: the kernel drops
    /// data packets before they reach the listening socket (`MulticastLink.attachDataFilter`), for a
    /// sender, which listens only for NACKs and would otherwise wake up for each of its own data
    /// packets, looped back to it by the group.
    static func open(_ options: MulticastOptions, on group: any EventLoopGroup, dropsData: Bool = false,
                     onDatagram: @escaping @Sendable ([UInt8], SocketAddress) -> Void) async throws -> MulticastLink {
        let groupAddress = try SocketAddress(ipAddress: options.group, port: options.port)
        let device = try options.interface.map { name in
            guard let device = try System.enumerateDevices().first(where: { $0.name == name && $0.address?.protocol == .inet }) else {
                throw MulticastLinkError.noSuchInterface(name)
            }
            return device
        }
        // Several receivers on one host (tests, loopback) share the port: SO_REUSEADDR lets each of
        // them have every datagram of the group.
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 8 << 20)
            // Up to 32 datagrams per recvmmsg (a receiver takes in 8,000 a second at 100 Mbit/s);
            // the read buffer is split between them, so it holds 32 of the largest.
            .channelOption(.datagramVectorReadMessageCount, value: Self.vectorReads)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Self.vectorReads * 2048))
            // Reads are asked for by `Inbound`, which pauses between them so that one wake-up
            // takes in several datagrams.
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Inbound(onDatagram))
                }
            }
            // Bound to the group's address, not the wildcard: the kernel then delivers only
            // datagrams sent to the group, so a host that is not on the LAN segment (or one that
            // unicasts to our port) cannot reach the booster at all.
            .bind(host: options.group, port: options.port).get()
        guard let multicast = channel as? any MulticastChannel else { throw MulticastLinkError.notMulticastCapable }
        if dropsData, let provider = channel as? any SocketOptionProvider {
            // Only an optimisation: without the filter the sender reads and ignores its own data.
            try? await attachDataFilter(provider)
        }
        try await multicast.joinGroup(groupAddress, device: device).get()
        let link = MulticastLink(channel: channel, groupAddress: groupAddress, options: options, device: device)
        let sender = try await link.openSender().get()
        try await channel.eventLoop.submit { link.sender = sender }.get()
        return link
    }

    private func openSender() -> EventLoopFuture<any Channel> {
        let (ttl, device) = (options.ttl, device)
        return DatagramBootstrap(group: channel.eventLoop)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .bind(host: "0.0.0.0", port: 0)
            .flatMap { sender in
                guard let provider = sender as? any SocketOptionProvider else {
                    return sender.eventLoop.makeFailedFuture(MulticastLinkError.notMulticastCapable)
                }
                var ready = provider.setIPMulticastTTL(ttl)
                if case .v4(let local)? = device?.address {
                    ready = ready.flatMap { provider.setIPMulticastIF(local.address.sin_addr) }
                }
                return ready.map { sender }
            }
    }

    /// Queues one datagram to the group; `flush` sends what is queued (as one sendmmsg where it can).
    /// Called on the channel's loop.
    func write(_ buffer: ByteBuffer) {
        guard let sender, sender.isActive else { return reopen() }
        sender.write(AddressedEnvelope(remoteAddress: groupAddress, data: buffer), promise: nil)
    }

    func flush() { sender?.flush() }

    func close() {
        channel.close(promise: nil)
        sender?.close(promise: nil)
        sender = nil
    }

    private func reopen() {
        guard !reopening, channel.isActive else { return }
        reopening = true
        openSender().whenComplete { result in
            self.reopening = false
            if case .success(let sender) = result { self.sender = sender }
        }
    }

    /// A classic BPF program on the listening socket that drops every datagram whose first byte
    /// is the data marker (for a UDP socket the program sees the 8-byte UDP header first), and
    /// keeps the rest. Linux only; elsewhere the sender reads its data and ignores it.
    static func attachDataFilter(_ provider: any SocketOptionProvider) async throws {
        #if os(Linux)
        // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }, struct sock_fprog { u16 len; sock_filter *filter; }
        struct Instruction { var code: UInt16; var jt: UInt8; var jf: UInt8; var k: UInt32 }
        struct Program: Sendable { var length: UInt16; var filter: UInt }
        let instructions = [
            Instruction(code: 0x30, jt: 0, jf: 0, k: 8),  // ldb [8]: the payload's first byte
            Instruction(code: 0x15, jt: 0, jf: 1, k: UInt32(MulticastPacket.dataMarker)),  // jeq marker
            Instruction(code: 0x06, jt: 0, jf: 0, k: 0),  // ret 0: drop
            Instruction(code: 0x06, jt: 0, jf: 0, k: UInt32.max),  // ret all: keep
        ]
        let filter = UnsafeMutableBufferPointer<Instruction>.allocate(capacity: instructions.count)
        defer { filter.deallocate() }
        _ = filter.initialize(from: instructions)
        // The kernel copies the program during the call.
        let program = Program(length: UInt16(instructions.count), filter: UInt(bitPattern: filter.baseAddress))
        try await provider.unsafeSetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_ATTACH_FILTER), value: program).get()
        #endif
    }

    /// Hands each datagram to `onDatagram`, and asks for the next read only after a pause: at a
    /// booster's rate a datagram arrives every 0.1 to 1.5 ms, and waking up for each one cost a
    /// receiver more CPU than everything it then did with it. The pause is at most `maxPause`, and
    /// shorter when datagrams come fast, so that about `batch` of them wait in the socket buffer
    /// (the rate is that of the last read). When nothing comes, the read waits without a timer.
    final class Inbound: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        static let maxPause = 0.005
        static let batch = Double(MulticastLink.vectorReads)
        let onDatagram: @Sendable ([UInt8], SocketAddress) -> Void
        private var readAt = NIODeadline.now()
        private var datagrams = 0
        init(_ onDatagram: @escaping @Sendable ([UInt8], SocketAddress) -> Void) { self.onDatagram = onDatagram }

        /// The pause after a read that took `datagrams` in `elapsed` seconds since the one before.
        static func pause(datagrams: Int, elapsed: Double) -> Double {
            guard datagrams > 0 else { return 0 }
            return min(maxPause, batch * max(0, elapsed) / Double(datagrams))
        }

        func channelActive(context: ChannelHandlerContext) {
            context.read()
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            datagrams += 1
            onDatagram(Array(envelope.data.readableBytesView), envelope.remoteAddress)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            let now = NIODeadline.now()
            let pause = Self.pause(datagrams: datagrams, elapsed: Double((now - readAt).nanoseconds) / 1e9)
            (readAt, datagrams) = (now, 0)
            if pause <= 0 {
                context.read()
            } else {
                let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .nanoseconds(Int64(pause * 1e9))) {
                    let context = loopBound.value
                    if context.channel.isActive { context.read() }
                }
            }
            context.fireChannelReadComplete()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A datagram socket's errors (an ICMP unreachable, a full buffer) are not fatal.
        }
    }
}

extension MulticastOptions {
    /// The authentication of a sealed session's control packets, for whoever holds the key.
    public func authentication(for session: MulticastSession) -> MulticastAuthentication? {
        contentKey.map { MulticastAuthentication(contentKey: $0, session: session) }
    }
}

public enum MulticastLinkError: Error, CustomStringConvertible {
    case noSuchInterface(String)
    case notMulticastCapable

    public var description: String {
        switch self {
        case .noSuchInterface(let name): "no network interface '\(name)' with an IPv4 address"
        case .notMulticastCapable: "the datagram channel cannot join a multicast group"
        }
    }
}

/// The booster's sending side: paces a `MulticastSender` on an event loop of its own and sends the
/// wire form of the pieces (ciphertext for a sealed image) read from the store.
public final class MulticastSenderRuntime: @unchecked Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let loop: any EventLoop
    private let store: PieceStore
    private let logger: Logger
    private var sender: MulticastSender
    private var link: MulticastLink?
    private let started = NIODeadline.now()
    private var scheduled: Scheduled<Void>?
    /// The piece being sent, read once: a pass sends a piece's blocks one after another.
    private var current: (piece: PieceIndex, bytes: [UInt8])?
    private let done: EventLoopPromise<MulticastSender.Counters>

    public init(metainfo: Metainfo, store: PieceStore, options: MulticastOptions, logger: Logger) {
        loop = group.next()
        self.store = store
        self.logger = logger
        var configuration = MulticastSender.Configuration(rate: options.rate, mode: options.carousel ? .carousel : .once)
        // Two repair rounds, then BitTorrent: each round recovers most of what is left, but costs a
        // round trip of NACK collection; the last few blocks come faster from peers.
        configuration.collectTime = 0.25
        configuration.maxRepairRounds = 1
        // The pacer may catch up on 16 ms of rate at once (the default is 2): on a busy machine
        // this thread is often scheduled late, and tokens beyond the bucket are lost. With 8 ms,
        // 1.8 % of the wake-ups of a sender beside 31 receivers on two cores came more than 6 ms
        // late, some 40 ms, and the pass lost 1-4 % of its rate (docs/multicast.md). A burst
        // follows a link left idle as long, and fits the testbed's queues (20 ms or more).
        configuration.burst = 0.016
        // Woken when 2 ms of rate are due, not at every datagram: the pacer then sends a few
        // datagrams (one sendmmsg) per wake-up, which costs this thread a half to a sixteenth of
        // the wake-ups and syscalls of one datagram each (10 to 100 Mbit/s). A quarter of the
        // bucket, so a thread woken up to 6 ms late still loses no tokens: with 4 ms (4 ms of
        // slack) the pass of 32 hosts at 10 Mbit/s, two cores busy, took 3 % longer.
        configuration.batch = 0.002
        // Three announces 20 ms apart, not 100, before the data: a receiver answers the first
        // with its join, and with --min-receivers the pass starts as soon as the last one joined.
        configuration.announceSpacing = 0.02
        configuration.minReceivers = options.minReceivers
        let session = MulticastSession(infoHash: metainfo.infoHash)
        sender = MulticastSender(session: session, layout: metainfo.info.layout,
            have: Bitfield(pieceCount: metainfo.info.pieceCount, all: true), configuration: configuration,
            authentication: options.authentication(for: session), seed: UInt64.random(in: .min ... .max))
        done = loop.makePromise()
        self.options = options
    }

    private let options: MulticastOptions

    /// Joins the group and starts sending.
    public func start() async throws {
        let link = try await MulticastLink.open(options, on: group, dropsData: true) { [weak self] datagram, _ in
            guard let self else { return }
            self.sender.received(datagram, now: self.now)
        }
        try await loop.submit {
            self.link = link
            self.pump()
        }.get()
        logger.info("multicast sender started", metadata: ["group": "\(options.group):\(options.port)", "rate": "\(options.rate)"])
    }

    /// Completes with the sender's counters when it has finished (once mode).
    public var finished: EventLoopFuture<MulticastSender.Counters> { done.futureResult }

    public func counters() async -> MulticastSender.Counters? {
        try? await loop.submit { self.sender.counters }.get()
    }

    /// Sends DONE, closes the socket and stops the loop.
    public func shutdown() async {
        try? await loop.submit {
            self.scheduled?.cancel()
            self.finish(announce: true)
        }.get()
        try? await group.shutdownGracefully()
    }

    private var now: Double { Double((NIODeadline.now() - started).nanoseconds) / 1e9 }

    private func pump() {
        guard let link else { return }
        var wrote = false
        for action in sender.next(now: now) {
            switch action {
            case .sendControl(let bytes):
                link.write(link.allocator.buffer(bytes: bytes))
                wrote = true
            case .sendData(let block):
                guard let payload = wireBytes(of: block.piece) else { continue }
                var buffer = link.allocator.buffer(capacity: MulticastPacket.maxDatagramLength)
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: MulticastPacket.maxDatagramLength) { target in
                    payload.withUnsafeBytes { source in
                        sender.writeData(block, payload: UnsafeRawBufferPointer(rebasing: source[block.offset..<(block.offset + block.length)]),
                            into: target)
                    }
                }
                link.write(buffer)
                wrote = true
            case .finished:
                if wrote { link.flush() }
                finish(announce: false)
                return
            }
        }
        if wrote { link.flush() }
        guard let wakeup = sender.nextWakeup else { return finish(announce: false) }
        let delay = max(0, wakeup - now)
        scheduled = loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) { self.pump() }
    }

    private func wireBytes(of piece: PieceIndex) -> [UInt8]? {
        if let current, current.piece == piece { return current.bytes }
        let layout = store.info.layout
        var bytes = [UInt8](repeating: 0, count: layout.length(of: piece))
        do {
            try bytes.withUnsafeMutableBytes { buffer in try store.readWire(piece, into: buffer) }
        } catch {
            logger.error("multicast sender cannot read a piece", metadata: ["piece": "\(piece.value)", "error": "\(error)"])
            return nil
        }
        current = (piece, bytes)
        return bytes
    }

    private func finish(announce: Bool) {
        guard link != nil else { return }  // finished already (a once pass, then shutdown)
        if announce, let link {
            sender.stop(now: now)
            for case .sendControl(let bytes) in sender.next(now: now + 1) { link.write(link.allocator.buffer(bytes: bytes)) }
            link.flush()
        }
        link?.close()
        link = nil
        let counters = sender.counters
        logger.info("multicast sender finished", metadata: ["data_packets": "\(counters.dataPackets)", "repair_packets": "\(counters.repairPackets)"])
        done.succeed(counters)
    }
}
