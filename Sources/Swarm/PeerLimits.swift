/// How many connections a node keeps, and how they split between those it dials and those it
/// accepts.
///
/// A share of the connections is kept for nodes that dial us. Without it, nodes that join together
/// fill each other's every slot, and nodes joining later find each earlier node full: they connect
/// only among themselves, a second swarm with no piece in it that never completes
/// (`vmswarm-sim --hosts 100` found it: 39 of 99 nodes stuck). With half the slots kept, every
/// newcomer finds room at some of the nodes the tracker names, so the swarm stays one.
public struct PeerLimits: Sendable, Equatable {
    /// Connections at most, both ways.
    public var maxPeers: Int
    /// Connections we dial at most; the rest of `maxPeers` waits for nodes that dial us.
    public var maxOutgoing: Int

    public init(maxPeers: Int = 60) {
        self.maxPeers = maxPeers
        maxOutgoing = max(1, (maxPeers + 1) / 2)
    }

    /// Whether to dial one more peer, with `outgoing` of our connections dialled by us, `dialing`
    /// dials under way and `connected` connections in all.
    public func mayDial(outgoing: Int, dialing: Int, connected: Int) -> Bool {
        outgoing + dialing < maxOutgoing && connected + dialing < maxPeers
    }

    /// Whether to take one more connection that a peer dialled.
    public func mayAccept(connected: Int) -> Bool { connected < maxPeers }
}
