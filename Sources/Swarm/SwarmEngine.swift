import Metainfo
import NIOCore
import PeerWire

/// The swarm's decisions for one torrent, without I/O: events in (a peer connected, a message
/// arrived, a piece hashed, a block read, time passed), actions out (send, disconnect, hash this
/// piece, read that block). A SwiftNIO runtime drives it over sockets; tests drive it over an
/// in-memory network with a fake clock. One engine runs on one thread at a time.
public struct SwarmEngine: Sendable {
    public typealias Peer = PiecePicker.Peer

    public struct Configuration: Sendable {
        /// Peers we upload to at once (plus one optimistic unchoke), at least.
        public var maxUnchoked = 8
        /// Beyond `maxUnchoked`, one upload slot per this many bytes a second of upload the node
        /// has shown (its best rate over `uploadRateWindow` seconds), up to `maximumUploadSlots`;
        /// nil: `maxUnchoked` exactly. 2 Mbit/s a slot: a fast uplink is shared by enough TCP
        /// flows to fill it, and none is so thin that its window is a segment or two, which
        /// recovers from a loss only by timeout. At most 16: vmswarm-sim's 2,000 nodes at
        /// 100 Mbit/s finished at 2.27x F/B with up to 64, against 1.64x with 16 and 1.67x with 8
        /// (docs/benchmarks.md, session 23).
        public var uploadSlotRate: Double? = 250_000
        /// Blocks kept requested from a peer until its rate is known: 64 × 16 KiB = 1 MiB in flight.
        public var requestQueueDepth = 64
        /// Then the queue holds what the peer delivers in this many seconds (its rate times this)
        /// beyond the path's round trip, when the transport reports one (`peerRoundTrip`): the
        /// round trip's worth keeps the pipe full, the rest lets the rate grow.
        public var requestQueueSeconds: Double = 1
        /// Bounds of the adaptive queue. A peer's own limit (`reqq` in its extension handshake)
        /// lowers the upper one; peers that state none get `requestQueueDepth` at most.
        public var minimumQueueDepth = 4
        public var maximumQueueDepth = 500
        /// Seconds between choking rounds (BEP 3 clients use 10).
        public var chokeInterval: Double = 10
        /// Seconds the optimistic unchoke stays with one peer before it moves on (BEP 3 clients
        /// use 30: three choking rounds).
        public var optimisticInterval: Double = 30
        /// While leeching, one of the upload slots goes at each choking round to the interested
        /// peer that holds the fewest pieces, instead of to the next-best uploader to us. A node
        /// that fell behind holds little its peers lack, so reciprocation passes it over and it
        /// lives on optimistic slots until its peers are seeds: in vmswarm-sim's 1,000 nodes the
        /// last one was unchoked by 1–3 of its 31 peers for a minute and finished 14 s after the
        /// 99th percentile. Off: every slot reciprocates (BEP 3).
        public var catchUpSlot = true
        /// Bytes of assembled pieces waiting for their hash and write; beyond this no new blocks
        /// are requested, so a slow disk or busy CPU holds the network back instead of memory
        /// growing (at least two pieces are always allowed).
        public var maximumVerifyingBytes = 16 << 20
        /// In end-game a peer with fewer requests than this in flight is asked for blocks already
        /// requested elsewhere (up to this many), so a slow peer cannot hold back the last piece.
        public var endGameQueueDepth = 2
        /// Unresolved hash failures (pieces it sent part of that failed and have not verified since)
        /// that keep a peer on parole even after it delivers good pieces alone. Two: one failure
        /// shared with a liar is bad luck any honest peer may have, and a solo piece that verifies
        /// lifts that parole; a second before the first is resolved is no longer lifted, so a liar
        /// that lies only in shared pieces and behaves alone ends up fetching alone for good, where
        /// its next lie bans it. Never a ban by itself: an honest peer can always be unlucky twice.
        public var lastingParoleFailures = 2
        /// Blocks of failed pieces whose digests are kept to find the liar once the piece verifies;
        /// beyond this the oldest failed piece's records are dropped. 32 bytes a block: 1 MiB.
        public var maximumFailureRecords = 32_768
        /// Seconds of silence from us before a keep-alive (BEP 3 peers drop a connection after two
        /// minutes without a message).
        public var keepAliveInterval: Double = 90
        /// Seconds without any message from a peer before it is dropped.
        public var idleTimeout: Double = 240
        /// Seconds without a block while requests are outstanding before they are handed to other
        /// peers; the peer is then asked for one block at a time until it delivers again.
        public var requestTimeout: Double = 30
        /// Seconds between peer exchange (BEP 11) messages to each peer, and before the first one:
        /// nodes that join together learn of each other within seconds, not a minute.
        public var peerExchangeInterval: Double = 60
        public var firstPeerExchange: Double = 5
        /// Seconds a peer may leave our writes to it unread (its connection not writable) before it
        /// is dropped: a peer that asks and never reads holds an upload slot and send buffers.
        public var sendStallTimeout: Double = 30
        /// Seconds an unchoked peer may go without asking for anything (counted from its unchoke)
        /// before its slot counts as free for another interested peer.
        public var idleSlotTimeout: Double = 3
        /// While a reader waits for an urgent piece that a connected peer holds, nothing else is
        /// asked of anyone, and what else is queued at every peer is cancelled when a new urgent
        /// piece arrives: the downlink carries the reader's blocks alone, instead of sharing it
        /// with a second of every peer's queued data (`requestQueueSeconds`). The download pauses
        /// for as long as reads wait. Off: measured and not adopted (docs/streaming.md); `get
        /// --serve` sets it only with VMSWARM_READERS_FIRST=1, for the benchmark's `-rf` rows.
        public var readersFirst = false
        /// Whom the node dials, admits, asks and serves, and whether it exchanges peers: the
        /// swarm's topology as this node sees it (`SwarmPolicy`). Replaced while running with
        /// `setPolicy`.
        public var policy: any SwarmPolicy = MeshPolicy()

        public init() {}
    }

    public enum Action: Equatable, Sendable {
        case send(Peer, PeerMessage)
        case disconnect(Peer, reason: String)
        /// Hash this assembled piece (off the event loop) and report with `pieceChecked`.
        case verify(PieceIndex, [UInt8])
        /// Read this block from storage and hand it back with `blockRead`.
        case readBlock(Peer, BlockRequest)
        /// Every piece is verified.
        case completed
        /// Try these peers (learned by peer exchange); the runtime skips those it knows.
        case connect([PeerAddress])
    }

    /// One connected peer. A class: the engine reads and changes a few fields of it several times
    /// per 16 KiB block, and as a struct in a dictionary every such access copied the whole state
    /// (a dozen reference-counted fields); on one to four on loopback those copies took a tenth of
    /// the event loop. Each state belongs to one engine, which lives on one event loop, and is
    /// never shared between engines: hence the unchecked `Sendable`.
    final class PeerState: @unchecked Sendable {
        let id: PeerID
        var session: PeerSession
        /// Where the peer accepts connections: the address we dialled, or for a peer that dialled
        /// us its IP with the port from its extension handshake. Passed on by peer exchange.
        var listenAddress: PeerAddress?
        let remoteIP: [UInt8]?
        /// We dialled it.
        let outgoing: Bool
        /// Bytes in each direction since the last choking round (tit-for-tat ranks on these).
        var bytesFromPeer = 0
        var bytesToPeer = 0
        /// Whether we ever sent it a block, and its place in the order peers connected: a free
        /// upload slot goes to a peer served before, else to the newest never served
        /// (`nextSlotCandidate`).
        var served = false
        var arrival = 0
        /// Who the peer is for bans and parole: its address with the id it claims.
        let key: BanKey
        /// Download rate from the peer (bytes/s, smoothed) and the request queue it earns.
        var bytesSinceTick = 0
        var rate: Double?
        /// The connection's smoothed round trip (seconds), as the transport last reported it.
        var roundTrip: Double?
        var queueDepth: Int
        var lastReceived: Double
        var lastSent: Double
        /// When a block last arrived, or when requests started waiting for one.
        var lastBlock: Double
        var lastPeerExchange: Double
        /// Addresses last told to this peer by peer exchange (nil: none sent yet).
        var toldPeers: Set<PeerAddress>?
        /// Pieces this peer (a seed) declined to send us (forgotten after `declineMemory` seconds,
        /// as by then it may have nothing fresher to give), and pieces it suggested instead (BEP 6).
        var declined: Bitfield?
        var declinedAt: Double = 0
        var suggestions: [PieceIndex] = []
        /// Pieces we suggested to this peer, so each is suggested once.
        var suggestedToPeer: Set<PieceIndex> = []
        /// The last pieces the peer announced (`have`), oldest first: it likely still holds them in
        /// memory, so the picker takes them first among equally rare pieces.
        var recentHaves: [PieceIndex] = []
        static let recentHaveCount = 16
        /// Since when the peer's connection has not been writable (nil: it is): the runtime stops
        /// serving it then, so it must not hold an upload slot others could use.
        var writeBlockedSince: Double?
        /// When the peer last asked for a block, and when we last unchoked and choked it.
        var lastRequested: Double = -.infinity
        var unchokedAt: Double = -.infinity
        var chokedAt: Double = -.infinity
        /// The peer once held an upload slot without using it (it stopped reading, or asked for
        /// nothing): free slots go to peers that have not, and this one waits for a choking round.
        var wastedSlot = false
        /// ut_metadata requests answered (`MetadataServer.maxAnswersPerPeer` bounds them).
        var metadataAnswers = 0
        /// Pieces verified since the last tick that this peer has not been told of yet: it is a
        /// seed, or the multicast group brought it the piece too (`pieceChecked`).
        var heldHaves: [PieceIndex] = []

        init(id: PeerID, session: PeerSession, listenAddress: PeerAddress?, remoteIP: [UInt8]?, outgoing: Bool, queueDepth: Int,
             lastReceived: Double, lastSent: Double, lastBlock: Double, lastPeerExchange: Double) {
            self.id = id
            self.outgoing = outgoing
            key = BanKey(ip: remoteIP ?? [], id: id)
            self.session = session
            self.listenAddress = listenAddress
            self.remoteIP = remoteIP
            self.queueDepth = queueDepth
            self.lastReceived = lastReceived
            self.lastSent = lastSent
            self.lastBlock = lastBlock
            self.lastPeerExchange = lastPeerExchange
        }

        /// The peer wants nothing more: it holds every piece, or said it is done (BEP 21
        /// `upload_only`). A peer that completed may have told us of few of its pieces, as it does
        /// not tell a peer of a piece that peer holds (`pieceChecked`).
        var isDone: Bool { saidDone || session.peerPieces.isComplete }
        /// It sent its extension handshake (BEP 10), and said in it that it is done (BEP 21).
        var speaksExtensions = false
        var saidDone = false

        /// What the policy is shown of this peer.
        var facts: PeerFacts {
            PeerFacts(id: id, ip: remoteIP, listenAddress: listenAddress, outgoing: outgoing, isSeed: isDone)
        }
    }

    public let info: TorrentInfo
    public private(set) var configuration: Configuration
    /// Our listening port, told to peers in the extension handshake so they can pass it on.
    public var listenPort: UInt16?
    /// The info dictionary as the .torrent holds it, served to peers over ut_metadata (BEP 9);
    /// nil: not offered.
    public var metadata: MetadataServer?
    private let ourHandshake: Handshake
    public private(set) var picker: PiecePicker
    private var peers: [Peer: PeerState] = [:]
    /// The keys of `peers` in ascending order, kept as peers come and go: every piece we gain and
    /// every choking round walks the peers in this order (the same order for the same input).
    private var sortedPeers: [Peer] = []
    /// Peers we unchoked (kept by `send`): slots in use are counted among these, not among all
    /// peers, on every `interested` that arrives.
    private var unchokedPeers: Set<Peer> = []
    /// Whether a peer is across our rack's uplink (`SwarmPolicy.isFar`): asked on every block
    /// request served, found again only when peers or the policy change.
    private var hasFarPeer: Bool {
        mutating get {
            if let known = farPeerPresent { return known }
            let found = peers.values.contains { configuration.policy.isFar($0.facts) }
            farPeerPresent = found
            return found
        }
    }
    private var farPeerPresent: Bool?
    private var assembling: [PieceIndex: [UInt8]] = [:]
    /// Who delivered each block of the pieces being assembled or verified.
    private var deliveries: [PieceIndex: Deliveries] = [:]
    /// The bytes handed out in `.verify` for pieces that need them when the result comes back:
    /// those with several senders (to record each block's digest if the hash fails) and those with
    /// recorded failures (to compare the records with the verified bytes). The runtime only reads
    /// the buffer, so this is a reference, not a copy.
    private var verifyingBuffers: [PieceIndex: [UInt8]] = [:]
    /// Failed pieces with several senders, oldest first: each block's digest and sender, until the
    /// piece verifies and shows who sent what was wrong.
    private var failures: [PieceIndex: FailedPiece] = [:]
    private var failureOrder: [PieceIndex] = []
    private var failureRecords = 0
    /// Peers on parole or with unresolved failures, by address and id.
    private var suspects: [BanKey: Suspicion] = [:]
    /// Pieces whose bytes came wholly or partly from another source (the multicast booster, which
    /// anyone on the LAN can forge): if one fails its hash nobody can tell whose bytes were wrong,
    /// so no peer is struck for it; the picker then fetches the whole piece from peers.
    private var external: Set<PieceIndex> = []
    /// Those of `external` that reached our peers the same way (`pieceArrived(reachedPeers:)`).
    private var reachedPeersToo: Set<PieceIndex> = []
    /// Hash failures of such pieces: counted, never blamed on a peer.
    public private(set) var externalHashFailures = 0
    /// Pieces handed out in `verify` actions and not yet reported by `pieceChecked`, and their bytes.
    private var verifying: Set<PieceIndex> = []
    private var verifyingBytes = 0
    static let declineMemory: Double = 3

    /// As a lone seed or a rack's gateway: the first peer each piece was sent to, and when it last
    /// asked for a block of it, on each side of the rack's uplink (near peers under `false`, far
    /// ones under `true`; a plain mesh has only the near side). A seed's upload is the scarcest
    /// link of a fresh swarm; a piece already on its way to one peer is better fetched from that peer.
    private var servedTo: [Bool: [PieceIndex: (peer: Peer, at: Double)]] = [:]
    /// Seconds (at least: `onItsWayWindow`) a piece counts as on its way to the peer it was first
    /// sent to after that peer last asked for a block of it; once the peer holds it, for good. A
    /// peer that asked for a piece and cancelled it, or never finished it, does not keep it from
    /// the others for longer.
    static let onItsWay: Double = 5
    /// Pieces a reader of the image in flight waits for, most urgent first (at most
    /// `maximumUrgentPieces`): requested before any other, from every peer that has them.
    private var urgent: [PieceIndex] = []
    public static let maximumUrgentPieces = 64
    /// The order to start pieces in before rarest-first (a boot profile: what a VM reads first),
    /// and how far into it the pieces are all held.
    private var order: [PieceIndex] = []
    private var orderHeld = 0
    /// How many entries past the held prefix of `order` one peer's requests look at.
    static let orderWindow = 256
    /// Pieces another source (the multicast booster) is about to deliver: not requested from peers.
    private var deferred: Bitfield?
    private var avoided: [UInt8]?
    /// Banned peers, by address and peer id together: a peer id is only a claim, and anyone may
    /// send someone else's. Banning the id alone would let a squatter get an honest peer banned
    /// by sending bad data under its id; banning the address alone would lock out every client
    /// behind one NAT (or on one host) for one liar.
    private var banned: Set<BanKey> = []
    struct BanKey: Hashable, Sendable {
        let ip: [UInt8]
        let id: PeerID
    }

    /// The senders of a piece in progress and the block each sent (smart ban). A class, changed in
    /// place for every block received; one engine's, never shared.
    final class Deliveries: @unchecked Sendable {
        var senders: [(peer: Peer, key: BanKey)] = []
        var blocks: [(begin: Int, length: Int, sender: Int)] = []

        func add(begin: Int, length: Int, peer: Peer, key: BanKey) {
            let sender: Int
            if let last = senders.indices.last, senders[last].peer == peer {
                sender = last  // the usual case: the same peer as the block before
            } else if let known = senders.firstIndex(where: { $0.peer == peer && $0.key == key }) {
                sender = known
            } else {
                senders.append((peer, key))
                sender = senders.count - 1
            }
            blocks.append((begin, length, sender))
        }

        /// The one identity that sent every block, if one did (one identity may have reconnected
        /// under another handle meanwhile).
        var soleKey: BanKey? {
            guard let first = senders.first, senders.dropFirst().allSatisfy({ $0.key == first.key }) else { return nil }
            return first.key
        }

        /// Distinct identities, in the order they first sent.
        var keys: [BanKey] {
            var seen: Set<BanKey> = []
            return senders.map(\.key).filter { seen.insert($0).inserted }
        }
    }

    /// A failed piece's blocks as they were: who sent each and a digest of its bytes.
    struct FailedPiece {
        var senders: [BanKey] = []
        var blocks: [(begin: Int, length: Int, sender: Int, digest: Int)] = []
    }

    /// A peer that sent part of a piece that failed its hash, alongside others.
    struct Suspicion {
        /// Failed pieces it sent part of that have not verified since.
        var unresolved: Set<PieceIndex> = []
        /// It fetches whole pieces alone until one verifies (while `unresolved` stays below
        /// `lastingParoleFailures`).
        var paroled = false
    }
    /// Pieces the runtime could not read (the file became short, an I/O error): requests for them
    /// are rejected at once rather than read again.
    private var unreadable: Set<PieceIndex> = []
    private var lastChokeRound: Double = -.infinity
    /// The time of the latest `tick`: events between ticks are stamped with it.
    private var clock: Double = 0
    private var optimistic: Peer?
    private var optimisticSince: Double = -.infinity
    private var random: SeededRandom
    /// Peers connected so far (`PeerState.arrival`).
    private var arrivals = 0
    public private(set) var downloaded: Int64 = 0
    public private(set) var uploaded: Int64 = 0
    /// `uploaded` at recent ticks, oldest first, and the best rate they showed (`uploadSlots`).
    private var uploadSamples: [(at: Double, uploaded: Int64)] = []
    private var bestUploadRate: Double = 0
    static let uploadRateWindow = 2.0
    static let maximumUploadSlots = 16

    /// Peers we upload to at once (plus one optimistic unchoke): `maxUnchoked`, or more on an
    /// uplink that has shown it carries more (`Configuration.uploadSlotRate`).
    public var uploadSlots: Int {
        guard let perSlot = configuration.uploadSlotRate, perSlot > 0 else { return configuration.maxUnchoked }
        return max(configuration.maxUnchoked, min(Self.maximumUploadSlots, Int(bestUploadRate / perSlot)))
    }
    /// Bytes received that were thrown away (failed hashes, late duplicates).
    public private(set) var wasted: Int64 = 0

    public init(info: TorrentInfo, have: Bitfield, handshake: Handshake, configuration: Configuration = Configuration(), seed: UInt64) {
        self.info = info
        self.configuration = configuration
        ourHandshake = handshake
        picker = PiecePicker(layout: info.layout, have: have, seed: seed)
        random = SeededRandom(seed: seed ^ 0xA5A5)
    }

    public var have: Bitfield { picker.have }
    public var isComplete: Bool { picker.isComplete }
    public var peerCount: Int { peers.count }
    /// Pieces being hashed now (another source's bytes for them would be turned away).
    public var verifyingPieces: Set<PieceIndex> { verifying }
    /// Identities banned so far (for status and metrics; read-only).
    public var bannedCount: Int { banned.count }
    /// Connected peers that still lack pieces (leechers we could serve).
    /// Whether a connected peer listens at `address` (so it need not be dialled).
    public func isConnected(to address: PeerAddress) -> Bool { peers.values.contains { $0.listenAddress == address } }
    /// Peers that let us ask them for blocks (they unchoked us).
    public var peersUnchokingUs: Int { peers.values.count { !$0.session.peerChoking } }
    /// Peers we let ask us for blocks.
    public var peersWeUnchoke: Int { unchokedPeers.count }
    public var peersMissingPieces: Int { peers.values.count { !$0.isDone } }
    /// Connected peers we ask that hold a piece we lack: none while incomplete means the node
    /// needs new peers (its sources left).
    public var usefulPeers: Int {
        peers.values.count { $0.session.peerPieces.hasPieces(notIn: have) && configuration.policy.asks($0.facts) }
    }
    /// Whether a connected peer still lacks `piece`, and so may ask us for it.
    public func somePeerLacks(_ piece: PieceIndex) -> Bool { peers.values.contains { !$0.session.peerPieces[piece] } }

    /// Whether a peer with this id, connecting from this address, may join (banned peers may not).
    /// Without an address only an id banned without one (an in-memory peer) is refused.
    public func accepts(_ id: PeerID, ip: [UInt8]? = nil) -> Bool { !banned.contains(BanKey(ip: ip ?? [], id: id)) }

    /// Whether the policy keeps a connection with a peer whose handshake just arrived.
    public func admits(_ id: PeerID, ip: [UInt8]? = nil, outgoing: Bool) -> Bool {
        configuration.policy.admits(PeerFacts(id: id, ip: ip, outgoing: outgoing))
    }

    /// Whether the policy dials this address (from a tracker, a static list or LAN discovery).
    public func dials(_ address: PeerAddress) -> Bool { configuration.policy.dials(address) }

    /// Whether the peer with this id and address is on parole: it sent part of a piece that failed
    /// its hash alongside others, and fetches whole pieces alone until one verifies.
    public func isOnParole(_ id: PeerID, ip: [UInt8]? = nil) -> Bool { suspects[BanKey(ip: ip ?? [], id: id)]?.paroled == true }
    /// Blocks of failed pieces on record, waiting for their piece to verify (bounded by
    /// `maximumFailureRecords`).
    public var recordedFailureBlocks: Int { failureRecords }

    // MARK: Events

    /// A peer completed its handshake. `address` is the peer's end of the connection; when we
    /// dialled it (`outgoing`) that is also where it listens.
    public mutating func peerConnected(_ peer: Peer, handshake theirs: Handshake, address: PeerAddress? = nil, outgoing: Bool = true) -> [Action] {
        guard accepts(theirs.peerID, ip: address?.ip) else { return [.disconnect(peer, reason: "banned")] }
        guard admits(theirs.peerID, ip: address?.ip, outgoing: outgoing) else {
            return [.disconnect(peer, reason: Self.outsideTopology)]
        }
        let session = PeerSession(layout: info.layout, ourHandshake: ourHandshake, theirHandshake: theirs)
        peers[peer] = PeerState(id: theirs.peerID, session: session, listenAddress: outgoing ? address : nil,
            remoteIP: address?.ip, outgoing: outgoing, queueDepth: configuration.requestQueueDepth, lastReceived: clock, lastSent: clock,
            lastBlock: clock, lastPeerExchange: clock - configuration.peerExchangeInterval + configuration.firstPeerExchange)
        let place = sortedPeers.firstIndex { $0 >= peer } ?? sortedPeers.endIndex
        if place == sortedPeers.endIndex || sortedPeers[place] != peer { sortedPeers.insert(peer, at: place) }
        farPeerPresent = nil
        arrivals += 1
        peers[peer]?.arrival = arrivals
        var actions: [Action] = []
        if session.fast && have.isComplete {
            actions.append(send(peer, .haveAll))
        } else if session.fast && have.isEmpty {
            actions.append(send(peer, .haveNone))
        } else if !have.isEmpty {
            actions.append(send(peer, .bitfield(have.bytes)))
        }
        if theirs.supportsExtensions && ourHandshake.supportsExtensions { actions.append(sendExtensionHandshake(peer)) }
        return actions + reconsiderPolicy()
    }

    static let outsideTopology = "not a neighbour in this node's topology"

    /// Replaces the policy (a tree repaired around a node that died, a new parent): peers it no
    /// longer admits are disconnected, those it no longer asks have their requests cancelled and
    /// handed back to the picker, those it no longer serves are choked; then the new neighbours are
    /// asked and served. Every verified piece stays, so a node moved in a tree goes on from where
    /// it was.
    public mutating func setPolicy(_ policy: any SwarmPolicy) -> [Action] {
        configuration.policy = policy
        farPeerPresent = nil
        var actions: [Action] = []
        for peer in sortedPeers {
            guard let state = peers[peer] else { continue }
            let facts = state.facts
            guard policy.admits(facts) else {
                actions.append(.disconnect(peer, reason: Self.outsideTopology))
                actions += peerDisconnected(peer)
                continue
            }
            if !policy.asks(facts) {
                actions += cancelOutstanding(peer)
                picker.disown(peer)
            } else if policy.isFar(facts), let allowed = policy.farPieces {
                // Pieces no longer this node's to fetch over a far link (a sibling pool node took
                // them) are not fetched there twice.
                actions += cancelOutstanding(peer) { !allowed[$0.piece] }
            }
            actions += updateInterest(peer)
            if !policy.serves(facts) && !state.session.amChoking {
                if optimistic == peer { optimistic = nil }
                actions += choke(peer)
            }
        }
        return actions + fillFreeSlots() + fillRequests()
    }

    public mutating func peerDisconnected(_ peer: Peer) -> [Action] {
        guard let state = peers.removeValue(forKey: peer) else { return [] }
        sortedPeers.removeAll { $0 == peer }
        farPeerPresent = nil
        unchokedPeers.remove(peer)
        picker.peerRemoved(peer, pieces: state.session.peerPieces)
        // Parole outlives the connection while a failure is on record, so a reconnect does not
        // shed it; one whose records were dropped (`dropOldFailures`) ends here.
        if suspects[state.key]?.unresolved.isEmpty == true { suspects[state.key] = nil }
        if optimistic == peer { optimistic = nil }
        // Pieces only that peer was getting from us are fresh again.
        servedTo = servedTo.mapValues { $0.filter { $0.value.peer != peer } }
        return reconsiderPolicy() + fillRequests()
    }

    public mutating func received(_ message: PeerMessage, from peer: Peer) -> [Action] {
        guard let state = peers[peer] else { return [] }
        if case .extended(ExtensionHandshake.metadataID, let payload) = message, let metadata {
            return answerMetadata(payload, from: peer, state: state, server: metadata)
        }
        let events: [PeerSession.Event]
        do {
            events = try state.session.receive(message)
        } catch {
            return [.disconnect(peer, reason: error.description)] + peerDisconnected(peer)
        }
        state.lastReceived = clock
        if case .request = message { state.lastRequested = clock }
        var actions: [Action] = []
        for event in events {
            switch event {
            // A piece the peer just gained is asked for at once when there is room: a node that
            // has caught up with its only source (a tree's parent, the front of a swarm) would
            // otherwise wait for the next tick, and in a chain that second added up at every hop.
            case .hasPieces(let pieces):
                picker.peerAdded(pieces)
                actions += updateInterest(peer) + fillRequests(for: peer)
            case .has(let piece):
                picker.peerGained(piece)
                state.recentHaves.append(piece)
                if state.recentHaves.count > PeerState.recentHaveCount { state.recentHaves.removeFirst() }
                // Interest can change only when the peer gained a piece we lack while we wanted
                // nothing of it, or when it became a seed (what the policy is shown changed).
                // Checking only then spares a scan of both bitfields on every `have` of the swarm.
                if (!state.session.amInterested && !picker.have[piece]) || state.session.peerPieces.isComplete {
                    actions += updateInterest(peer)
                }
                actions += fillRequests(for: peer)
            case .unchoked:
                actions += fillRequests(for: peer)
            case .requestsDropped(let blocks):
                for block in blocks { picker.released(block, by: peer) }
            case .rejected(let block):
                picker.released(block, by: peer)
                if peers[peer]?.declined == nil { peers[peer]?.declined = Bitfield(pieceCount: info.pieceCount) }
                peers[peer]?.declined?.insert(block.piece)
                peers[peer]?.declinedAt = clock
                actions += fillRequests(for: peer)
            case .suggested(let piece):
                if peers[peer]?.suggestions.count ?? 0 < 16 { peers[peer]?.suggestions.append(piece) }
                actions += fillRequests(for: peer)
            case .block(let block, let data):
                actions += receivedBlock(block, data: data, from: peer)
            case .lateBlock(let block):
                wasted += Int64(block.length)
            case .requested(let request) where !have[request.piece]:
                // Never read for a peer what has not verified (the runtime keeps whole pieces it
                // read for peers): with the fast extension the request is rejected, without it
                // there is no polite answer, and a peer asking for pieces we never announced is broken.
                guard state.session.fast else {
                    return actions + [.disconnect(peer, reason: "requested \(request.piece), which we do not have")] + peerDisconnected(peer)
                }
                actions.append(send(peer, .reject(request)))
            case .requested(let request) where unreadable.contains(request.piece):
                actions += refuseUnreadable(request, from: peer)
            case .requested(let request):
                if let instead = offerFreshPiece(instead: request, to: peer) {
                    actions += instead
                } else {
                    actions.append(.readBlock(peer, request))
                }
            case .interested(let wants):
                // A free upload slot is given at once rather than at the next choking round. A peer
                // that does not read what we send is not using its slot and is not counted.
                if wants, state.session.amChoking, slotsInUse < uploadSlots, configuration.policy.serves(state.facts) {
                    actions.append(send(peer, .unchoke))
                }
                // A peer that completed frees its slot at once: the last node of a swarm would
                // otherwise wait for that slot to idle out at every seed.
                if !wants, !state.session.amChoking, state.isDone { actions += fillFreeSlots() }
            case .extensionHandshake(let handshake):
                if let port = handshake.listenPort, let ip = state.remoteIP, peers[peer]?.listenAddress == nil {
                    peers[peer]?.listenAddress = PeerAddress(ip: ip, port: port)
                }
                state.speaksExtensions = true
                state.saidDone = handshake.uploadOnly
                // Sent again when the peer completed (BEP 21): its slot is free at once.
                if handshake.uploadOnly, !state.session.amChoking { actions += fillFreeSlots() }
                actions += fillRequests(for: peer)
            case .peerExchange(let exchange):
                guard configuration.policy.exchangesPeers else { break }
                let known = Set(peers.values.compactMap(\.listenAddress))
                let fresh = exchange.added.filter { !known.contains($0) && configuration.policy.dials($0) }
                if !isComplete && !fresh.isEmpty { actions.append(.connect(fresh)) }
            case .choked, .cancelled, .allowedFast, .dhtPort:
                break
            case .ignored(let why):
                if why.hasPrefix("request while choked"), state.session.fast, case .request(let request) = message {
                    actions.append(send(peer, .reject(request)))
                }
            }
        }
        return actions
    }

    /// A ut_metadata message to the id we named: requests are answered from the dictionary
    /// (rejected beyond the peer's share), a malformed message drops the peer like any other.
    private mutating func answerMetadata(_ payload: ByteBuffer, from peer: Peer, state: PeerState, server: MetadataServer) -> [Action] {
        state.lastReceived = clock
        let message: MetadataMessage
        do {
            message = try MetadataMessage(payload: payload)
        } catch {
            return [.disconnect(peer, reason: error.description)] + peerDisconnected(peer)
        }
        guard let answer = server.answer(message, answered: state.metadataAnswers),
            let id = state.session.peerExtensions?.messageIDs["ut_metadata"], id != 0
        else { return [] }
        state.metadataAnswers += 1
        return [send(peer, .extended(id: id, payload: answer.encoded()))]
    }

    /// The runtime read a requested block; it is sent if the peer still wants it.
    public mutating func blockRead(_ request: BlockRequest, data: ByteBuffer, for peer: Peer) -> [Action] {
        guard let state = peers[peer], state.session.peerRequests.contains(request), !state.session.amChoking else { return [] }
        uploaded += Int64(request.length)
        peers[peer]?.bytesToPeer += request.length
        peers[peer]?.served = true
        return [send(peer, .piece(request.piece, begin: request.begin, block: data))]
    }

    /// The runtime could not read a block it was asked for (the file became short, an I/O error):
    /// the peer must not wait for it. With the fast extension the request is rejected; without it
    /// the peer is choked, which tells it to drop every request (BEP 3). Later requests for the
    /// piece are refused without another read.
    public mutating func blockUnavailable(_ request: BlockRequest, for peer: Peer) -> [Action] {
        unreadable.insert(request.piece)
        return refuseUnreadable(request, from: peer)
    }

    private mutating func refuseUnreadable(_ request: BlockRequest, from peer: Peer) -> [Action] {
        guard let state = peers[peer] else { return [] }
        if state.session.fast {
            return state.session.peerRequests.contains(request) ? [send(peer, .reject(request))] : []
        }
        return state.session.amChoking ? [] : choke(peer)
    }

    /// Whether an unchoked peer uses its upload slot: it lacks pieces, it reads what we send, and it
    /// asked for something lately (or was unchoked lately). Peers that do not are no reason to keep an
    /// interested peer choked.
    private func usesSlot(_ state: PeerState) -> Bool {
        !state.session.amChoking && !state.isDone && state.writeBlockedSince == nil
            && clock - max(state.lastRequested, state.unchokedAt) < configuration.idleSlotTimeout
    }

    /// Unchoked peers that use their slot.
    private var slotsInUse: Int { unchokedPeers.count { peers[$0].map(usesSlot) ?? false } }

    /// Unchokes interested peers that read (`nextSlotCandidate`), while fewer than `uploadSlots`
    /// unchoked peers use their slot.
    private mutating func fillFreeSlots() -> [Action] {
        var free = uploadSlots - slotsInUse
        guard free > 0 else { return [] }
        var waiting = slotCandidates()
        var actions: [Action] = []
        while free > 0, let next = nextSlotCandidate(among: waiting) {
            waiting.removeAll { $0 == next }
            actions.append(send(next, .unchoke))
            free -= 1
        }
        return actions
    }

    /// Whom a free upload slot goes to: a peer we served before, at random (it read what we sent:
    /// one that stopped reading wasted its slot and waits for a choking round), else the newest
    /// of those never served. Identities that connected before an honest newcomer (fifty peers
    /// that ask and never read) then cannot make it wait until each has had its try, and one that
    /// reconnects to be newest pays a connection, within the per-address caps, for each try.
    private mutating func nextSlotCandidate(among candidates: [Peer]) -> Peer? {
        if let pick = candidates.filter({ peers[$0]!.served }).randomElement(using: &random) { return pick }
        return candidates.max { peers[$0]!.arrival < peers[$1]!.arrival }
    }

    /// Choked interested peers that read, never wasted a slot and that the policy serves, in
    /// handle order.
    private func slotCandidates() -> [Peer] {
        peers.filter {
            $0.value.session.amChoking && $0.value.session.peerInterested && $0.value.writeBlockedSince == nil && !$0.value.wastedSlot
                && configuration.policy.serves($0.value.facts)
        }.map(\.key).sorted()
    }

    /// Since when we have waited for a block from this peer: the time its last block arrived (or
    /// our requests to it started) while requests are outstanding; nil when we ask it nothing.
    /// A peer that holds what we asked for and sends nothing for long has stalled.
    public func waitingSince(_ peer: Peer) -> Double? {
        guard let state = peers[peer], !state.session.outstanding.isEmpty else { return nil }
        return state.lastBlock
    }

    /// Whether the peer still waits for this block (it did not cancel it and was not choked since).
    public func isRequested(_ request: BlockRequest, by peer: Peer) -> Bool {
        guard let state = peers[peer], !state.session.amChoking else { return false }
        return state.session.peerRequests.contains(request)
    }

    /// The runtime's connection to the peer stopped (`blocked`) or started again taking our writes.
    /// A peer blocked for `sendStallTimeout` is dropped; meanwhile it ranks last for upload slots
    /// and does not count against the free slot an interested peer gets at once, and when it
    /// blocks while unchoked its slot is handed to a waiting interested peer.
    public mutating func peerWriteBlocked(_ peer: Peer, _ blocked: Bool) -> [Action] {
        guard let state = peers[peer] else { return [] }
        guard blocked else {
            state.writeBlockedSince = nil
            return []
        }
        guard state.writeBlockedSince == nil else { return [] }
        state.writeBlockedSince = clock
        // Its slot goes at once to an interested peer that reads (or has not been tried yet).
        guard !state.session.amChoking else { return [] }
        state.wastedSlot = true
        guard let next = nextSlotCandidate(among: slotCandidates()) else { return [] }
        if optimistic == peer { optimistic = next }
        return choke(peer) + [send(next, .unchoke)]
    }

    /// A whole piece from another source (the multicast booster, a web seed): verified like any
    /// other, and peers asked for its blocks are told to cancel once it has verified. Nil when the
    /// piece is held or already being verified. `reachedPeers`: the same delivery reached our
    /// peers (a multicast group), so our `have` tells them nothing new; it waits for the next tick
    /// and goes in one write with the others.
    public mutating func pieceArrived(_ piece: PieceIndex, data: [UInt8], reachedPeers: Bool = false) -> [Action]? {
        guard info.layout.contains(piece), data.count == info.layout.length(of: piece), !have[piece], !verifying.contains(piece) else {
            return nil
        }
        external.insert(piece)
        if reachedPeers { reachedPeersToo.insert(piece) }
        return [startVerifying(piece, data)]
    }

    /// Part of a piece from another source (a multicast piece with lost datagrams): `data` holds the
    /// piece with the byte ranges in `missing` (ascending, not overlapping) unknown. Only those bytes
    /// are then requested from peers, in blocks of at most 16 KiB.
    public mutating func piecePartlyArrived(_ piece: PieceIndex, data: [UInt8], missing: [Range<Int>]) -> [Action] {
        guard info.layout.contains(piece), data.count == info.layout.length(of: piece), !have[piece], !verifying.contains(piece),
            zip(missing, missing.dropFirst()).allSatisfy({ $0.upperBound <= $1.lowerBound }),
            missing.allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= data.count })
        else {
            return []
        }
        var buffer = data
        if let known = assembling[piece] {
            // What peers already delivered stays; the rest comes from the partial piece.
            for range in missing { buffer.replaceSubrange(range, with: known[range]) }
        }
        assembling[piece] = buffer
        external.insert(piece)
        guard picker.adopt(piece, missing: missing) else { return fillRequests() }
        assembling[piece] = nil
        return [startVerifying(piece, buffer)] + fillRequests()
    }

    /// Peers at this address are not asked for blocks (nil: all are): the multicast sender's link
    /// is full with the booster, and what the group missed is better fetched from other receivers.
    public mutating func avoidPeers(at ip: [UInt8]?) -> [Action] {
        avoided = ip
        return ip == nil ? fillRequests() : []
    }

    /// Pieces not to request from peers for now (nil: request anything), because another source is
    /// about to deliver them.
    public mutating func deferPieces(_ pieces: Bitfield?) -> [Action] {
        // Requests go out at once for pieces that are no longer deferred.
        var released = deferred ?? Bitfield(pieceCount: info.pieceCount)
        if let pieces { released.subtract(pieces) }
        deferred = pieces
        return pieces == nil || !released.isEmpty ? fillRequests() : []
    }

    /// Readers wait for these pieces, most urgent first (an NBD or HTTP client of the image in
    /// flight): they go ahead of every other piece, from any peer that has them (seeds too, deferred
    /// or not), with end-game duplicates to idle peers. Replaces the earlier list; held pieces are
    /// dropped, and at most `maximumUrgentPieces` are kept (the first ones). A piece stops being
    /// urgent once it verified.
    public mutating func setUrgentPieces(_ pieces: [PieceIndex]) -> [Action] {
        var seen = Set<PieceIndex>()
        let wanted = Array(pieces.filter { info.layout.contains($0) && !have[$0] && seen.insert($0).inserted }.prefix(Self.maximumUrgentPieces))
        guard wanted != urgent else { return [] }
        let added = wanted.filter { !urgent.contains($0) }
        urgent = wanted
        guard !added.isEmpty else { return [] }
        // A peer serves requests in order: an urgent block asked behind a full queue waits for all
        // of it (up to a second of that peer's data). So a holder of a new urgent piece is told to
        // drop what else we asked of it; blocks already on their way are wasted, at most what one
        // round trip carries, and the rest goes back to the picker.
        var actions: [Action] = []
        let urgentSet = Set(wanted)
        let everyone = configuration.readersFirst && urgentHeld
        for peer in sortedPeers {
            guard let state = peers[peer], everyone || added.contains(where: { state.session.peerPieces[$0] }) else { continue }
            actions += cancelOutstanding(peer) { !urgentSet.contains($0.piece) }
        }
        return actions + fillRequests()
    }

    /// Whether a connected peer we ask holds an urgent piece: with `readersFirst`, nothing else
    /// is asked meanwhile. (A piece nobody holds must not pause the download.)
    private var urgentHeld: Bool {
        !urgent.isEmpty && peers.values.contains { state in
            configuration.policy.asks(state.facts) && urgent.contains { state.session.peerPieces[$0] && !(state.declined?[$0] ?? false) }
        }
    }

    /// The pieces readers wait for, most urgent first.
    public var urgentPieces: [PieceIndex] { urgent }

    /// Pieces to start in this order before any other new piece (after urgent ones and a peer's
    /// suggestions): the order a VM read its image at boot, so nodes that boot from the image in
    /// flight find what they read first already there. Pieces out of range and repeats are
    /// dropped. Seeds are asked for them only as for rarest-first pieces (`maxAvailability`).
    public mutating func setPieceOrder(_ pieces: [PieceIndex]) -> [Action] {
        var seen = Set<PieceIndex>()
        order = pieces.filter { info.layout.contains($0) && seen.insert($0).inserted }
        orderHeld = 0
        return fillRequests()
    }

    /// The next pieces of `order` not held yet (a window of it, so each call costs a bounded scan).
    private mutating func orderedWindow() -> [PieceIndex] {
        while orderHeld < order.count && have[order[orderHeld]] { orderHeld += 1 }
        return order[orderHeld..<min(order.count, orderHeld + Self.orderWindow)].filter { !have[$0] }
    }

    /// The runtime hashed an assembled piece.
    /// A failed piece is blamed on its sender when it had one, else recorded block by block, its
    /// senders on parole (`blame`); a verified one settles the failures recorded for it
    /// (`resolveFailures`) and ends the parole of a peer that delivered it alone.
    public mutating func pieceChecked(_ piece: PieceIndex, valid: Bool) -> [Action] {
        let delivered = deliveries.removeValue(forKey: piece)
        let bytes = verifyingBuffers.removeValue(forKey: piece)
        verifying.remove(piece)
        verifyingBytes -= info.layout.length(of: piece)
        var actions: [Action] = []
        let fromElsewhere = external.remove(piece) != nil
        let peersGotItToo = reachedPeersToo.remove(piece) != nil
        guard valid else {
            picker.pieceFailed(piece)
            wasted += Int64(info.layout.length(of: piece))
            if fromElsewhere {
                externalHashFailures += 1
                assembling[piece] = nil
                return fillRequests()
            }
            return blame(piece, delivered: delivered, bytes: bytes) + fillRequests()
        }
        picker.pieceVerified(piece)
        assembling[piece] = nil
        // Once no reader waits, the download paused for readers (`readersFirst`) goes on at every
        // peer: `fillRequests` below.
        urgent.removeAll { $0 == piece }
        actions += resolveFailures(of: piece, verified: bytes)
        if !fromElsewhere, !suspects.isEmpty, let sole = delivered?.soleKey { deliveredAlone(sole) }
        // Announced from a place of our own in the order: the peers that hear first answer first
        // and take our free slots (`interested`), and they must not be the same few at every node
        // (the peers that connected first), or those few trade among themselves while the rest wait.
        let start = sortedPeers.isEmpty ? 0 : Int(random.next() % UInt64(sortedPeers.count))
        // A leecher that holds the piece learns nothing from our `have` but our progress
        // (libtorrent's `send_redundant_have` off), and such `have`s are about half of a swarm's
        // messages. It is told only if it sent us some of the piece, and hears that we are done by
        // BEP 21's `upload_only` when we are. Peers that do not speak extensions cannot hear that,
        // and are told of every piece.
        // A seed is told of every piece: it declines pieces on their way to others and suggests
        // ones we lack (`offerFreshPiece`) by what it knows we hold. It wants nothing of us, so
        // what it is told waits for the next tick and goes in one write, not one segment per piece
        // that it must acknowledge from its uplink, the swarm's scarcest link (31 booster
        // receivers: 1 % of the source's link in ACKs). So is a piece the multicast group brought
        // to our peers too: 31 receivers told each other of every piece, one segment each, 1.1 MB
        // per receiver into downlinks the group already filled. Our last piece goes at once,
        // after what was held, so that a seed frees our slot as soon as we are done.
        let completed = picker.isComplete
        let senders = delivered?.senders ?? []
        for peer in sortedPeers[start...] + sortedPeers[..<start] {
            guard let state = peers[peer] else { continue }
            // Blocks still asked of peers (the piece came from elsewhere, or from end-game) are cancelled.
            for block in state.session.outstanding where block.piece == piece { actions.append(send(peer, .cancel(block))) }
            let extensions = state.speaksExtensions && ourHandshake.supportsExtensions
            let seed = state.session.peerPieces.isComplete
            if seed || !extensions || !state.session.peerPieces[piece] || senders.contains(where: { $0.peer == peer }) {
                if (seed || peersGotItToo) && !completed {
                    state.heldHaves.append(piece)
                } else {
                    actions += sendHeldHaves(peer)
                    actions.append(send(peer, .have(piece)))
                }
            }
            if completed {
                actions += sendHeldHaves(peer)
                if extensions { actions.append(sendExtensionHandshake(peer)) }
            }
            // Gaining a piece can only end our interest in a peer that holds it.
            if state.session.amInterested, state.session.peerPieces[piece] { actions += updateInterest(peer) }
        }
        if completed { actions.append(.completed) }
        return actions + fillRequests()
    }

    /// Time passed: the runtime calls this about once a second. Measures each peer's rate and
    /// sizes its request queue, sends keep-alives, drops silent peers, hands the requests of a
    /// stalled peer to others, exchanges peers, and runs a choking round when one is due.
    public mutating func tick(now: Double) -> [Action] {
        let elapsed = now - clock
        clock = now
        noteUploadRate(now: now)
        var actions: [Action] = []
        for peer in sortedPeers {
            guard let state = peers[peer] else { continue }
            if now - state.lastReceived >= configuration.idleTimeout {
                actions.append(.disconnect(peer, reason: "silent for \(Int(now - state.lastReceived)) s"))
                actions += peerDisconnected(peer)
                continue
            }
            if let since = state.writeBlockedSince, now - since >= configuration.sendStallTimeout {
                actions.append(.disconnect(peer, reason: "read nothing we sent for \(Int(now - since)) s"))
                actions += peerDisconnected(peer)
                continue
            }
            if elapsed > 0 { measureRate(peer, over: elapsed) }
            if !state.session.amChoking && !state.isDone && !usesSlot(state) { state.wastedSlot = true }
            if !state.session.outstanding.isEmpty && now - state.lastBlock >= configuration.requestTimeout {
                actions += releaseStalledRequests(peer)
            }
            if state.declined != nil && now - state.declinedAt >= Self.declineMemory { peers[peer]?.declined = nil }
            if now - state.lastPeerExchange >= configuration.peerExchangeInterval {
                actions += exchangePeers(with: peer)
            }
            actions += sendHeldHaves(peer)
            if now - (peers[peer]?.lastSent ?? now) >= configuration.keepAliveInterval {
                actions.append(send(peer, .keepAlive))
            }
        }
        if now - lastChokeRound >= configuration.chokeInterval {
            lastChokeRound = now
            actions += chokingRound()
        }
        actions += fillFreeSlots()
        return actions + fillRequests()
    }

    // MARK: Internals

    /// Leeching: reciprocate the best uploaders to us, but for one slot kept for the peer furthest
    /// behind. Seeding: whoever we served least, in turn.
    /// One more interested peer is unchoked optimistically, so newcomers get a first piece, and
    /// peers that fell behind (whose pieces nobody needs, so tit-for-tat passes them over) get
    /// some: every `optimisticInterval` the slot moves to the peer we left choked the longest.
    private mutating func chokingRound() -> [Action] {
        let now = clock
        let interested = peers.filter { $0.value.session.peerInterested && configuration.policy.serves($0.value.facts) }.map(\.key)
        // Peers that do not read what we send rank last, then those that held a slot and used
        // it not: least-served-first would otherwise hand the slots of a seed to exactly those
        // peers, since they are the ones served least.
        // Ties (peers that sent us, or got from us, the same: often nothing) are broken at random,
        // not by connection order, which would favour the same early peers at every node.
        var tieBreak: [Peer: UInt64] = [:]
        for peer in interested { tieBreak[peer] = random.next() }
        let ranked = interested.sorted { lhs, rhs in
            let l = peers[lhs]!, r = peers[rhs]!
            let lBlocked = l.writeBlockedSince != nil, rBlocked = r.writeBlockedSince != nil
            if lBlocked != rBlocked { return rBlocked }
            // So do unchoked peers that asked for nothing all round: they hold a slot unused.
            let lIdle = !l.session.amChoking && now - max(l.lastRequested, l.unchokedAt) >= configuration.chokeInterval
            let rIdle = !r.session.amChoking && now - max(r.lastRequested, r.unchokedAt) >= configuration.chokeInterval
            if lIdle != rIdle { return rIdle }
            if l.wastedSlot != r.wastedSlot { return r.wastedSlot }
            let (lTie, rTie) = (tieBreak[lhs]!, tieBreak[rhs]!)
            return have.isComplete ? (l.bytesToPeer, lTie) < (r.bytesToPeer, rTie) : (l.bytesFromPeer, lTie) > (r.bytesFromPeer, rTie)
        }
        // While leeching, the last slot goes to the peer furthest behind (`catchUpSlot`).
        let slots = uploadSlots
        let catchUp = configuration.catchUpSlot && !have.isComplete && slots > 1
        var unchoke = Set(ranked.prefix(catchUp ? slots - 1 : slots))
        if catchUp {
            let rest = ranked.dropFirst(slots - 1)
            let held = { [peers] (peer: Peer) in (peers[peer]!.session.peerPieces.count, tieBreak[peer]!) }
            if let behind = rest.filter({ peers[$0]!.writeBlockedSince == nil }).min(by: { held($0) < held($1) }) ?? rest.first {
                unchoke.insert(behind)
            }
        }
        // The optimistic slot goes to a peer that reads, while there is one.
        let waiting = interested.filter { !unchoke.contains($0) }
        let reading = waiting.filter { peers[$0]!.writeBlockedSince == nil }
        let others = reading.isEmpty ? waiting : reading
        if let current = optimistic, others.contains(current), now - optimisticSince < configuration.optimisticInterval {
            unchoke.insert(current)
        } else if let pick = others.filter({ $0 != optimistic || others.count == 1 }).min(by: { lhs, rhs in
            let l = peers[lhs]!, r = peers[rhs]!
            return (l.session.amChoking ? l.chokedAt : now, tieBreak[lhs]!) < (r.session.amChoking ? r.chokedAt : now, tieBreak[rhs]!)
        }) {
            optimistic = pick
            optimisticSince = now
            unchoke.insert(pick)
        }
        var actions: [Action] = []
        for peer in sortedPeers {
            let shouldChoke = !unchoke.contains(peer)
            if shouldChoke != peers[peer]!.session.amChoking {
                actions += shouldChoke ? choke(peer) : [send(peer, .unchoke)]
            }
            peers[peer]?.bytesFromPeer = 0
            peers[peer]?.bytesToPeer = 0
        }
        return actions
    }

    /// The transport measured the connection's round trip (TCP's smoothed RTT, which includes
    /// the queues the data waits in on the way): the request queue covers it.
    public mutating func peerRoundTrip(_ peer: Peer, seconds: Double) {
        guard seconds.isFinite, seconds >= 0 else { return }
        peers[peer]?.roundTrip = min(seconds, 5)
    }

    /// Keeps `uploaded` of the ticks within `uploadRateWindow`, and the best rate over a whole window.
    private mutating func noteUploadRate(now: Double) {
        uploadSamples.append((now, uploaded))
        while let oldest = uploadSamples.first, now - oldest.at >= Self.uploadRateWindow {
            bestUploadRate = max(bestUploadRate, Double(uploaded - oldest.uploaded) / (now - oldest.at))
            uploadSamples.removeFirst()
        }
    }

    /// Sizes the peer's request queue to its rate: the policy's `requestQueueSeconds` (or the
    /// configuration's) plus the round trip of its data in flight.
    /// Until its first block the peer keeps the configured depth; a peer we asked nothing of keeps
    /// its queue, as its rate then says nothing about what it could send.
    private mutating func measureRate(_ peer: Peer, over elapsed: Double) {
        guard let state = peers[peer] else { return }
        let sample = Double(state.bytesSinceTick) / elapsed
        state.bytesSinceTick = 0
        guard sample > 0 || (state.rate != nil && !state.session.outstanding.isEmpty) else { return }
        let rate = state.rate.map { 0.6 * $0 + 0.4 * sample } ?? sample
        state.rate = rate
        let ceiling = min(configuration.maximumQueueDepth, state.session.peerExtensions?.requestQueue ?? configuration.requestQueueDepth)
        let seconds = (configuration.policy.requestQueueSeconds ?? configuration.requestQueueSeconds) + (state.roundTrip ?? 0)
        let wanted = Int((rate * seconds / Double(PieceLayout.blockLength)).rounded(.up))
        state.queueDepth = max(configuration.minimumQueueDepth, min(ceiling, wanted))
    }

    /// Cancels what we asked of the peer (the blocks `which` selects, all by default), in block
    /// order, and hands those blocks back to the picker for other peers.
    private mutating func cancelOutstanding(_ peer: Peer, where which: (BlockRequest) -> Bool = { _ in true }) -> [Action] {
        guard let outstanding = peers[peer]?.session.outstanding else { return [] }
        var actions: [Action] = []
        for block in outstanding.sorted(by: { ($0.piece, $0.begin) < ($1.piece, $1.begin) }) where which(block) {
            actions.append(send(peer, .cancel(block)))
            picker.released(block, by: peer)
        }
        return actions
    }

    /// The peer has sat on our requests: they go back to the picker for other peers, and the peer
    /// gets one request at a time until blocks flow again.
    private mutating func releaseStalledRequests(_ peer: Peer) -> [Action] {
        guard peers[peer] != nil else { return [] }
        let actions = cancelOutstanding(peer)
        // A peer on parole that stalls does not keep its pieces from the others.
        picker.disown(peer)
        peers[peer]?.queueDepth = 1
        peers[peer]?.rate = nil
        peers[peer]?.lastBlock = clock
        return actions
    }

    /// As a seed, with the fast extension, where the peers we serve trade with one another (the
    /// policy's `receiversTrade`): a request for a piece already sent to another peer is
    /// rejected, and a piece nobody has had from us yet is suggested instead, while there is one the
    /// peer lacks. Two leechers that picked the same piece then get one copy of it from the seed
    /// and trade it, rather than the seed sending it twice. Only while we are the only seed among
    /// our peers: once another peer is complete, seeds are no longer scarce, and seeds that all
    /// declined a straggler's last pieces would leave it waiting `declineMemory` seconds (seen
    /// one to four on loopback: 3 s tails). Nil: serve the request.
    ///
    /// A rack's uplink splits our peers in two (the policy's `isFar`): the rack trades inside and
    /// the other racks' gateways among themselves, but not across, so each side is counted on its
    /// own, and a piece leaves the rack once (issue 17: 1.31 copies out of the source's rack before).
    /// A rack's gateway (a node with peers across the uplink) is its rack's only way to what it
    /// fetches, so it does the same inside, seed or not: each piece goes into the rack once and
    /// the rack trades it, instead of every member taking every piece from the gateway at once.
    /// Across the uplink, and from a gateway into its rack, a piece already on its way is declined
    /// even when nothing fresh is left, as the peer it went to passes it on.
    private mutating func offerFreshPiece(instead request: BlockRequest, to peer: Peer) -> [Action]? {
        guard configuration.policy.receiversTrade, let state = peers[peer], state.session.fast else { return nil }
        let side = configuration.policy.isFar(state.facts)
        let gateway = !have.isComplete && !side && hasFarPeer
        guard have.isComplete || gateway,
            !peers.values.contains(where: { $0.isDone && configuration.policy.isFar($0.facts) == side })
        else { return nil }
        var served = servedTo[side] ?? [:]
        defer { servedTo[side] = served }
        guard let (first, at) = served[request.piece] else {
            served[request.piece] = (peer, clock)
            return nil
        }
        guard first != peer else {
            // Still fetching it: it stays on its way a while longer.
            served[request.piece] = (peer, clock)
            return nil
        }
        // The piece counts as on its way to a peer that holds it, which can pass it on whether we
        // still unchoke it or not, and to one we serve that reads what we send and got it lately;
        // otherwise a peer that asks for every piece and never reads, or cancels, would have us
        // decline them all to others.
        guard let firstState = peers[first],
            firstState.session.peerPieces[request.piece] || (usesSlot(firstState) && clock - at < onItsWayWindow)
        else {
            served[request.piece] = (peer, clock)
            return nil
        }
        let pieces = state.session.peerPieces, held = have
        let unsent = { (piece: PieceIndex) in held[piece] && served[piece] == nil && !pieces[piece] }
        guard let fresh = info.layout.pieces.first(where: { unsent($0) && !state.suggestedToPeer.contains($0) })
            ?? info.layout.pieces.first(where: unsent)
        else {
            return side || gateway ? [send(peer, .reject(request))] : nil
        }
        var actions = [send(peer, .reject(request))]
        if peers[peer]!.suggestedToPeer.insert(fresh).inserted { actions.append(send(peer, .suggest(fresh))) }
        return actions
    }

    /// How long a piece counts as on its way after its first taker last asked for a block of it:
    /// `onItsWay`, or two blocks' time at our rate per slot where that is longer (a thin uplink
    /// split many ways, or vmswarm-sim's coarse byte scales, where one block is a 4 MiB piece).
    private var onItsWayWindow: Double {
        guard bestUploadRate > 0 else { return Self.onItsWay }
        return max(Self.onItsWay, 2 * Double(PieceLayout.blockLength) * Double(uploadSlots + 1) / bestUploadRate)
    }

    /// BEP 11: tells the peer which listening peers we joined and lost since the last message.
    private mutating func exchangePeers(with peer: Peer) -> [Action] {
        guard configuration.policy.exchangesPeers, let state = peers[peer],
            let id = state.session.peerExtensions?.messageIDs["ut_pex"], id != 0
        else { return [] }
        peers[peer]?.lastPeerExchange = clock
        // Peers are told only of peers on their side of a rack's uplink (the policy's `isFar`).
        let side = configuration.policy.isFar(state.facts)
        let current = Set(peers.filter { $0.key != peer && configuration.policy.isFar($0.value.facts) == side }.compactMap(\.value.listenAddress))
        let told = state.toldPeers ?? []
        let added = current.subtracting(told).sorted { $0.compact.lexicographicallyPrecedes($1.compact) }.prefix(50)
        let dropped = told.subtracting(current).sorted { $0.compact.lexicographicallyPrecedes($1.compact) }.prefix(50)
        guard !added.isEmpty || !dropped.isEmpty else { return [] }
        peers[peer]?.toldPeers = told.union(added).subtracting(dropped)
        let message = PeerExchange(added: Array(added), dropped: Array(dropped))
        return [send(peer, .extended(id: id, payload: ByteBuffer(bytes: message.encoded())))]
    }

    /// Our extension handshake (BEP 10), sent again when we complete to say so (BEP 21).
    private mutating func sendExtensionHandshake(_ peer: Peer) -> Action {
        var ours = metadata.map { ExtensionHandshake.withMetadata(size: $0.metadata.count) } ?? ExtensionHandshake.ours
        ours.listenPort = listenPort
        ours.requestQueue = PeerSession.maxPeerRequests
        ours.uploadOnly = have.isComplete
        return send(peer, .extended(id: 0, payload: ByteBuffer(bytes: ours.encoded())))
    }

    /// The `have`s held back from a seed (`pieceChecked`), in the order the pieces verified.
    private mutating func sendHeldHaves(_ peer: Peer) -> [Action] {
        guard let state = peers[peer], !state.heldHaves.isEmpty else { return [] }
        let held = state.heldHaves
        state.heldHaves.removeAll()
        return held.map { send(peer, .have($0)) }
    }

    private mutating func send(_ peer: Peer, _ message: PeerMessage) -> Action {
        if let state = peers[peer] {
            if case .request = message, state.session.outstanding.isEmpty { state.lastBlock = clock }
            state.session.sent(message)
            state.lastSent = clock
            if case .unchoke = message {
                state.unchokedAt = clock
                unchokedPeers.insert(peer)
            } else if case .choke = message {
                state.chokedAt = clock
                unchokedPeers.remove(peer)
            }
        }
        return .send(peer, message)
    }

    /// Chokes a peer. With the fast extension its pending requests are not void and must each be
    /// rejected (BEP 6), or the peer would wait for them.
    private mutating func choke(_ peer: Peer) -> [Action] {
        guard let state = peers[peer] else { return [] }
        let pending = state.session.fast ? state.session.peerRequests : []
        return [send(peer, .choke)] + pending.map { send(peer, .reject($0)) }
    }

    /// Tells the peer whether we want anything of it. Callers may skip it when neither bitfield
    /// changed in a way that could change the answer (`received`, `pieceChecked`): the policies
    /// decide `asks` and `isFar` on a peer's id, address and whether it is a seed, and
    /// `setPolicy` calls this for every peer when the policy changes.
    private mutating func updateInterest(_ peer: Peer) -> [Action] {
        guard let state = peers[peer] else { return [] }
        let facts = state.facts
        var wanted = state.session.peerPieces.hasPieces(notIn: have) && configuration.policy.asks(facts)
        if wanted, configuration.policy.isFar(facts), let allowed = configuration.policy.farPieces {
            var offered = state.session.peerPieces
            offered.formIntersection(allowed)
            wanted = offered.hasPieces(notIn: have)
        }
        guard wanted != state.session.amInterested else { return [] }
        return [send(peer, wanted ? .interested : .notInterested)]
    }

    private mutating func fillRequests() -> [Action] {
        sortedPeers.flatMap { fillRequests(for: $0) }
    }

    private mutating func fillRequests(for peer: Peer) -> [Action] {
        guard let state = peers[peer], !state.session.peerChoking, state.session.amInterested,
            verifyingBytes < max(configuration.maximumVerifyingBytes, 2 * info.pieceLength),
            avoided == nil || state.remoteIP != avoided, state.queueDepth > state.session.outstanding.count,
            configuration.policy.asks(state.facts)
        else { return [] }
        var depth = state.queueDepth
        // While seeds are fewer than the other peers, their upload is the swarm's scarce link: a
        // seed is kept for the pieces only seeds have while other peers are serving us (when none
        // is, it may be asked for anything), one piece at a time: the others cannot know which
        // seed-only piece we are fetching, and the fewer we hold open, the less often two peers
        // fetch the same one from the seed. Once most peers are seeds (the end of a swarm, or
        // receivers the booster filled) they serve whatever we lack.
        var maxAvailability = Int.max
        var seeds = 0, asked = 0
        if state.isDone {
            for other in peers.values where configuration.policy.asks(other.facts) {
                asked += 1
                if other.isDone { seeds += 1 }
            }
        }
        if seeds > 0 && 2 * seeds <= asked {
            depth = min(depth, max(configuration.minimumQueueDepth, info.layout.blockCount(of: PieceIndex(0))))
            if peers.values.contains(where: { !$0.isDone && !$0.session.outstanding.isEmpty }) {
                maxAvailability = seeds
            }
        }
        let room = depth - state.session.outstanding.count
        guard room > 0 else { return [] }
        let endGameCount = max(0, configuration.endGameQueueDepth - state.session.outstanding.count)
        var pieces = state.session.peerPieces
        if let deferred { pieces.subtract(deferred) }
        if let declined = state.declined { pieces.subtract(declined) }
        if configuration.policy.isFar(state.facts) { pieces = farShare(of: pieces) }
        let suggestions = state.suggestions
        let held = have
        state.suggestions.removeAll { held[$0] }
        // Urgent pieces are asked of whoever has them, deferred to the booster or not.
        var holds = state.session.peerPieces
        if let declined = state.declined { holds.subtract(declined) }
        let urgentHere = urgent.filter { holds[$0] }
        if configuration.readersFirst && urgentHeld {
            // Readers first: this peer is asked for urgent pieces or nothing.
            pieces = Bitfield(pieceCount: info.pieceCount)
        }
        for piece in urgentHere { pieces.insert(piece) }
        let ordered = order.isEmpty ? [] : orderedWindow()
        return picker.requests(for: peer, peerPieces: pieces, count: room, maxAvailability: maxAvailability,
            endGameCount: endGameCount, urgent: urgentHere, preferred: suggestions, ordered: ordered, recent: state.recentHaves,
            alone: onParole(state)).map { send(peer, .request($0)) }
    }

    /// What a far peer may be asked for, of `pieces`: those the policy fetches over far links, less
    /// what a near peer serving us (unchoked, asked) holds.
    private func farShare(of pieces: Bitfield) -> Bitfield {
        var pieces = pieces
        if let allowed = configuration.policy.farPieces { pieces.formIntersection(allowed) }
        for other in peers.values where !other.session.peerChoking {
            let facts = other.facts
            if !configuration.policy.isFar(facts) && configuration.policy.asks(facts) { pieces.subtract(other.session.peerPieces) }
        }
        return pieces
    }

    /// A policy that depends on who is connected (`SwarmPolicy.reconsidered`) is replaced when
    /// they change.
    private mutating func reconsiderPolicy() -> [Action] {
        guard let next = configuration.policy.reconsidered(peers: peers.values.map(\.facts)) else { return [] }
        return setPolicy(next)
    }

    private mutating func receivedBlock(_ block: BlockRequest, data: ByteBuffer, from peer: Peer) -> [Action] {
        downloaded += Int64(block.length)
        peers[peer]?.bytesFromPeer += block.length
        peers[peer]?.bytesSinceTick += block.length
        peers[peer]?.lastBlock = clock
        if let state = peers[peer], state.queueDepth < configuration.minimumQueueDepth {
            peers[peer]?.queueDepth = configuration.minimumQueueDepth  // a stalled peer delivers again
        }
        guard !have[block.piece] && !verifying.contains(block.piece) else {
            wasted += Int64(block.length)  // the piece came whole from elsewhere meanwhile
            return fillRequests(for: peer)
        }
        guard let key = peers[peer]?.key else { return [] }
        let outcome = picker.received(block, from: peer)
        guard outcome.accepted else {
            // A late duplicate or a stale block: the bytes taken for it first stay.
            wasted += Int64(block.length)
            return fillRequests(for: peer)
        }
        var actions: [Action] = outcome.cancelAt.map { send($0, .cancel(block)) }
        // Copied in place: the piece's buffer is mutated inside the dictionary, never duplicated.
        // It starts uninitialized (not zeroed): it is hashed only once every block was written.
        let length = info.layout.length(of: block.piece)
        assembling[block.piece, default: [UInt8](unsafeUninitializedCapacity: length) { $1 = length }].withUnsafeMutableBytes { target in
            data.withUnsafeReadableBytes { source in
                target.baseAddress!.advanced(by: block.begin).copyMemory(from: source.baseAddress!, byteCount: source.count)
            }
        }
        let delivered = deliveries[block.piece] ?? Deliveries()
        if deliveries[block.piece] == nil { deliveries[block.piece] = delivered }
        delivered.add(begin: block.begin, length: block.length, peer: peer, key: key)
        if let piece = outcome.completePiece, let buffer = assembling.removeValue(forKey: piece), !verifying.contains(piece) {
            actions.append(startVerifying(piece, buffer))
        }
        return actions + fillRequests(for: peer)
    }

    /// Hands a whole piece out for hashing. Its buffer is kept when the result will need it (see
    /// `verifyingBuffers`): never on the happy path of one sender per piece.
    private mutating func startVerifying(_ piece: PieceIndex, _ buffer: [UInt8]) -> Action {
        verifying.insert(piece)
        verifyingBytes += buffer.count
        if failures[piece] != nil || (!external.contains(piece) && (deliveries[piece]?.senders.count ?? 0) > 1) {
            verifyingBuffers[piece] = buffer
        }
        return .verify(piece, buffer)
    }

    // MARK: Smart ban and parole

    /// A keyed digest of a block: SipHash under the process's random seed, so no peer can steer
    /// two different blocks to the same value, at a fraction of SHA-1's cost.
    private static func digest(_ bytes: [UInt8], begin: Int, length: Int) -> Int {
        bytes.withUnsafeBytes { all in
            var hasher = Hasher()
            hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: all[begin..<(begin + length)]))
            return hasher.finalize()
        }
    }

    /// A peer piece failed its hash. A sole sender is banned at once; with several nobody can tell
    /// yet whose block was wrong, so each block's digest and sender are recorded for when the piece
    /// verifies, and each sender goes on parole (it fetches whole pieces alone, so its next bad
    /// piece is its own).
    private mutating func blame(_ piece: PieceIndex, delivered: Deliveries?, bytes: [UInt8]?) -> [Action] {
        guard let delivered else { return [] }
        if let sole = delivered.soleKey { return ban(sole, reason: "sent data that failed the hash of \(piece)") }
        let keys = delivered.keys
        for key in keys { suspects[key, default: Suspicion()].paroled = true }
        // Always held for a piece of several senders (`startVerifying`).
        guard let bytes, bytes.count == info.layout.length(of: piece) else { return [] }
        for key in keys { suspects[key]?.unresolved.insert(piece) }
        var record = failures[piece] ?? FailedPiece()
        if failures[piece] == nil { failureOrder.append(piece) }
        let senderIndex = delivered.senders.map { sender in
            if let known = record.senders.firstIndex(of: sender.key) { return known }
            record.senders.append(sender.key)
            return record.senders.count - 1
        }
        for (begin, length, sender) in delivered.blocks {
            record.blocks.append((begin, length, senderIndex[sender], Self.digest(bytes, begin: begin, length: length)))
        }
        failureRecords += delivered.blocks.count
        failures[piece] = record
        dropOldFailures()
        return []
    }

    /// A piece verified: every recorded block of its earlier failures that differs from the
    /// verified bytes bans its sender; the others are cleared of that failure (and of suspicion
    /// once they have no failure left).
    private mutating func resolveFailures(of piece: PieceIndex, verified bytes: [UInt8]?) -> [Action] {
        guard let record = failures.removeValue(forKey: piece) else { return [] }
        failureOrder.removeAll { $0 == piece }
        failureRecords -= record.blocks.count
        var liars: [BanKey] = []
        if let bytes, bytes.count == info.layout.length(of: piece) {
            for (begin, length, sender, digest) in record.blocks
            where Self.digest(bytes, begin: begin, length: length) != digest && !liars.contains(record.senders[sender]) {
                liars.append(record.senders[sender])
            }
        }
        for key in record.senders where !liars.contains(key) {
            suspects[key]?.unresolved.remove(piece)
            if suspects[key]?.unresolved.isEmpty == true { clearSuspicion(key) }
        }
        return liars.flatMap { ban($0, reason: "sent a block of \(piece) that failed the hash (it differs from the verified piece)") }
    }

    /// A piece one peer delivered alone verified: its parole ends, unless it has
    /// `lastingParoleFailures` failures unresolved.
    private mutating func deliveredAlone(_ key: BanKey) {
        guard let suspicion = suspects[key], suspicion.paroled,
            suspicion.unresolved.count < configuration.lastingParoleFailures
        else { return }
        if suspicion.unresolved.isEmpty { clearSuspicion(key) } else { suspects[key]?.paroled = false }
        for (peer, state) in peers where state.key == key { picker.disown(peer) }
    }

    private mutating func clearSuspicion(_ key: BanKey) {
        suspects[key] = nil
        for (peer, state) in peers where state.key == key { picker.disown(peer) }
    }

    /// Keeps the failure records under `maximumFailureRecords` blocks, dropping the oldest pieces'.
    /// A suspect left without records keeps its parole while connected (it ends as usual), and is
    /// forgotten once gone.
    private mutating func dropOldFailures() {
        while failureRecords > configuration.maximumFailureRecords, failureOrder.count > 1 {
            let oldest = failureOrder.removeFirst()
            guard let record = failures.removeValue(forKey: oldest) else { continue }
            failureRecords -= record.blocks.count
            for key in record.senders {
                suspects[key]?.unresolved.remove(oldest)
                if suspects[key]?.unresolved.isEmpty == true && !peers.values.contains(where: { $0.key == key }) { suspects[key] = nil }
            }
        }
    }

    /// Bans an identity (address and id) and disconnects it wherever it is connected.
    private mutating func ban(_ key: BanKey, reason: String) -> [Action] {
        banned.insert(key)
        suspects[key] = nil
        var actions: [Action] = []
        for peer in sortedPeers where peers[peer]?.key == key {
            actions.append(.disconnect(peer, reason: reason))
            actions += peerDisconnected(peer)
        }
        return actions
    }

    /// Whether the peer is on parole (and so fetches whole pieces alone).
    private func onParole(_ state: PeerState) -> Bool {
        !suspects.isEmpty && suspects[state.key]?.paroled == true
    }
}
