import Logging
import Metainfo
import NIOCore
import NIOPosix
import PeerWire
import TrackerClient
import TrackerProtocol

/// Why a magnet link's info dictionary could not be fetched.
public struct MetadataFetchError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// The metadata phase of `get magnet:`: connections of its own to the link's peers and to what
/// its trackers name, only long enough to fetch the info dictionary (BEP 9) through the pure
/// `MetadataFetch`. It runs before the swarm runtime exists, because that needs the dictionary for
/// everything (piece layout, store, engine); the runtime then dials the same peers afresh.
public final class MetadataFetcher: @unchecked Sendable {
    public struct Options: Sendable {
        public var peers: [(host: String, port: Int)] = []
        public var trackers: [String] = []
        /// The port announced to trackers: where the download will listen once it starts.
        public var announcePort: UInt16 = 6881
        public var bindAddress: String?
        /// Seconds for the whole phase.
        public var timeout: Double = 90
        /// Peers connected at once.
        public var maxPeers = 30
        /// Whom https:// trackers must prove themselves to (nil: the system's trust store).
        public var trust: HTTPTrust?
        /// A node confined to its site (`--site-network`) dials only addresses in these networks,
        /// here as in the download; a peer named by host name is not dialled, since where the name
        /// leads cannot be told.
        public var peerNetworks: [IPNetwork]?
        public init() {}
    }

    private let magnet: MagnetLink
    private let options: Options
    private let logger: Logger
    /// One loop of the shared group, for the fetch and all its connections (so no locks): the
    /// phase ends while a tracker's answer may still be on its way, and a loop of its own would be
    /// shut down under it.
    private let loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()
    private let peerID = PeerID.random()
    private var fetch: MetadataFetch
    private var channels: [Int: any Channel] = [:]
    /// Each peer's id for ut_metadata messages, from its extension handshake.
    private var metadataIDs: [Int: UInt8] = [:]
    private var dialled: Set<String> = []
    private var nextHandle = 0
    private var reasons: [String] = []
    private let result: EventLoopPromise<[UInt8]>
    private var timer: RepeatedTask?
    private var tracker: TrackerClient?
    private let started = NIODeadline.now()
    /// Announces every 15 s while the phase lasts (at most `timeout`, 90 s by default); after a
    /// failure, `RetryPolicy`'s doubling with jitter from 5 s (5, 10, 20, 40 s), not a flat 5 s that
    /// would bring every node of a fleet fetching one magnet back to a failing tracker together.
    private var schedule: AnnounceSchedule = {
        var policy = RetryPolicy()
        policy.firstRetry = 5
        return AnnounceSchedule(policy: policy)
    }()
    private var random = SystemRandomNumberGenerator()
    private var announcing = false
    private var done = false
    /// The connections' closes once the phase ended.
    private var closing: [EventLoopFuture<Void>] = []

    private init(magnet: MagnetLink, options: Options, logger: Logger) {
        self.magnet = magnet
        self.options = options
        self.logger = logger
        fetch = MetadataFetch(infoHash: magnet.infoHash)
        result = loop.makePromise()
    }

    /// The info dictionary of `magnet`, its SHA-1 checked against the link's info-hash.
    public static func fetch(_ magnet: MagnetLink, options: Options, logger: Logger) async throws(MetadataFetchError) -> [UInt8] {
        let fetcher = MetadataFetcher(magnet: magnet, options: options, logger: logger)
        fetcher.loop.execute { fetcher.start() }
        let outcome: Result<[UInt8], MetadataFetchError>
        do {
            outcome = .success(try await fetcher.result.futureResult.get())
        } catch let error as MetadataFetchError {
            outcome = .failure(error)
        } catch {
            outcome = .failure(MetadataFetchError(description: "\(error)"))
        }
        // The download dials the same peers next, from the same address. A client that allows one
        // connection per IP (Transmission) refuses the new one while it still counts the old, so the
        // closes must be done, and given a moment to reach the peer, before the runtime starts.
        try? await EventLoopFuture.andAllComplete(fetcher.closing, on: fetcher.loop).get()
        // This phase's entry in the trackers (its own peer id, maybe a placeholder port) goes now,
        // not at its expiry; the download announces itself.
        if let tracker = fetcher.tracker, fetcher.announced {
            var stopped = fetcher.announceRequest
            stopped.event = .stopped
            _ = try? await tracker.announce(stopped, within: .milliseconds(1500))
        }
        if case .success = outcome { try? await Task.sleep(for: .seconds(1)) }
        return try outcome.get()
    }

    private var now: Double { Double((NIODeadline.now() - started).nanoseconds) / 1e9 }

    private func start() {
        if !options.trackers.isEmpty {
            tracker = TrackerClient(tiers: options.trackers.map { [$0] }, group: MultiThreadedEventLoopGroup.singleton, logger: logger, trust: options.trust)
        }
        guard tracker != nil || !options.peers.isEmpty else {
            finish(.failure(MetadataFetchError(description: "the magnet link names no tracker (tr) and no peer (x.pe), and no --peer was given")))
            return
        }
        guard tracker != nil || options.peers.contains(where: { mayDial(host: $0.host, port: $0.port) }) else {
            finish(.failure(MetadataFetchError(description: "every peer the magnet link and --peer name lies outside the site's networks (--site-network), and there is no tracker to ask")))
            return
        }
        for peer in options.peers { connect(host: peer.host, port: peer.port) }
        timer = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in self.tick() }
    }

    private func tick() {
        guard !done else { return }
        if now >= options.timeout {
            let tried = dialled.count
            let why = reasons.suffix(3).joined(separator: "; ")
            finish(.failure(MetadataFetchError(description:
                "no peer sent the info dictionary within \(Int(options.timeout)) s (\(tried) peers tried, \(fetch.hashFailures) hash failures\(why.isEmpty ? "" : "; last: \(why)"))")))
            return
        }
        perform(fetch.tick(now: now))
        if tracker != nil, !announcing, schedule.isDue(now: now) { announce() }
    }

    private func announce() {
        guard let tracker else { return }
        announcing = true
        announced = true
        var request = announceRequest
        request.event = .started
        let loop = self.loop
        Task {
            let answer: AnnounceResponse?
            do throws(TrackerClientError) {
                answer = try await tracker.announce(request, within: .seconds(15)).response
            } catch {
                self.logger.warning("announce failed", metadata: ["error": "\(error)"])
                answer = nil
            }
            loop.execute {
                self.announcing = false
                if answer == nil {
                    self.schedule.failed(now: self.now, using: &self.random)
                } else {
                    self.schedule.answered(interval: 15, minInterval: nil, now: self.now)
                }
                for peer in answer?.peers ?? [] { self.connect(host: peer.address.host, port: Int(peer.address.port)) }
            }
        }
    }

    private var announced = false
    private var announceRequest: AnnounceRequest {
        // Trackers refuse port 0, and the download's port is not known before it listens (--port 0):
        // BitTorrent's default stands in, and the entry is removed when the phase ends.
        var request = AnnounceRequest(infoHash: magnet.infoHash, peerID: peerID, port: options.announcePort == 0 ? 6881 : options.announcePort)
        // The size is not known yet; any positive `left` says "a leecher", which is all that matters.
        request.left = 1
        request.numWant = 50
        return request
    }

    private func mayDial(host: String, port: Int) -> Bool {
        guard let networks = options.peerNetworks else { return true }
        guard let address = PeerAddress(host: host, port: UInt16(clamping: port)) else { return false }
        return networks.contains { $0.contains(address.ip) }
    }

    private func connect(host: String, port: Int) {
        let key = "\(host):\(port)"
        guard mayDial(host: host, port: port), !done, channels.count < options.maxPeers, dialled.insert(key).inserted else { return }
        var bootstrap = ClientBootstrap(group: loop).connectTimeout(.seconds(5))
        if let local = options.bindAddress, let address = try? SocketAddress(ipAddress: local, port: 0) {
            bootstrap = bootstrap.bind(to: address)
        }
        nextHandle += 1
        let handle = nextHandle
        bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MetadataPeerHandler(fetcher: self, handle: handle))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                if case .failure(let error) = result { self.reasons.append("\(key): \(error)") }
            }
    }

    // MARK: From the connections (on the loop)

    var infoHash: InfoHash { magnet.infoHash }
    var ourHandshake: Handshake {
        // No fast extension: it would oblige us to send a piece set, and we have no torrent yet.
        Handshake(infoHash: magnet.infoHash, peerID: peerID, fast: false, extensions: true)
    }

    /// Registered when the connection becomes active, before any byte of it is read.
    func opened(_ handle: Int, _ channel: any Channel) {
        if done { channel.close(promise: nil) } else { channels[handle] = channel }
    }

    func received(_ message: PeerMessage, from handle: Int) {
        guard !done else { return }
        do throws(PeerViolation) {
            switch message {
            case .extended(0, let payload):
                let handshake = try ExtensionHandshake(payload: payload)
                if let id = handshake.messageIDs["ut_metadata"] { metadataIDs[handle] = id }
                perform(fetch.peerJoined(handle, handshake: handshake, now: now))
            case .extended(ExtensionHandshake.metadataID, let payload):
                perform(fetch.received(try MetadataMessage(payload: payload), from: handle, now: now))
            default:
                break  // pieces, haves and the rest are for the download that follows
            }
        } catch {
            disconnect(handle, reason: error.description)
        }
    }

    func closed(_ handle: Int, reason: String?) {
        channels[handle] = nil
        metadataIDs[handle] = nil
        if let reason { reasons.append(reason) }
        guard !done else { return }
        perform(fetch.peerLeft(handle, now: now))
    }

    private func disconnect(_ handle: Int, reason: String) {
        logger.info("metadata peer dropped", metadata: ["reason": "\(reason)"])
        reasons.append(reason)
        channels[handle]?.close(promise: nil)
        channels[handle] = nil
        perform(fetch.peerLeft(handle, now: now))
    }

    private func perform(_ actions: [MetadataFetch.Action]) {
        for action in actions {
            switch action {
            case .send(let handle, let message):
                guard let channel = channels[handle], let id = metadataIDs[handle], id != 0 else { continue }
                var buffer = channel.allocator.buffer(capacity: 64)
                PeerWireEncoder.write(.extended(id: id, payload: message.encoded()), to: &buffer)
                channel.writeAndFlush(buffer, promise: nil)
            case .disconnect(let handle, let reason):
                logger.info("metadata peer dropped", metadata: ["reason": "\(reason)"])
                reasons.append(reason)
                channels[handle]?.close(promise: nil)
                channels[handle] = nil
            case .completed(let bytes):
                finish(.success(bytes))
            }
        }
    }

    private func finish(_ outcome: Result<[UInt8], MetadataFetchError>) {
        guard !done else { return }
        done = true
        timer?.cancel()
        closing = channels.values.map { channel in
            channel.close(promise: nil)
            return channel.closeFuture
        }
        channels.removeAll()
        switch outcome {
        case .success(let bytes): result.succeed(bytes)
        case .failure(let error): result.fail(error)
        }
    }
}

/// One connection of the metadata phase: our handshake, theirs (for the same info-hash), our
/// extension handshake naming ut_metadata, then framed messages to the fetcher.
private final class MetadataPeerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let fetcher: MetadataFetcher
    private let handle: Int
    private var handshakeBytes = ByteBuffer()
    private var handshaken = false
    private var framer = PeerWireFramer()
    private var reason: String?

    init(fetcher: MetadataFetcher, handle: Int) {
        self.fetcher = fetcher
        self.handle = handle
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: Handshake.length)
        fetcher.opened(handle, context.channel)
        fetcher.ourHandshake.write(to: &buffer)
        context.writeAndFlush(NIOAny(buffer), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        do {
            if !handshaken {
                handshakeBytes.writeBuffer(&incoming)
                guard let theirs = try Handshake.read(from: &handshakeBytes) else { return }
                guard theirs.infoHash == fetcher.infoHash else {
                    reason = "handshake for another torrent"
                    context.close(promise: nil)
                    return
                }
                guard theirs.supportsExtensions else {
                    reason = "no extension protocol (BEP 10), so no ut_metadata"
                    context.close(promise: nil)
                    return
                }
                handshaken = true
                // We offer no dictionary: `m` names ut_metadata, with no `metadata_size`.
                let ours = ExtensionHandshake(messageIDs: ["ut_metadata": ExtensionHandshake.metadataID], client: ExtensionHandshake.ours.client)
                var buffer = context.channel.allocator.buffer(capacity: 64)
                PeerWireEncoder.write(.extended(id: 0, payload: ByteBuffer(bytes: ours.encoded())), to: &buffer)
                context.writeAndFlush(NIOAny(buffer), promise: nil)
                incoming = handshakeBytes
                handshakeBytes = ByteBuffer()
            }
            for message in try framer.messages(in: incoming) { fetcher.received(message, from: handle) }
        } catch {
            reason = "\(error)"
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fetcher.closed(handle, reason: reason)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        reason = "\(error)"
        context.close(promise: nil)
    }
}
