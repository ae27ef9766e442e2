import Testing

@testable import VMSwarmCLI

@Suite struct SeedAfterTests {
    @Test func parsesEveryForm() {
        #expect(SeedAfter("none") == SeedAfter.none)
        #expect(SeedAfter("FOREVER") == .forever)
        #expect(SeedAfter("done") == .done)
        #expect(SeedAfter("90") == .seconds(90))
        #expect(SeedAfter("90s") == .seconds(90))
        #expect(SeedAfter("10m") == .seconds(600))
        #expect(SeedAfter("1.5h") == .seconds(5400))
        #expect(SeedAfter("2x") == .ratio(2))
        for bad in ["", "x", "-5", "0x", "-1x", "nan", "inf", "5d", "m", "1e400"] {
            #expect(SeedAfter(bad) == nil, "'\(bad)' is refused")
        }
    }

    @Test func eachPolicyStopsWhenItShould() {
        let size: Int64 = 1000
        #expect(SeedAfter.seconds(60).isSatisfied(seedingFor: 60, uploaded: 0, imageLength: size, swarmDoneFor: 0))
        #expect(!SeedAfter.seconds(60).isSatisfied(seedingFor: 59, uploaded: 0, imageLength: size, swarmDoneFor: 0))
        #expect(SeedAfter.ratio(2).isSatisfied(seedingFor: 0, uploaded: 2000, imageLength: size, swarmDoneFor: 0))
        #expect(!SeedAfter.ratio(2).isSatisfied(seedingFor: 1e6, uploaded: 1999, imageLength: size, swarmDoneFor: 1e6))
        #expect(!SeedAfter.done.isSatisfied(seedingFor: 1e6, uploaded: 0, imageLength: size, swarmDoneFor: SeedAfter.doneGrace - 1))
        #expect(SeedAfter.done.isSatisfied(seedingFor: 0, uploaded: 0, imageLength: size, swarmDoneFor: SeedAfter.doneGrace))
        #expect(!SeedAfter.forever.isSatisfied(seedingFor: 1e9, uploaded: 1 << 40, imageLength: size, swarmDoneFor: 1e9))
    }
}
