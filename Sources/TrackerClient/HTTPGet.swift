import Foundation
import Metainfo
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Why an HTTP request to a tracker failed.
public enum HTTPGetError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String)
    case unsupportedScheme(String)
    case connectionFailed(String)
    case timedOut
    case status(Int)
    case bodyTooLarge(limit: Int)
    case closedEarly
    /// The TLS handshake failed: an untrusted or mismatched certificate, or a server not speaking TLS.
    case tls(String)
    /// A redirect that is not followed: too many in a row, to a bad URL, or from https to http.
    case redirect(String)

    public var description: String {
        switch self {
        case .invalidURL(let url): "not a valid URL: \(url)"
        case .unsupportedScheme(let scheme):
            "unsupported URL scheme '\(scheme)' (http, https, or udp through TrackerClient)"
        case .connectionFailed(let why): "cannot connect: \(why)"
        case .timedOut: "timed out"
        case .status(let code): "HTTP status \(code)"
        case .bodyTooLarge(let limit): "answer larger than \(limit) bytes"
        case .closedEarly: "connection closed before the answer was complete"
        case .tls(let why): "TLS: \(why)"
        case .redirect(let why): "redirect not followed: \(why)"
        }
    }
}

/// A minimal HTTP/1.1 GET on SwiftNIO: enough for tracker announces and scrapes, with a deadline and
/// a cap on the answer's size so a hostile tracker cannot stall or flood the client. https:// is
/// TLS (swift-nio-ssl) with the certificate checked against `trust`, by host name or IP address.
public struct HTTPGet: Sendable {
    /// The whole exchange, connect included, ends within this: a tracker that accepts and never
    /// answers, or never accepts, costs at most this much (not a connect timeout plus an answer one).
    public var timeout: TimeAmount = .seconds(15)
    public var maxBodySize = 4 << 20
    public var userAgent = "vmswarm/0.1"
    /// Whom https:// servers must prove themselves to; nil: the system's trust store.
    public var trust: HTTPTrust?
    /// The local address requests leave from (nil: the route decides): a tracker then sees the
    /// node at the address its peers reach it at, on a host with several.
    public var localAddress: String?
    let group: any EventLoopGroup

    public init(group: any EventLoopGroup) { self.group = group }

    /// The body of a 200 answer to `GET urlString`, following redirects (`HTTPRedirect`).
    public func fetch(_ urlString: String) async throws(HTTPGetError) -> [UInt8] {
        let url: WebSeedURL
        do throws(WebSeedError) {
            url = try WebSeedURL(urlString)
        } catch {
            if case .unsupportedScheme(_, let scheme) = error { throw .unsupportedScheme(scheme) }
            throw .invalidURL(urlString)
        }
        let response = try await get(url)
        guard response.status == 200 else { throw .status(response.status) }
        return response.body
    }

    /// `GET target` (the URL's own by default) from `url`'s host, following up to
    /// `HTTPRedirect.maxHops` redirects; each hop sends the same headers and has the whole
    /// `timeout` again. The answer is the last one, of any status unless `status` requires one
    /// (as for `get(host:…)`; a redirect passes that check and is followed).
    public func get(_ url: WebSeedURL, target: String? = nil, extraHeaders: [(String, String)] = [], maxBody: Int? = nil,
                    status required: Int? = nil) async throws(HTTPGetError) -> Response {
        var url = url
        var target = target ?? url.requestTarget
        var hops = 0
        while true {
            let response = try await get(host: url.connectHost, port: url.port, hostHeader: url.hostHeader, target: target,
                extraHeaders: extraHeaders, maxBody: maxBody, status: required, tls: url.isTLS)
            guard HTTPRedirect.statuses.contains(response.status), let location = response.header("Location") else { return response }
            guard hops < HTTPRedirect.maxHops else { throw .redirect("more than \(HTTPRedirect.maxHops) in a row") }
            hops += 1
            // Relative locations resolve against the URL that was asked, request target included.
            let asked: WebSeedURL
            do throws(WebSeedError) {
                asked = try WebSeedURL((url.isTLS ? "https://" : "http://") + url.hostHeader + target)
            } catch {
                throw .redirect("\(error)")
            }
            url = try HTTPRedirect.resolve(location, from: asked)
            target = url.requestTarget
        }
    }

    /// An answer of any status, with its headers (a web seed's Range request wants 206 and
    /// `Content-Range`).
    public struct Response: Sendable {
        public let status: Int
        public let headers: [(name: String, value: String)]
        public let body: [UInt8]

        /// The first header of that name (case-insensitive).
        public func header(_ name: String) -> String? {
            headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
        }
    }

    /// `GET target` from `host:port`, with `extraHeaders`. `target` is sent as given (already
    /// percent-encoded); `maxBody` overrides `maxBodySize`. With `status`, an answer of another
    /// status fails with `.status` as soon as its head arrives, before any of its body is read (a
    /// web seed that ignores Range answers 200 with the whole file); without, any status is
    /// returned. A redirect with a `Location` is returned at its head, without its body, whatever
    /// `status` says; this call does not follow it (`get(_:…)` does). With `tls`, the exchange is HTTPS. Used by `fetch` and by the web-seed fetcher,
    /// which checks ranges itself.
    public func get(host connectHost: String, port: Int, hostHeader: String, target: String,
                    extraHeaders: [(String, String)] = [], maxBody: Int? = nil, status required: Int? = nil,
                    tls: Bool = false) async throws(HTTPGetError) -> Response {
        // The certificate names the server: by host name (also sent as SNI), or for an address
        // literal, by the address connected to.
        let secure: (context: NIOSSLContext, hostname: String?)? = if tls {
            (try (trust.map { .success($0) } ?? HTTPTrust.system).get().context,
             (try? SocketAddress(ipAddress: connectHost, port: 0)) == nil ? connectHost : nil)
        } else {
            nil
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        headers.add(name: "User-Agent", value: userAgent)
        headers.add(name: "Accept-Encoding", value: "identity")
        headers.add(name: "Connection", value: "close")
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)

        // The request is written by the channel itself the moment it connects, and the deadline is
        // armed there too: nothing waits for this task to be scheduled again in between (a busy
        // cooperative pool once delayed that past the tracker's own request deadline). The promise
        // belongs to the channel's loop and is completed there, whatever happens: by the answer, the
        // deadline, or the handler's removal when a failed connect or a stopping loop closes the
        // channel. (Failing it from here after a failed connect raced a loop shutting down, and a
        // promise never completed traps in debug builds.)
        let answer = AnswerSlot()
        let maxBody = maxBody ?? maxBodySize
        let timeout = self.timeout
        let deadline = NIODeadline.now() + timeout
        let channel: any Channel
        do {
            var bootstrap = ClientBootstrap(group: group).connectTimeout(timeout)
            if let localAddress, let address = try? SocketAddress(ipAddress: localAddress, port: 0) { bootstrap = bootstrap.bind(to: address) }
            channel = try await bootstrap
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let promise = channel.eventLoop.makePromise(of: Response.self)
                        answer.future.withLock { $0 = promise.futureResult }
                        if let secure {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: secure.context, serverHostname: secure.hostname))
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            ResponseCollector(promise: promise, maxBody: maxBody, request: head, deadline: deadline, requiredStatus: required))
                    }
                }
                .connect(host: connectHost, port: port).get()
        } catch {
            if case ChannelError.connectTimeout = error { throw .timedOut }
            throw .connectionFailed("\(connectHost):\(port): \(error)")
        }
        guard let future = answer.future.withLock({ $0 }) else {
            channel.close(promise: nil)
            throw .connectionFailed("\(connectHost):\(port): the connection was set up without its handler")
        }
        do {
            let response = try await future.get()
            channel.close(promise: nil)
            return response
        } catch let error as HTTPGetError {
            channel.close(promise: nil)
            throw error
        } catch {
            channel.close(promise: nil)
            throw .connectionFailed("\(error)")
        }
    }
}

/// Where the channel's initializer, on its loop, leaves the answer's future for the caller.
private final class AnswerSlot: Sendable {
    let future = Mutex<EventLoopFuture<HTTPGet.Response>?>(nil)
}

private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    typealias OutboundOut = HTTPClientRequestPart

    private let promise: EventLoopPromise<HTTPGet.Response>
    private let maxBody: Int
    private let request: HTTPRequestHead
    private let deadline: NIODeadline
    private let requiredStatus: Int?
    private var status = 0
    private var headers: [(name: String, value: String)] = []
    private var body: [UInt8] = []
    private var timer: Scheduled<Void>?

    init(promise: EventLoopPromise<HTTPGet.Response>, maxBody: Int, request: HTTPRequestHead, deadline: NIODeadline, requiredStatus: Int? = nil) {
        self.promise = promise
        self.requiredStatus = requiredStatus
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
            headers = head.headers.map { ($0.name, $0.value) }
            if HTTPRedirect.statuses.contains(status), head.headers.contains(name: "Location") {
                // Where to go is all a redirect says; its body is never read.
                promise.succeed(HTTPGet.Response(status: status, headers: headers, body: []))
                context.close(promise: nil)
            } else if let requiredStatus, status != requiredStatus {
                promise.fail(HTTPGetError.status(status))
                context.close(promise: nil)
            }
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= maxBody else {
                promise.fail(HTTPGetError.bodyTooLarge(limit: maxBody))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            promise.succeed(HTTPGet.Response(status: status, headers: headers, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        promise.fail(HTTPGetError.closedEarly)  // no effect when already completed
        context.fireChannelInactive()
    }

    /// A channel closed before it was ever active (a failed connect, a loop shutting down) removes
    /// its handlers without `channelInactive`: the promise is completed here then.
    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        promise.fail(HTTPGetError.closedEarly)
    }

    /// TLS failures in words an operator acts on; BoringSSL's own text follows.
    static func describe(_ error: any Error) -> HTTPGetError {
        let text = "\(error)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return .tls("the server's certificate is not trusted (signed by a private CA? give it with --ca-file): \(text)")
        }
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            return .tls("the server's certificate does not name the host connected to: \(text)")
        }
        return error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError ? .tls(text) : .connectionFailed(text)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(Self.describe(error))
        context.close(promise: nil)
    }
}
