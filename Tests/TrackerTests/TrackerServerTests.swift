import Foundation
import Logging
import Metainfo
import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing
import TrackerClient
import TrackerProtocol

@testable import Tracker

/// A blocking TCP exchange on loopback, for sending exactly the bytes a hostile client would.
enum RawTCP {
    /// Sends `chunks` (pausing `pause` between them) and reads until the server closes or `timeout`.
    /// `source` is the loopback address the client binds (any of 127.0.0.0/8), to act as another host.
    static func exchange(port: Int, chunks: [[UInt8]], pause: Double = 0, timeout: Double = 5,
                         source: String = "127.0.0.1") -> (response: String, closedBy: Double) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { return ("bind failed", 0) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return ("connect failed", 0) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let start = Date()
        for chunk in chunks {
            if chunk.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0 { break }
            if pause > 0 { Thread.sleep(forTimeInterval: pause) }
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while Date().timeIntervalSince(start) < timeout {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
            if let text = String(bytes: received, encoding: .isoLatin1), text.contains("\r\n\r\n"),
                let length = text.range(of: "Content-Length: ").map({ Int(text[$0.upperBound...].prefix { $0.isNumber }) ?? 0 }),
                let headerEnd = text.range(of: "\r\n\r\n"), text[headerEnd.upperBound...].utf8.count >= length,
                !text.contains("Connection: close")
            { break }
        }
        return (String(decoding: received, as: UTF8.self), Date().timeIntervalSince(start))
    }

    static func get(port: Int, _ target: String, source: String = "127.0.0.1") -> String {
        exchange(port: port, chunks: [Array("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)], source: source).response
    }
}

let silentLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

@Suite(.serialized) struct TrackerServerTests {
    /// `ownListener`: plain HTTP on the tracker's own listener (the default), or on SwiftNIO as HTTPS is.
    func withServer(
        ownListener: Bool = true,
        _ configure: (inout TrackerConfiguration, inout TrackerServer.Limits) -> Void = { _, _ in },
        _ body: (TrackerServer) async throws -> Void
    ) async throws {
        var configuration = TrackerConfiguration()
        var limits = TrackerServer.Limits()
        limits.ownHTTPListener = ownListener
        configure(&configuration, &limits)
        let server = try await TrackerServer.start(
            host: "127.0.0.1", port: 0, configuration: configuration, limits: limits, logger: silentLogger)
        do {
            try await body(server)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    @Test(arguments: [true, false]) func clientsLearnOfEachOtherOverHTTP(ownListener: Bool) async throws {
        try await withServer(ownListener: ownListener) { server in
            let url = "http://127.0.0.1:\(server.port)/announce"
            let client = TrackerClient(tiers: [[url]], group: MultiThreadedEventLoopGroup.singleton, logger: silentLogger)
            var first = AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 7001)
            first.left = 0
            first.event = .started
            _ = try await client.announce(first)
            var second = AnnounceRequest(infoHash: torrentA, peerID: peerID(2), port: 7002)
            second.left = 10
            let (tracker, answer) = try await client.announce(second)
            #expect(tracker == url)
            #expect(answer.peers.map(\.address.description) == ["127.0.0.1:7001"])
            #expect((answer.complete, answer.incomplete) == (1, 1))
            let scrape = try await client.scrape([torrentA, torrentB])
            #expect(scrape.files == [torrentA: ScrapeStats(complete: 1, downloaded: 0, incomplete: 1)])
            let stats = RawTCP.get(port: server.port, "/stats?format=json")
            #expect(stats.contains("\"seeders\":1"))
            let metrics = RawTCP.get(port: server.port, "/metrics")
            #expect(metrics.contains("vmswarm_tracker_announces_total 2"))
            #expect(metrics.contains("vmswarm_tracker_scrapes_total 1"))
            let html = RawTCP.get(port: server.port, "/stats")
            #expect(html.contains("text/html") && html.contains("announces/s"))
        }
    }

    @Test(arguments: [true, false]) func hostileRequestsGetClearAnswersAndAreCounted(ownListener: Bool) async throws {
        try await withServer(ownListener: ownListener) { server in
            let port = server.port
            #expect(RawTCP.get(port: port, "/announce?info_hash=%01&peer_id=x&port=1").contains("failure reason"))
            #expect(RawTCP.get(port: port, "/announce?\(hashQueryA)&peer_id=-TT0001-abcdefghijkl&port=0").contains("invalid 'port'"))
            #expect(RawTCP.get(port: port, "/announce?%zz").contains("malformed query"))
            #expect(RawTCP.get(port: port, "/nowhere").contains("404"))
            let post = RawTCP.exchange(port: port, chunks: [Array("POST /announce HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".utf8)]).response
            #expect(post.contains("405"))
            let longURL = "/announce?" + String(repeating: "a", count: 100 * 1024)
            let long = RawTCP.exchange(port: port, chunks: [Array("GET \(longURL) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)]).response
            #expect(long.contains(" 414 ") || long.contains(" 400 "), "100 KiB URL: \(long.prefix(80))")
            let garbage = RawTCP.exchange(port: port, chunks: [Array("\u{01}\u{02}GARBAGE\r\n\r\n".utf8)]).response
            #expect(garbage.contains(" 400 ") || garbage.isEmpty)
            let metrics = RawTCP.get(port: port, "/metrics")
            #expect(metrics.contains("reason=\"invalid_info_hash\""))
            #expect(metrics.contains("reason=\"invalid_port\""))
            #expect(metrics.contains("reason=\"malformed_query\""))
            #expect(metrics.contains("status=\"405\""))
            #expect(metrics.contains("status=\"404\""))
            // Still serving after all that.
            #expect(RawTCP.get(port: port, "/").contains("200 OK"))
        }
    }

    @Test(arguments: [true, false]) func slowClientsAreCutOff(ownListener: Bool) async throws {
        try await withServer(ownListener: ownListener, { _, limits in limits.requestTimeout = .milliseconds(800) }) { server in
            let request = Array("GET /announce?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            let port = server.port
            let (_, closedAfter) = await onThread { RawTCP.exchange(port: port, chunks: request.map { [$0] }, pause: 0.1, timeout: 8) }.value
            #expect(closedAfter < 3, "a client sending a byte every 0.1 s was closed after \(closedAfter) s")
            #expect(RawTCP.get(port: server.port, "/metrics").contains("status=\"408\""))
        }
    }

    @Test func aFloodOfInfoHashesStaysBounded() async throws {
        try await withServer({ configuration, _ in configuration.maxTorrents = 200 }) { server in
            let group = MultiThreadedEventLoopGroup.singleton
            let client = TrackerClient(tiers: [["http://127.0.0.1:\(server.port)/announce"]], group: group, logger: silentLogger)
            var refused = 0
            for n in 0..<400 {
                var bytes = [UInt8](repeating: 0, count: 20)
                bytes[0] = UInt8(n & 0xFF)
                bytes[1] = UInt8(n >> 8)
                let request = AnnounceRequest(infoHash: InfoHash(bytes: bytes)!, peerID: peerID(n), port: 9000)
                do { _ = try await client.announce(request) } catch { refused += 1 }
            }
            #expect(refused == 200)
            #expect(server.service.snapshot().torrents == 200)
            #expect(RawTCP.get(port: server.port, "/metrics").contains("reason=\"tracker_full\""))
        }
    }

    /// A flood of made-up seeders from one host, over HTTP: the real peers (other hosts, here other
    /// loopback addresses with loopback capped) are still stored and handed out, and the refusals
    /// are counted. On the old tracker the 3,000 fakes filled the 1,000 slots and every answer.
    @Test func aFloodOfPeerIDsFromOneAddressLeavesRealPeersReturned() async throws {
        try await withServer({ configuration, _ in
            configuration.maxPeersPerTorrent = 1000
            configuration.capLoopback = true
        }) { server in
            let port = server.port
            for n in 0..<3000 {
                let answer = RawTCP.get(port: port, "/announce?\(hashQueryA)&peer_id=-FK0001-\(String(format: "%012d", n))&port=6881&left=0&numwant=0")
                if n % 500 == 0 { #expect(answer.contains("8:interval"), "flood announce \(n): \(answer.prefix(120))") }
            }
            for n in 2...6 {
                let answer = RawTCP.get(port: port, "/announce?\(hashQueryA)&peer_id=-TT0001-\(String(format: "%012d", n))&port=700\(n)&left=0", source: "127.0.0.\(n)")
                #expect(answer.contains("8:interval"))
            }
            let snapshot = server.service.snapshot()
            #expect(snapshot.seeders == 16 + 5)
            let answer = RawTCP.get(port: port, "/announce?\(hashQueryA)&peer_id=-TT0001-000000000099&port=7099&left=10&numwant=50&compact=0", source: "127.0.0.99")
            for n in 2...6 { #expect(answer.contains("-TT0001-\(String(format: "%012d", n))"), "real peer \(n) not returned") }
            #expect(RawTCP.get(port: port, "/metrics").contains("vmswarm_tracker_peers_not_stored_total{reason=\"source_limit\"} 2984"))
        }
    }

    /// Over HTTP, a `stopped` carrying another peer's id from another host is ignored.
    @Test func aStoppedFromAnotherHostIsIgnored() async throws {
        try await withServer { server in
            let port = server.port
            let victim = "peer_id=-TT0001-000000000001&port=7001&left=0&key=a1b2c3d4"
            #expect(RawTCP.get(port: port, "/announce?\(hashQueryA)&\(victim)", source: "127.0.0.2").contains("8:complete" + "i1e"))
            let forged = RawTCP.get(port: port, "/announce?\(hashQueryA)&\(victim)&event=stopped", source: "127.0.0.3")
            #expect(forged.contains("8:completei1e"), "forged stopped: \(forged.suffix(80))")
            #expect(server.service.snapshot().seeders == 1)
            #expect(RawTCP.get(port: port, "/metrics").contains("vmswarm_tracker_peers_not_stored_total{reason=\"not_owner\"} 1"))
            #expect(RawTCP.get(port: port, "/announce?\(hashQueryA)&\(victim)&event=stopped", source: "127.0.0.2").contains("8:completei0e"))
        }
    }

    @Test func allowlistModeRefusesOthers() async throws {
        try await withServer({ configuration, _ in configuration.allowlist = [torrentA] }) { server in
            #expect(RawTCP.get(port: server.port, "/announce?\(hashQueryB)&peer_id=-TT0001-abcdefghijkl&port=5").contains("unregistered torrent"))
            #expect(RawTCP.get(port: server.port, "/announce?\(hashQueryA)&peer_id=-TT0001-abcdefghijkl&port=5").contains("8:interval"))
            server.service.setAllowlist([torrentB])
            #expect(RawTCP.get(port: server.port, "/announce?\(hashQueryB)&peer_id=-TT0001-abcdefghijkl&port=5").contains("8:interval"))
        }
    }
}

let hashQueryA = "info_hash=" + PercentEncoding.encode(torrentA.bytes)
let hashQueryB = "info_hash=" + PercentEncoding.encode(torrentB.bytes)

@Suite struct TrackerClientTests {
    @Test func tiersFallBackAndRememberWhoAnswered() async throws {
        let server = try await TrackerServer.start(host: "127.0.0.1", port: 0, configuration: TrackerConfiguration(), logger: silentLogger)
        let good = "http://127.0.0.1:\(server.port)/announce"
        let dead = "http://127.0.0.1:1/announce"
        let client = TrackerClient(tiers: [[dead], ["udp://127.0.0.1:2/announce", good]], group: MultiThreadedEventLoopGroup.singleton, logger: silentLogger)
        let (tracker, _) = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 1))
        #expect(tracker == good)
        await server.shutdown()
        do {
            _ = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 1))
            Issue.record("announce succeeded with every tracker down")
        } catch {
            #expect(error.failures.count == 3)
            // No UDP tracker listens on port 2: the ICMP answer fails it at once, not after the timeout.
            #expect(error.failures.contains { $0.tracker.hasPrefix("udp://") && $0.reason.contains("UDP socket") }, "\(error)")
        }
    }

    /// Three trackers that accept connections and never answer: an announce `within` 800 ms gives
    /// up on all of them by then (the last ones not even tried), where each would otherwise hold
    /// it for its whole timeout.
    @Test func anAnnounceWithinADeadlineEndsThenWhateverTheTrackersDo() async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let tiers = (1...3).map { ["http://127.0.0.1:\(port)/t\($0)/announce"] }
        let client = TrackerClient(tiers: tiers, group: MultiThreadedEventLoopGroup.singleton, logger: silentLogger)
        let started = Date()
        do {
            _ = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 1), within: .milliseconds(800))
            Issue.record("a tracker that never answers answered")
        } catch {
            #expect(error.failures.count == 3)
            #expect(error.failures.first?.reason == "timed out", "\(error)")
            #expect(error.failures.last?.reason.contains("not tried") == true, "\(error)")
        }
        let took = -started.timeIntervalSinceNow
        #expect(took >= 0.7 && took < 1.5, "took \(took) s")
    }

    @Test func tierOrderFollowsBEP12() {
        var random = SplitMix64(seed: 3)
        var tiers = TrackerTiers([["a", "b", "c"], [], ["d"]], using: &random)
        #expect(tiers.tiers.count == 2)
        #expect(Set(tiers.tiers[0]) == ["a", "b", "c"])
        tiers.succeeded("c")
        #expect(tiers.tiers[0].first == "c")
        #expect(tiers.order.last == "d")
    }

    @Test func backoffDoublesWithJitterAndCaps() {
        var random = SplitMix64(seed: 9)
        let policy = RetryPolicy()
        for (failures, base) in [(1, 15.0), (2, 30.0), (3, 60.0), (8, 1800.0), (100, 1800.0)] {
            let delay = policy.delay(afterFailures: failures, using: &random)
            #expect(delay >= base * 0.9 && delay <= base * 1.1, "\(failures) failures: \(delay)")
        }
        #expect(policy.delay(afterInterval: 30, minInterval: 60) == 60)
    }

    @Test func scrapeURLConvention() {
        #expect(TrackerClient.scrapeURL(forAnnounce: "http://t/announce") == "http://t/scrape")
        #expect(TrackerClient.scrapeURL(forAnnounce: "http://t/x/announce.php?k=1") == "http://t/x/scrape.php?k=1")
        #expect(TrackerClient.scrapeURL(forAnnounce: "http://t/a") == nil)
    }
}

@Suite struct TrackerIPv6AndAllowlistTests {
    @Test func ipv6PeersComeBackAsPeers6() async throws {
        let server = try await TrackerServer.start(host: "::1", port: 0, configuration: TrackerConfiguration(), logger: silentLogger)
        let client = TrackerClient(tiers: [["http://[::1]:\(server.port)/announce"]], group: MultiThreadedEventLoopGroup.singleton, logger: silentLogger)
        do {
            _ = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 7001))
            let (_, answer) = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(2), port: 7002))
            #expect(answer.peers.map(\.address.description) == ["[0:0:0:0:0:0:0:1]:7001"])
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    @Test func allowlistFromAFolderOfTorrentsOrAFileOfHashes() throws {
        let hashes = try Allowlist.load(fixturesURL.appendingPathComponent("torrents").path)
        #expect(hashes == Set(FixtureTorrent.all.compactMap { InfoHash(hex: $0.infoHash) }))
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try "# comment\n\n\(torrentA.hex)  # trailing comment\n\(torrentB.hex.uppercased())\n".write(toFile: folder.file("list"), atomically: true, encoding: .utf8)
        #expect(try Allowlist.load(folder.file("list")) == [torrentA, torrentB])
        try "\(torrentA.hex)\nxyz\n".write(toFile: folder.file("bad"), atomically: true, encoding: .utf8)
        #expect(throws: Allowlist.LoadError.self) { try Allowlist.load(folder.file("bad")) }
        #expect(throws: Allowlist.LoadError.self) { try Allowlist.load(folder.file("missing")) }
    }
}

/// The seed inputs of the tracker-request fuzz target (Fixtures/fuzz/tracker-request: one raw HTTP
/// request line each), driven the way the fuzzer drives them: split into method and target and
/// handed to `TrackerService.respond`, with no socket. Each gets an answer a client can read.
@Suite struct TrackerFuzzSeedTests {
    /// What the fuzz target does with its input bytes: a request line, `METHOD SP TARGET SP VERSION`.
    static func drive(_ bytes: [UInt8], _ service: TrackerService) -> TrackerHTTPResponse? {
        let line = String(decoding: bytes.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2 else { return nil }
        return service.respond(method: String(parts[0]), uri: String(parts[1]), remote: PeerAddress(ip: [10, 1, 2, 3], port: 40000))
    }

    @Test func everySeedGetsAnAnswer() throws {
        let folder = fixturesURL.appendingPathComponent("fuzz/tracker-request")
        // Request lines only: `sessions/` holds the fuzzer's own seeds (several requests, with a
        // control byte each), which tools/fuzz reads from sub-folders too.
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().filter { name in
            var isFolder: ObjCBool = false
            return FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path, isDirectory: &isFolder) && !isFolder.boolValue
        }
        #expect(names.count >= 5)
        let service = TrackerService(configuration: TrackerConfiguration(), logger: silentLogger, seed: 1)
        for name in names {
            let bytes = Array(try Data(contentsOf: folder.appendingPathComponent(name)))
            let response = try #require(Self.drive(bytes, service), "\(name) is not a request line")
            #expect([200, 404, 405].contains(response.status), "\(name): \(response.status)")
            #expect(!response.body.isEmpty, "\(name)")
        }
    }
}

/// /stats and /metrics must not hold announces up: with 30,000 torrents tracked, announces made
/// while another thread renders the stats page over and over wait at most a small fraction of
/// what one page takes. (The old tracker sorted every torrent, formatting hashes as hex for each
/// comparison, under the announce lock: announces waited for the whole sort.)
@Suite struct TrackerStatsLockTests {
    @Test func statsPagesDoNotBlockAnnounces() throws {
        let service = TrackerService(configuration: TrackerConfiguration(), logger: silentLogger, seed: 1)
        let remote = PeerAddress(ip: [10, 9, 0, 1], port: 1)
        for n in 0..<30_000 {
            let hash = PercentEncoding.encode((0..<20).map { UInt8(truncatingIfNeeded: n >> (($0 % 3) * 8)) &+ UInt8($0) })
            _ = service.respond(method: "GET", uri: "/announce?info_hash=\(hash)&peer_id=-TT0001-\(String(format: "%012d", n))&port=1", remote: remote)
        }
        #expect(service.snapshot(largest: 0).torrents == 30_000)
        var pageTime = Date()
        _ = service.respond(method: "GET", uri: "/stats?format=json", remote: remote)
        let onePage = -pageTime.timeIntervalSinceNow

        final class Shared: Sendable {
            let stop = Atomic<Bool>(false)
            let pages = Atomic<Int>(0)
        }
        let shared = Shared()
        let renderer = Thread {
            while !shared.stop.load(ordering: .relaxed) {
                _ = service.respond(method: "GET", uri: "/stats", remote: remote)
                _ = service.respond(method: "GET", uri: "/metrics", remote: remote)
                shared.pages.add(1, ordering: .relaxed)
            }
        }
        renderer.start()
        var slowest = 0.0
        pageTime = Date()
        while shared.pages.load(ordering: .relaxed) < 3 && -pageTime.timeIntervalSinceNow < 60 {
            let started = Date()
            _ = service.respond(method: "GET", uri: "/announce?\(hashQueryA)&peer_id=-TT0001-000000000001&port=2", remote: remote)
            slowest = max(slowest, -started.timeIntervalSinceNow)
        }
        shared.stop.store(true, ordering: .relaxed)
        while !renderer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        #expect(shared.pages.load(ordering: .relaxed) >= 3)
        print("stats lock: one page \(onePage) s, slowest announce \(slowest) s")
        #expect(slowest < max(0.05, onePage / 4), "an announce waited \(slowest) s; one stats page takes \(onePage) s")
    }
}
