import Crypto
import Logging
import Metainfo
import Multicast
import NIOCore
import NIOPosix
import PeerWire
import Storage
import Swarm
import TrackerClient
import TrackerProtocol

/// Runs a `SwarmEngine` for one torrent over real sockets. The engine and every peer connection live
/// on one event loop, so the engine needs no locks; hashing, disk reads and writes go to a thread
/// pool and come back to the loop, which never waits on the disk or on SHA-1.
public final class SwarmRuntime: @unchecked Sendable {
    public struct Options: Sendable {
        /// `SwarmEngine.Configuration.readersFirst`: reads of the image in flight pause the rest.
        public var readersFirst = false
        public var listenHost = "0.0.0.0"
        /// 0 picks a free port.
        public var port = 6881
        /// Local address for connections to peers (nil: the system chooses by route).
        public var bindAddress: String?
        /// Peers to connect to besides those the trackers name.
        public var peers: [(host: String, port: Int)] = []
        public var maxPeers = 60
        /// Peers uploaded to at once, besides the optimistic unchoke. nil: the engine's rule, BEP 3's
        /// 8, and one more per 2 Mbit/s of upload the node has shown beyond 16 Mbit/s, up to 16 slots
        /// (`SwarmEngine.Configuration.uploadSlotRate`). More slots left fewer uplinks idle on the
        /// testbed at 16 × 40 Mbit/s (1.27x against 1.45x F/B) and cost at 32 × 10 Mbit/s (1.40x
        /// against 1.33x), where each flow got under a megabit (docs/benchmarks.md, session 23).
        public var uploadSlots: Int?
        public var useTrackers = true
        public var hashThreads = System.coreCount
        /// Upload limit in bytes per second (nil: none): piece messages wait for their turn.
        public var maxUp: Double?
        /// Download limit in bytes per second (nil: none): requests are paced, so peers never send
        /// faster than this.
        public var maxDown: Double?
        /// Also listen to a multicast booster on this group (docs/multicast.md).
        public var multicast: MulticastOptions?
        /// Bytes of piece data held for sending, across all peers (at least two pieces): the
        /// pieces read for peers' requests, while a queued block still refers to them or as the
        /// cache of recent reads. Beyond it, requests for further pieces wait.
        public var uploadBufferBytes = 64 << 20
        /// Connections accepted that have not completed a BitTorrent handshake; beyond it the
        /// oldest of them is closed for a newcomer.
        public var maxHalfOpen = 32
        /// Connections from one IP address (handshaken or not); more inbound ones are closed at once.
        public var maxPerAddress = 16
        /// Seconds from accept or connect to a complete handshake.
        public var handshakeTimeout: Double = 10
        /// Outgoing connections being set up at once; further dials wait for a later announce.
        public var maxDialing = 16
        /// Local Service Discovery (BEP 14): announce the torrent to the LAN and connect to peers
        /// that announce it. Never for private torrents (BEP 27: their peers come from trackers).
        public var lanDiscovery: LANDiscovery?

        public struct LANDiscovery: Sendable {
            /// The device to announce and listen on (nil: the route to the group decides).
            public var interface: String?
            /// BEP 14 asks for announces no more often than once a minute; libtorrent makes one
            /// every 5 minutes.
            public var interval: TimeAmount = .minutes(5)
            public init(interface: String? = nil) { self.interface = interface }
        }
        /// Web seeds (BEP 19) to fetch pieces from when peers do not have them (WebSeed.swift);
        /// URLs that are not usable are logged and skipped.
        public var webSeeds: [String] = []
        public var webSeedPolicy = WebSeedPolicy.Configuration()
        /// Whom https:// trackers and web seeds must prove themselves to (nil: the system's store).
        public var trust: HTTPTrust?
        /// How pieces travel. `tree` (docs/tree.md): the tracker places the node in the torrent's
        /// distribution tree; it fetches only from its parents and serves whoever connects. A
        /// tracker that does not place nodes (not vmswarm's) leaves the node in the mesh, with a
        /// warning. `auto`: the node chooses from what it measures in its first seconds
        /// (`AutoMethod`); a complete node takes its place as a tree root for the nodes that
        /// choose the tree. `multicast` is the mesh here: the booster runs beside whatever method
        /// when `multicast` has a group.
        public var method: DistributionMethod = .mesh
        /// The rack or site this node says it is in (`rack=`, docs/racks.md); nil: the tracker
        /// counts it by its subnet.
        public var rack: String?
        /// The engine's policy at the start (nil: the mesh, or what `method` makes of it): a pool
        /// node's two sides (`PoolPolicy`, docs/pool.md).
        public var policy: (any SwarmPolicy)?
        /// Trackers announced to besides the torrent's, each on its own schedule and all of them,
        /// not one per tier: a pool node's site trackers (its own and its siblings').
        public var siteTrackers: [String] = []
        /// This node's address in the site: announces to `siteTrackers` leave from it.
        public var siteAddress: String?
        /// The site's networks, for a node with a foot in two (a pool node): peers there are
        /// near, exempt from `maxUp` and `maxDown` (those limit the WAN), and counted apart.
        public var siteNetworks: [IPNetwork] = []
        /// The only networks this node connects with, both ways (nil: any): a private site's node
        /// dials no address outside them and closes connections from outside, whatever a tracker,
        /// peer exchange or LAN discovery names. Peers given by name are not dialled then.
        public var peerNetworks: [IPNetwork]?

        public init() {}
    }

    /// Why a connection was closed before it became a peer, or dropped by the runtime. Counted in
    /// `Status.refusals`.
    public enum ConnectionRefusal: String, Sendable, CaseIterable {
        /// `maxHalfOpen` connections were waiting for their handshake: the oldest was closed.
        case halfOpenLimit = "half-open limit"
        /// `maxPerAddress` connections from that IP address were already open.
        case perAddressLimit = "per-address limit"
        /// `maxPeers` peers were already connected.
        case peerLimit = "peer limit"
        /// No complete handshake within `handshakeTimeout`.
        case handshakeTimeout = "handshake timeout"
        /// The handshake named another torrent.
        case wrongTorrent = "wrong torrent"
        /// A peer with that id is already connected from that address, or it is our own id.
        case duplicate = "duplicate peer"
        /// Its address is outside `Options.peerNetworks` (a private site's node).
        case outsideNetworks = "outside the site's networks"
        /// That id from that address sent data that failed a hash.
        case banned = "banned"
        /// The swarm's policy does not make it our neighbour (a tree node that is neither parent
        /// nor child, where strangers are refused).
        case topology = "not a neighbour"
    }

    /// A snapshot for progress lines.
    public struct Status: Sendable {
        public let piecesHave: Int
        public let pieceCount: Int
        public let bytesHave: Int64
        public let totalLength: Int64
        public let downloaded: Int64
        public let uploaded: Int64
        public let wasted: Int64
        public let peers: Int
        /// Connected peers that still lack pieces.
        public let peersMissingPieces: Int
        /// Leechers in the swarm by the tracker's latest answer (nil: no tracker has answered).
        public let trackerIncomplete: Int?
        public let complete: Bool
        /// Pieces that came whole from the multicast booster, and its receiver's counters.
        public let multicastPieces: Int
        public let multicast: MulticastReceiver.Counters?
        /// Connections refused or closed by the runtime, by reason.
        public let refusals: [ConnectionRefusal: Int]
        /// Bytes of piece data held for sending (`Options.uploadBufferBytes` bounds it).
        public let uploadBufferBytes: Int
        /// Pieces this run hashed: those that verified, and those that failed their hash (from
        /// peers or the booster). Pieces found on disk at start are in `piecesHave`, not here.
        public var piecesVerified = 0
        public var hashFailures = 0
        /// Bytes of the pieces that came whole from the booster and verified (`multicastPieces`).
        public var multicastBytes: Int64 = 0
        /// Peer identities (address and id) banned for sending bad data.
        public var peersBanned = 0
        /// Times a peer was found not reading what we sent (`PeerOutbox.stalled`): its upload slot
        /// went to another.
        public var stallsFound = 0
        /// What `--method auto` chose and why (nil: another method, or not chosen yet).
        public var autoChoice: AutoMethod.Choice?
        /// Piece bytes received from and sent to peers in `Options.siteNetworks` (the site) and
        /// outside them (the WAN); all peers are the WAN's when no site is set.
        public var siteDownloaded: Int64 = 0
        public var siteUploaded: Int64 = 0
        public var wanDownloaded: Int64 = 0
        public var wanUploaded: Int64 = 0
        /// Pieces from web seeds that verified and their bytes; web seeds still in use (not
        /// dropped after hash failures) of those configured.
        public var webSeedPieces = 0
        public var webSeedBytes: Int64 = 0
        public var webSeedsUsable = 0
        public var webSeedsConfigured = 0
        /// Failed web seed fetches (status, range, length, transport) and web seed pieces that
        /// failed their hash.
        public var webSeedFetchFailures = 0
        public var webSeedHashFailures = 0
    }

    public let metainfo: Metainfo
    var info: TorrentInfo { metainfo.info }
    let ourHandshake: Handshake
    private let options: Options
    private let group: MultiThreadedEventLoopGroup
    private let loop: any EventLoop
    private let pool: NIOThreadPool
    private let store: PieceStore
    private let logger: Logger
    private var engine: SwarmEngine
    private var channels: [Int: any Channel] = [:]
    /// Each peer's send bookkeeping (backpressure), beside its channel.
    private var outboxes: [Int: PeerOutbox] = [:]
    /// Each peer's address and id: a second connection is refused only when both match, so a
    /// squatter sending someone's id from elsewhere cannot lock that peer out.
    private var peerKeys: [Int: (ip: String, id: PeerID)] = [:]
    /// Connections without a complete handshake, and when they opened.
    private var halfOpen: [ObjectIdentifier: (channel: any Channel, since: Double)] = [:]
    private var connectionsPerAddress: [String: Int] = [:]
    private var refusals: [ConnectionRefusal: Int] = [:]
    private var stallsFound = 0
    /// Peers in `Options.siteNetworks`, by handle.
    private var sitePeers: Set<Int> = []
    private var siteBytes = (down: Int64(0), up: Int64(0))
    private var wanBytes = (down: Int64(0), up: Int64(0))
    /// When an incomplete node last had a peer holding a piece it lacks, and last received piece
    /// data (`downloaded` then): without either for a while it asks its trackers again.
    private var usefulSince: Double = 0
    private var lastProgress: Double = 0
    private var lastDownloaded: Int64 = 0
    /// Seconds without a useful peer before the trackers are asked again: long enough that a
    /// node just started (still dialling) does not ask.
    static let starvedPatience = 5.0
    /// Seconds without piece data: beyond a choking round (10 s) and a peer's snub.
    static let stalledPatience = 20.0
    /// `Options.siteTrackers`, each announced to on its own schedule.
    private var siteAnnouncers: [SiteAnnouncer] = []
    private var connecting: Set<String> = []
    /// Addresses the trackers and peer exchange named, dialled as room allows (`dialMore`).
    private var candidates = PeerCandidates()
    /// Peers whose connection we dialled (`PeerLimits` keeps the rest of the slots for the others).
    private var dialled: Set<Int> = []
    private var nextHandle = 1
    private var listener: (any Channel)?
    private var timer: RepeatedTask?
    /// Samples every peer's channel a few times a second, so a peer that does not read is found
    /// before it holds an upload slot for long (`PeerOutbox.stalled`).
    private var stallTimer: RepeatedTask?
    private var tracker: TrackerClient?
    /// When to announce next: answers, failures (`RetryPolicy`'s back-off) and early requests.
    private var announceSchedule = AnnounceSchedule()
    private var announceRandom = SystemRandomNumberGenerator()
    private var announcing = false
    /// From the tracker's latest answer: leechers in the swarm.
    private var trackerIncomplete: Int?
    /// Tree mode's parents and reports (nil: the mesh).
    private var treeMembership: TreeMembership?
    /// `--method auto`'s measurements and choice (nil: another method, or a complete node).
    private var autoMethod: AutoMethod?
    private var stopped = false
    /// Readers of the image in flight (`readImage`) waiting for pieces to verify.
    private var readers: [(pieces: ClosedRange<Int>, promise: EventLoopPromise<Void>)] = []
    private var reads = ReadCounters()
    /// Sequential readers' next bytes, fetched right after what readers wait for.
    private var readAhead = ReadAhead()
    private var aheadPieces: [PieceIndex] = []

    /// Reads of the image in flight: how many found their data already here (a hit: the mUFS and
    /// VMTorrent figure, what prefetching and the booster are for) and how many waited.
    public struct ReadCounters: Equatable, Sendable {
        public var reads = 0
        public var hits = 0
        public var bytes: Int64 = 0
        /// Hits per read, or nil before the first read.
        public var hitRate: Double? { reads > 0 ? Double(hits) / Double(reads) : nil }
    }

    public func readCounters() async -> ReadCounters {
        (try? await loop.submit { self.reads }.get()) ?? ReadCounters()
    }
    private let completion: EventLoopPromise<Void>
    private let started = NIODeadline.now()
    private var upload: TokenBucket?
    private var download: TokenBucket?
    /// Requests we send, held back by the download limit, in order (at most our request queues).
    private var heldRequests: [(Int, PeerMessage)] = []
    private var pacer: RepeatedTask?
    /// Whole pieces read for peers' requests. A peer asks for a piece 16 KiB at a time; each block
    /// is then a slice of one read, not a thread-pool trip and a copy of its own. A piece stays
    /// while a queued block refers to it, and as a cache (`servedPieceBytes` of the least
    /// recently used) when none does; all of them together stay within `uploadBufferBytes`.
    private var uploads: [PieceIndex: UploadPiece] = [:]
    /// Bytes of all pieces in `uploads`, and of those no block refers to (the cache).
    private var uploadBytes = 0
    private var idleUploadBytes = 0
    private var uploadUses = 0
    /// Peers whose next request waits for room in `uploadBufferBytes`.
    private var starved: Set<Int> = []
    /// Pieces that could not be read for a peer, each logged once.
    private var unreadableLogged: Set<PieceIndex> = []
    private static let servedPieceBytes = 8 << 20
    /// Bytes of one peer's requests being read at once; more wait until these are sent.
    static let readingBytesPerPeer = 256 << 10
    /// Distinct pieces one peer's queued blocks may keep alive as slices; a block of a further
    /// piece goes out as a copy of its 16 KiB. A peer that reads keeps one or two pieces in its
    /// queue; one that requests scattered blocks and reads slowly would otherwise hold a whole
    /// piece per queued block.
    static let slicedPiecesPerPeer = 2
    /// A peer's channel stops taking our blocks above `high` buffered bytes and takes them again
    /// below `low` (NIO's writability): what waits beyond that are requests, not data.
    static let writeWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 64 << 10, high: 256 << 10)
    /// Reads from a peer grow to 256 KiB (NIO's default stops at 64 KiB): a fast peer's blocks then
    /// arrive in fewer reads, each decoded and handed to the engine in one go.
    private static let peerReads = AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 << 10, maximum: 256 << 10)
    // The multicast booster's receiving side (nil without --multicast).
    private var multicastReceiver: MulticastReceiver?
    private var multicastLink: MulticastLink?
    private var discovery: LocalPeerDiscovery?
    private var multicastTimer: RepeatedTask?
    private var multicastTicks = 0
    private var multicastSender: SocketAddress?
    /// The sender ended or went quiet and peers were given everything left.
    private var multicastHandedOver = false
    /// Pieces being verified that came from the group, and how many verified so far.
    private var fromMulticast: Set<PieceIndex> = []
    private var multicastPieces = 0
    private var multicastBytes: Int64 = 0
    /// Hash results of this run, for status and metrics.
    private var piecesVerified = 0
    private var hashFailures = 0
    /// Web seeds (nil without any), and the pieces the booster wants deferred: the engine defers
    /// both (`updateDeferred`).
    private var webSeed: WebSeedFetcher?
    private var multicastDeferred: Bitfield?
    /// Until the booster is heard (at most this long), peers are not asked for what its first pass
    /// may bring; a sender may be waiting for more receivers to join.
    private static let multicastHoldBack: Double = 5
    static let multicastBufferBytes = 256 << 20

    public var listeningPort: Int? { listener?.localAddress?.port }

    private init(metainfo: Metainfo, store: PieceStore, have: Bitfield, options: Options, logger: Logger) {
        self.metainfo = metainfo
        self.store = store
        self.options = options
        self.logger = logger
        ourHandshake = Handshake(infoHash: metainfo.infoHash, peerID: PeerID.random())
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        pool = NIOThreadPool(numberOfThreads: max(1, options.hashThreads))
        var configuration = SwarmEngine.Configuration()
        if let slots = options.uploadSlots {
            configuration.maxUnchoked = max(1, slots)
            configuration.uploadSlotRate = nil
        }
        configuration.readersFirst = options.readersFirst
        engine = SwarmEngine(info: metainfo.info, have: have, handshake: ourHandshake, configuration: configuration,
            seed: UInt64.random(in: .min ... .max))
        completion = loop.makePromise()
        upload = options.maxUp.map { TokenBucket(bytesPerSecond: $0) }
        download = options.maxDown.map { TokenBucket(bytesPerSecond: $0) }
    }

    /// Starts listening, connecting and announcing. `have` is what `store.verify` found.
    public static func start(
        metainfo: Metainfo, store: PieceStore, have: Bitfield, options: Options, logger: Logger
    ) async throws -> SwarmRuntime {
        let runtime = SwarmRuntime(metainfo: metainfo, store: store, have: have, options: options, logger: logger)
        runtime.pool.start()
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: runtime.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.recvAllocator, value: Self.peerReads)
                .childChannelOption(.writeBufferWaterMark, value: Self.writeWaterMark)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PeerChannelHandler(runtime: runtime, outgoing: false))
                    }
                }
                .bind(host: options.listenHost, port: options.port).get()
        } catch {
            // A port in use (or any bind error) ends here with the loops stopped and the completion
            // failed: a promise left pending when the runtime goes is a trap in NIO ("leaking promise").
            runtime.completion.fail(error)
            try? await runtime.pool.shutdownGracefully()
            try? await runtime.group.shutdownGracefully()
            throw error
        }
        try await runtime.loop.submit {
            runtime.listener = channel
            runtime.engine.listenPort = channel.localAddress?.port.map { UInt16(clamping: $0) }
            runtime.engine.metadata = MetadataServer(metadata: metainfo.infoBytes)  // BEP 9: serve the info dictionary
            // A complete .part (killed between its last piece and the rename) still needs the rename.
            if have.isComplete { if runtime.store.isFinished { runtime.completion.succeed(()) } else { runtime.finish() } }
            if options.useTrackers && !metainfo.announceTiers.isEmpty {
                runtime.tracker = TrackerClient(tiers: metainfo.announceTiers, group: runtime.group, logger: logger, trust: options.trust,
                    localAddress: options.bindAddress)
            }
            if options.useTrackers {
                runtime.siteAnnouncers = options.siteTrackers.map {
                    SiteAnnouncer(client: TrackerClient(tiers: [[$0]], group: runtime.group, logger: logger, trust: options.trust,
                        localAddress: options.siteAddress))
                }
            }
            if let policy = options.policy { runtime.perform(runtime.engine.setPolicy(policy)) }
            switch options.method {
            case .tree:
                if runtime.tracker != nil {
                    let membership = TreeMembership()
                    runtime.treeMembership = membership
                    runtime.perform(runtime.engine.setPolicy(membership.policy))  // no parent until the tracker names one
                } else {
                    logger.warning("tree mode needs the torrent's tracker to place this node; fetching from the mesh")
                }
            case .auto:
                // It announces as a tree node, to learn whether its tracker places trees, and
                // fetches from the mesh until it has chosen (`decideMethod`).
                if runtime.tracker != nil { runtime.treeMembership = TreeMembership() }
                if !have.isComplete {
                    runtime.autoMethod = AutoMethod(listensToGroup: options.multicast != nil, hasTracker: runtime.tracker != nil,
                        pieceCount: metainfo.info.pieceCount)
                }
            case .mesh, .multicast:
                break
            }
            for peer in options.peers { runtime.connect(host: peer.host, port: peer.port) }
            if !have.isComplete { runtime.startWebSeeds() }
            runtime.timer = runtime.loop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in runtime.tick() }
            runtime.stallTimer = runtime.loop.scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { _ in
                runtime.sampleOutboxes()
            }
            if runtime.upload != nil || runtime.download != nil { runtime.startPacer() }
        }.get()
        if let multicast = options.multicast, !have.isComplete {
            try await runtime.startMulticast(multicast, have: have)
        }
        if options.lanDiscovery != nil, metainfo.info.isPrivate {
            logger.warning("LAN discovery is off: the torrent is private (BEP 27), its peers come from its trackers")
        }
        if let lan = options.lanDiscovery, !metainfo.info.isPrivate, let port = channel.localAddress?.port {
            let discovery = try await LocalPeerDiscovery.start(infoHash: metainfo.infoHash, port: UInt16(clamping: port), interface: lan.interface,
                interval: lan.interval, on: runtime.group) { [weak runtime] peer in runtime?.connect(host: peer.host, port: Int(peer.port)) }
            try await runtime.loop.submit { runtime.discovery = discovery }.get()
        }
        logger.info("swarm node listening", metadata: ["port": "\(channel.localAddress?.port ?? 0)", "info_hash": "\(metainfo.infoHash.hex)"])
        return runtime
    }

    /// Every 20 ms, what the rate limits allow goes out. Started with the first limit.
    private func startPacer() {
        guard pacer == nil else { return }
        pacer = loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { _ in
            self.releaseHeld()
            if self.upload != nil { self.pumpAll() }
        }
    }

    /// Changes the rate limits while the swarm runs (`seed` and `get` on SIGHUP; nil: none).
    /// Requests held back by a limit that is lifted go out at once.
    public func setRateLimits(up: Double?, down: Double?) async {
        try? await loop.submit {
            self.upload = up.map { TokenBucket(bytesPerSecond: $0) }
            self.download = down.map { TokenBucket(bytesPerSecond: $0) }
            if up != nil || down != nil { self.startPacer() }
            self.releaseHeld()
            self.pumpAll()
        }.get()
    }

    /// Completes when every piece is verified and the data carries its final name.
    public func waitForCompletion() async throws {
        try await completion.futureResult.get()
    }

    public func status() async -> Status {
        (try? await loop.submit { self.currentStatus() }.get())
            ?? Status(piecesHave: 0, pieceCount: info.pieceCount, bytesHave: 0, totalLength: info.totalLength,
                downloaded: 0, uploaded: 0, wasted: 0, peers: 0, peersMissingPieces: 0, trackerIncomplete: nil, complete: false,
                multicastPieces: 0, multicast: nil, refusals: [:], uploadBufferBytes: 0)
    }

    /// Reads the image as it is stored (a sealed image's plaintext) while it downloads: waits until
    /// every piece under the range has verified (so no byte that was not verified, or for a sealed
    /// image not authenticated, is ever handed out), then reads it on the thread pool. Throws
    /// `ReadError.stopped` if the node stops first.
    public func readImage(at offset: Int64, length: Int) async throws -> ByteBuffer {
        guard let range = Self.imageRange(offset: offset, length: length, storedLength: store.storedLength) else {
            throw ReadError.outOfRange(offset: offset, length: length)
        }
        let pieces = store.pieces(holdingStored: range)
        let store = self.store
        try await loop.flatSubmit { () -> EventLoopFuture<Void> in
            self.reads.reads += 1
            self.reads.bytes += Int64(length)
            let ahead = self.readAhead.read(range, end: store.storedLength)
            if let ahead {
                let have = self.engine.have
                self.aheadPieces = store.pieces(holdingStored: ahead).map(PieceIndex.init).filter { !have[$0] }
            }
            guard !pieces.allSatisfy({ self.engine.have[PieceIndex($0)] }) else {
                self.reads.hits += 1
                if ahead != nil { self.prioritizeReaders() }
                return self.loop.makeSucceededVoidFuture()
            }
            guard !self.stopped else { return self.loop.makeFailedFuture(ReadError.stopped) }
            let promise = self.loop.makePromise(of: Void.self)
            self.readers.append((pieces, promise))
            self.prioritizeReaders()
            return promise.futureResult
        }.get()
        return try await pool.runIfActive(eventLoop: loop) { () -> ByteBuffer in
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
                try store.readStored(range, into: UnsafeMutableRawBufferPointer(rebasing: target.prefix(length)))
                return length
            }
            return buffer
        }.get()
    }

    /// The stored bytes a read covers, or nil when any of it lies outside the image. Checked without
    /// forming `offset + length`, which overflows for a hostile offset near Int64.max.
    static func imageRange(offset: Int64, length: Int, storedLength: Int64) -> Range<Int64>? {
        guard length > 0, offset >= 0, offset <= storedLength, Int64(length) <= storedLength - offset else { return nil }
        return offset..<(offset + Int64(length))
    }

    /// Fetches the pieces under `profile`'s reads in the order they were read (reads past the end
    /// of the image are dropped), after the pieces readers wait for. Returns the pieces ordered.
    @discardableResult
    public func prefetch(_ profile: ReadProfile) async throws -> Int {
        let storedLength = store.storedLength
        var order: [PieceIndex] = []
        var seen = Set<Int>()
        for read in profile.reads where read.lowerBound < storedLength {
            for piece in store.pieces(holdingStored: read.lowerBound..<min(read.upperBound, storedLength)) where seen.insert(piece).inserted {
                order.append(PieceIndex(piece))
            }
        }
        let pieces = order
        try await loop.submit { self.perform(self.engine.setPieceOrder(pieces)) }.get()
        return pieces.count
    }

    public enum ReadError: Error, CustomStringConvertible {
        case outOfRange(offset: Int64, length: Int)
        case stopped

        public var description: String {
            switch self {
            case .outOfRange(let offset, let length): "a read of \(length) bytes at \(offset) is outside the image"
            case .stopped: "the node stopped before the data arrived"
            }
        }
    }

    /// A piece verified: readers whose pieces are all held now go on.
    private func wakeReaders() {
        guard !readers.isEmpty else { return }
        let have = engine.have
        readers.removeAll { reader in
            guard reader.pieces.allSatisfy({ have[PieceIndex($0)] }) else { return false }
            reader.promise.succeed(())
            return true
        }
        prioritizeReaders()
    }

    /// What readers wait for is fetched before anything else: the missing pieces of every waiting
    /// read, oldest read first, then what a sequential reader reads next (the engine keeps the
    /// first 64).
    private func prioritizeReaders() {
        let have = engine.have
        var pieces: [PieceIndex] = []
        for reader in readers {
            for index in reader.pieces where !have[PieceIndex(index)] {
                pieces.append(PieceIndex(index))
                if pieces.count >= SwarmEngine.maximumUrgentPieces { break }
            }
            if pieces.count >= SwarmEngine.maximumUrgentPieces { break }
        }
        aheadPieces.removeAll { have[$0] }
        pieces += aheadPieces.filter { !pieces.contains($0) }
        perform(engine.setUrgentPieces(pieces))
        // A web seed takes what readers wait for first (at once, not at the next tick).
        webSeed?.pump(now: now)
        askGroupForReadersPieces()
    }

    /// mUFS: with the booster's sender heard, what readers wait for is asked of it too, so it
    /// comes at the group's rate (not squeezed beside the group's stream on this node's downlink)
    /// and every node of the group keeps it for its own readers. The receiver asks a piece at most
    /// every 0.1 s; the sender sends it at most every 0.05 s, within its share.
    private func askGroupForReadersPieces() {
        guard multicastReceiver != nil, !engine.urgentPieces.isEmpty else { return }
        let pieces = Array(engine.urgentPieces.prefix(Self.urgentPiecesAskedOfTheGroup))
        if let request = multicastReceiver!.requestUrgent(pieces, now: now) { handle([request]) }
    }

    /// The most urgent pieces one request names: what readers wait for and a little of what they
    /// read next (1 MiB of 256 KiB pieces). Not the whole read-ahead window: the sender sends
    /// requests in the order they come, and a window of 4 MiB from every reader queued a new read's
    /// piece behind a second of read-ahead (testbed: single reads of 0.4 and 1 s).
    static let urgentPiecesAskedOfTheGroup = 4

    private func failReaders() {
        let waiting = readers
        readers.removeAll()
        for reader in waiting { reader.promise.fail(ReadError.stopped) }
    }

    /// Announces `stopped`, closes every connection and stops the loops.
    public func shutdown() async {
        let finalAnnounce: AnnounceRequest? = try? await loop.submit {
            self.stopped = true
            self.failReaders()
            self.timer?.cancel()
            self.stallTimer?.cancel()
            self.pacer?.cancel()
            self.multicastTimer?.cancel()
            self.multicastLink?.close()
            self.discovery?.close()
            self.webSeed?.stop()
            self.channels.values.forEach { $0.close(promise: nil) }
            self.listener?.close(promise: nil)
            // Stopped before the image was complete: whoever waits for it is told, and the promise
            // does not outlive the runtime unfulfilled (NIO traps on that in debug builds).
            self.completion.fail(CancellationError())  // no effect once it succeeded
            return self.tracker == nil && self.siteAnnouncers.isEmpty ? nil : self.announceRequest(event: .stopped)
        }.get()
        // A short total deadline: a black-holed tracker must not hold a stopping node (issue 15).
        if let finalAnnounce {
            await withTaskGroup(of: Void.self) { group in
                for client in [tracker].compactMap({ $0 }) + siteAnnouncers.map(\.client) {
                    group.addTask { _ = try? await client.announce(finalAnnounce, within: .milliseconds(1500)) }
                }
            }
        }
        try? await pool.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    // MARK: Called by peer channels, on the loop

    /// A connection opened (accepted, or dialled by us). Nil: close it at once (counted). Else the
    /// key it is counted under, handed back in `channelClosed`.
    func channelOpened(_ channel: any Channel, outgoing: Bool) -> String? {
        loop.preconditionInEventLoop()
        guard !stopped else { return nil }
        let address = channel.remoteAddress?.ipAddress ?? ""
        if let networks = options.peerNetworks, !Self.lies(address, in: networks) { return refuse(.outsideNetworks, channel) }
        if !outgoing {
            guard connectionsPerAddress[address, default: 0] < options.maxPerAddress else { return refuse(.perAddressLimit, channel) }
            // When the half-open table is full the oldest entry makes room, not the newcomer: a peer
            // handshakes within a round trip, so connections that sit idle are what gets closed, and
            // a flood of them cannot keep honest peers out.
            if halfOpen.count >= options.maxHalfOpen, let oldest = halfOpen.min(by: { $0.value.since < $1.value.since }) {
                halfOpen[oldest.key] = nil
                refuse(.halfOpenLimit, oldest.value.channel) as Void?
                oldest.value.channel.close(promise: nil)
            }
        }
        connectionsPerAddress[address, default: 0] += 1
        halfOpen[ObjectIdentifier(channel)] = (channel, now)
        return address
    }

    /// A connection that `channelOpened` admitted closed; `handle` if it had become a peer.
    func channelClosed(_ channel: any Channel, address: String, handle: Int?) {
        loop.preconditionInEventLoop()
        halfOpen[ObjectIdentifier(channel)] = nil
        if let count = connectionsPerAddress[address], count > 1 {
            connectionsPerAddress[address] = count - 1
        } else {
            connectionsPerAddress[address] = nil
        }
        if let handle { peerDisconnected(handle) }
    }

    /// Counts a refusal; nil for `channelOpened` and `peerConnected` to return.
    @discardableResult
    func refuse<T>(_ reason: ConnectionRefusal, _ channel: (any Channel)?) -> T? {
        refusals[reason, default: 0] += 1
        logger.debug("refusing connection", metadata: ["reason": "\(reason.rawValue)",
            "peer": "\(channel?.remoteAddress.map { "\($0)" } ?? "?")"])
        return nil
    }

    func peerConnected(_ handshake: Handshake, channel: any Channel, outgoing: Bool) -> Int? {
        loop.preconditionInEventLoop()
        halfOpen[ObjectIdentifier(channel)] = nil
        guard !stopped else { return nil }
        let ip = channel.remoteAddress?.ipAddress ?? ""
        let address = channel.remoteAddress.flatMap { remote in
            remote.ipAddress.flatMap { PeerAddress(host: $0, port: UInt16(clamping: remote.port ?? 0)) }
        }
        guard handshake.peerID != ourHandshake.peerID, !peerKeys.values.contains(where: { $0.ip == ip && $0.id == handshake.peerID })
        else { return refuse(.duplicate, channel) }
        guard engine.accepts(handshake.peerID, ip: address?.ip) else { return refuse(.banned, channel) }
        guard engine.admits(handshake.peerID, ip: address?.ip, outgoing: outgoing) else { return refuse(.topology, channel) }
        guard PeerLimits(maxPeers: options.maxPeers).mayAccept(connected: channels.count) else { return refuse(.peerLimit, channel) }
        let handle = nextHandle
        nextHandle += 1
        channels[handle] = channel
        if outgoing { dialled.insert(handle) }
        outboxes[handle] = PeerOutbox()
        peerKeys[handle] = (ip, handshake.peerID)
        if !options.siteNetworks.isEmpty, Self.lies(ip, in: options.siteNetworks) { sitePeers.insert(handle) }
        logger.debug("peer connected", metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")", "id": "\(handshake.peerID)"])
        perform(engine.peerConnected(handle, handshake: handshake, address: address, outgoing: outgoing))
        return handle
    }

    func received(_ messages: [PeerMessage], from handle: Int) {
        loop.preconditionInEventLoop()
        for message in messages where channels[handle] != nil {
            logger.trace("received", metadata: ["peer": "\(handle)", "message": "\(message)"])
            if case .piece(_, _, let block) = message {
                if sitePeers.contains(handle) { siteBytes.down += Int64(block.readableBytes) } else { wanBytes.down += Int64(block.readableBytes) }
            }
            perform(engine.received(message, from: handle))
        }
    }

    func peerDisconnected(_ handle: Int) {
        loop.preconditionInEventLoop()
        guard channels.removeValue(forKey: handle) != nil else { return }
        dialled.remove(handle)
        sitePeers.remove(handle)
        heldRequests.removeAll { $0.0 == handle }
        if let id = peerKeys.removeValue(forKey: handle)?.id, treeMembership?.disconnected(id, complete: engine.isComplete) == true {
            logger.info("tree parent lost; asking the tracker for another", metadata: ["parent": "\(id)"])
            announceNow()
        }
        starved.remove(handle)
        // The closed channel dropped its queued blocks: the pieces they kept alive may go.
        outboxes.removeValue(forKey: handle)?.releaseAll { releaseSlice(of: $0) }
        perform(engine.peerDisconnected(handle))
        evictIdleUploads()
        pumpStarved()
    }

    /// The peer's channel stopped or started again taking our writes (NIO's water marks).
    func writabilityChanged(_ handle: Int, writable: Bool) {
        loop.preconditionInEventLoop()
        guard channels[handle] != nil, writable, let outbox = outboxes[handle] else { return }
        // Bytes left the channel: the peer reads.
        outbox.progressed()
        updateBlocked(handle)
        pump(handle)
    }

    /// Tells the engine whether the peer reads what we send: it does not once the channel held
    /// bytes and the peer took none of them for a while (`PeerOutbox.stalled`). Not the channel's
    /// writability itself: a peer that reads, only slower than we send, crosses the high water
    /// mark many times a second, and would lose its upload slot each time.
    private func updateBlocked(_ handle: Int) {
        guard let outbox = outboxes[handle] else { return }
        let blocked = outbox.stalled(now: now)
        guard blocked != outbox.reportedBlocked else { return }
        outbox.reportedBlocked = blocked
        if blocked {
            stallsFound += 1
            logger.info("a peer reads nothing of what waits for it; its upload slot goes to another",
                metadata: ["peer": "\(peerKeys[handle]?.ip ?? "?")", "tcp": "\(outbox.lastKernel.map { "\($0)" } ?? "none")"])
        }
        perform(engine.peerWriteBlocked(handle, blocked))
    }

    /// Lets go of the pieces whose blocks left each peer's channel and samples what the channels
    /// and their sockets still hold and what the peers' kernels acknowledged, telling the engine of
    /// peers that stopped (or started again) reading.
    private func sampleOutboxes() {
        guard !stopped else { return }
        let now = self.now
        for handle in outboxes.keys.sorted() {
            guard let outbox = outboxes[handle], let channel = channels[handle] else { continue }
            drainSlices(outbox, channel)
            guard let buffered = try? channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes) else {
                continue  // closing: `peerDisconnected` follows
            }
            guard let provider = channel as? any SocketOptionProvider else {
                outbox.sample(buffered: buffered, now: now)
                updateBlocked(handle)
                continue
            }
            // On this loop the answer is immediate.
            let info: EventLoopFuture<KernelTCPInfo> = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: TCP_INFO)
            info.whenComplete { result in
                guard let outbox = self.outboxes[handle] else { return }
                outbox.sample(buffered: buffered, kernel: try? result.get().queue, now: now)
                self.updateBlocked(handle)
            }
        }
    }

    func protocolError(_ description: String, peer handle: Int?) {
        logger.info("dropping peer", metadata: ["reason": "\(description)"])
    }

    // MARK: Actions

    private func perform(_ actions: [SwarmEngine.Action]) {
        var touched = Set<Int>()
        for action in actions {
            switch action {
            case .send(let handle, let message):
                if case .request = message, download != nil, !sitePeers.contains(handle) {
                    heldRequests.append((handle, message))
                } else if write(message, to: handle) {
                    touched.insert(handle)
                    // A choked peer's requests are void (BEP 3) or were rejected (BEP 6).
                    if case .choke = message {
                        outboxes[handle]?.clearWaiting()
                        logger.debug("choking peer", metadata: ["peer": "\(handle)"])
                    } else if case .unchoke = message {
                        logger.debug("unchoking peer", metadata: ["peer": "\(handle)"])
                    }
                }
            case .disconnect(let handle, let reason):
                logger.info("disconnecting peer", metadata: ["reason": "\(reason)"])
                channels[handle]?.close(promise: nil)
            case .verify(let piece, let bytes):
                verify(piece, bytes)
            case .readBlock(let handle, let request):
                requested(request, by: handle)
            case .completed:
                finish()
            case .connect(let addresses):
                learned(addresses)
            }
        }
        for handle in touched { channels[handle]?.flush() }
    }

    @discardableResult
    private func write(_ message: PeerMessage, to handle: Int) -> Bool {
        guard let channel = channels[handle] else { return false }
        var buffer = channel.allocator.buffer(capacity: 32)
        if case .piece(let piece, let begin, let block) = message {
            // The block goes out as it is (a slice of the piece read for it), beside its header:
            // the socket gathers both in one write, and 16 KiB are not copied into a new buffer.
            PeerWireEncoder.writePieceHeader(piece, begin: begin, length: block.readableBytes, to: &buffer)
            outboxes[handle]?.wrote(buffer.readableBytes + block.readableBytes)
            channel.write(buffer, promise: nil)
            channel.write(block, promise: nil)
        } else {
            PeerWireEncoder.write(message, to: &buffer)
            outboxes[handle]?.wrote(buffer.readableBytes)
            channel.write(buffer, promise: nil)
        }
        return true
    }

    /// Sends what the rate limits now allow, oldest first.
    private func releaseHeld() {
        let now = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var touched = Set<Int>()
        func drain(_ held: inout [(Int, PeerMessage)], _ bucket: inout TokenBucket?, size: (PeerMessage) -> Int) {
            var sent = 0
            // Without a limit (lifted since these were held) everything goes.
            while sent < held.count, bucket == nil || bucket?.take(size(held[sent].1), now: now) == true {
                if write(held[sent].1, to: held[sent].0) { touched.insert(held[sent].0) }
                sent += 1
            }
            held.removeFirst(sent)
        }
        drain(&heldRequests, &download) { if case .request(let block) = $0 { block.length } else { 0 } }
        for handle in touched { channels[handle]?.flush() }
    }

    private func verify(_ piece: PieceIndex, _ bytes: [UInt8]) {
        let expected = Array(info.hash(of: piece))
        let store = self.store
        let peersMayAsk = engine.somePeerLacks(piece)
        pool.runIfActive(eventLoop: loop) { () -> Bool in
            var sha = Insecure.SHA1()
            bytes.withUnsafeBytes { sha.update(bufferPointer: $0) }
            guard Array(sha.finalize()) == expected else { return false }
            try store.write(piece, bytes: bytes, peersMayAsk: peersMayAsk)
            return true
        }.whenComplete { result in
            switch result {
            case .success(let valid):
                if valid { self.piecesVerified += 1 } else { self.hashFailures += 1 }
                self.perform(self.engine.pieceChecked(piece, valid: valid))
                self.multicastPieceChecked(piece, valid: valid)
                self.webSeed?.pieceChecked(piece, valid: valid, now: self.now)
                if valid { self.wakeReaders() }
            case .failure(let error):
                // Debug only: the failure ends the download and its caller reports it once (a full
                // disk failed every piece in flight, one error line each).
                self.logger.debug("cannot write a verified piece", metadata: ["piece": "\(piece.value)", "error": "\(error)"])
                self.completion.fail(error)
                // Readers waiting for it (or any piece) learn now, while their servers still answer.
                self.failReaders()
            }
        }
    }

    // MARK: Serving blocks, with backpressure

    /// A peer asked for a block we hold. It waits in the peer's outbox until the peer's channel
    /// can take it; the outbox holds at most the requests the peer's session admits (500) plus
    /// any it cancelled since, which are swept out before the line grows past twice that.
    private func requested(_ request: BlockRequest, by handle: Int) {
        guard let outbox = outboxes[handle] else { return }
        if outbox.waitingCount >= 2 * PeerSession.maxPeerRequests {
            outbox.removeWaiting { !engine.isRequested($0, by: handle) }
        }
        outbox.enqueue(request)
        pump(handle)
    }

    /// Serves the peer's waiting requests while its channel is writable, its reads in progress
    /// are under `readingBytesPerPeer`, the upload limit has tokens and the pieces fit in
    /// `uploadBufferBytes`. Whatever is left waits for the channel's writability, a finished read,
    /// the pacer or freed upload buffers.
    private func pump(_ handle: Int) {
        guard let channel = channels[handle], let outbox = outboxes[handle], !outbox.pumping else { return }
        outbox.pumping = true
        defer { outbox.pumping = false }
        drainSlices(outbox, channel)
        var wrote = false
        let now = self.now
        while let request = outbox.next, channel.isWritable, outbox.reading < Self.readingBytesPerPeer {
            guard engine.isRequested(request, by: handle) else {
                outbox.dequeue()  // cancelled meanwhile
                continue
            }
            guard let entry = uploads[request.piece] ?? startReading(request.piece) else {
                starved.insert(handle)
                break
            }
            if upload != nil, !sitePeers.contains(handle), upload?.take(request.length, now: now) != true { break }
            outbox.dequeue()
            if entry.data != nil {
                wrote = serve(request, from: entry, to: handle, outbox: outbox, channel: channel) || wrote
            } else {
                entry.waiters.append((handle, request))
                outbox.reading += request.length
            }
        }
        if wrote { channel.flush() }
    }

    func pumpAll() {
        for handle in outboxes.keys.sorted() where outboxes[handle]!.waitingCount > 0 { pump(handle) }
    }

    private func pumpStarved() {
        guard !starved.isEmpty else { return }
        let waiting = starved.sorted()
        starved.removeAll()
        for handle in waiting { pump(handle) }
    }

    /// Hands the engine one block of a piece in memory; true if it was written. The block is a
    /// slice of the piece (no copy) unless the peer's queue already keeps `slicedPiecesPerPeer`
    /// other pieces alive.
    private func serve(_ request: BlockRequest, from entry: UploadPiece, to handle: Int, outbox: PeerOutbox, channel: any Channel) -> Bool {
        guard let data = entry.data, var block = data.getSlice(at: data.readerIndex + request.begin, length: request.length) else { return false }
        uploadUses += 1
        entry.lastUse = uploadUses
        if sitePeers.contains(handle) { siteBytes.up += Int64(request.length) } else { wanBytes.up += Int64(request.length) }
        let sliced = outbox.pieceRefs[request.piece] != nil || outbox.pieceRefs.count < Self.slicedPiecesPerPeer
        if !sliced {
            var copy = channel.allocator.buffer(capacity: block.readableBytes)
            copy.writeBuffer(&block)
            block = copy
        }
        let before = outbox.written
        for action in engine.blockRead(request, data: block, for: handle) {
            guard case .send(let peer, let message) = action else { continue }
            write(message, to: peer)
        }
        guard outbox.written > before else { return false }
        if sliced {
            outbox.wroteSlice(of: request.piece)
            if entry.refs == 0 { idleUploadBytes -= entry.length }
            entry.refs += 1
        }
        return true
    }

    /// Lets go of the pieces the channel no longer holds blocks of.
    private func drainSlices(_ outbox: PeerOutbox, _ channel: any Channel) {
        guard outbox.holdsSlices else { return }
        let buffered: Int
        do {
            guard let options = channel.syncOptions else { return }
            buffered = try options.getOption(ChannelOptions.bufferedWritableBytes)
        } catch {
            return  // closing: `peerDisconnected` releases everything
        }
        var released = false
        outbox.drained(buffered: buffered) { piece in
            releaseSlice(of: piece)
            released = true
        }
        if released { evictIdleUploads() }
    }

    private func releaseSlice(of piece: PieceIndex) {
        guard let entry = uploads[piece] else { return }
        entry.refs -= 1
        if entry.refs == 0 && entry.data != nil { idleUploadBytes += entry.length }
    }

    /// Starts reading a piece for peers, if it fits in `uploadBufferBytes` (after dropping cached
    /// pieces no block refers to); nil if it does not.
    private func startReading(_ piece: PieceIndex) -> UploadPiece? {
        let length = info.layout.length(of: piece)
        let limit = max(options.uploadBufferBytes, 2 * info.pieceLength)
        evictIdleUploads(making: length, within: limit)
        guard uploadBytes + length <= limit else { return nil }
        let entry = UploadPiece(length: length)
        uploads[piece] = entry
        uploadBytes += length
        let store = self.store
        pool.runIfActive(eventLoop: loop) { () -> ByteBuffer in
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
                try store.readWire(piece, into: UnsafeMutableRawBufferPointer(rebasing: target[0..<length]))
                return length
            }
            return buffer
        }.whenComplete { result in
            self.pieceRead(piece, entry: entry, result: result)
        }
        return entry
    }

    private func pieceRead(_ piece: PieceIndex, entry: UploadPiece, result: Result<ByteBuffer, any Error>) {
        let waiters = entry.waiters
        entry.waiters = []
        switch result {
        case .success(let buffer):
            entry.data = buffer
            if entry.refs == 0 { idleUploadBytes += entry.length }
            var touched = Set<Int>()
            for (handle, request) in waiters {
                guard let outbox = outboxes[handle], let channel = channels[handle] else { continue }
                outbox.reading -= request.length
                if serve(request, from: entry, to: handle, outbox: outbox, channel: channel) { touched.insert(handle) }
            }
            for handle in touched { channels[handle]?.flush() }
        case .failure(let error):
            if uploads[piece] === entry {
                uploads[piece] = nil
                uploadBytes -= entry.length
            }
            // Once, clearly: the data behind a piece we announced is gone (a truncated file, an
            // I/O error). Its requests are refused, never left waiting.
            if unreadableLogged.insert(piece).inserted {
                logger.error("cannot read a piece for peers; refusing requests for it",
                    metadata: ["piece": "\(piece.value)", "error": "\(error)"])
            }
            for (handle, request) in waiters {
                guard let outbox = outboxes[handle] else { continue }
                outbox.reading -= request.length
                perform(engine.blockUnavailable(request, for: handle))
            }
        }
        for handle in Set(waiters.map(\.handle)).sorted() { pump(handle) }
        evictIdleUploads()
        pumpStarved()
    }

    /// Drops the least recently used pieces no block refers to, until the cache is within
    /// `servedPieceBytes` and `making` more bytes fit in `within`.
    private func evictIdleUploads(making extra: Int = 0, within limit: Int = .max) {
        while idleUploadBytes > Self.servedPieceBytes || (idleUploadBytes > 0 && uploadBytes + extra > limit) {
            guard let (piece, entry) = uploads.filter({ $0.value.refs == 0 && $0.value.data != nil }).min(by: { $0.value.lastUse < $1.value.lastUse })
            else { break }
            uploads[piece] = nil
            uploadBytes -= entry.length
            idleUploadBytes -= entry.length
        }
    }

    private func finish() {
        let store = self.store
        pool.runIfActive(eventLoop: loop) { try store.finish() }.whenComplete { result in
            switch result {
            case .success:
                self.logger.info("download complete", metadata: ["path": "\(store.finalPath)"])
                self.completion.succeed(())
                if self.tracker != nil { self.announce(event: .completed) }
                for announcer in self.siteAnnouncers { self.announceToSite(announcer, event: .completed) }
            case .failure(let error):
                self.completion.fail(error)
                self.failReaders()
            }
        }
    }

    // MARK: Multicast booster

    private func startMulticast(_ options: MulticastOptions, have: Bitfield) async throws {
        let link = try await MulticastLink.open(options, on: group) { [weak self] datagram, source in
            self?.multicastDatagram(datagram, from: source)
        }
        try await loop.submit {
            self.multicastLink = link
            var configuration = MulticastReceiver.Configuration()
            // Reports of a lossy pass must reach the sender within its collection window.
            configuration.nackRate = 50
            configuration.nackBurst = 8
            // Partly heard pieces wait in memory for their repair; a lossy receiver holds most of
            // the pieces of a pass partly, so the bound is set well above the default.
            configuration.maxBufferedBytes = Self.multicastBufferBytes
            let session = MulticastSession(infoHash: self.metainfo.infoHash)
            self.multicastReceiver = MulticastReceiver(session: session, layout: self.info.layout,
                have: have, configuration: configuration, authentication: options.authentication(for: session),
                seed: UInt64.random(in: .min ... .max))
            if self.autoMethod == nil { self.deferForMulticast(self.missingPieces()) }  // auto: once a sender is heard
            self.multicastTimer = self.loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { _ in
                self.multicastTick()
            }
        }.get()
        logger.info("listening to the multicast booster", metadata: ["group": "\(options.group):\(options.port)"])
    }

    private var now: Double { Double((NIODeadline.now() - started).nanoseconds) / 1e9 }

    private func missingPieces() -> Bitfield {
        var missing = Bitfield(pieceCount: info.pieceCount, all: true)
        missing.subtract(engine.have)
        return missing
    }

    private func multicastDatagram(_ datagram: [UInt8], from source: SocketAddress) {
        guard !stopped, multicastLink != nil else { return }
        // The sender's address is avoided for BitTorrent while it sends: its link is full with the
        // booster. Not on loopback, where every peer has that address. It is the source of the
        // control packet by which the receiver took up a sender (authenticated for sealed images),
        // never that of any datagram that merely starts like a data packet.
        let (followed, control) = (multicastReceiver!.senderInstance, multicastReceiver!.counters.senderControl)
        let events = multicastReceiver!.received(datagram, now: now)
        if multicastReceiver!.counters.senderControl != control, multicastReceiver!.senderInstance != followed || multicastSender == nil,
            source != multicastSender
        {
            multicastSender = source
            if let host = source.ipAddress, !host.hasPrefix("127."), let address = PeerAddress(host: host, port: 0) {
                perform(engine.avoidPeers(at: address.ip))
            }
        }
        handle(events)
    }

    private func multicastTick() {
        guard !stopped, multicastReceiver != nil else { return }
        let now = self.now
        handle(multicastReceiver!.tick(now: now))
        askGroupForReadersPieces()
        multicastTicks += 1
        // Five times a second: peers are asked only for pieces the booster has passed by.
        guard multicastTicks % 10 == 0, let receiver = multicastReceiver else { return }
        guard receiver.cursor != nil else {
            // No sender heard yet: peers wait a moment for the first pass, then get on without it.
            // With `--method auto` only once a sender was heard (it chose multicast): while it
            // listens, and after it chose without the group, BitTorrent goes on.
            let holdsBack = autoMethod.map { $0.choice?.method == .multicast } ?? true
            deferForMulticast(now < Self.multicastHoldBack && holdsBack ? missingPieces() : nil)
            return
        }
        guard receiver.senderActive(now: now) else {
            if !multicastHandedOver { leaveToPeers() }
            return
        }
        multicastHandedOver = false
        deferToMulticast(now: now)
    }

    /// While the sender is heard, peers are not asked for what the booster will bring: pieces ahead
    /// of its pass, and partly heard pieces waiting for the repair the receiver asked for
    /// (re-sending a lost datagram to the group is cheaper than fetching it from a peer over a link
    /// the booster already fills). A piece the group will not repair is handed over and leaves this set.
    private func deferToMulticast(now: Double) {
        guard let receiver = multicastReceiver else { return }
        var deferred = Bitfield(pieceCount: info.pieceCount)
        for piece in info.layout.pieces
        where !engine.have[piece] && (receiver.shouldLeaveToMulticast(piece, now: now) || receiver.holdsPart(of: piece)) {
            deferred.insert(piece)
        }
        deferForMulticast(deferred.isEmpty ? nil : deferred)
    }

    /// The booster is done or gone: peers are asked for everything, partly heard pieces only for
    /// the blocks that were lost.
    private func leaveToPeers() {
        guard var receiver = multicastReceiver else { return }
        multicastHandedOver = true
        for piece in info.layout.pieces where !engine.have[piece] && receiver.holdsPart(of: piece) {
            if let partial = receiver.handOver(piece) {
                fromMulticast.insert(piece)
                perform(engine.piecePartlyArrived(piece, data: partial.bytes, missing: partial.missing))
            }
        }
        multicastReceiver = receiver
        deferForMulticast(nil)
        perform(engine.avoidPeers(at: nil))
    }

    private func handle(_ events: [MulticastReceiver.Event]) {
        var handedOver = false
        defer { if handedOver && !multicastHandedOver { deferToMulticast(now: now) } }
        for event in events {
            switch event {
            case .handOver(let partial):
                fromMulticast.insert(partial.piece)
                handedOver = true
                perform(engine.piecePartlyArrived(partial.piece, data: partial.bytes, missing: partial.missing))
            case .pieceAssembled(let piece, let bytes):
                if let actions = engine.pieceArrived(piece, data: bytes, reachedPeers: true) {
                    fromMulticast.insert(piece)
                    perform(actions)
                } else {
                    multicastReceiver?.pieceObtainedElsewhere(piece, now: now)
                }
            case .sendNack(let bytes):
                guard let link = multicastLink else { continue }
                link.write(link.allocator.buffer(bytes: bytes))
                link.flush()
            case .senderIdle, .sessionEnded:
                leaveToPeers()
            }
        }
    }

    /// Tells the booster's receiver how a piece fared, whichever way it came.
    private func multicastPieceChecked(_ piece: PieceIndex, valid: Bool) {
        guard multicastReceiver != nil else { return }
        if fromMulticast.remove(piece) != nil {
            if valid {
                multicastPieces += 1
                multicastBytes += Int64(info.layout.length(of: piece))
                multicastReceiver!.pieceVerified(piece, now: now)
            } else {
                multicastReceiver!.pieceFailed(piece, now: now)
            }
        } else if valid {
            multicastReceiver!.pieceObtainedElsewhere(piece, now: now)
        }
        if engine.isComplete {
            multicastTimer?.cancel()
            multicastLink?.close()
            multicastLink = nil
        }
    }

    // MARK: Web seeds

    /// Web seeds used at most: a torrent's url-list is anyone's list, and each seed costs a
    /// request target per file and a share of the fetching.
    public static let maxWebSeeds = 16

    /// The web seeds that parse for this torrent (the first `maxWebSeeds`); the others are
    /// logged once and left out.
    private func startWebSeeds() {
        var maps: [WebSeedMap] = []
        if options.webSeeds.count > Self.maxWebSeeds {
            logger.warning("web seeds beyond the first \(Self.maxWebSeeds) are left out", metadata: ["given": "\(options.webSeeds.count)"])
        }
        for url in options.webSeeds.prefix(Self.maxWebSeeds) {
            do throws(WebSeedError) {
                maps.append(try WebSeedMap(url: url, info: info))
            } catch {
                logger.warning("web seed skipped", metadata: ["reason": "\(error)"])
            }
        }
        guard !maps.isEmpty else { return }
        let hooks = WebSeedFetcher.Hooks(
            state: { [unowned self] in
                var busy = self.engine.picker.startedPieces
                for piece in self.engine.verifyingPieces { busy.insert(piece) }
                self.multicastDeferred?.forEachPiece { busy.insert($0) }
                return (self.engine.have, self.engine.picker.availability, busy, self.engine.urgentPieces)
            },
            deliver: { [unowned self] piece, bytes in
                guard let actions = self.engine.pieceArrived(piece, data: bytes) else { return false }
                self.perform(actions)
                return true
            },
            claimsChanged: { [unowned self] in self.updateDeferred() },
            allowance: { [unowned self] wanted in
                guard self.download != nil else { return wanted }
                // In blocks, as requests take it, so a piece longer than the bucket still gets there.
                var got = 0
                let now = self.now
                while got < wanted, self.download!.take(min(PieceLayout.blockLength, wanted - got), now: now) {
                    got += min(PieceLayout.blockLength, wanted - got)
                }
                return got
            },
            now: { [unowned self] in self.now })
        webSeed = WebSeedFetcher(maps: maps, layout: info.layout, group: group, loop: loop, limited: download != nil,
            configuration: options.webSeedPolicy, trust: options.trust, logger: logger, hooks: hooks)
        logger.info("using web seeds", metadata: ["urls": "\(maps.map(\.url.text))"])
    }

    private func deferForMulticast(_ pieces: Bitfield?) {
        multicastDeferred = pieces
        updateDeferred()
    }

    /// Peers are not asked for what the booster is about to bring nor for what a web seed fetches.
    private func updateDeferred() {
        guard var deferred = multicastDeferred ?? webSeed.map({ _ in Bitfield(pieceCount: info.pieceCount) }) else {
            perform(engine.deferPieces(nil))
            return
        }
        webSeed?.claimed.forEachPiece { deferred.insert($0) }
        perform(engine.deferPieces(deferred.isEmpty ? nil : deferred))
    }

    // MARK: Peers and trackers

    /// Addresses a tracker or a peer named: kept, and dialled as far as the limits allow now.
    private func learned(_ addresses: [PeerAddress]) {
        candidates.add(addresses)
        dialMore()
    }

    /// Dials addresses told earlier while dials and `PeerLimits` leave room: at each tick, and
    /// when a dial ends. An answer names up to `numwant` peers and 16 are dialled at a time; the
    /// rest wait here instead of until the next announce.
    private func dialMore() {
        let now = self.now
        while !stopped, connecting.count < options.maxDialing,
            PeerLimits(maxPeers: options.maxPeers).mayDial(outgoing: dialled.count, dialing: connecting.count, connected: channels.count),
            let candidate = candidates.next(now: now, skip: { address in
                connecting.contains("\(address.host):\(address.port)") || engine.isConnected(to: address)
            }) {
            connect(host: candidate.address.host, port: Int(candidate.address.port)) { [weak self] connected in
                guard let self else { return }
                if !connected { self.candidates.failed(candidate, now: self.now) }
                self.dialMore()
            }
        }
    }

    /// Dials a peer; `done` learns whether the TCP connection was made, on the runtime's loop.
    private func connect(host: String, port: Int, done: @escaping @Sendable (Bool) -> Void = { _ in }) {
        let key = "\(host):\(port)"
        // The policy decides whom to dial; a host given by name (a static --peer) is dialled as given,
        // except by a node confined to its site's networks, which cannot tell where a name leads.
        let literal = PeerAddress(host: host, port: UInt16(clamping: port))
        if let literal, !engine.dials(literal) { return }
        if let networks = options.peerNetworks, !(literal.map { address in networks.contains { $0.contains(address.ip) } } ?? false) { return }
        guard !stopped, connecting.count < options.maxDialing,
            PeerLimits(maxPeers: options.maxPeers).mayDial(outgoing: dialled.count, dialing: connecting.count, connected: channels.count),
            connecting.insert(key).inserted
        else { return }
        var bootstrap = ClientBootstrap(group: group).connectTimeout(.seconds(5)).channelOption(.recvAllocator, value: Self.peerReads)
            .channelOption(.writeBufferWaterMark, value: Self.writeWaterMark)
        if let local = options.bindAddress, let address = try? SocketAddress(ipAddress: local, port: 0) {
            bootstrap = bootstrap.bind(to: address)
        }
        bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PeerChannelHandler(runtime: self, outgoing: true))
                }
            }
            .connect(host: host, port: port)
            // The connection's loop is the runtime's (a group of one), so this runs on it.
            .whenComplete { result in
                self.connecting.remove(key)
                if case .success = result { done(true) } else { done(false) }
            }
    }

    private func tick() {
        let now = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        for (_, entry) in halfOpen where now - entry.since >= options.handshakeTimeout {
            halfOpen[ObjectIdentifier(entry.channel)] = nil
            refuse(.handshakeTimeout, entry.channel) as Void?
            entry.channel.close(promise: nil)
        }
        // TCP's round trip to each peer sizes its request queue (`peerRoundTrip`); on this loop
        // the answer is immediate.
        for (handle, channel) in channels {
            (channel as? any SocketOptionProvider)?.getTCPInfo().whenSuccess { info in
                self.engine.peerRoundTrip(handle, seconds: Double(info.tcpi_rtt) / 1e6)
            }
        }
        perform(engine.tick(now: now))
        dialMore()
        webSeed?.pump(now: now)
        // Pieces whose blocks left since the last pump go back to the cache (or away), and peers
        // that waited for upload buffers get another try.
        sampleOutboxes()
        pumpStarved()
        // A seed waiting for the swarm to finish (`--seed-after done`) asks again as soon as allowed.
        if engine.isComplete, let incomplete = trackerIncomplete, incomplete > 0 {
            announceSchedule.announceWhenAllowed(now: now)
        }
        // A node whose sources left (a pool node of its site died) asks its trackers for others as
        // soon as they allow, rather than at their next interval: when no peer holds a piece it
        // lacks, or when nothing has arrived for a while (the peers left hold what they hold).
        if engine.downloaded != lastDownloaded {
            lastDownloaded = engine.downloaded
            lastProgress = now
        }
        if !engine.isComplete && webSeed == nil {
            if engine.usefulPeers > 0 { usefulSince = now }
            if now - usefulSince >= Self.starvedPatience || now - lastProgress >= Self.stalledPatience {
                announceSchedule.announceWhenAllowed(now: now)
                for announcer in siteAnnouncers { announcer.schedule.announceWhenAllowed(now: now) }
            }
        }
        let usable = treeMembership == nil ? [] : Set(peerKeys.compactMap { handle, key in
            engine.waitingSince(handle).map { now - $0 < TreeMembership.stallTimeout } ?? true ? key.id : nil
        })
        decideMethod()
        if treeMembership?.checkStranded(usable: usable, complete: engine.isComplete, now: now) == true {
            logger.info("no tree parent reachable or sending; asking the tracker for another")
            announceNow()
        }
        if tracker != nil && announceSchedule.isDue(now: now) && !announcing {
            announce(event: announceSchedule.event)
        }
        for announcer in siteAnnouncers where announcer.schedule.isDue(now: now) && !announcer.announcing {
            announceToSite(announcer, event: announcer.schedule.event)
        }
    }

    /// One of `Options.siteTrackers`: announced to like the torrent's tracker, its peers dialled;
    /// it takes no part in choosing a tree or a method.
    private func announceToSite(_ announcer: SiteAnnouncer, event: AnnounceEvent) {
        announcer.announcing = true
        var request = announceRequest(event: event)
        request.rack = nil  // `rack` names this node to the torrent's trackers; a site tracker counts it by its subnet
        send(request, to: announcer.client) { result, now in
            announcer.announcing = false
            switch result {
            case .success(let (_, response)):
                announcer.schedule.answered(interval: response.interval, minInterval: response.minInterval, now: now)
                self.learned(response.peers.map(\.address))
            case .failure(let error):
                let delay = announcer.schedule.failed(now: now, using: &self.announceRandom)
                self.logger.warning("site announce failed", metadata: ["error": "\(error)", "retry_in_s": "\(Int(delay.rounded()))"])
            }
        }
    }

    /// Announces on a task of its own; `then` runs on the loop with the answer and the runtime's clock.
    private func send(_ request: AnnounceRequest, to client: TrackerClient,
                      then: @escaping @Sendable (Result<(tracker: String, response: AnnounceResponse), TrackerClientError>, Double) -> Void) {
        let loop = self.loop
        Task {
            let result: Result<(tracker: String, response: AnnounceResponse), TrackerClientError>
            do throws(TrackerClientError) {
                result = .success(try await client.announce(request))
            } catch {
                result = .failure(error)
            }
            loop.execute { then(result, Double((NIODeadline.now() - self.started).nanoseconds) / 1e9) }
        }
    }

    /// Whether an IP address (as NIO prints it) lies in one of the networks.
    static func lies(_ ip: String, in networks: [IPNetwork]) -> Bool {
        guard let address = PeerAddress(host: ip, port: 0) else { return false }
        return networks.contains { $0.contains(address.ip) }
    }

    /// `--method auto`: once the tracker's first answer and the booster's probe are in, follow
    /// the method they choose. The tree: the parents of the latest answer. The mesh (or the
    /// booster beside it): leave the tree and ask the tracker for peers as a mesh node.
    private func decideMethod() {
        guard var auto = autoMethod, auto.choice == nil else { return }
        defer { autoMethod = auto }
        guard let choice = auto.decide(now: now, senderHeard: multicastReceiver?.senderInstance != nil) else { return }
        logger.notice("method auto chose \(choice.method.rawValue)", metadata: ["reason": "\(choice.reason)"])
        if choice.method == .tree, let membership = treeMembership {
            perform(engine.setPolicy(membership.policy))
        } else if treeMembership != nil {
            treeMembership = nil
            announceNow()
        }
    }

    /// The next tick announces, unless a back-off after failed announces is running (then it ends it).
    private func announceNow() { announceSchedule.announceNow(now: now) }

    private func announceRequest(event: AnnounceEvent) -> AnnounceRequest {
        var request = AnnounceRequest(infoHash: metainfo.infoHash, peerID: ourHandshake.peerID, port: UInt16(clamping: listeningPort ?? 0))
        request.event = event
        request.uploaded = engine.uploaded
        request.downloaded = engine.downloaded
        let missing = info.pieceCount - engine.have.count
        request.left = engine.isComplete ? 0 : min(info.totalLength, Int64(missing) * Int64(info.pieceLength))
        request.numWant = 80
        request.rack = options.rack
        treeMembership?.prepare(&request)
        return request
    }

    private func announce(event: AnnounceEvent) {
        guard let tracker else { return }
        announcing = true
        let request = announceRequest(event: event)
        send(request, to: tracker) { result, now in
            self.announcing = false
            switch result {
            case .success(let answer):
                self.announceSchedule.answered(interval: answer.response.interval, minInterval: answer.response.minInterval, now: now)
                self.trackerIncomplete = answer.response.incomplete
                if self.treeMembership != nil {
                    let policy = self.treeMembership?.answered(answer.response.treeParents, reported: request.lostParent, now: now)
                    if let auto = self.autoMethod, auto.choice == nil {
                        // Still choosing: the answer is one of the facts (`decideMethod`, below).
                        self.autoMethod?.answered(AutoMethod.TrackerFacts(placesTrees: policy != nil,
                            spansRacks: answer.response.spansRacks, leechers: answer.response.incomplete ?? 1))
                    } else if let policy {
                        self.perform(self.engine.setPolicy(policy))
                        if self.treeMembership?.lost != nil { self.announceNow() }  // lost again meanwhile
                    } else {
                        if self.options.method == .tree {
                            self.logger.warning("the tracker does not place tree nodes; fetching from the mesh", metadata: ["tracker": "\(answer.tracker)"])
                        }
                        self.treeMembership = nil
                        self.perform(self.engine.setPolicy(MeshPolicy()))
                    }
                }
                if let rack = answer.response.rack, self.treeMembership == nil, let mesh = self.engine.configuration.policy as? MeshPolicy {
                    // A rack named by its subnet (the tracker's default) also tells which peers
                    // are across the rack's uplink; peer exchange stops once the swarm spans racks.
                    let policy = MeshPolicy(exchangesPeers: mesh.exchangesPeers && !answer.response.spansRacks, rack: IPNetwork(rack).map { [$0] } ?? [])
                    if policy.exchangesPeers != mesh.exchangesPeers {
                        self.logger.info("the tracker chooses peers by rack; peer exchange is off", metadata: ["rack": "\(rack)"])
                    }
                    if policy.exchangesPeers != mesh.exchangesPeers || policy.rack != mesh.rack { self.perform(self.engine.setPolicy(policy)) }
                }
                self.learned(answer.response.peers.map(\.address))
                self.decideMethod()
            case .failure(let error):
                let delay = self.announceSchedule.failed(now: now, using: &self.announceRandom)
                self.logger.warning("announce failed", metadata: ["error": "\(error)",
                    "failures": "\(self.announceSchedule.failures)", "retry_in_s": "\(Int(delay.rounded()))"])
            }
        }
    }

    private func currentStatus() -> Status {
        let have = engine.have
        let bytes = info.layout.pieces.reduce(Int64(0)) { $0 + (have[$1] ? Int64(info.layout.length(of: $1)) : 0) }
        var status = Status(piecesHave: have.count, pieceCount: info.pieceCount, bytesHave: bytes, totalLength: info.totalLength,
            downloaded: engine.downloaded, uploaded: engine.uploaded, wasted: engine.wasted, peers: channels.count,
            peersMissingPieces: engine.peersMissingPieces, trackerIncomplete: trackerIncomplete, complete: engine.isComplete,
            multicastPieces: multicastPieces, multicast: multicastReceiver?.counters, refusals: refusals, uploadBufferBytes: uploadBytes)
        status.piecesVerified = piecesVerified
        status.hashFailures = hashFailures
        status.multicastBytes = multicastBytes
        status.peersBanned = engine.bannedCount
        status.stallsFound = stallsFound
        status.autoChoice = autoMethod?.choice
        status.siteDownloaded = siteBytes.down
        status.siteUploaded = siteBytes.up
        status.wanDownloaded = wanBytes.down
        status.wanUploaded = wanBytes.up
        if let webSeed {
            status.webSeedPieces = webSeed.pieces
            status.webSeedBytes = webSeed.bytes
            status.webSeedsUsable = webSeed.policy.usableSeeds
            status.webSeedsConfigured = webSeed.policy.seeds.count
            status.webSeedFetchFailures = webSeed.policy.fetchFailures
            status.webSeedHashFailures = webSeed.policy.hashFailures
        }
        return status
    }
}

/// A piece read for peers' requests: its bytes once read, the requests waiting for the read,
/// and how many blocks queued in peers' channels are slices of it.
final class UploadPiece {
    let length: Int
    var data: ByteBuffer?
    var waiters: [(handle: Int, request: BlockRequest)] = []
    var refs = 0
    var lastUse = 0

    init(length: Int) { self.length = length }
}

/// TCP_INFO as Linux fills it since 4.6, up to `tcpi_notsent_bytes` (glibc's `tcp_info`, which
/// NIO's `getTCPInfo` returns, ends before the fields needed here). A kernel that fills less
/// leaves the rest zero, and `PeerOutbox` then goes by the channel's own buffer alone.
struct KernelTCPInfo: Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    /// `tcpi_bytes_acked` (offset 120) and `tcpi_notsent_bytes` (offset 144) of linux/tcp.h,
    /// and the state bytes at its start: `tcpi_ca_state` (1), `tcpi_probes` (3), `tcpi_backoff` (4).
    var queue: PeerOutbox.Kernel {
        withUnsafeBytes(of: words) { bytes in
            PeerOutbox.Kernel(acknowledged: bytes.load(fromByteOffset: 120, as: UInt64.self),
                unsent: bytes.load(fromByteOffset: 144, as: UInt32.self),
                congestionState: bytes[1], probes: bytes[3], backoff: bytes[4],
                roundTripMicroseconds: bytes.load(fromByteOffset: 68, as: UInt32.self))
        }
    }
}

/// A site tracker's client and its schedule (`SwarmRuntime.Options.siteTrackers`); used on the
/// runtime's loop only.
final class SiteAnnouncer: @unchecked Sendable {
    let client: TrackerClient
    var schedule = AnnounceSchedule()
    var announcing = false

    init(client: TrackerClient) { self.client = client }
}
