import ServerSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// `--metrics-listen`: an HTTP/1.1 endpoint answering `GET /metrics` with the node's metrics in
/// the Prometheus text format 0.0.4, rendered at each scrape from a fresh snapshot (`snapshot`).
/// The edge only: what the text says is `NodeMetrics.prometheusText`, tested on its own. One event
/// loop of its own, so scrapes never wait behind the swarm's loop; requests carry no body worth
/// reading, and NIO's HTTP parser bounds what a client can send in headers.
final class MetricsServer: Sendable {
    private let listener: TCPListener

    var port: Int? { listener.port }

    private init(listener: TCPListener) { self.listener = listener }

    static func start(host: String, port: Int, logger: Logger,
                      snapshot: @escaping @Sendable () async -> NodeMetrics) async throws -> MetricsServer {
        try await start(host: host, port: port, logger: logger, text: { await snapshot().prometheusText })
    }

    /// The same endpoint for any exposition text (a pool node's, `PoolMetrics`).
    static func start(host: String, port: Int, logger: Logger,
                      text snapshot: @escaping @Sendable () async -> String) async throws -> MetricsServer {
        try await start(host: host, port: port, logger: logger) { method, path, _ in
            guard path == "/metrics" else { return nil }
            guard method == .GET || method == .HEAD else { return .notAllowed }
            return Page(status: .ok, body: await snapshot(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
    }

    /// An answer to one request; nil from a route: not found.
    struct Page: Sendable {
        var status: HTTPResponseStatus
        var body: String
        var contentType = "text/plain; charset=utf-8"
        static let notAllowed = Page(status: .methodNotAllowed, body: "method not allowed here\n")
    }

    /// Routes of a small text server (a pool node's admin endpoint adds POST): the request's
    /// method, path and body (at most `maxBody` bytes; more is refused with 413).
    static func start(host: String, port: Int, logger: Logger,
                      routes: @escaping @Sendable (HTTPMethod, String, [UInt8]) async -> Page?) async throws -> MetricsServer {
        MetricsServer(listener: try await TCPListener.start(host: host, port: port) { channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(MetricsHandler(routes: routes, logger: logger))
        })
    }

    static let maxBody = 8192

    func shutdown() async { await listener.shutdown() }
}

/// One connection: one request at a time (NIO's pipelining handler queues the next).
final class MetricsHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: @Sendable (HTTPMethod, String, [UInt8]) async -> MetricsServer.Page?
    private var body: [UInt8] = []
    private var tooLarge = false
    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var request: HTTPRequestHead?

    init(routes: @escaping @Sendable (HTTPMethod, String, [UInt8]) async -> MetricsServer.Page?, logger: Logger) {
        self.routes = routes
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            body = []
            tooLarge = false
        case .body(var chunk):
            if body.count + chunk.readableBytes > MetricsServer.maxBody { tooLarge = true } else { body += chunk.readBytes(length: chunk.readableBytes) ?? [] }
        case .end:
            guard let head = request else { return }
            request = nil
            if tooLarge { return send(.payloadTooLarge, body: "at most \(MetricsServer.maxBody) bytes\n", head: head, context: context) }
            respond(to: head, body: body, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, body: [UInt8], context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        let routes = self.routes
        let loop = context.eventLoop
        Task {
            let page = await routes(head.method, path, body)
            loop.execute {
                guard let context = self.context else { return }
                guard let page else { return self.send(.notFound, body: "vmswarm: metrics are at /metrics\n", head: head, context: context) }
                self.send(page.status, body: page.body, contentType: page.contentType, head: head, context: context)
            }
        }
    }

    private func send(_ status: HTTPResponseStatus, body: String, contentType: String = "text/plain; charset=utf-8",
                      extra: [(String, String)] = [], head: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive
        let bytes = Array(body.utf8)
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(bytes.count)")
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { self.context?.close(promise: nil) }
        }
    }
}
