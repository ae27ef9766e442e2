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

    /// A client that restarts with a new peer id leaves its old entry at the same address until it
    /// expires: an answer names that address once, and never to the client itself (fuzz finding).
    @Test mutating func anAddressIsAnsweredOnceAndNeverToItself() throws {
        var before = announce(1, event: .started)
        before.port = 7000
        _ = try state.announce(before, from: address(1), now: 0)
        var restarted = announce(99, event: .started)
        restarted.port = 7000
        let own = try state.announce(restarted, from: address(1), now: 1)
        #expect(own.peers.isEmpty, "its own address under its old id: \(own.peers)")
        let other = try state.announce(announce(2, event: .started), from: address(2), now: 2)
        #expect(other.peers.map(\.address) == [PeerAddress(ip: address(1).ip, port: 7000)!])
    }

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
        // A client whose periodic announce already said left=0 before its queued `completed`
        // (Transmission does; CI saw the count stay 0) is counted when the event comes.
        _ = try state.announce(announce(3, event: .started), from: address(3), now: 8)
        _ = try state.announce(announce(3, left: 0), from: address(3), now: 9)
        _ = try state.announce(announce(3, left: 0, event: .completed), from: address(3), now: 9.1)
        #expect(state.completedCount == 2)
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

    // MARK: Hostile clients (issue 15)

    /// One address announces 5,000 made-up seeders: it keeps 16 slots, real peers are still stored
    /// once the torrent would have been full, and a leecher's answer holds every real peer.
    @Test mutating func aFloodFromOneAddressCannotEclipseATorrent() throws {
        var configuration = TrackerConfiguration()
        configuration.maxPeersPerTorrent = 1000
        state = TrackerState(configuration: configuration, seed: 1)
        let attacker = PeerAddress(ip: [203, 0, 113, 9], port: 6881)!
        for n in 10_000..<15_000 { _ = try state.announce(announce(n, left: 0), from: attacker, now: 0) }
        #expect(state.lastOutcome == .sourceLimit)
        #expect(state.seederCount == 16)
        for n in 1...5 { _ = try state.announce(announce(n, left: 0), from: address(n), now: 1) }
        #expect(state.lastOutcome == .stored)
        #expect(state.seederCount == 21)
        let answer = try state.announce(announce(99, numWant: 50), from: address(99), now: 2)
        #expect(Set((1...5).map(peerID)).isSubset(of: Set(answer.peers.compactMap(\.peerID))))
        #expect(state.takeNotices().contains(.sourceLimitReached(torrentA, source: "203.0.113.9", 16)))
        // The cap is per torrent: the same address may hold 16 peers of another one.
        for n in 20_000..<20_020 { _ = try state.announce(announce(n, torrentB), from: attacker, now: 3) }
        #expect(state.scrape(ScrapeRequest(infoHashes: [torrentB])).files[torrentB]?.incomplete == 16)
    }

    /// An IPv6 host owns its /64: addresses inside it share one cap; other /64s have their own.
    @Test mutating func ipv6SourcesAreCappedPerSlash64() throws {
        func v6(_ subnet: UInt8, _ host: UInt16) -> PeerAddress {
            PeerAddress(ip: [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, subnet, 0, 0, 0, 0, 0, 0, UInt8(host >> 8), UInt8(host & 0xFF)], port: 1)!
        }
        for n in 0..<100 { _ = try state.announce(announce(n), from: v6(1, UInt16(n)), now: 0) }
        #expect(state.leecherCount == 16)
        for n in 100..<110 { _ = try state.announce(announce(n), from: v6(2, UInt16(n)), now: 0) }
        #expect(state.leecherCount == 26)
    }

    /// Loopback is exempt by default (every test peer lives there); `capLoopback` caps it too.
    @Test mutating func loopbackIsExemptUnlessCapped() throws {
        let loopback = PeerAddress(ip: [127, 0, 0, 1], port: 1)!
        let v6Loopback = PeerAddress(ip: [UInt8](repeating: 0, count: 15) + [1], port: 1)!
        for n in 0..<60 { _ = try state.announce(announce(n), from: n % 2 == 0 ? loopback : v6Loopback, now: 0) }
        #expect(state.leecherCount == 60)
        var configuration = TrackerConfiguration()
        configuration.capLoopback = true
        configuration.maxPeersPerSource = 8
        state = TrackerState(configuration: configuration, seed: 1)
        for n in 0..<60 { _ = try state.announce(announce(n), from: loopback, now: 0) }
        #expect(state.leecherCount == 8)
    }

    /// A peer's entry is changed or removed only from its address, and with its BEP 7 key if it
    /// sent one; a stranger using its id changes nothing and still gets an ordinary answer.
    @Test mutating func onlyTheOwnerChangesOrRemovesAnEntry() throws {
        var victim = announce(1, left: 0)
        victim.key = "a1b2c3d4"
        _ = try state.announce(victim, from: address(1), now: 0)
        _ = try state.announce(announce(2), from: address(2), now: 0)

        var forged = announce(1, event: .stopped)
        forged.key = "a1b2c3d4"  // even with the right key, from another address
        var answer = try state.announce(forged, from: address(3), now: 1)
        #expect(state.lastOutcome == .notOwner)
        #expect(answer.complete == 1)
        forged.key = "deadbeef"  // the right address with another key (a neighbour behind the same NAT)
        _ = try state.announce(forged, from: address(1), now: 1)
        #expect(state.lastOutcome == .notOwner)
        forged.key = nil  // or without one
        _ = try state.announce(forged, from: address(1), now: 1)
        #expect(state.lastOutcome == .notOwner)
        #expect(state.seederCount == 1)

        // Nor can a stranger move it to a leecher or point it at its own address.
        var moved = announce(1, left: 50)
        moved.port = 9999
        answer = try state.announce(moved, from: address(3), now: 2)
        #expect(state.lastOutcome == .notOwner)
        let seen = try state.announce(announce(2), from: address(2), now: 3).peers
        #expect(seen.map(\.address) == [PeerAddress(ip: address(1).ip, port: 6001)!])
        #expect((state.seederCount, state.leecherCount) == (1, 1))

        // The owner itself, from its address with its key, is obeyed.
        var stop = announce(1, left: 0, event: .stopped)
        stop.key = "a1b2c3d4"
        answer = try state.announce(stop, from: address(1), now: 4)
        #expect(state.lastOutcome == .removed)
        #expect((answer.complete, answer.incomplete) == (0, 1))
        // A peer that never sent a key is owned by its address alone.
        _ = try state.announce(announce(2, event: .stopped), from: address(9), now: 5)
        #expect(state.leecherCount == 1)
        _ = try state.announce(announce(2, event: .stopped), from: address(2), now: 5)
        #expect(state.torrentCount == 0)
    }

    /// The totals behind /stats and /metrics are kept as peers come and go; they must equal a
    /// recount over every torrent after any mix of announces, stops and expiry.
    @Test mutating func maintainedTotalsMatchARecount() throws {
        var configuration = TrackerConfiguration()
        configuration.peerTimeout = 50
        state = TrackerState(configuration: configuration, seed: 1)
        var random = SeededRandom(seed: 7)
        let hashes = (0..<5).map { n in InfoHash(bytes: [UInt8](repeating: UInt8(n), count: 20))! }
        for step in 0..<4000 {
            let n = Int.random(in: 0..<300, using: &random)
            let events: [AnnounceEvent] = [.none, .started, .completed, .stopped]
            let request = announce(n, hashes[n % 5], left: Bool.random(using: &random) ? 0 : 10,
                event: events.randomElement(using: &random)!)
            _ = try? state.announce(request, from: address(n % 40), now: Double(step) / 20)  // hash 4 is refused once the allowlist drops it
            if step % 500 == 0 { state.expire(now: Double(step) / 20) }
            if step % 1000 == 999 { state.setAllowlist(Set(hashes.prefix(4))) }
            let summaries = state.torrentSummaries()
            #expect(state.seederCount == summaries.reduce(0) { $0 + $1.seeders })
            #expect(state.leecherCount == summaries.reduce(0) { $0 + $1.leechers })
            #expect(state.completedCount == summaries.reduce(0) { $0 + $1.completed })
            if state.seederCount != summaries.reduce(0, { $0 + $1.seeders }) { break }
        }
        #expect(state.torrentCount > 0)
    }
}
