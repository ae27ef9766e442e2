import Metainfo

/// What the engine knows of one peer when it asks its policy about it: a snapshot, never the
/// engine's own state.
public struct PeerFacts: Sendable, Equatable {
    /// The id the peer claims in its handshake (a claim: anyone may send another's).
    public var id: PeerID
    /// The IP address of its end of the connection, when the transport has one.
    public var ip: [UInt8]?
    /// Where it accepts connections: the address we dialled, or for a peer that dialled us its IP
    /// with the port from its extension handshake (nil until that arrives).
    public var listenAddress: PeerAddress?
    /// We dialled it.
    public var outgoing: Bool
    /// It holds every piece.
    public var isSeed: Bool

    public init(id: PeerID, ip: [UInt8]? = nil, listenAddress: PeerAddress? = nil, outgoing: Bool = true, isSeed: Bool = false) {
        self.id = id
        self.ip = ip
        self.listenAddress = listenAddress
        self.outgoing = outgoing
        self.isSeed = isSeed
    }
}

/// Whom a node talks to, and how: the topology of the swarm as the node sees it. The engine asks
/// these questions and holds no topology of its own, so a mesh, a tree, a rack-aware mesh or a
/// pool node's two sides are each one value handed to the same engine
/// (`SwarmEngine.Configuration.policy`, replaced while running with `SwarmEngine.setPolicy`).
///
/// Answers must be cheap and depend only on the facts given and the policy's own value: the engine
/// asks `asks` for every batch of requests it sends.
public protocol SwarmPolicy: Sendable {
    /// Whether to dial an address a tracker, peer exchange or a static list named.
    func dials(_ address: PeerAddress) -> Bool
    /// Whether to keep a connection with this peer once its handshake arrived, dialled or not.
    /// A peer not admitted is disconnected.
    func admits(_ peer: PeerFacts) -> Bool
    /// Whether we request pieces from this peer (and so tell it we are interested).
    func asks(_ peer: PeerFacts) -> Bool
    /// Whether this peer may hold one of our upload slots. A peer not served is never unchoked.
    func serves(_ peer: PeerFacts) -> Bool
    /// Whether peers are exchanged (BEP 11): told to ours, and dialled when others tell of them.
    var exchangesPeers: Bool { get }
    /// Whether the peers we serve trade with one another. A lone seed then sends each piece once
    /// and declines a piece already on its way to another peer, since they can get it from there.
    var receiversTrade: Bool { get }
    /// Seconds of a peer's rate kept requested from it, beyond the round trip (nil: the engine's
    /// `requestQueueSeconds`). What a node has asked for and not received waits in its source's
    /// send buffer, ahead of everything that source sends later.
    var requestQueueSeconds: Double? { get }
    /// Whether this peer is across a costly link (a pool node's WAN side). A far peer is asked only
    /// for pieces in `farPieces` that no near peer serving us holds: the costly link carries what
    /// the near side cannot supply. Interest in it follows `farPieces` alone.
    func isFar(_ peer: PeerFacts) -> Bool
    /// The pieces this node fetches over far links (nil: any).
    var farPieces: Bitfield? { get }
    /// For a policy that depends on who is connected (a pool node whose sibling came or went): the
    /// policy for these peers, or nil when it stays. Asked after each peer arrives or leaves.
    func reconsidered(peers: [PeerFacts]) -> (any SwarmPolicy)?
}

extension SwarmPolicy {
    public var requestQueueSeconds: Double? { nil }
    public func isFar(_ peer: PeerFacts) -> Bool { false }
    public var farPieces: Bitfield? { nil }
    public func reconsidered(peers: [PeerFacts]) -> (any SwarmPolicy)? { nil }
}

/// The BitTorrent mesh: everyone admitted, asked and served (within the unchoke slots), peers
/// exchanged. The engine's default.
///
/// `exchangesPeers` false: a mesh whose peers were chosen for it (a tracker that gives each rack
/// one gateway to the others, docs/racks.md), which peer exchange would undo.
///
/// `rack`: the networks of this node's rack, when the tracker's answer names it by subnet. A peer
/// outside is far (across the rack's uplink): a lone seed then sends each piece across once,
/// since the gateways it serves trade with one another, and once to its rack, which trades
/// inside (`SwarmEngine`). Asked for anything, as any mesh peer.
public struct MeshPolicy: SwarmPolicy {
    public let exchangesPeers: Bool
    public let rack: [IPNetwork]
    public init(exchangesPeers: Bool = true, rack: [IPNetwork] = []) {
        self.exchangesPeers = exchangesPeers
        self.rack = rack
    }
    public func isFar(_ peer: PeerFacts) -> Bool {
        guard !rack.isEmpty, let ip = peer.ip else { return false }
        return !rack.contains { $0.contains(ip) }
    }
    public func dials(_ address: PeerAddress) -> Bool { true }
    public func admits(_ peer: PeerFacts) -> Bool { true }
    public func asks(_ peer: PeerFacts) -> Bool { true }
    public func serves(_ peer: PeerFacts) -> Bool { true }
    public var receiversTrade: Bool { true }
}

/// A node's place in a distribution tree (or a chain, or one of several trees): it asks only its
/// parents, serves its children, dials only those it knows and exchanges no peers, so the pieces
/// flow down the edges it was given. Peers are known by id (the tracker that places nodes knows
/// each one's id) and, for dialling, by address.
///
/// `strangers`: what to do with a peer that is neither parent nor child (a BitTorrent client that
/// found the swarm on its own): serve it, or refuse it.
public struct TreePolicy: SwarmPolicy {
    public enum Strangers: Sendable { case serve, refuse }

    public var parents: [PeerID: PeerAddress?]
    public var children: [PeerID: PeerAddress?]
    public var strangers: Strangers
    /// A tree node's source is its parent, and every piece the parent forwards waits behind what
    /// was asked of it, at every hop: a chain keeps its queues short (nil: the engine's default).
    public var requestQueueSeconds: Double?

    public init(parents: [PeerID: PeerAddress?] = [:], children: [PeerID: PeerAddress?] = [:], strangers: Strangers = .serve,
                requestQueueSeconds: Double? = nil) {
        self.parents = parents
        self.children = children
        self.strangers = strangers
        self.requestQueueSeconds = requestQueueSeconds
    }

    /// Parents are dialled by the child; children dial their parent.
    public func dials(_ address: PeerAddress) -> Bool { parents.values.contains(address) }
    public func admits(_ peer: PeerFacts) -> Bool {
        parents[peer.id] != nil || children[peer.id] != nil || strangers == .serve
    }
    public func asks(_ peer: PeerFacts) -> Bool { parents[peer.id] != nil }
    public func serves(_ peer: PeerFacts) -> Bool { parents[peer.id] == nil }
    public var exchangesPeers: Bool { false }
    /// Siblings are not neighbours: each child gets every piece from us.
    public var receiversTrade: Bool { false }
}
