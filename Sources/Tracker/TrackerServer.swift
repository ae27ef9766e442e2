import Logging
import Metainfo
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import TrackerProtocol

/// The tracker on a socket: HTTP/1.1 with keep-alive, in front of a `TrackerService`.
///
/// Plain HTTP on Linux is served by `TrackerHTTPListener`, epoll loops of the tracker's own that
/// build no SwiftNIO channel per connection (most clients open one connection per announce);
/// HTTPS (`tls`), and plain HTTP elsewhere, by SwiftNIO. Both answer through `TrackerService.answer`.
///
/// Every connection is bounded: a request line of at most `maxURILength`, a whole request within
/// `requestTimeout` (so a client trickling one byte a second is cut off), no request bodies, and at
/// most `maxConnections` open at once. Standalone (`vmswarm tracker`) or embedded in a seeder, it is
/// the same type: `start` it on a port (0 picks a free one) and `shutdown` it.
public final class TrackerServer: Sendable {
    public struct Limits: Sendable {
        public var maxURILength = 8192
        public var requestTimeout: TimeAmount = .seconds(10)
        public var maxConnections = 10_000
        public var expiryInterval: TimeAmount = .seconds(30)
        /// Connections waiting to be accepted (the kernel caps it at `net.core.somaxconn`).
        public var backlog: Int32 = 4096
        /// Connections accepted per wake-up of the listening socket's loop. NIO's default (4):
        /// batches of 64 measured worse under wrk's churn (docs/benchmarks.md, session 3).
        public var acceptsPerWakeup: UInt = 4
        /// Event-loop threads when the server runs its own (the listener's threads for plain HTTP).
        public var threads = System.coreCount
        /// Plain HTTP on the tracker's own listener (Linux); false serves it through SwiftNIO, as HTTPS is.
        public var ownHTTPListener = true

        public init() {}
    }

    public let service: TrackerService
    public let localAddress: SocketAddress
    private let front: Front

    private enum Front: Sendable {
        /// `tasks`: peer expiry and the per-loop deadline sweeps.
        case nio(channel: any Channel, group: any EventLoopGroup, ownsGroup: Bool, tasks: [RepeatedTask])
        #if os(Linux)
            case own(TrackerHTTPListener)
        #endif
    }

    public var port: Int { localAddress.port ?? 0 }

    /// Binds and starts serving. With `tls`, every connection is HTTPS (TLS first, then the same
    /// HTTP handling) on SwiftNIO, on `group` or on event loops of its own (`limits.threads`).
    /// Plain HTTP on Linux runs on `limits.threads` listener threads of its own; `group` is not used.
    public static func start(
        host: String, port: Int, configuration: TrackerConfiguration, limits: Limits = Limits(),
        logger: Logger, group: (any EventLoopGroup)? = nil, tls: NIOSSLContext? = nil
    ) async throws -> TrackerServer {
        let service = TrackerService(configuration: configuration, logger: logger)
        #if os(Linux)
            if tls == nil && limits.ownHTTPListener {
                let listener = try TrackerHTTPListener.start(host: host, port: port, service: service, limits: limits)
                logger.info("tracker listening", metadata: ["address": "\(listener.localAddress)"])
                return TrackerServer(service: service, front: .own(listener), localAddress: listener.localAddress)
            }
        #endif
        let loops = group ?? MultiThreadedEventLoopGroup(numberOfThreads: max(1, limits.threads))
        let connections = ConnectionCounter()
        // One deadline sweeper per event loop, made up front so handlers find theirs without a lock.
        let sweepInterval = min(TimeAmount.seconds(1), .nanoseconds(limits.requestTimeout.nanoseconds / 2))
        var sweepers: [ObjectIdentifier: NIOLoopBound<DeadlineSweeper>] = [:]
        var tasks: [RepeatedTask] = []
        for loop in loops.makeIterator() {
            let sweeper = try await loop.submit {
                NIOLoopBound(DeadlineSweeper { service.metrics.httpError(408) }, eventLoop: loop)
            }.get()
            sweepers[ObjectIdentifier(loop)] = sweeper
            tasks.append(loop.scheduleRepeatedTask(initialDelay: sweepInterval, delay: sweepInterval) { _ in sweeper.value.sweep() })
        }
        let deadlines = DeadlineSweepers(sweepers: sweepers)
        do {
            // A flash crowd opens thousands of connections within a second: a backlog the kernel
            // caps at net.core.somaxconn (4096 on current Linux; NIO's default asks for 256, and
            // this server asked for 1,024). No child options: NIO sets TCP_NODELAY on the
            // listening socket, which accepted ones inherit, and each child option costs a
            // setsockopt and a chain of futures per connection.
            let channel = try await ServerBootstrap(group: loops)
                .serverChannelOption(.backlog, value: limits.backlog)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.maxMessagesPerRead, value: limits.acceptsPerWakeup)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                        // The request decoder only: answers are written as one buffer each
                        // (`TrackerHTTPHandler.write`), not as head, body and end parts through
                        // NIO's response encoder.
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                        try channel.pipeline.syncOperations.addHandler(
                            TrackerHTTPHandler(service: service, limits: limits, connections: connections, deadlines: deadlines))
                    }
                }
                .bind(host: host, port: port).get()
            tasks.append(channel.eventLoop.scheduleRepeatedTask(
                initialDelay: limits.expiryInterval, delay: limits.expiryInterval
            ) { _ in service.expire() })
            guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
            logger.info("tracker listening", metadata: ["address": "\(address)"])
            return TrackerServer(service: service,
                front: .nio(channel: channel, group: loops, ownsGroup: group == nil, tasks: tasks), localAddress: address)
        } catch {
            tasks.forEach { $0.cancel() }
            if group == nil { try? await loops.shutdownGracefully() }
            throw error
        }
    }

    private init(service: TrackerService, front: Front, localAddress: SocketAddress) {
        self.service = service
        self.front = front
        self.localAddress = localAddress
    }

    /// Stops accepting, closes the listening socket and the open connections, and stops the
    /// threads or event loops it started.
    public func shutdown() async {
        switch front {
        case .nio(let channel, let group, let ownsGroup, let tasks):
            tasks.forEach { $0.cancel() }
            try? await channel.close()
            if ownsGroup { try? await group.shutdownGracefully() }
        #if os(Linux)
            case .own(let listener):
                await listener.shutdown()
        #endif
        }
    }
}

final class ConnectionCounter: Sendable {
    let open = Atomic<Int>(0)
}

/// The per-loop sweepers, looked up by the loop a connection runs on.
final class DeadlineSweepers: Sendable {
    private let sweepers: [ObjectIdentifier: NIOLoopBound<DeadlineSweeper>]

    init(sweepers: [ObjectIdentifier: NIOLoopBound<DeadlineSweeper>]) { self.sweepers = sweepers }

    func sweeper(for loop: any EventLoop) -> DeadlineSweeper? { sweepers[ObjectIdentifier(loop)]?.value }
}

/// Closes connections that overran their deadline, checked by one repeated task per event loop.
///
/// Scheduling a timer per connection (and re-arming it per request) costs NIO a timer-heap update
/// each time; at thousands of short connections a second that was 40 % of the tracker's CPU.
/// A dictionary write per arm and one sweep a second cost almost nothing.
final class DeadlineSweeper {
    private var deadlines: [ObjectIdentifier: (deadline: NIODeadline, channel: any Channel)] = [:]
    private let onExpired: () -> Void

    init(onExpired: @escaping () -> Void) { self.onExpired = onExpired }

    func arm(_ channel: any Channel, until deadline: NIODeadline) {
        deadlines[ObjectIdentifier(channel)] = (deadline, channel)
    }

    func disarm(_ channel: any Channel) {
        deadlines[ObjectIdentifier(channel)] = nil
    }

    func sweep() {
        let now = NIODeadline.now()
        for (key, entry) in deadlines where entry.deadline < now {
            deadlines[key] = nil
            onExpired()
            entry.channel.close(promise: nil)
        }
    }
}

/// One connection's HTTP handling: collect a request, answer it, enforce the limits.
final class TrackerHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private let service: TrackerService
    private let limits: TrackerServer.Limits
    private let connections: ConnectionCounter
    private var head: HTTPRequestHead?
    private let deadlines: DeadlineSweepers
    private var counted = false

    init(service: TrackerService, limits: TrackerServer.Limits, connections: ConnectionCounter, deadlines: DeadlineSweepers) {
        self.service = service
        self.limits = limits
        self.connections = connections
        self.deadlines = deadlines
    }

    func channelActive(context: ChannelHandlerContext) {
        counted = true
        if connections.open.add(1, ordering: .relaxed).newValue > limits.maxConnections {
            service.metrics.httpError(503)
            context.close(promise: nil)
            return
        }
        armDeadline(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { connections.open.subtract(1, ordering: .relaxed) }
        counted = false
        deadlines.sweeper(for: context.eventLoop)?.disarm(context.channel)
        context.fireChannelInactive()
    }

    /// The next request must be complete by then, or the connection is closed (and counted as 408).
    private func armDeadline(context: ChannelHandlerContext) {
        deadlines.sweeper(for: context.eventLoop)?.arm(context.channel, until: .now() + limits.requestTimeout)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
        case .body:
            break  // trackers take no bodies; the request is answered (or refused) at its end
        case .end:
            guard let requestHead = head else { return }
            head = nil
            let request = TrackerHTTPRequest(
                method: requestHead.method.rawValue, uri: requestHead.uri,
                http10: requestHead.version.major == 1 && requestHead.version.minor == 0, keepAlive: requestHead.isKeepAlive)
            var bytes: [UInt8] = []
            let keepAlive = service.answer(
                request, remote: context.remoteAddress.flatMap(Self.peerAddress), maxURILength: limits.maxURILength, into: &bytes)
            write(bytes, keepAlive: keepAlive, context: context)
        }
    }

    /// The answer (`TrackerService.answer`: status line, headers and body) in one buffer and one
    /// write: the response encoder's head, body and end parts cost a header table, three buffers
    /// and three pipeline passes per answer.
    private func write(_ bytes: [UInt8], keepAlive: Bool, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        // Re-arm before writing: a close on completion may run at once, and must find nothing armed.
        if keepAlive {
            armDeadline(context: context)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in loopBound.value.close(promise: nil) }
        }
    }

    /// The connection's address as raw bytes, without formatting it as text and parsing it back.
    static func peerAddress(_ address: SocketAddress) -> PeerAddress? {
        switch address {
        case .v4(let v4):
            let raw = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            return PeerAddress(ip: [UInt8(raw >> 24), UInt8(raw >> 16 & 0xFF), UInt8(raw >> 8 & 0xFF), UInt8(raw & 0xFF)],
                port: UInt16(bigEndian: v4.address.sin_port))
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            return PeerAddress(ip: bytes, port: UInt16(bigEndian: v6.address.sin6_port))
        default:
            return nil
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Unparsable HTTP (including request lines beyond the parser's limit): answer 400 and close.
        if error is HTTPParserError {
            var bytes: [UInt8] = []
            service.answerUnreadable(status: 400, into: &bytes)
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
        }
        context.close(promise: nil)
    }
}
