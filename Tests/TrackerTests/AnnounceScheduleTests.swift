import Metainfo
import TestSupport
import Testing
import TrackerClient
import TrackerProtocol

/// The runtime's announce timing (`AnnounceSchedule`), without sockets or sleeping.
@Suite struct AnnounceScheduleTests {
    @Test func failuresInARowDoubleFrom15sTo30MinutesWithJitter() {
        var random = SplitMix64(seed: 1)
        var schedule = AnnounceSchedule()
        #expect(schedule.isDue(now: 0) && schedule.event == .started)
        var now = 0.0
        for (failures, base) in [(1, 15.0), (2, 30.0), (3, 60.0), (4, 120.0), (8, 1800.0), (9, 1800.0)] {
            while schedule.failures < failures - 1 { now = schedule.next; schedule.failed(now: now, using: &random) }
            now = schedule.next
            let delay = schedule.failed(now: now, using: &random)
            #expect(schedule.failures == failures)
            #expect(delay >= base * 0.9 && delay <= base * 1.1, "\(failures) failures: \(delay) s")
            #expect(schedule.next == now + delay)
            // Until a tracker has answered once, every try is still `started`.
            #expect(schedule.event == .started)
        }
    }

    @Test func anAnswerResetsTheBackoff() {
        var random = SplitMix64(seed: 2)
        var schedule = AnnounceSchedule()
        for _ in 0..<5 { schedule.failed(now: schedule.next, using: &random) }
        schedule.answered(interval: 1800, minInterval: 60, now: 1000)
        #expect(schedule.failures == 0 && schedule.next == 2800 && schedule.event == AnnounceEvent.none)
        let delay = schedule.failed(now: 2800, using: &random)
        #expect(delay >= 13.5 && delay <= 16.5)
    }

    /// 10,000 nodes started within 2 s lose their tracker; it comes back after an hour. A flat retry
    /// (15 s after each failure) keeps them within those 2 s forever: ~10,000 announces land on
    /// the tracker within a couple of seconds every 15 s, and when it returns. With the policy
    /// they spread out, and fewer of them come back in any one second.
    @Test func aFleetThatLostItsTrackerDoesNotReturnInLockstep() {
        var random = SplitMix64(seed: 3)
        let nodes = 10_000
        var schedules = (0..<nodes).map { AnnounceSchedule(start: Double($0 % 2000) / 1000) }
        var announces = 0
        let trackerBack = 3600.0
        var firstAfter: [Double] = []
        for index in schedules.indices {
            while schedules[index].next < trackerBack {
                announces += 1
                schedules[index].failed(now: schedules[index].next, using: &random)
            }
            firstAfter.append(schedules[index].next)
        }
        // A flat 15 s would be 240 tries per node in the hour; doubling to 30 min is about 9.
        #expect(Double(announces) / Double(nodes) < 12)
        // The returns spread over minutes, not 2 s: no second holds more than 2 % of the fleet.
        var perSecond: [Int: Int] = [:]
        for time in firstAfter { perSecond[Int(time), default: 0] += 1 }
        let busiest = perSecond.values.max() ?? 0
        #expect(busiest < nodes / 50, "\(busiest) of \(nodes) nodes came back in the same second")
        #expect((firstAfter.max() ?? 0) - (firstAfter.min() ?? 0) > 60)
    }

    @Test func earlyAnnouncesWaitForARunningBackoff() {
        var random = SplitMix64(seed: 4)
        var schedule = AnnounceSchedule()
        schedule.answered(interval: 1800, minInterval: 60, now: 0)
        // A lost tree parent: announce at once while the tracker answers.
        schedule.announceNow(now: 100)
        #expect(schedule.next == 100)
        schedule.failed(now: 100, using: &random)
        let retry = schedule.next
        #expect(retry > 110)
        schedule.announceNow(now: 101)
        #expect(schedule.next == retry)
        // A seed waiting for the swarm: not before `min interval` after the latest answer, and
        // not during a back-off either.
        schedule.announceWhenAllowed(now: 102)
        #expect(schedule.next == retry)
        schedule.answered(interval: 1800, minInterval: 60, now: 200)
        schedule.announceWhenAllowed(now: 210)
        #expect(schedule.next == 260)
        schedule.announceWhenAllowed(now: 300)
        #expect(schedule.next == 260)
    }
}
