import Logging
import Metainfo
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import TrackerProtocol

/// The tracker on a socket: SwiftNIO HTTP/1.1 with keep-alive, in front of a `TrackerService`.
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

        public init() {}
    }

    public let service: TrackerService
    public let localAddress: SocketAddress
    private let channel: any Channel
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let housekeeping: RepeatedTask

    public var port: Int { localAddress.port ?? 0 }

    /// Binds and starts serving. With no `group`, the server runs its own event loops (one per core).
    public static func start(
        host: String, port: Int, configuration: TrackerConfiguration, limits: Limits = Limits(),
        logger: Logger, group: (any EventLoopGroup)? = nil
    ) async throws -> TrackerServer {
        let service = TrackerService(configuration: configuration, logger: logger)
        let loops = group ?? MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let connections = ConnectionCounter()
        do {
            let channel = try await ServerBootstrap(group: loops)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
                        try channel.pipeline.syncOperations.addHandler(
                            TrackerHTTPHandler(service: service, limits: limits, connections: connections))
                    }
                }
                .bind(host: host, port: port).get()
            let housekeeping = channel.eventLoop.scheduleRepeatedTask(
                initialDelay: limits.expiryInterval, delay: limits.expiryInterval
            ) { _ in service.expire() }
            let address = channel.localAddress!
            logger.info("tracker listening", metadata: ["address": "\(address)"])
            return TrackerServer(service: service, channel: channel, group: loops, ownsGroup: group == nil,
                housekeeping: housekeeping, localAddress: address)
        } catch {
            if group == nil { try? await loops.shutdownGracefully() }
            throw error
        }
    }

    private init(
        service: TrackerService, channel: any Channel, group: any EventLoopGroup, ownsGroup: Bool,
        housekeeping: RepeatedTask, localAddress: SocketAddress
    ) {
        self.service = service
        self.channel = channel
        self.group = group
        self.ownsGroup = ownsGroup
        self.housekeeping = housekeeping
        self.localAddress = localAddress
    }

    /// Stops accepting, closes the listening socket, and stops the event loops it started.
    public func shutdown() async {
        housekeeping.cancel()
        try? await channel.close()
        if ownsGroup { try? await group.shutdownGracefully() }
    }
}

final class ConnectionCounter: Sendable {
    let open = Atomic<Int>(0)
}

/// One connection's HTTP handling: collect a request, answer it, enforce the limits.
final class TrackerHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let service: TrackerService
    private let limits: TrackerServer.Limits
    private let connections: ConnectionCounter
    private var head: HTTPRequestHead?
    private var tooLarge = false
    private var deadline: Scheduled<Void>?
    private var counted = false

    init(service: TrackerService, limits: TrackerServer.Limits, connections: ConnectionCounter) {
        self.service = service
        self.limits = limits
        self.connections = connections
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
        deadline?.cancel()
        context.fireChannelInactive()
    }

    private func armDeadline(context: ChannelHandlerContext) {
        deadline?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let metrics = service.metrics
        deadline = context.eventLoop.scheduleTask(in: limits.requestTimeout) {
            metrics.httpError(408)
            loopBound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            tooLarge = requestHead.uri.utf8.count > limits.maxURILength
        case .body:
            break  // trackers take no bodies; the request is answered (or refused) at its end
        case .end:
            guard let requestHead = head else { return }
            head = nil
            let response: TrackerHTTPResponse
            if tooLarge {
                service.metrics.httpError(414)
                response = TrackerHTTPResponse(status: 414, contentType: "text/plain", body: failureResponse("request URI too long"))
            } else {
                let remote = context.remoteAddress.flatMap { address in
                    address.ipAddress.flatMap { PeerAddress(host: $0, port: UInt16(clamping: address.port ?? 0)) }
                }
                response = service.respond(method: requestHead.method.rawValue, uri: requestHead.uri, remote: remote)
            }
            write(response, for: requestHead, context: context)
        }
    }

    private func write(_ response: TrackerHTTPResponse, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = request.isKeepAlive && response.status != 414
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
        let head = HTTPResponseHead(version: request.version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { loopBound.value.close(promise: nil) }
        }
        armDeadline(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Unparsable HTTP (including request lines beyond the parser's limit): answer 400 and close.
        if error is HTTPParserError {
            service.metrics.httpError(400)
            var headers = HTTPHeaders()
            headers.add(name: "Connection", value: "close")
            headers.add(name: "Content-Length", value: "0")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.close(promise: nil)
    }
}
