import Metainfo
import Swarm
import Testing
import TrackerProtocol

@testable import SwarmRuntime

/// A tree node's side of the protocol (docs/tree.md), without sockets: the announce it makes, the
/// policy an answer gives, and when it reports its parent lost.
@Suite struct TreeMembershipTests {
    static func id(_ n: Int) -> PeerID { PeerID(bytes: Array(String(format: "-TM0001-%012d", n).utf8))! }
    static let parent = AnnouncedPeer(address: PeerAddress(ip: [10, 0, 0, 1], port: 6881)!, peerID: id(1))

    @Test func anAnswerBecomesAPolicyThatAsksOnlyTheParent() {
        var membership = TreeMembership()
        var request = AnnounceRequest(infoHash: InfoHash(bytes: [UInt8](repeating: 1, count: 20))!, peerID: Self.id(0), port: 1)
        membership.prepare(&request)
        #expect(request.tree && request.lostParent == nil)
        let policy = membership.answered([Self.parent, AnnouncedPeer(address: Self.parent.address)], reported: nil, now: 0)
        #expect(policy?.parents.count == 1, "a parent without an id is of no use")
        #expect(policy?.asks(PeerFacts(id: Self.id(1))) == true)
        #expect(policy?.asks(PeerFacts(id: Self.id(2))) == false)
        #expect(policy?.serves(PeerFacts(id: Self.id(2))) == true, "strangers and children are served")
        #expect(policy?.dials(Self.parent.address) == true)
        // A tracker without tree mode: nil, the node goes back to the mesh.
        let mesh = membership.answered(nil, reported: nil, now: 1)
        #expect(mesh == nil)
    }

    @Test func aLostParentIsReportedOnceAndClearedByTheAnswerToThatReport() {
        var membership = TreeMembership()
        _ = membership.answered([Self.parent], reported: nil, now: 0)
        let stranger = membership.disconnected(Self.id(5), complete: false)
        #expect(!stranger, "not a parent")
        let whenComplete = membership.disconnected(Self.id(1), complete: true)
        #expect(!whenComplete, "a complete node needs no parent")
        let parentLost = membership.disconnected(Self.id(1), complete: false)
        #expect(parentLost)
        var request = AnnounceRequest(infoHash: InfoHash(bytes: [UInt8](repeating: 1, count: 20))!, peerID: Self.id(0), port: 1)
        membership.prepare(&request)
        #expect(request.lostParent == Self.id(1))
        // An answer to an older request (that did not report it) keeps the report pending.
        _ = membership.answered([Self.parent], reported: nil, now: 1)
        #expect(membership.lost == Self.id(1))
        _ = membership.answered([], reported: Self.id(1), now: 2)
        #expect(membership.lost == nil)
    }

    @Test func aParentNeverReachedOrStalledIsReportedAfterThePatience() {
        var membership = TreeMembership()
        _ = membership.answered([Self.parent], reported: nil, now: 100)
        let r4 = membership.checkStranded(usable: [], complete: false, now: 100 + TreeMembership.patience - 1)
        #expect(!r4)
        let r5 = membership.checkStranded(usable: [], complete: false, now: 100 + TreeMembership.patience)
        #expect(r5)
        #expect(membership.lost == Self.id(1))
        // Usable again after a new answer: nothing to report while it is.
        _ = membership.answered([Self.parent], reported: Self.id(1), now: 200)
        let r6 = membership.checkStranded(usable: [Self.id(1)], complete: false, now: 300)
        #expect(!r6)
        // It stops sending: the clock starts when it is first seen unusable.
        let r7 = membership.checkStranded(usable: [], complete: false, now: 301)
        #expect(!r7)
        let r8 = membership.checkStranded(usable: [], complete: false, now: 301 + TreeMembership.patience)
        #expect(r8)
        // A root (no parents) and a complete node never report.
        var root = TreeMembership()
        _ = root.answered([], reported: nil, now: 0)
        let rootReports = root.checkStranded(usable: [], complete: false, now: 1000)
        #expect(!rootReports)
    }
}
