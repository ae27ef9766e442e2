import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why an HTTP request to a tracker failed.
public enum HTTPGetError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String)
    case unsupportedScheme(String)
    case connectionFailed(String)
    case timedOut
    case status(Int)
    case bodyTooLarge(limit: Int)
    case closedEarly

    public var description: String {
        switch self {
        case .invalidURL(let url): "not a valid URL: \(url)"
        case .unsupportedScheme(let scheme):
            "unsupported URL scheme '\(scheme)' (http, or udp through TrackerClient)"
        case .connectionFailed(let why): "cannot connect: \(why)"
        case .timedOut: "timed out"
        case .status(let code): "HTTP status \(code)"
        case .bodyTooLarge(let limit): "answer larger than \(limit) bytes"
        case .closedEarly: "connection closed before the answer was complete"
        }
    }
}

/// A minimal HTTP/1.1 GET on SwiftNIO: enough for tracker announces and scrapes, with a deadline and
/// a cap on the answer's size so a hostile tracker cannot stall or flood the client.
public struct HTTPGet: Sendable {
    /// The whole exchange, connect included, ends within this: a tracker that accepts and never
    /// answers, or never accepts, costs at most this much (not a connect timeout plus an answer one).
    public var timeout: TimeAmount = .seconds(15)
    public var maxBodySize = 4 << 20
    public var userAgent = "vmswarm/0.1"
    let group: any EventLoopGroup

    public init(group: any EventLoopGroup) { self.group = group }

    public func fetch(_ urlString: String) async throws(HTTPGetError) -> [UInt8] {
        guard let url = URL(string: urlString), let scheme = url.scheme?.lowercased(), let host = url.host else {
            throw .invalidURL(urlString)
        }
        guard scheme == "http" else { throw .unsupportedScheme(scheme) }
        let port = url.port ?? 80
        var target = url.path.isEmpty ? "/" : url.path
        if let query = url.query { target += "?" + query }
        let hostHeader = url.port.map { "\(host):\($0)" } ?? host
        let connectHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host

        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        headers.add(name: "User-Agent", value: userAgent)
        headers.add(name: "Accept-Encoding", value: "identity")
        headers.add(name: "Connection", value: "close")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)

        // The request is written by the channel itself the moment it connects, and the deadline is
        // armed there too: nothing waits for this task to be scheduled again in between (a busy
        // cooperative pool once delayed that past the tracker's own request deadline).
        let promise = group.next().makePromise(of: [UInt8].self)
        let maxBody = maxBodySize
        let timeout = self.timeout
        let deadline = NIODeadline.now() + timeout
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            ResponseCollector(promise: promise, maxBody: maxBody, request: head, deadline: deadline))
                    }
                }
                .connect(host: connectHost, port: port).get()
        } catch {
            promise.fail(HTTPGetError.connectionFailed("\(error)"))
            if case ChannelError.connectTimeout = error { throw .timedOut }
            throw .connectionFailed("\(connectHost):\(port): \(error)")
        }
        do {
            let body = try await promise.futureResult.get()
            channel.close(promise: nil)
            return body
        } catch let error as HTTPGetError {
            channel.close(promise: nil)
            throw error
        } catch {
            channel.close(promise: nil)
            throw .connectionFailed("\(error)")
        }
    }
}

private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    typealias OutboundOut = HTTPClientRequestPart

    private let promise: EventLoopPromise<[UInt8]>
    private let maxBody: Int
    private let request: HTTPRequestHead
    private let deadline: NIODeadline
    private var status = 0
    private var body: [UInt8] = []
    private var timer: Scheduled<Void>?

    init(promise: EventLoopPromise<[UInt8]>, maxBody: Int, request: HTTPRequestHead, deadline: NIODeadline) {
        self.promise = promise
        self.maxBody = maxBody
        self.request = request
        self.deadline = deadline
    }

    func channelActive(context: ChannelHandlerContext) {
        let promise = self.promise
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(HTTPGetError.timedOut)
            loopBound.value.close(promise: nil)
        }
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= maxBody else {
                promise.fail(HTTPGetError.bodyTooLarge(limit: maxBody))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            if status == 200 { promise.succeed(body) } else { promise.fail(HTTPGetError.status(status)) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        promise.fail(HTTPGetError.closedEarly)  // no effect when already completed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(HTTPGetError.connectionFailed("\(error)"))
        context.close(promise: nil)
    }
}
