import Metainfo
import Testing
import TrackerProtocol

@testable import Tracker

/// The rollout view of one image (issue 21, point 8): nodes done and in progress, the rate at which
/// they close in, and when the last one should be done, from what announces say.
@Suite struct RolloutTests {
    func progress(_ n: Int, left: Int64, downloaded: Int64, _ state: inout TrackerState, at now: Double, event: AnnounceEvent = .none) throws {
        var request = announce(n, left: left, event: event)
        request.downloaded = downloaded
        _ = try state.announce(request, from: address(n), now: now)
    }

    @Test func ratesAndTheLastNodesETAComeFromHowFastLeftFalls() throws {
        var state = TrackerState(configuration: TrackerConfiguration(), seed: 1)
        let size: Int64 = 1000 << 20
        try progress(1, left: 0, downloaded: 0, &state, at: 0)  // the seeder
        try progress(2, left: size, downloaded: 0, &state, at: 0, event: .started)
        try progress(3, left: size, downloaded: 0, &state, at: 0, event: .started)
        try progress(4, left: size, downloaded: 0, &state, at: 0, event: .started)
        #expect(state.rollout(of: torrentA, now: 0)?.etaSeconds == nil, "no rate is known yet")

        try progress(2, left: size - 500 << 20, downloaded: 500 << 20, &state, at: 10)  // 50 MiB/s: 10 s to go
        try progress(3, left: size - 100 << 20, downloaded: 100 << 20, &state, at: 10)  // 10 MiB/s: 90 s to go
        try progress(4, left: size, downloaded: 0, &state, at: 10)  // stalled
        var view = try #require(state.rollout(of: torrentA, now: 12))
        #expect((view.done, view.inProgress, view.completed) == (1, 3, 0))
        #expect(view.imageBytes == size)
        #expect(view.bytesPerSecond == Double(60 << 20))
        #expect(view.bytesLeft == 3 * size - 600 << 20)
        #expect(view.etaSeconds == nil, "a stalled node holds the rollout up")
        #expect(view.slowest.map(\.address) == ["10.0.0.4:6004", "10.0.0.3:6003", "10.0.0.2:6002"])
        #expect(view.slowest[1].etaSeconds == 90)
        #expect(view.slowest[0].lastAnnounceSecondsAgo == 2)
        #expect(abs((view.fractionDone ?? 0) - (1 - Double(3 * size - 600 << 20) / Double(4 * size))) < 1e-9)

        try progress(4, left: size - 200 << 20, downloaded: 200 << 20, &state, at: 20)  // 20 MiB/s now: 40 s
        try progress(2, left: 0, downloaded: size, &state, at: 20, event: .completed)
        view = try #require(state.rollout(of: torrentA, now: 20))
        #expect((view.done, view.inProgress, view.completed) == (2, 2, 1))
        #expect(view.etaSeconds == 90, "the slowest of the two left: 900 MiB at 10 MiB/s")
        #expect(view.slowest.map(\.address) == ["10.0.0.3:6003", "10.0.0.4:6004"])
        #expect(state.rollout(of: torrentB, now: 20) == nil)
    }

    /// With the usual announce interval (many minutes) most nodes announce once, when they start,
    /// and next when they complete: they are waiting for a report, not stalled, and the ETA comes
    /// from the rate at which nodes complete.
    @Test func nodesThatAnnouncedOnceAreWaitingAndTheETAFollowsCompletions() throws {
        var state = TrackerState(configuration: TrackerConfiguration(), seed: 1)
        let size: Int64 = 1 << 30
        try progress(1, left: 0, downloaded: 0, &state, at: 0)
        for n in 2...11 { try progress(n, left: size, downloaded: 0, &state, at: 0, event: .started) }
        var view = try #require(state.rollout(of: torrentA, now: 30))
        #expect((view.waiting, view.stalled) == (10, 0))
        #expect(view.etaSeconds == nil && view.completionsPerSecond == nil, "nothing to go by yet")
        #expect(RolloutPage.html(view).contains("<b>waiting for reports</b>until the last node"))
        #expect(view.slowest.allSatisfy(\.waiting) && RolloutPage.html(view).contains("no report yet"))

        // Two nodes complete at 40 s and 50 s: 2 in the 20 s since the first, 0.1 a second.
        try progress(2, left: 0, downloaded: size, &state, at: 40, event: .completed)
        try progress(3, left: 0, downloaded: size, &state, at: 50, event: .completed)
        view = try #require(state.rollout(of: torrentA, now: 60))
        #expect((view.done, view.inProgress, view.waiting) == (3, 8, 8))
        #expect(view.completionsPerSecond == 0.1)
        #expect(view.etaSeconds == 80, "8 nodes at 0.1 a second")
        let html = RolloutPage.html(view)
        #expect(html.contains("<b>1:20</b>until the last node") && html.contains("<b>6.0</b>nodes done a minute"), "\(html)")

        // A node that announces again no further is stalled, and that is what the page says.
        try progress(4, left: size, downloaded: 0, &state, at: 61)
        view = try #require(state.rollout(of: torrentA, now: 62))
        #expect((view.stalled, view.waiting, view.etaSeconds) == (1, 7, nil))
        #expect(view.slowest.first?.address == "10.0.0.4:6004")
        #expect(RolloutPage.html(view).contains("<b>stalled</b>until the last node"))
        // One that announces again further along is measured, and its own ETA counts too.
        try progress(4, left: size / 2, downloaded: size / 2, &state, at: 71)
        view = try #require(state.rollout(of: torrentA, now: 71))
        #expect(view.stalled == 0 && view.waiting == 7)
        #expect(view.etaSeconds.map { $0 > 0 } == true)
    }

    @Test func aPeerThatStartsOverHasNoRateAndHostileCountsDoNotTrap() throws {
        var state = TrackerState(configuration: TrackerConfiguration(), seed: 1)
        try progress(1, left: 100, downloaded: 0, &state, at: 0)
        try progress(1, left: 500, downloaded: 0, &state, at: 5)  // its left grew: a new .part
        #expect(state.rollout(of: torrentA, now: 5)?.bytesPerSecond == 0)
        try progress(2, left: .max, downloaded: .max, &state, at: 5)
        try progress(3, left: .max, downloaded: 0, &state, at: 5)
        try progress(3, left: .max - 1, downloaded: 1, &state, at: 5)  // no time passed: no rate
        let view = try #require(state.rollout(of: torrentA, now: 6))
        #expect(view.imageBytes == .max)
        #expect(view.bytesLeft == .max)
        #expect(view.bytesPerSecond == 0)
        #expect(view.fractionDone.map { (0...1).contains($0) } != false)
    }

    @Test func thePageShowsTheFiguresAndEscapesAddresses() throws {
        let view = RolloutView(infoHash: torrentA.hex, done: 3, inProgress: 1, completed: 2, imageBytes: 1 << 30, bytesLeft: 512 << 20,
            bytesPerSecond: Double(8 << 20), fractionDone: 0.875, etaSeconds: 64,
            slowest: [.init(address: "[fd00::<1>]:6881", bytesLeft: 512 << 20, bytesPerSecond: Double(8 << 20), etaSeconds: 64, lastAnnounceSecondsAgo: 3)])
        let html = RolloutPage.html(view)
        #expect(html.contains(#"<div class="card" id="done"><b>3</b>nodes done</div>"#))
        #expect(html.contains(#"<b>87.5 %</b>"#))
        #expect(html.contains(#"<b>8.00 MiB/s</b>together"#))
        #expect(html.contains(#"<b>1:04</b>until the last node"#))
        #expect(html.contains("[fd00::&lt;1&gt;]:6881"))
        #expect(html.contains("image 1.00 GiB"))
    }
}
