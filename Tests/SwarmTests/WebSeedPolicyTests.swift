import Metainfo
import NIOCore
import PeerWire
import SwarmRuntime
import Testing

@testable import Swarm

/// Web seeds (BEP 19) as a policy and as checks on each answer, without sockets (issue 21,
/// point 5): peers first, nothing fetched twice, a failing seed backed off, a lying one dropped,
/// and the pieces still complete from peers.
@Suite struct WebSeedPolicyTests {
    static let layout = try! PieceLayout(pieceLength: 16 << 10, fileLengths: [Int64(8 * (16 << 10))])
    static func bits(_ pieces: [Int], count: Int = 8) -> Bitfield {
        var field = Bitfield(pieceCount: count)
        for piece in pieces { field.insert(PieceIndex(piece)) }
        return field
    }

    @Test func piecesNoPeerHasComeFirstAndBusyOrHeldPiecesNever() {
        var policy = WebSeedPolicy(seeds: ["http://a/x", "http://b/x"], layout: Self.layout)
        // Peers hold 0-3 and 7; the engine fetches 4; 5 is held already.
        let availability = [2, 1, 1, 3, 0, 0, 0, 1]
        let first = policy.next(now: 0, have: Self.bits([5]), availability: availability, busy: Self.bits([4]))
        // Two seeds, two pieces each: 6 (no peer has it), then what peers have, fewest holders first.
        #expect(first.map(\.piece.value) == [6, 1, 2, 7])
        #expect(first.map(\.seed) == [0, 0, 1, 1])
        #expect(policy.claimed == Self.bits([1, 2, 6, 7]))
        // Full: nothing more until a fetch ends, and claimed pieces are never handed out twice.
        #expect(policy.next(now: 0, have: Self.bits([5]), availability: availability, busy: Self.bits([4])).isEmpty)
        policy.fetched(PieceIndex(6), from: 0)
        let second = policy.next(now: 0, have: Self.bits([5]), availability: availability, busy: Self.bits([4]))
        #expect(second.map(\.piece.value) == [0])
        // Still claimed while the engine hashes it; released once checked.
        #expect(policy.claimed[PieceIndex(6)])
        #expect(policy.checked(PieceIndex(6), valid: true) == nil)
        #expect(!policy.claimed[PieceIndex(6)] && policy.seeds[0].pieces == 1 && policy.seeds[0].bytes == 16 << 10)
        // Pieces that were not a web seed's are not its business.
        #expect(policy.checked(PieceIndex(3), valid: false) == nil)

        // With `fetchPiecesPeersHave` off a seed is only a fallback for what no peer offers.
        var configuration = WebSeedPolicy.Configuration()
        configuration.fetchPiecesPeersHave = false
        var fallback = WebSeedPolicy(seeds: ["http://a/x"], layout: Self.layout, configuration: configuration)
        #expect(fallback.next(now: 0, have: Self.bits([]), availability: availability, busy: Self.bits([4])).map(\.piece.value) == [5, 6])

        // As `get --web-seed-fallback` sets it: nothing in the first seconds, while peers connect.
        var late = WebSeedPolicy(seeds: ["http://a/x"], layout: Self.layout, configuration: .fallback(after: 5))
        #expect(late.next(now: 4.9, have: Self.bits([]), availability: availability, busy: Self.bits([4])).isEmpty)
        #expect(late.next(now: 5, have: Self.bits([]), availability: availability, busy: Self.bits([4])).map(\.piece.value) == [5, 6])
    }

    /// What readers of the image in flight wait for goes first, most urgent first, unless held,
    /// busy in the engine or claimed already.
    @Test func piecesReadersWaitForComeFirst() {
        var policy = WebSeedPolicy(seeds: ["http://a/x", "http://b/x"], layout: Self.layout)
        let none = [Int](repeating: 0, count: 8)
        let assignments = policy.next(now: 0, have: Self.bits([6]), availability: none, busy: Self.bits([5]),
            urgent: [PieceIndex(6), PieceIndex(7), PieceIndex(5), PieceIndex(3), PieceIndex(99)])
        #expect(assignments.map(\.piece.value) == [7, 3, 0, 1])
        let more = policy.next(now: 0, have: Self.bits([6]), availability: none, busy: Self.bits([5]), urgent: [PieceIndex(7)])
        #expect(more.isEmpty, "7 is claimed already and both seeds are full")
    }

    @Test func aFailingSeedBacksOffDoublingAndRecovers() {
        var configuration = WebSeedPolicy.Configuration()
        configuration.firstBackoff = 2
        configuration.maxBackoff = 10
        var policy = WebSeedPolicy(seeds: ["http://a/x"], layout: Self.layout, configuration: configuration)
        let none = [Int](repeating: 0, count: 8)
        let empty = Self.bits([])
        let started = policy.next(now: 0, have: empty, availability: none, busy: empty)
        #expect(started.count == 2)
        #expect(policy.failed(started[0].piece, from: 0, .status(503), now: 0) == .backedOff(seed: 0, seconds: 2, failure: .status(503)))
        #expect(!policy.claimed[started[0].piece], "a failed piece goes back to the peers")
        #expect(policy.next(now: 1.9, have: empty, availability: none, busy: empty).isEmpty)
        #expect(policy.failed(started[1].piece, from: 0, .rangeIgnored, now: 1) == .backedOff(seed: 0, seconds: 4, failure: .rangeIgnored))
        // Once the wait is over, one fetch at a time until one succeeds.
        let retry = policy.next(now: 5, have: empty, availability: none, busy: empty)
        #expect(retry.count == 1)
        #expect(policy.failed(retry[0].piece, from: 0, .wrongLength(expected: 16384, got: 10), now: 5)
            == .backedOff(seed: 0, seconds: 8, failure: .wrongLength(expected: 16384, got: 10)))
        let capped = policy.next(now: 13, have: empty, availability: none, busy: empty)
        #expect(policy.failed(capped[0].piece, from: 0, .transport("timed out"), now: 13)
            == .backedOff(seed: 0, seconds: 10, failure: .transport("timed out")))
        #expect(policy.fetchFailures == 4 && policy.hashFailures == 0)
        let again = policy.next(now: 23, have: empty, availability: none, busy: empty)
        policy.fetched(again[0].piece, from: 0)
        #expect(policy.checked(again[0].piece, valid: true) == nil)
        #expect(policy.seeds[0].failuresInARow == 0)
        #expect(policy.next(now: 23, have: empty, availability: none, busy: empty).count == 2)
    }

    @Test func aSeedWhosePiecesFailTheirHashIsDroppedAndNeverAskedForThemAgain() {
        var policy = WebSeedPolicy(seeds: ["http://liar/x", "http://honest/x"], layout: Self.layout)
        let none = [Int](repeating: 0, count: 8)
        let empty = Self.bits([])
        var dropped: [WebSeedPolicy.Event] = []
        var failedAtLiar: Set<PieceIndex> = []
        for _ in 0..<6 {
            for assignment in policy.next(now: 0, have: empty, availability: none, busy: empty) {
                policy.fetched(assignment.piece, from: assignment.seed)
                #expect(!(assignment.seed == 0 && failedAtLiar.contains(assignment.piece)), "a piece it lied about is asked of it again")
                if assignment.seed == 0 {
                    failedAtLiar.insert(assignment.piece)
                    if let event = policy.checked(assignment.piece, valid: false) { dropped.append(event) }
                } else {
                    // The honest seed's pieces are never checked here: they stay claimed.
                }
            }
        }
        #expect(dropped == [.dropped(seed: 0, reason: "3 pieces from it failed their hash")])
        #expect(policy.seeds[0].dropped != nil && policy.seeds[0].hashFailures >= 3)
        #expect(policy.usableSeeds == 1 && policy.hashFailures == policy.seeds[0].hashFailures && policy.fetchFailures == 0)
        #expect(policy.next(now: 100, have: empty, availability: none, busy: empty).allSatisfy { $0.seed == 1 })
    }

    /// The engine end: a lying seed's pieces fail, no peer is blamed, and the same pieces then
    /// complete from a peer.
    @Test func piecesALyingSeedSpoiledStillCompleteFromPeers() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 4)
        var policy = WebSeedPolicy(seeds: ["http://liar/x"], layout: leecher.engine.info.layout)
        let empty = Bitfield(pieceCount: 4)
        var events: [WebSeedPolicy.Event] = []
        // No peer yet: the seed gets pieces 0 and 1, then 2 and 3, and every one is forged.
        for _ in 0..<2 {
            let busy = leecher.engine.picker.startedPieces
            for assignment in policy.next(now: 0, have: leecher.engine.have, availability: leecher.engine.picker.availability, busy: busy) {
                policy.fetched(assignment.piece, from: assignment.seed)
                let actions = leecher.engine.pieceArrived(assignment.piece, data: [UInt8](repeating: 0xEE, count: 16 << 10))
                #expect(actions?.contains { if case .verify(assignment.piece, _) = $0 { true } else { false } } == true)
                _ = leecher.engine.pieceChecked(assignment.piece, valid: false)
                if let event = policy.checked(assignment.piece, valid: false) { events.append(event) }
            }
        }
        #expect(events.count == 1 && policy.usableSeeds == 0)
        #expect(leecher.engine.externalHashFailures == 4)
        #expect(policy.next(now: 1000, have: empty, availability: [0, 0, 0, 0], busy: empty).isEmpty)
        // A peer arrives with every piece: it is asked for all four, and they complete.
        var pending = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        #expect(Set(pending.map(\.piece)).count == 4)
        pending = leecher.deliver(100, of: pending, from: 1).pending
        #expect(leecher.engine.isComplete)
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1)))
    }

    /// Claimed pieces are deferred in the engine: a peer that connects while the seed fetches
    /// is asked for everything else, not for them.
    @Test func piecesAWebSeedFetchesAreNotAskedOfPeers() {
        var leecher = ScriptedLeecher(pieceLength: 16 << 10, pieces: 4)
        var policy = WebSeedPolicy(seeds: ["http://a/x"], layout: leecher.engine.info.layout)
        let assignments = policy.next(now: 0, have: leecher.engine.have, availability: leecher.engine.picker.availability,
            busy: leecher.engine.picker.startedPieces)
        #expect(assignments.map(\.piece.value) == [0, 1])
        _ = leecher.engine.deferPieces(policy.claimed)
        let asked = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        #expect(Set(asked.map(\.piece.value)) == [2, 3])
        // Once the seed's pieces arrive and verify, peers hold nothing else to ask for.
        for assignment in assignments {
            policy.fetched(assignment.piece, from: 0)
            _ = leecher.engine.pieceArrived(assignment.piece, data: [UInt8](repeating: 0, count: 16 << 10))
            _ = leecher.engine.pieceChecked(assignment.piece, valid: true)
            _ = policy.checked(assignment.piece, valid: true)
        }
        _ = leecher.engine.deferPieces(policy.claimed.isEmpty ? nil : policy.claimed)
        #expect(policy.seeds[0].pieces == 2)
        // The seed's next work skips what the engine has started with the peer.
        let next = policy.next(now: 0, have: leecher.engine.have, availability: leecher.engine.picker.availability,
            busy: leecher.engine.picker.startedPieces)
        #expect(next.isEmpty, "\(next)")
    }
}

/// The checks on one answer to a Range request: what is used is exactly what was asked for.
@Suite struct WebSeedResponseTests {
    static let request = WebSeedRequest(fileIndex: 0, target: "/x", range: 100..<200, pieceOffset: 0, fileLength: 1000)

    @Test func onlyA206OfExactlyTheRangeIsUsed() {
        func check(_ status: Int, _ range: String?, _ length: Int, _ request: WebSeedRequest = WebSeedResponseTests.request) -> WebSeedPolicy.Failure? {
            WebSeedResponse.check(status: status, contentRange: range, bodyLength: length, for: request)
        }
        #expect(check(206, "bytes 100-199/1000", 100) == nil)
        #expect(check(206, "Bytes  100-199/*", 100) == nil)
        // A 200 (the server ignored Range), a 206 without or with another range, a short or long body.
        #expect(check(200, nil, 1000) == .rangeIgnored)
        #expect(check(206, nil, 100) == .wrongRange("206 without one"))
        #expect(check(206, "bytes 0-99/1000", 100) == .wrongRange("bytes 0-99 where 100-199 were asked for"))
        #expect(check(206, "bytes 100-199/999", 100) == .wrongRange("the file is 999 bytes long, the torrent says 1000"))
        #expect(check(206, "bytes 100-199/1000", 99) == .wrongLength(expected: 100, got: 99))
        #expect(check(404, nil, 9) == .status(404))
        #expect(check(500, "bytes 100-199/1000", 100) == .status(500))
        #expect(check(301, nil, 0) == .status(301))
        // A request of the whole file may be answered 200, with the whole file.
        let whole = WebSeedRequest(fileIndex: 0, target: "/x", range: 0..<1000, pieceOffset: 0, fileLength: 1000)
        #expect(check(200, nil, 1000, whole) == nil)
        #expect(check(200, nil, 999, whole) == .wrongLength(expected: 1000, got: 999))
    }

    @Test func hostileContentRangesAreRefusedNotTrapped() {
        for bad in ["", "bytes", "bytes */1000", "bytes 100-/1000", "bytes -199/1000", "bytes 199-100/1000", "bytes 100-199/150",
                    "bytes 100-199", "bytes 100-199/1000/1", "items 100-199/1000", "bytes 9223372036854775807-9223372036854775807/*",
                    "bytes 99999999999999999999-1/2", "bytes +1-2/3", "bytes 1-2/-3", "bytes 0x1-2/3", String(repeating: "9", count: 100)]
        {
            #expect(WebSeedResponse.parseContentRange(bad) == nil, "\(bad)")
        }
        #expect(WebSeedResponse.parseContentRange("bytes 0-0/1")! == (0..<1, 1))
        #expect(WebSeedResponse.parseContentRange("bytes 5-9/*")! == (5..<10, nil))
    }
}
