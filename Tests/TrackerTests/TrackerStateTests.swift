import Metainfo
import Testing
import TrackerProtocol

@testable import Tracker

func peerID(_ n: Int) -> PeerID { PeerID(bytes: Array(String(format: "-TT0001-%012d", n).utf8))! }
func address(_ n: Int) -> PeerAddress { PeerAddress(ip: [10, 0, UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)], port: 1)! }
let torrentA = InfoHash(bytes: [UInt8](repeating: 0xAA, count: 20))!
let torrentB = InfoHash(bytes: [UInt8](repeating: 0xBB, count: 20))!

func announce(_ n: Int, _ hash: InfoHash = torrentA, left: Int64? = 100, event: AnnounceEvent = .none, numWant: Int? = nil) -> AnnounceRequest {
    var request = AnnounceRequest(infoHash: hash, peerID: peerID(n), port: UInt16(6000 + n))
    request.left = left
    request.event = event
    request.numWant = numWant
    return request
}

@Suite struct TrackerStateTests {
    var state = TrackerState(configuration: TrackerConfiguration(), seed: 1)

    @Test mutating func peersLearnOfEachOtherButNeverOfThemselves() throws {
        let first = try state.announce(announce(1, event: .started), from: address(1), now: 0)
        #expect(first.peers.isEmpty)
        #expect((first.complete, first.incomplete) == (0, 1))
        let second = try state.announce(announce(2, event: .started), from: address(2), now: 1)
        #expect(second.peers.map(\.address) == [PeerAddress(ip: address(1).ip, port: 6001)!])
        #expect(second.peers.first?.peerID == peerID(1))
        let again = try state.announce(announce(1), from: address(1), now: 2)
        #expect(again.peers.map(\.peerID) == [peerID(2)])
        #expect(again.interval == 1800 && again.minInterval == 60)
    }

    @Test mutating func leechersGetSeedersFirstAndSeedersGetOnlyLeechers() throws {
        for n in 0..<10 { _ = try state.announce(announce(n, left: 0), from: address(n), now: 0) }
        for n in 10..<40 { _ = try state.announce(announce(n), from: address(n), now: 0) }
        let leecher = try state.announce(announce(99, numWant: 12), from: address(99), now: 1)
        #expect(leecher.peers.count == 12)
        let seederIDs = Set((0..<10).map(peerID))
        #expect(leecher.peers.prefix(10).allSatisfy { seederIDs.contains($0.peerID!) })
        let seeder = try state.announce(announce(5, left: 0, numWant: 200), from: address(5), now: 1)
        #expect(seeder.peers.count == 31)
        #expect(seeder.peers.allSatisfy { !seederIDs.contains($0.peerID!) })
        #expect(Set(seeder.peers.map(\.peerID)).count == 31, "no duplicates")
    }

    @Test mutating func numwantIsClamped() throws {
        for n in 0..<300 { _ = try state.announce(announce(n), from: address(n), now: 0) }
        #expect(try state.announce(announce(1, numWant: -1), from: address(1), now: 0).peers.count == 50)
        #expect(try state.announce(announce(1, numWant: .max), from: address(1), now: 0).peers.count == 200)
        #expect(try state.announce(announce(1, numWant: 0), from: address(1), now: 0).peers.isEmpty)
    }

    @Test mutating func eventsMovePeersAndCountCompletions() throws {
        _ = try state.announce(announce(1, event: .started), from: address(1), now: 0)
        _ = try state.announce(announce(2, event: .started), from: address(2), now: 0)
        let done = try state.announce(announce(1, left: 0, event: .completed), from: address(1), now: 5)
        #expect((done.complete, done.incomplete) == (1, 1))
        // A repeated `completed` from a seeder is not counted twice.
        _ = try state.announce(announce(1, left: 0, event: .completed), from: address(1), now: 6)
        #expect(state.completedCount == 1)
        let stopped = try state.announce(announce(2, event: .stopped), from: address(2), now: 7)
        #expect((stopped.complete, stopped.incomplete) == (1, 0))
        #expect(state.scrape(ScrapeRequest(infoHashes: [torrentA, torrentB])).files == [torrentA: ScrapeStats(complete: 1, downloaded: 1, incomplete: 0)])
    }

    @Test mutating func silentPeersExpire() throws {
        var configuration = TrackerConfiguration()
        configuration.peerTimeout = 100
        state = TrackerState(configuration: configuration, seed: 1)
        _ = try state.announce(announce(1), from: address(1), now: 0)
        _ = try state.announce(announce(2, torrentB), from: address(2), now: 50)
        #expect(state.expire(now: 120) == 1)
        #expect(state.torrentCount == 1)
        #expect(state.leecherCount == 1)
        #expect(state.expire(now: 151) == 1)
        #expect(state.torrentCount == 0)
    }

    @Test mutating func allowlistRefusesUnknownTorrentsAndReloadKeepsOthers() throws {
        var configuration = TrackerConfiguration()
        configuration.allowlist = [torrentA, torrentB]
        state = TrackerState(configuration: configuration, seed: 1)
        _ = try state.announce(announce(1), from: address(1), now: 0)
        _ = try state.announce(announce(2, torrentB), from: address(2), now: 0)
        let other = InfoHash(bytes: [UInt8](repeating: 1, count: 20))!
        #expect(throws: TrackerRequestError.unknownTorrent) { try state.announce(announce(3, other), from: address(3), now: 0) }
        state.setAllowlist([torrentA])
        #expect(state.torrentCount == 1)
        #expect(state.leecherCount == 1)
        #expect(throws: TrackerRequestError.unknownTorrent) { try state.announce(announce(2, torrentB), from: address(2), now: 0) }
        #expect(state.scrape(ScrapeRequest(infoHashes: [torrentA])).files[torrentA]?.incomplete == 1)
    }

    @Test mutating func limitsBoundMemoryAndAreReported() throws {
        var configuration = TrackerConfiguration()
        configuration.maxTorrents = 50
        configuration.maxPeersPerTorrent = 10
        state = TrackerState(configuration: configuration, seed: 1)
        var refused = 0
        for n in 0..<1000 {
            let hash = InfoHash(bytes: (0..<20).map { UInt8(truncatingIfNeeded: n >> ($0 % 3 * 8)) &+ UInt8($0) })!
            do { _ = try state.announce(announce(n, hash), from: address(n), now: 0) } catch { refused += 1 }
        }
        #expect(state.torrentCount == 50)
        #expect(refused == 950)
        let notices = state.takeNotices()
        #expect(notices.contains(.torrentLimitReached(50)))
        var small = TrackerConfiguration()
        small.maxPeersPerTorrent = 10
        state = TrackerState(configuration: small, seed: 1)
        for n in 0..<30 { _ = try state.announce(announce(n), from: address(n), now: 0) }
        #expect(state.leecherCount == 10)
        #expect(state.takeNotices().contains(.peerLimitReached(torrentA, 10)))
        // Known peers still refresh when the swarm is full.
        #expect(try state.announce(announce(3, left: 0), from: address(3), now: 1).complete == 1)
    }

    @Test mutating func ipParameterOnlyWhenAllowed() throws {
        var request = announce(1)
        request.ip = "192.0.2.7"
        _ = try state.announce(request, from: address(1), now: 0)
        let seen = try state.announce(announce(2), from: address(2), now: 0).peers.first?.address
        #expect(seen == PeerAddress(ip: address(1).ip, port: 6001))
        var configuration = TrackerConfiguration()
        configuration.acceptIPParameter = true
        state = TrackerState(configuration: configuration, seed: 1)
        _ = try state.announce(request, from: address(1), now: 0)
        #expect(try state.announce(announce(2), from: address(2), now: 0).peers.first?.address.host == "192.0.2.7")
    }
}
