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
        public var listenHost = "0.0.0.0"
        /// 0 picks a free port.
        public var port = 6881
        /// Local address for connections to peers (nil: the system chooses by route).
        public var bindAddress: String?
        /// Peers to connect to besides those the trackers name.
        public var peers: [(host: String, port: Int)] = []
        public var maxPeers = 60
        public var useTrackers = true
        public var hashThreads = System.coreCount
        /// Upload limit in bytes per second (nil: none): piece messages wait for their turn.
        public var maxUp: Double?
        /// Download limit in bytes per second (nil: none): requests are paced, so peers never send
        /// faster than this.
        public var maxDown: Double?
        /// Also listen to a multicast booster on this group (docs/multicast.md).
        public var multicast: MulticastOptions?

        public init() {}
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
    private var peerIDs: [Int: PeerID] = [:]
    private var connecting: Set<String> = []
    private var nextHandle = 1
    private var listener: (any Channel)?
    private var timer: RepeatedTask?
    private var tracker: TrackerClient?
    private var nextAnnounce: Double = 0
    private var lastAnnounce: Double = 0
    private var announcing = false
    /// From the tracker's latest answer: leechers in the swarm, and the least time between announces.
    private var trackerIncomplete: Int?
    private var trackerMinInterval: Double = 30
    private var stopped = false
    private let completion: EventLoopPromise<Void>
    private let started = NIODeadline.now()
    private var upload: TokenBucket?
    private var download: TokenBucket?
    /// Messages held back by a rate limit, in order.
    private var heldPieces: [(Int, PeerMessage)] = []
    private var heldRequests: [(Int, PeerMessage)] = []
    private var pacer: RepeatedTask?
    /// Whole pieces read for peers' requests, oldest first. A peer asks for a piece 16 KiB at a
    /// time; each block is then a slice of one read, not a thread-pool trip and a copy of its own.
    private var servedPieces: [(piece: PieceIndex, data: EventLoopFuture<ByteBuffer>)] = []
    private static let servedPieceBytes = 8 << 20
    /// Reads from a peer grow to 256 KiB (NIO's default stops at 64 KiB): a fast peer's blocks then
    /// arrive in fewer reads, each decoded and handed to the engine in one go.
    private static let peerReads = AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 << 10, maximum: 256 << 10)
    // The multicast booster's receiving side (nil without --multicast).
    private var multicastReceiver: MulticastReceiver?
    private var multicastLink: MulticastLink?
    private var multicastTimer: RepeatedTask?
    private var multicastTicks = 0
    private var multicastSender: SocketAddress?
    /// The sender ended or went quiet and peers were given everything left.
    private var multicastHandedOver = false
    /// Pieces being verified that came from the group, and how many verified so far.
    private var fromMulticast: Set<PieceIndex> = []
    private var multicastPieces = 0
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
        engine = SwarmEngine(info: metainfo.info, have: have, handshake: ourHandshake, seed: UInt64.random(in: .min ... .max))
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
        let channel = try await ServerBootstrap(group: runtime.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.recvAllocator, value: Self.peerReads)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PeerChannelHandler(runtime: runtime, outgoing: false))
                }
            }
            .bind(host: options.listenHost, port: options.port).get()
        try await runtime.loop.submit {
            runtime.listener = channel
            runtime.engine.listenPort = channel.localAddress?.port.map { UInt16(clamping: $0) }
            // A complete .part (killed between its last piece and the rename) still needs the rename.
            if have.isComplete { if runtime.store.isFinished { runtime.completion.succeed(()) } else { runtime.finish() } }
            if options.useTrackers && !metainfo.announceTiers.isEmpty {
                runtime.tracker = TrackerClient(tiers: metainfo.announceTiers, group: runtime.group, logger: logger)
            }
            for peer in options.peers { runtime.connect(host: peer.host, port: peer.port) }
            runtime.timer = runtime.loop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in runtime.tick() }
            if runtime.upload != nil || runtime.download != nil {
                runtime.pacer = runtime.loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { _ in
                    runtime.releaseHeld()
                }
            }
        }.get()
        if let multicast = options.multicast, !have.isComplete {
            try await runtime.startMulticast(multicast, have: have)
        }
        logger.info("swarm node listening", metadata: ["port": "\(channel.localAddress?.port ?? 0)", "info_hash": "\(metainfo.infoHash.hex)"])
        return runtime
    }

    /// Completes when every piece is verified and the data carries its final name.
    public func waitForCompletion() async throws {
        try await completion.futureResult.get()
    }

    public func status() async -> Status {
        (try? await loop.submit { self.currentStatus() }.get())
            ?? Status(piecesHave: 0, pieceCount: info.pieceCount, bytesHave: 0, totalLength: info.totalLength,
                downloaded: 0, uploaded: 0, wasted: 0, peers: 0, peersMissingPieces: 0, trackerIncomplete: nil, complete: false,
                multicastPieces: 0, multicast: nil)
    }

    /// Announces `stopped`, closes every connection and stops the loops.
    public func shutdown() async {
        let finalAnnounce: AnnounceRequest? = try? await loop.submit {
            self.stopped = true
            self.timer?.cancel()
            self.pacer?.cancel()
            self.multicastTimer?.cancel()
            self.multicastLink?.close()
            self.channels.values.forEach { $0.close(promise: nil) }
            self.listener?.close(promise: nil)
            return self.tracker == nil ? nil : self.announceRequest(event: .stopped)
        }.get()
        // A short total deadline: a black-holed tracker must not hold a stopping node (issue 15).
        if let finalAnnounce, let tracker { _ = try? await tracker.announce(finalAnnounce, within: .milliseconds(1500)) }
        try? await pool.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    // MARK: Called by peer channels, on the loop

    func peerConnected(_ handshake: Handshake, channel: any Channel, outgoing: Bool) -> Int? {
        loop.preconditionInEventLoop()
        guard !stopped, handshake.peerID != ourHandshake.peerID, !peerIDs.values.contains(handshake.peerID),
            engine.accepts(handshake.peerID), channels.count < options.maxPeers
        else { return nil }
        let handle = nextHandle
        nextHandle += 1
        channels[handle] = channel
        peerIDs[handle] = handshake.peerID
        logger.debug("peer connected", metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")", "id": "\(handshake.peerID)"])
        let address = channel.remoteAddress.flatMap { remote in
            remote.ipAddress.flatMap { PeerAddress(host: $0, port: UInt16(clamping: remote.port ?? 0)) }
        }
        perform(engine.peerConnected(handle, handshake: handshake, address: address, outgoing: outgoing))
        return handle
    }

    func received(_ messages: [PeerMessage], from handle: Int) {
        loop.preconditionInEventLoop()
        for message in messages where channels[handle] != nil {
            logger.trace("received", metadata: ["peer": "\(handle)", "message": "\(message)"])
            perform(engine.received(message, from: handle))
        }
    }

    func peerDisconnected(_ handle: Int) {
        loop.preconditionInEventLoop()
        guard channels.removeValue(forKey: handle) != nil else { return }
        heldPieces.removeAll { $0.0 == handle }
        heldRequests.removeAll { $0.0 == handle }
        peerIDs[handle] = nil
        perform(engine.peerDisconnected(handle))
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
                if case .piece = message, upload != nil {
                    heldPieces.append((handle, message))
                } else if case .request = message, download != nil {
                    heldRequests.append((handle, message))
                } else if write(message, to: handle) {
                    touched.insert(handle)
                }
            case .disconnect(let handle, let reason):
                logger.info("disconnecting peer", metadata: ["reason": "\(reason)"])
                channels[handle]?.close(promise: nil)
            case .verify(let piece, let bytes):
                verify(piece, bytes)
            case .readBlock(let handle, let request):
                readBlock(request, for: handle)
            case .completed:
                finish()
            case .connect(let addresses):
                for address in addresses { connect(host: address.host, port: Int(address.port)) }
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
            channel.write(buffer, promise: nil)
            channel.write(block, promise: nil)
        } else {
            PeerWireEncoder.write(message, to: &buffer)
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
            while sent < held.count, bucket?.take(size(held[sent].1), now: now) == true {
                if write(held[sent].1, to: held[sent].0) { touched.insert(held[sent].0) }
                sent += 1
            }
            held.removeFirst(sent)
        }
        drain(&heldPieces, &upload) { if case .piece(_, _, let data) = $0 { data.readableBytes } else { 0 } }
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
                self.perform(self.engine.pieceChecked(piece, valid: valid))
                self.multicastPieceChecked(piece, valid: valid)
            case .failure(let error):
                // Debug only: the failure ends the download and its caller reports it once (a full
                // disk failed every piece in flight, one error line each).
                self.logger.debug("cannot write a verified piece", metadata: ["piece": "\(piece.value)", "error": "\(error)"])
                self.completion.fail(error)
            }
        }
    }

    private func readBlock(_ request: BlockRequest, for handle: Int) {
        servedPiece(request.piece).whenSuccess { piece in
            guard let block = piece.getSlice(at: piece.readerIndex + request.begin, length: request.length) else { return }
            self.perform(self.engine.blockRead(request, data: block, for: handle))
        }
    }

    /// The piece as peers are sent it, read once for all the blocks asked of it.
    private func servedPiece(_ piece: PieceIndex) -> EventLoopFuture<ByteBuffer> {
        if let index = servedPieces.firstIndex(where: { $0.piece == piece }) {
            let entry = servedPieces.remove(at: index)
            servedPieces.append(entry)
            return entry.data
        }
        let store = self.store
        let length = info.layout.length(of: piece)
        let read = pool.runIfActive(eventLoop: loop) { () -> ByteBuffer in
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
                try store.readWire(piece, into: UnsafeMutableRawBufferPointer(rebasing: target[0..<length]))
                return length
            }
            return buffer
        }
        read.whenFailure { error in
            self.servedPieces.removeAll { $0.piece == piece }
            self.logger.warning("cannot read a piece for a peer", metadata: ["piece": "\(piece.value)", "error": "\(error)"])
        }
        servedPieces.append((piece, read))
        if servedPieces.count > max(2, Self.servedPieceBytes / info.pieceLength) { servedPieces.removeFirst() }
        return read
    }

    private func finish() {
        let store = self.store
        pool.runIfActive(eventLoop: loop) { try store.finish() }.whenComplete { result in
            switch result {
            case .success:
                self.logger.info("download complete", metadata: ["path": "\(store.finalPath)"])
                self.completion.succeed(())
                if self.tracker != nil { self.announce(event: .completed) }
            case .failure(let error):
                self.completion.fail(error)
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
            self.perform(self.engine.deferPieces(self.missingPieces()))
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
        multicastTicks += 1
        // Five times a second: peers are asked only for pieces the booster has passed by.
        guard multicastTicks % 10 == 0, let receiver = multicastReceiver else { return }
        guard receiver.cursor != nil else {
            // No sender heard yet: peers wait a moment for the first pass, then get on without it.
            perform(engine.deferPieces(now < Self.multicastHoldBack ? missingPieces() : nil))
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
        perform(engine.deferPieces(deferred.isEmpty ? nil : deferred))
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
        perform(engine.deferPieces(nil))
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
                if let actions = engine.pieceArrived(piece, data: bytes) {
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

    // MARK: Peers and trackers

    private func connect(host: String, port: Int) {
        let key = "\(host):\(port)"
        guard !stopped, channels.count + connecting.count < options.maxPeers, connecting.insert(key).inserted else { return }
        var bootstrap = ClientBootstrap(group: group).connectTimeout(.seconds(5)).channelOption(.recvAllocator, value: Self.peerReads)
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
            .whenComplete { _ in self.connecting.remove(key) }
    }

    private func tick() {
        let now = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        perform(engine.tick(now: now))
        // A seed waiting for the swarm to finish (`--seed-after done`) asks again as soon as allowed.
        if engine.isComplete, let incomplete = trackerIncomplete, incomplete > 0 {
            nextAnnounce = min(nextAnnounce, lastAnnounce + trackerMinInterval)
        }
        if tracker != nil && now >= nextAnnounce && !announcing {
            announce(event: nextAnnounce == 0 ? .started : .none)
        }
    }

    private func announceRequest(event: AnnounceEvent) -> AnnounceRequest {
        var request = AnnounceRequest(infoHash: metainfo.infoHash, peerID: ourHandshake.peerID, port: UInt16(clamping: listeningPort ?? 0))
        request.event = event
        request.uploaded = engine.uploaded
        request.downloaded = engine.downloaded
        let missing = info.pieceCount - engine.have.count
        request.left = engine.isComplete ? 0 : min(info.totalLength, Int64(missing) * Int64(info.pieceLength))
        request.numWant = 80
        return request
    }

    private func announce(event: AnnounceEvent) {
        guard let tracker else { return }
        announcing = true
        let request = announceRequest(event: event)
        let loop = self.loop
        Task {
            let result: Result<(tracker: String, response: AnnounceResponse), TrackerClientError>
            do throws(TrackerClientError) {
                result = .success(try await tracker.announce(request))
            } catch {
                result = .failure(error)
            }
            loop.execute {
                self.announcing = false
                let now = Double((NIODeadline.now() - self.started).nanoseconds) / 1e9
                switch result {
                case .success(let answer):
                    self.lastAnnounce = now
                    self.nextAnnounce = now + RetryPolicy().delay(afterInterval: answer.response.interval, minInterval: answer.response.minInterval)
                    self.trackerIncomplete = answer.response.incomplete
                    self.trackerMinInterval = Double(max(answer.response.minInterval ?? 30, 5))
                    for peer in answer.response.peers { self.connect(host: peer.address.host, port: Int(peer.address.port)) }
                case .failure(let error):
                    self.logger.warning("announce failed", metadata: ["error": "\(error)"])
                    self.nextAnnounce = now + 15
                }
            }
        }
    }

    private func currentStatus() -> Status {
        let have = engine.have
        let bytes = info.layout.pieces.reduce(Int64(0)) { $0 + (have[$1] ? Int64(info.layout.length(of: $1)) : 0) }
        return Status(piecesHave: have.count, pieceCount: info.pieceCount, bytesHave: bytes, totalLength: info.totalLength,
            downloaded: engine.downloaded, uploaded: engine.uploaded, wasted: engine.wasted, peers: channels.count,
            peersMissingPieces: engine.peersMissingPieces, trackerIncomplete: trackerIncomplete, complete: engine.isComplete,
            multicastPieces: multicastPieces, multicast: multicastReceiver?.counters)
    }
}
