import Metainfo
import Swarm
import TrackerProtocol

/// A tree-mode node's side of docs/tree.md, without I/O: what it tells the tracker, the policy the
/// tracker's answer makes, and when it must ask again (its parent went away, or never answered).
struct TreeMembership {
    /// The parents of the latest answer, by id, and where they listen.
    private(set) var parents: [PeerID: PeerAddress] = [:]
    /// A parent lost since, to report in the next announce (which is then due at once).
    private(set) var lost: PeerID?
    /// Since when no parent has been connected while we have some (nil: one is, or we have none).
    private var strandedSince: Double?
    /// A tree node keeps this many seconds of its parent's rate requested (the mesh keeps one):
    /// what it has asked for and not received sits in the parent's send buffer, and every piece
    /// it forwards waits behind that at every hop (a second cost the flat chain 1.17x F/B against
    /// 1.14x). The engine adds the connection's measured round trip on top. Across a rack's uplink
    /// the requests share a full queue with another hop's data, and one that is dropped waits for
    /// TCP's retransmission timer (at least 0.2 s): a tenth of a second left the link idle
    /// meanwhile (4 racks: 1.22x the uplink's limit, 1.19x with 0.3 s; the flat chain 1.14x with
    /// either).
    static let requestQueueSeconds = 0.3

    /// Seconds a node goes without a usable parent (none connected, or every one stalled) before
    /// reporting one lost: on a LAN a dial takes milliseconds.
    static let patience: Double = 6
    /// Seconds a parent may sit on our requests without sending a block before it counts as
    /// stalled (stopped, or a link that died without TCP noticing yet).
    static let stallTimeout: Double = 4

    /// Marks an announce as tree mode and reports the lost parent.
    func prepare(_ request: inout AnnounceRequest) {
        request.tree = true
        request.lostParent = lost
    }

    /// The tracker's answer to a request that reported `reported`. Nil: the tracker does not place
    /// tree nodes (any tracker but vmswarm's), and the node had better use the mesh.
    mutating func answered(_ answer: [AnnouncedPeer]?, reported: PeerID?, now: Double) -> TreePolicy? {
        guard let answer else { return nil }
        if lost == reported { lost = nil }
        parents = [:]
        for parent in answer {
            if let id = parent.peerID, parents[id] == nil { parents[id] = parent.address }
        }
        strandedSince = parents.isEmpty ? nil : now
        return policy
    }

    /// Parents asked, everyone else served (a libtorrent peer that found the swarm is served too).
    var policy: TreePolicy {
        TreePolicy(parents: parents.mapValues { Optional($0) }, strangers: .serve, requestQueueSeconds: Self.requestQueueSeconds)
    }

    /// A peer went away. True when it was a parent: the next announce reports it, and is due now.
    mutating func disconnected(_ id: PeerID, complete: Bool) -> Bool {
        guard parents[id] != nil, !complete else { return false }
        lost = id
        return true
    }

    /// Called every tick with the ids of the peers connected and not stalled (`stallTimeout`):
    /// true when the node has had parents and none usable for `patience` seconds (a parent that
    /// died before the tracker knew, or one that stopped sending), and the next announce is to
    /// report one of them lost.
    mutating func checkStranded(usable: Set<PeerID>, complete: Bool, now: Double) -> Bool {
        guard !parents.isEmpty, !complete, lost == nil else { return false }
        if parents.keys.contains(where: usable.contains) {
            strandedSince = nil
            return false
        }
        let since = strandedSince ?? now
        strandedSince = since
        guard now - since >= Self.patience else { return false }
        lost = parents.keys.min { $0.bytes.lexicographicallyPrecedes($1.bytes) }
        strandedSince = nil
        return true
    }
}
