import ServerSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Where the served bytes come from: an image in flight answers once the pieces under a range
/// have verified.
public protocol HTTPRangeSource: Sendable {
    /// Exactly `length` bytes at `offset`, or an error (the response is cut short).
    func read(offset: Int64, length: Int) async throws -> ByteBuffer
}

/// An HTTP/1.1 server for one read-only resource: `GET` and `HEAD` of `/` or `/NAME`, with
/// `Range` (one range; 206, or 416 past the end) and keep-alive, for qemu's curl driver, curl and
/// any HTTP client. A body is sent in chunks of at most `chunkLength` as the source yields them, the
/// next one read only once the socket took the last, so a slow or stalled client holds one chunk.
public final class HTTPRangeServer: Sendable {
    public static let chunkLength = 1 << 20
    private let listener: TCPListener

    public var port: Int? { listener.port }

    private init(listener: TCPListener) { self.listener = listener }

    public static func start(host: String, port: Int, name: String, size: Int64, source: any HTTPRangeSource,
                             logger: Logger) async throws -> HTTPRangeServer {
        let resource = Resource(name: name, size: size, source: source)
        return HTTPRangeServer(listener: try await TCPListener.start(host: host, port: port) { channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(HTTPRangeHandler(resource: resource, logger: logger))
        })
    }

    public func shutdown() async { await listener.shutdown() }

    struct Resource: Sendable {
        let name: String
        let size: Int64
        let source: any HTTPRangeSource
    }
}

/// One connection: one request at a time (NIO's pipelining handler queues the next).
final class HTTPRangeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let resource: HTTPRangeServer.Resource
    private let logger: Logger
    private var context: ChannelHandlerContext?
    /// The request being answered (its head arrived; its end may not have).
    private var request: HTTPRequestHead?

    init(resource: HTTPRangeServer.Resource, logger: Logger) {
        self.resource = resource
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // GET and HEAD carry none; anything sent is dropped
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive
        guard head.method == .GET || head.method == .HEAD else {
            return simple(.methodNotAllowed, extra: [("Allow", "GET, HEAD")], keepAlive: keepAlive, context: context)
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        guard path == "/" || path == "/" + resource.name else {
            return simple(.notFound, keepAlive: keepAlive, context: context)
        }
        let size = resource.size
        let range: Range<Int64>
        var headers = HTTPHeaders([("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")])
        let status: HTTPResponseStatus
        switch ByteRangeRequest(header: head.headers.first(name: "Range"), size: size) {
        case .whole:
            range = 0..<size
            status = .ok
        case .range(let asked):
            range = asked
            status = .partialContent
            headers.add(name: "Content-Range", value: "bytes \(asked.lowerBound)-\(asked.upperBound - 1)/\(size)")
        case .unsatisfiable:
            return simple(.rangeNotSatisfiable, extra: [("Content-Range", "bytes */\(size)")], keepAlive: keepAlive, context: context)
        }
        headers.add(name: "Content-Length", value: "\(range.count)")
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let answer = HTTPResponseHead(version: head.version, status: status, headers: headers)
        guard head.method == .GET, !range.isEmpty else {
            context.write(wrapOutboundOut(.head(answer)), promise: nil)
            return end(keepAlive: keepAlive, context: context)
        }
        // The head waits for the first chunk: a read that fails before any data (the download
        // stopped, a piece never authenticated) still gets a status saying so, not a 206 cut short.
        sendBody(from: range.lowerBound, to: range.upperBound, head: answer, keepAlive: keepAlive, loop: context.eventLoop)
    }

    /// Reads and writes the next chunk (after `head`, when it is the first); the one after starts
    /// when the socket took it.
    private func sendBody(from offset: Int64, to end: Int64, head: HTTPResponseHead? = nil, keepAlive: Bool, loop: any EventLoop) {
        let length = Int(min(Int64(HTTPRangeServer.chunkLength), end - offset))
        let source = resource.source
        Task {
            let result: Result<ByteBuffer, any Error>
            do { result = .success(try await source.read(offset: offset, length: length)) } catch { result = .failure(error) }
            loop.execute {
                guard let context = self.context else { return }
                guard case .success(let data) = result, data.readableBytes == length else {
                    self.logger.info("HTTP read failed", metadata: ["offset": "\(offset)", "error": "\(result)"])
                    guard head == nil else { return self.simple(.serviceUnavailable, keepAlive: false, context: context) }
                    // Headers are gone with a length: the only honest signal left is to cut the connection.
                    context.close(promise: nil)
                    return
                }
                if let head { context.write(self.wrapOutboundOut(.head(head)), promise: nil) }
                context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(data)))).whenSuccess {
                    guard let context = self.context else { return }
                    let next = offset + Int64(length)
                    if next < end {
                        self.sendBody(from: next, to: end, keepAlive: keepAlive, loop: context.eventLoop)
                    } else {
                        self.end(keepAlive: keepAlive, context: context)
                    }
                }
            }
        }
    }

    private func end(keepAlive: Bool, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { self.context?.close(promise: nil) }
        }
    }

    private func simple(_ status: HTTPResponseStatus, extra: [(String, String)] = [], keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Length", value: "0")
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        end(keepAlive: keepAlive, context: context)
    }
}
