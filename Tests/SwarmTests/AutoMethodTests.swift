import Testing

@testable import SwarmRuntime

/// `--method auto`'s rule (docs/tree.md, "Choosing the method"), without sockets: what a node
/// measures in its first seconds, and the method it then follows.
@Suite struct AutoMethodTests {
    typealias Facts = AutoMethod.TrackerFacts

    /// One row per testbed topology and one per limit of the rule.
    @Test(arguments: [
        // (listens, sender heard, tracker facts, pieces, chosen)
        (true, true, Facts(placesTrees: true, spansRacks: false, leechers: 7), 1024, DistributionMethod.multicast),  // flat LAN, multicast
        (true, false, Facts(placesTrees: true, spansRacks: false, leechers: 7), 1024, .tree),  // flat LAN, multicast blocked
        (false, false, Facts(placesTrees: true, spansRacks: true, leechers: 15), 128, .tree),  // racks, no booster
        (true, false, Facts(placesTrees: true, spansRacks: true, leechers: 15), 128, .tree),  // racks, multicast blocked across the core
        (false, false, Facts(placesTrees: false, spansRacks: false, leechers: 7), 1024, .mesh),  // opentracker or a public tracker
        (false, false, Facts(placesTrees: true, spansRacks: false, leechers: 205), 1024, .tree),  // (205 - 1) / 1024 < 20 %
        (false, false, Facts(placesTrees: true, spansRacks: false, leechers: 206), 1024, .mesh),  // a chain past a fifth
        (false, false, Facts(placesTrees: true, spansRacks: true, leechers: 500), 128, .mesh),  // racks, but far too many for chains
        (false, false, Facts(placesTrees: true, spansRacks: false, leechers: 0), 1, .tree),  // a tracker that counts nobody
    ])
    func theRuleChoosesAsDocumented(listens: Bool, heard: Bool, facts: Facts, pieces: Int, expected: DistributionMethod) {
        var auto = AutoMethod(listensToGroup: listens, hasTracker: true, pieceCount: pieces)
        auto.answered(facts)
        let choice = auto.decide(now: AutoMethod.multicastProbe, senderHeard: heard)
        #expect(choice?.method == expected, "\(choice?.reason ?? "no choice")")
        #expect(choice?.reason.isEmpty == false)
    }

    /// A node with a group waits for the probe (a sender announces twice a second), unless a
    /// sender is heard first; without a group it chooses at the tracker's first answer.
    @Test func theChoiceWaitsForTheProbeAndTheTrackerThenHolds() {
        let flat = Facts(placesTrees: true, spansRacks: false, leechers: 4)
        var booster = AutoMethod(listensToGroup: true, hasTracker: true, pieceCount: 256)
        booster.answered(flat)
        #expect(booster.decide(now: 0.5, senderHeard: false) == nil, "the probe is not over")
        #expect(booster.decide(now: 1.0, senderHeard: true)?.method == .multicast, "a sender heard ends the probe")
        #expect(booster.decide(now: 3, senderHeard: false)?.method == .multicast, "chosen once")

        var plain = AutoMethod(listensToGroup: false, hasTracker: true, pieceCount: 256)
        #expect(plain.decide(now: 0.1, senderHeard: false) == nil, "no answer yet")
        plain.answered(flat)
        plain.answered(Facts(placesTrees: false, spansRacks: false, leechers: 4))  // later answers change nothing
        #expect(plain.decide(now: 0.2, senderHeard: false)?.method == .tree)
    }

    /// A tracker that never answers, or none at all: the mesh (with the peers given by hand).
    @Test func withoutATrackerAnswerTheNodeTakesTheMesh() {
        var silent = AutoMethod(listensToGroup: true, hasTracker: true, pieceCount: 256)
        #expect(silent.decide(now: AutoMethod.multicastProbe, senderHeard: false) == nil)
        #expect(silent.decide(now: AutoMethod.trackerPatience, senderHeard: false)?.method == .mesh)
        var none = AutoMethod(listensToGroup: false, hasTracker: false, pieceCount: 256)
        #expect(none.decide(now: 0, senderHeard: false)?.method == .mesh)
    }
}
