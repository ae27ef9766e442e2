import Foundation
import Metainfo
import NIOCore
import NIOPosix
import Synchronization
import TrackerProtocol

/// Why a UDP tracker exchange failed.
public enum UDPTrackerClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String)
    case cannotResolve(String)
    case socket(String)
    case timedOut
    /// The tracker answered with an error (BEP 15 action 3).
    case failure(String)
    case malformed(UDPTrackerError)
    /// A scrape answer with another number of lines than info-hashes asked.
    case scrapeLines(expected: Int, got: Int)

    public var description: String {
        switch self {
        case .invalidURL(let url): "not a valid udp:// tracker URL: \(url)"
        case .cannotResolve(let host): "cannot resolve \(host)"
        case .socket(let why): "UDP socket: \(why)"
        case .timedOut: "timed out"
        case .failure(let reason): "tracker refused: \(reason)"
        case .malformed(let error): "invalid UDP tracker answer: \(error)"
        case .scrapeLines(let expected, let got): "scrape answer has \(got) lines for \(expected) info-hashes"
        }
    }
}

/// BEP 15 announces and scrapes from the client's side. Each exchange (connect when needed, then
/// the request) ends within `timeout`, as an HTTP announce does; inside it a request is sent again
/// after `firstRetransmit`, then twice that, and so on. BEP 15's own schedule (15 · 2^n s, up to
/// an hour) is the job of `RetryPolicy`, which backs off 15 s, 30 s, … between failed announces:
/// an announce that waited an hour for one tracker would stall every tracker after it.
/// Connection ids are kept per tracker address for a minute, as BEP 15 allows the client.
public final class UDPTrackerClient: Sendable {
    public struct Timing: Sendable {
        public var timeout: TimeAmount = .seconds(15)
        public var firstRetransmit: TimeAmount = .seconds(3)
        /// How long a connection id is used (BEP 15: one minute).
        public var connectionLifetime: TimeAmount = .seconds(60)
        public init() {}
    }

    public let timing: Timing
    private let group: any EventLoopGroup
    private let connections = Mutex<[SocketAddress: (id: UInt64, until: NIODeadline)]>([:])

    public init(group: any EventLoopGroup, timing: Timing = Timing()) {
        self.group = group
        self.timing = timing
    }

    /// Host and port of a `udp://host:port[/path]` URL (the path, BEP 41's URL data, is ignored).
    public static func endpoint(_ url: String) -> (host: String, port: Int)? {
        guard let parsed = URL(string: url), parsed.scheme?.lowercased() == "udp", var host = parsed.host,
            let port = parsed.port, (1...65535).contains(port), !host.isEmpty
        else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    public func announce(_ request: AnnounceRequest, to url: String, timeout: TimeAmount? = nil) async throws(UDPTrackerClientError)
        -> AnnounceResponse
    {
        let deadline = NIODeadline.now() + (timeout.map { min($0, timing.timeout) } ?? timing.timeout)
        let announce = UDPAnnounceRequest(request)
        let answer = try await exchange(url, deadline: deadline, expecting: .announce) { connection, transaction in
            .announce(connectionID: connection, transactionID: transaction, announce)
        }
        guard case .announce(_, let interval, let leechers, let seeders, let peers) = answer else {
            throw .malformed(.wrongAction(expected: UDPTrackerAction.announce.rawValue, got: answer.action.rawValue))
        }
        return AnnounceResponse(interval: interval, complete: seeders, incomplete: leechers, peers: peers.map { AnnouncedPeer(address: $0) })
    }

    public func scrape(_ hashes: [InfoHash], at url: String) async throws(UDPTrackerClientError) -> ScrapeResponse {
        guard hashes.count <= UDPTracker.maxScrapeHashes else {
            throw .malformed(.tooManyHashes(count: hashes.count, limit: UDPTracker.maxScrapeHashes))
        }
        let answer = try await exchange(url, deadline: .now() + timing.timeout, expecting: .scrape) { connection, transaction in
            .scrape(connectionID: connection, transactionID: transaction, hashes)
        }
        guard case .scrape(_, let lines) = answer else {
            throw .malformed(.wrongAction(expected: UDPTrackerAction.scrape.rawValue, got: answer.action.rawValue))
        }
        guard lines.count == hashes.count else { throw .scrapeLines(expected: hashes.count, got: lines.count) }
        return ScrapeResponse(files: Dictionary(zip(hashes, lines), uniquingKeysWith: { first, _ in first }))
    }

    /// Connect (unless a fresh connection id is known for this tracker), then the request.
    private func exchange(
        _ url: String, deadline: NIODeadline, expecting action: UDPTrackerAction,
        _ make: @Sendable (UInt64, UInt32) -> UDPTrackerRequest
    ) async throws(UDPTrackerClientError) -> UDPTrackerResponse {
        guard let (host, port) = Self.endpoint(url) else { throw .invalidURL(url) }
        let remote: SocketAddress
        do {
            remote = try SocketAddress.makeAddressResolvingHost(host, port: port)
        } catch {
            throw .cannotResolve("\(host): \(error)")
        }
        let socket = try await UDPSocket.open(group: group, remote: remote)
        defer { socket.close() }
        let known = connections.withLock { table -> UInt64? in
            guard let entry = table[remote], entry.until > .now() else { return nil }
            return entry.id
        }
        var connection: UInt64
        if let known {
            connection = known
        } else {
            connection = try await connect(socket, deadline: deadline)
        }
        var answer = try await send(socket, make(connection, .random(in: .min ... .max)), expecting: action, deadline: deadline)
        if case .error = answer, known != nil {
            // The id we kept may have outlived the tracker's (a restart changes its secret): once, a new one.
            connections.withLock { _ = $0.removeValue(forKey: remote) }
            connection = try await connect(socket, deadline: deadline)
            answer = try await send(socket, make(connection, .random(in: .min ... .max)), expecting: action, deadline: deadline)
        }
        if case .error(_, let message) = answer { throw .failure(message) }
        return answer
    }

    private func connect(_ socket: UDPSocket, deadline: NIODeadline) async throws(UDPTrackerClientError) -> UInt64 {
        let answer = try await send(socket, .connect(transactionID: .random(in: .min ... .max)), expecting: .connect, deadline: deadline)
        switch answer {
        case .connect(_, let id):
            let until = NIODeadline.now() + timing.connectionLifetime
            connections.withLock { table in
                // Bounded: a node with many trackers keeps one line each; stale lines go first.
                if table.count >= 256 { table = table.filter { $0.value.until > .now() } }
                if table.count < 256 { table[socket.remote] = (id, until) }
            }
            return id
        case .error(_, let message):
            throw .failure(message)
        default:
            throw .malformed(.wrongAction(expected: UDPTrackerAction.connect.rawValue, got: answer.action.rawValue))
        }
    }

    /// Sends `request` and waits for its answer, sending again after `firstRetransmit`, then after
    /// twice as long, until `deadline`. Datagrams from elsewhere, or answering another transaction
    /// (a late answer to an earlier try, a forgery), are ignored.
    private func send(_ socket: UDPSocket, _ request: UDPTrackerRequest, expecting action: UDPTrackerAction, deadline: NIODeadline)
        async throws(UDPTrackerClientError) -> UDPTrackerResponse
    {
        let bytes = request.encoded()
        var wait = timing.firstRetransmit
        while true {
            let now = NIODeadline.now()
            guard now < deadline else { throw .timedOut }
            socket.send(bytes)
            let until = min(deadline, now + wait)
            wait = min(wait * 2, .seconds(60))
            while let datagram = await socket.receive(until: until) {
                let answer: UDPTrackerResponse
                do throws(UDPTrackerError) {
                    answer = try UDPTrackerResponse(decoding: datagram, ipv6: socket.isIPv6).answering(action, transactionID: request.transactionID)
                } catch {
                    // A malformed datagram for our transaction is the tracker's answer: fail now.
                    // Anything else (another transaction, too short to say) is not for us.
                    if datagram.count >= 8, Self.transaction(of: datagram) == request.transactionID { throw .malformed(error) }
                    continue
                }
                return answer
            }
            if let failure = socket.failure { throw .socket(failure) }
        }
    }

    private static func transaction(of datagram: [UInt8]) -> UInt32 {
        datagram.dropFirst(4).prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// One ephemeral UDP socket talking to one tracker address; datagrams from any other source are
/// dropped on arrival.
final class UDPSocket: Sendable {
    let remote: SocketAddress
    let isIPv6: Bool
    private let channel: any Channel
    private let inbox: Inbox

    private init(remote: SocketAddress, channel: any Channel, inbox: Inbox) {
        self.remote = remote
        self.channel = channel
        self.inbox = inbox
        if case .v6 = remote { isIPv6 = true } else { isIPv6 = false }
    }

    static func open(group: any EventLoopGroup, remote: SocketAddress) async throws(UDPTrackerClientError) -> UDPSocket {
        let inbox = Inbox()
        do {
            let channel = try await DatagramBootstrap(group: group)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: UDPTracker.maxDatagram))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(Receiver(remote: remote, inbox: inbox))
                    }
                }
                // Connected, so the kernel drops datagrams from other sources and reports a port
                // unreachable (no tracker there) at once instead of letting the exchange time out.
                .connect(to: remote).get()
            return UDPSocket(remote: remote, channel: channel, inbox: inbox)
        } catch {
            throw .socket("\(error)")
        }
    }

    func send(_ bytes: [UInt8]) {
        let buffer = channel.allocator.buffer(bytes: bytes)
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: buffer), promise: nil)
    }

    /// The next datagram, or nil when none came by `deadline`.
    func receive(until deadline: NIODeadline) async -> [UInt8]? {
        await inbox.next(until: deadline, on: channel.eventLoop)
    }

    var failure: String? { inbox.failure }

    func close() {
        inbox.close()
        channel.close(promise: nil)
    }

    /// Datagrams received and not yet taken, and the one waiter for the next (bounded: a flood
    /// from the tracker's address keeps at most 64).
    final class Inbox: Sendable {
        private struct State {
            var queued: [[UInt8]] = []
            var waiter: CheckedContinuation<[UInt8]?, Never>?
            /// Which wait the waiter is: a timer of an earlier wait must not end a later one.
            var generation = 0
            var closed = false
            /// Why the socket failed (an ICMP error), once it has.
            var failure: String?
        }
        private let state = Mutex(State())

        func deliver(_ datagram: [UInt8]) {
            let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
                if let waiter = state.waiter {
                    state.waiter = nil
                    return waiter
                }
                if state.queued.count < 64 { state.queued.append(datagram) }
                return nil
            }
            waiter?.resume(returning: datagram)
        }

        /// Why the socket failed, if it did.
        var failure: String? { state.withLock { $0.failure } }

        func fail(_ reason: String) {
            let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
                state.failure = state.failure ?? reason
                state.closed = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }

        func close() {
            let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
                state.closed = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }

        private func expire(_ generation: Int) {
            let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
                guard state.generation == generation else { return nil }
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }

        func next(until deadline: NIODeadline, on loop: any EventLoop) async -> [UInt8]? {
            guard deadline > .now() else { return nil }
            return await withCheckedContinuation { (continuation: CheckedContinuation<[UInt8]?, Never>) in
                let (ready, generation) = state.withLock { state -> ([UInt8]??, Int) in
                    if !state.queued.isEmpty { return (.some(state.queued.removeFirst()), 0) }
                    if state.closed { return (.some(nil), 0) }
                    state.waiter = continuation
                    state.generation += 1
                    return (nil, state.generation)
                }
                if let ready {
                    continuation.resume(returning: ready)
                    return
                }
                // The timer resumes the waiter if no datagram did first; a waiter resumed by a
                // datagram is gone from the state, so the timer then finds none.
                loop.scheduleTask(deadline: deadline) { self.expire(generation) }
            }
        }
    }

    private final class Receiver: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let remote: SocketAddress
        let inbox: Inbox

        init(remote: SocketAddress, inbox: Inbox) {
            self.remote = remote
            self.inbox = inbox
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard envelope.remoteAddress == remote else { return }
            inbox.deliver(Array(envelope.data.readableBytesView))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // An ICMP port unreachable surfaces here: no tracker listens there.
            inbox.fail("\(error)")
        }
    }
}
