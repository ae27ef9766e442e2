import Logging
import Metainfo
import NIOCore
import NIOPosix
import TrackerProtocol

/// The BEP 15 logic of the UDP front, without a socket: a datagram and its source in, the datagram
/// to send back (or nothing) out. Announces and scrapes go to the same `TrackerService` as HTTP
/// ones, so the allowlist, limits, per-address caps and metrics are the same whichever way a client
/// comes.
public struct UDPTrackerResponder: Sendable {
    public let service: TrackerService
    public let ids: UDPConnectionIDs

    public init(service: TrackerService, ids: UDPConnectionIDs = UDPConnectionIDs()) {
        self.service = service
        self.ids = ids
    }

    /// The answer to `datagram` from `source`, or nil when nothing may be sent back: a datagram too
    /// short to carry a transaction id gets no answer. No answer is ever longer than the datagram
    /// that caused it unless its source proved, with a connection id, that it receives at that
    /// address, so the tracker cannot be made to flood a spoofed third party.
    public func answer(_ datagram: [UInt8], from source: PeerAddress) -> [UInt8]? {
        let ipv6 = !source.isIPv4
        let request: UDPTrackerRequest
        do throws(UDPTrackerError) {
            request = try UDPTrackerRequest(decoding: datagram)
        } catch {
            service.metrics.udpError(error.metricLabel)
            guard let transaction = UDPTrackerRequest.transactionID(of: datagram) else { return nil }
            return refusal(transaction, error.description, within: datagram.count)
        }
        let now = service.now
        switch request {
        case .connect(let transaction):
            return UDPTrackerResponse.connect(transactionID: transaction, connectionID: ids.id(for: source, now: now)).encoded()
        case .announce(let connection, let transaction, let announce):
            guard ids.isValid(connection, for: source, now: now) else {
                service.metrics.udpError("connection_id")
                return refusal(transaction, "unknown or expired connection id", within: datagram.count)
            }
            var request = announce.announceRequest
            // Every answer fits one unfragmented datagram: at most 238 IPv4 or 79 IPv6 peers.
            let most = UDPTracker.maxPeers(ipv6: ipv6)
            if let wanted = request.numWant, wanted > most { request.numWant = most }
            switch service.serveAnnounce(request, from: source) {
            case .success(let response):
                // Peers of the other family cannot be written in this answer (BEP 15 sets the width
                // by the socket's family); the cap applies to the ones that can.
                let peers = response.peers.map(\.address).filter { $0.isIPv4 != ipv6 }.prefix(most)
                return UDPTrackerResponse.announce(
                    transactionID: transaction, interval: response.interval,
                    leechers: response.incomplete ?? 0, seeders: response.complete ?? 0, peers: Array(peers)
                ).encoded(ipv6: ipv6)
            case .failure(let error):
                return UDPTrackerResponse.error(transactionID: transaction, message: error.failureReason).encoded()
            }
        case .scrape(let connection, let transaction, let hashes):
            guard ids.isValid(connection, for: source, now: now) else {
                service.metrics.udpError("connection_id")
                return refusal(transaction, "unknown or expired connection id", within: datagram.count)
            }
            let files = service.serveScrape(ScrapeRequest(infoHashes: hashes)).files
            // Unknown torrents are zeros: BEP 15 answers one line per hash, in the request's order.
            let lines = hashes.map { files[$0] ?? ScrapeStats(complete: 0, downloaded: 0, incomplete: 0) }
            return UDPTrackerResponse.scrape(transactionID: transaction, lines).encoded()
        }
    }

    /// An error answer cut to the size of the datagram it answers (8 bytes of header, the rest
    /// message), so it amplifies nothing.
    private func refusal(_ transaction: UInt32, _ message: String, within size: Int) -> [UInt8] {
        let room = max(0, size - 8)
        let text = String(decoding: Array(message.utf8.prefix(room)), as: UTF8.self)
        let encoded = UDPTrackerResponse.error(transactionID: transaction, message: text).encoded()
        return Array(encoded.prefix(size))
    }
}

/// The UDP tracker (BEP 15) on a socket, beside the HTTP one and answering from the same
/// `TrackerService`. One socket is served by one event loop; the work per datagram is one decode,
/// one HMAC and one locked announce, so that is the same bound as the HTTP front's per loop.
public final class UDPTrackerServer: Sendable {
    public let localAddress: SocketAddress
    public let responder: UDPTrackerResponder
    private let channel: any Channel
    private let group: any EventLoopGroup
    private let ownsGroup: Bool

    public var port: Int { localAddress.port ?? 0 }
    public var service: TrackerService { responder.service }

    /// Binds `host:port` (0: a free port) and answers from `service`. With no `group`, the server
    /// runs one event loop of its own.
    public static func start(
        host: String, port: Int, service: TrackerService, logger: Logger, group: (any EventLoopGroup)? = nil
    ) async throws -> UDPTrackerServer {
        let responder = UDPTrackerResponder(service: service)
        let loops = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let channel = try await DatagramBootstrap(group: loops)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                // The largest request is a 74-hash scrape of 1,496 bytes; anything longer is refused
                // by length whatever its tail, so 2 KiB of buffer per datagram is enough.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048))
                .channelOption(.maxMessagesPerRead, value: 16)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UDPTrackerHandler(responder: responder))
                    }
                }
                .bind(host: host, port: port).get()
            guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
            logger.info("UDP tracker listening", metadata: ["address": "\(address)"])
            return UDPTrackerServer(localAddress: address, responder: responder, channel: channel, group: loops, ownsGroup: group == nil)
        } catch {
            if group == nil { try? await loops.shutdownGracefully() }
            throw error
        }
    }

    private init(localAddress: SocketAddress, responder: UDPTrackerResponder, channel: any Channel, group: any EventLoopGroup, ownsGroup: Bool) {
        self.localAddress = localAddress
        self.responder = responder
        self.channel = channel
        self.group = group
        self.ownsGroup = ownsGroup
    }

    public func shutdown() async {
        try? await channel.close()
        if ownsGroup { try? await group.shutdownGracefully() }
    }
}

final class UDPTrackerHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let responder: UDPTrackerResponder

    init(responder: UDPTrackerResponder) { self.responder = responder }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let source = TrackerHTTPHandler.peerAddress(envelope.remoteAddress) else { return }
        let datagram = Array(envelope.data.readableBytesView)
        guard let answer = responder.answer(datagram, from: source) else { return }
        let buffer = context.channel.allocator.buffer(bytes: answer)
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: buffer)), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A datagram socket survives a failed send (an ICMP unreachable from a client that left);
        // closing it would stop the tracker for everyone.
    }
}
