import Metainfo

/// A pool node's two sides (docs/pool.md): the site it serves, whose networks make a peer near, and
/// the WAN, everyone else. Near peers are asked for anything and served; far peers are asked only
/// for this node's share of the pieces, and only for what no near peer serving it holds, so the
/// WAN carries each piece into the site about once however many pool nodes the site runs.
///
/// The share: the site's pool nodes, ordered by their site addresses, take the pieces in turn
/// (piece i belongs to pool node i mod n). A pool node also takes the share of a sibling that is
/// not connected to it (it died, or has not started), so a death costs the WAN only what the dead
/// node had fetched and not yet passed on.
///
/// Peers are not exchanged: a site's nodes must not learn WAN addresses (they have no route there),
/// nor the WAN the site's.
public struct PoolPolicy: SwarmPolicy {
    /// The site's networks: a peer whose address lies in one is near.
    public let site: [IPNetwork]
    /// Every pool node of the site by its site address, this one included, in ascending order.
    public let pools: [[UInt8]]
    /// This node's site address.
    public let own: [UInt8]
    /// The siblings connected now, by site address.
    public let present: Set<[UInt8]>
    public let farPieces: Bitfield?

    public init(site: [IPNetwork], ownAddress: [UInt8], siblings: [[UInt8]], pieceCount: Int, present: Set<[UInt8]> = []) {
        self.site = site
        own = ownAddress
        pools = Set(siblings + [ownAddress]).sorted { $0.lexicographicallyPrecedes($1) }
        self.present = present.subtracting([ownAddress])
        var share = Bitfield(pieceCount: pieceCount)
        for index in 0..<pieceCount {
            let owner = pools[index % pools.count]
            if owner == ownAddress || !self.present.contains(owner) { share.insert(PieceIndex(index)) }
        }
        farPieces = share
    }

    public func isNear(_ ip: [UInt8]?) -> Bool {
        guard let ip else { return false }
        return site.contains { $0.contains(ip) }
    }

    public func isFar(_ peer: PeerFacts) -> Bool { !isNear(peer.ip) }
    public func dials(_ address: PeerAddress) -> Bool { true }
    public func admits(_ peer: PeerFacts) -> Bool { true }
    public func asks(_ peer: PeerFacts) -> Bool { true }
    public func serves(_ peer: PeerFacts) -> Bool { true }
    public var exchangesPeers: Bool { false }
    public var receiversTrade: Bool { true }

    public func reconsidered(peers: [PeerFacts]) -> (any SwarmPolicy)? {
        let siblings = Set(pools).subtracting([own])
        let now = Set(peers.compactMap { peer in peer.ip.flatMap { isNear($0) && siblings.contains($0) ? $0 : nil } })
        guard now != present, let pieceCount = farPieces?.pieceCount else { return nil }
        return PoolPolicy(site: site, ownAddress: own, siblings: Array(siblings), pieceCount: pieceCount, present: now)
    }
}
