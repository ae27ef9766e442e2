import Foundation
import Logging
import Metainfo
import NIOCore
import NIOPosix
import Testing
import TrackerClient
import TrackerProtocol

@testable import Tracker

/// Runs blocking socket code on a thread of its own: on a 2-core machine Swift's cooperative pool
/// has two threads, and a test blocking one in recvfrom delays every other test's continuations.
func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) -> Task<T, Never> {
    Task {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }
}

/// A blocking UDP socket on loopback, to send exactly the datagrams a client (or a forger) would.
final class RawUDP: @unchecked Sendable {
    let fd: Int32

    init(source: String = "127.0.0.1", timeout: Double = 2) {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        _ = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The port this socket is bound to.
    var port: Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func send(_ bytes: [UInt8], port: Int) {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// The next datagram, or nil after the timeout.
    func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count < 0 ? nil : Array(buffer.prefix(count))
    }

    func exchange(_ request: UDPTrackerRequest, port: Int) throws -> UDPTrackerResponse {
        send(request.encoded(), port: port)
        let datagram = try #require(receive(), "no answer to \(request)")
        return try UDPTrackerResponse(decoding: datagram)
    }
}

@Suite struct UDPTrackerResponderTests {
    let alice = PeerAddress(host: "10.0.0.1", port: 40000)!
    let bob = PeerAddress(host: "10.0.0.2", port: 40001)!

    func responder(_ configure: (inout TrackerConfiguration) -> Void = { _ in }) -> UDPTrackerResponder {
        var configuration = TrackerConfiguration()
        configure(&configuration)
        return UDPTrackerResponder(service: TrackerService(configuration: configuration, logger: silentLogger, seed: 1))
    }

    func connect(_ responder: UDPTrackerResponder, from source: PeerAddress) throws -> UInt64 {
        let answer = try UDPTrackerResponse(decoding: try #require(responder.answer(UDPTrackerRequest.connect(transactionID: 1).encoded(), from: source)))
        guard case .connect(1, let id) = answer else { throw UDPTrackerError.wrongAction(expected: 0, got: answer.action.rawValue) }
        return id
    }

    func announce(_ responder: UDPTrackerResponder, from source: PeerAddress, connection: UInt64, peer n: Int, left: Int64 = 1)
        throws -> UDPTrackerResponse
    {
        var announce = UDPAnnounceRequest(infoHash: torrentA, peerID: peerID(n), port: source.port)
        announce.left = left
        let datagram = UDPTrackerRequest.announce(connectionID: connection, transactionID: UInt32(n), announce).encoded()
        return try UDPTrackerResponse(decoding: try #require(responder.answer(datagram, from: source)))
    }

    @Test func connectAnnounceAndScrapeAreServedFromTheTrackerState() throws {
        let responder = responder()
        let aliceID = try connect(responder, from: alice)
        let bobID = try connect(responder, from: bob)
        #expect(try announce(responder, from: alice, connection: aliceID, peer: 1, left: 0)
            == .announce(transactionID: 1, interval: 1800, leechers: 0, seeders: 1, peers: []))
        // Bob learns of Alice, at the address her datagrams came from.
        #expect(try announce(responder, from: bob, connection: bobID, peer: 2)
            == .announce(transactionID: 2, interval: 1800, leechers: 1, seeders: 1, peers: [alice]))
        let scrape = UDPTrackerRequest.scrape(connectionID: aliceID, transactionID: 9, [torrentA, torrentB]).encoded()
        #expect(try UDPTrackerResponse(decoding: try #require(responder.answer(scrape, from: alice)))
            == .scrape(transactionID: 9, [ScrapeStats(complete: 1, downloaded: 0, incomplete: 1), ScrapeStats(complete: 0, downloaded: 0, incomplete: 0)]))
        #expect(responder.service.snapshot().seeders == 1)
        let metrics = String(decoding: responder.service.metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(metrics.contains("vmswarm_tracker_announces_total 2"))
        #expect(metrics.contains("vmswarm_tracker_scrapes_total 1"))
    }

    /// A connection id is the proof a client receives at its address: one made for Alice, or
    /// made up, announces nothing for Mallory, and the refusal is no larger than the datagram.
    @Test func aForgedOrBorrowedConnectionIDIsRefusedAndCounted() throws {
        let responder = responder()
        let aliceID = try connect(responder, from: alice)
        for forged in [aliceID, 0x4172_7101_980, aliceID ^ 1] {
            var announce = UDPAnnounceRequest(infoHash: torrentA, peerID: peerID(5), port: 1)
            announce.left = 0
            let datagram = UDPTrackerRequest.announce(connectionID: forged, transactionID: 77, announce).encoded()
            let answer = try #require(responder.answer(datagram, from: bob))
            #expect(answer.count <= datagram.count)
            #expect(try UDPTrackerResponse(decoding: answer) == .error(transactionID: 77, message: "unknown or expired connection id"))
            let scrape = UDPTrackerRequest.scrape(connectionID: forged, transactionID: 78, [torrentA]).encoded()
            let scrapeAnswer = try #require(responder.answer(scrape, from: bob))
            #expect(scrapeAnswer.count <= scrape.count)
            guard case .error(78, _) = try UDPTrackerResponse(decoding: scrapeAnswer) else {
                Issue.record("forged scrape answered")
                continue
            }
        }
        #expect(responder.service.snapshot().seeders == 0)
        let metrics = String(decoding: responder.service.metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(metrics.contains("vmswarm_tracker_udp_errors_total{reason=\"connection_id\"} 6"), "\(metrics)")
        #expect(!metrics.contains("vmswarm_tracker_announces_total 1"))
    }

    @Test func malformedDatagramsAreCountedAndAnsweredNoLargerThanThemselves() throws {
        let responder = responder()
        #expect(responder.answer([1, 2, 3], from: alice) == nil)  // no transaction id: no answer at all
        for datagram in [
            [UInt8](repeating: 0, count: 12) + [0, 0, 0, 1],  // a connect without the magic
            [UInt8](repeating: 0, count: 8) + [0, 0, 0, 9, 0, 0, 0, 1],  // unknown action
            [UInt8](repeating: 0, count: 8) + [0, 0, 0, 1, 0, 0, 0, 1] + [UInt8](repeating: 0, count: 40),  // short announce
        ] {
            let answer = try #require(responder.answer(datagram, from: alice))
            #expect(answer.count <= datagram.count)
            guard case .error(1, _)? = try? UDPTrackerResponse(decoding: answer) else {
                Issue.record("not an error answer: \(answer)")
                continue
            }
        }
        let metrics = String(decoding: responder.service.metrics.registry.emitToBuffer(), as: UTF8.self)
        for reason in ["truncated", "wrong_protocol_id", "unknown_action"] {
            #expect(metrics.contains("vmswarm_tracker_udp_errors_total{reason=\"\(reason)\"}"), "\(reason)")
        }
    }

    /// The allowlist, the per-address cap and the refusal counters are the HTTP tracker's own.
    @Test func theAllowlistAndPerAddressCapApplyAsOverHTTP() throws {
        let responder = responder {
            $0.allowlist = [torrentA]
            $0.maxPeersPerSource = 2
        }
        let id = try connect(responder, from: alice)
        var other = UDPAnnounceRequest(infoHash: torrentB, peerID: peerID(1), port: 1)
        other.left = 1
        let refused = try UDPTrackerResponse(decoding: try #require(
            responder.answer(UDPTrackerRequest.announce(connectionID: id, transactionID: 3, other).encoded(), from: alice)))
        #expect(refused == .error(transactionID: 3, message: TrackerRequestError.unknownTorrent.failureReason))
        for n in 1...4 { _ = try announce(responder, from: alice, connection: id, peer: n) }
        #expect(responder.service.snapshot().leechers == 2)
        let metrics = String(decoding: responder.service.metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(metrics.contains("vmswarm_tracker_rejected_total{reason=\"unknown_torrent\"} 1"), "\(metrics)")
        #expect(metrics.contains("vmswarm_tracker_peers_not_stored_total{reason=\"source_limit\"} 2"), "\(metrics)")
    }

    /// An IPv6 client gets IPv6 peers, 18 bytes each, and at most what fits 1,452 bytes.
    @Test func anIPv6ClientGetsIPv6PeersWithinOneUnfragmentedDatagram() throws {
        let responder = responder {
            $0.maxNumWant = 500
            $0.maxPeersPerSource = nil  // all in one /64
        }
        for n in 0..<100 {
            let source = PeerAddress(host: "fd00::\(String(n + 1, radix: 16))", port: 7000)!
            _ = try announce(responder, from: source, connection: try connect(responder, from: source), peer: n, left: 0)
        }
        let asker = PeerAddress(host: "fd00::ffff", port: 7000)!
        var request = UDPAnnounceRequest(infoHash: torrentA, peerID: peerID(999), port: 7000)
        request.numWant = 500
        request.left = 1
        let datagram = UDPTrackerRequest.announce(connectionID: try connect(responder, from: asker), transactionID: 4, request).encoded()
        let answer = try #require(responder.answer(datagram, from: asker))
        #expect(answer.count <= UDPTracker.unfragmentedPayload)
        guard case .announce(4, _, _, let seeders, let peers) = try UDPTrackerResponse(decoding: answer, ipv6: true) else {
            Issue.record("no announce answer")
            return
        }
        #expect(seeders == 100)
        #expect(peers.count == UDPTracker.maxPeers(ipv6: true))
        #expect(peers.allSatisfy { !$0.isIPv4 })
    }
}

@Suite(.serialized) struct UDPTrackerServerTests {
    @Test func aServerOnLoopbackAnswersConnectAnnounceAndScrapeAndRefusesAForgedID() async throws {
        let http = try await TrackerServer.start(host: "127.0.0.1", port: 0, configuration: TrackerConfiguration(), logger: silentLogger)
        let udp = try await UDPTrackerServer.start(host: "127.0.0.1", port: 0, service: http.service, logger: silentLogger)
        defer { Task { await udp.shutdown(); await http.shutdown() } }
        let client = RawUDP()
        guard case .connect(11, let id) = try client.exchange(.connect(transactionID: 11), port: udp.port) else {
            Issue.record("no connect answer")
            return
        }
        var announce = UDPAnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 6881)
        announce.left = 0
        announce.event = .started
        #expect(try client.exchange(.announce(connectionID: id, transactionID: 12, announce), port: udp.port)
            == .announce(transactionID: 12, interval: 1800, leechers: 0, seeders: 1, peers: []))
        #expect(try client.exchange(.scrape(connectionID: id, transactionID: 13, [torrentA]), port: udp.port)
            == .scrape(transactionID: 13, [ScrapeStats(complete: 1, downloaded: 0, incomplete: 0)]))
        // The HTTP front sees the peer announced over UDP: one tracker, two fronts.
        let stats = RawTCP.get(port: http.port, "/stats?format=json")
        #expect(stats.contains("\"seeders\":1"), "\(stats)")
        // Another host (another loopback address) cannot use that id.
        let forger = RawUDP(source: "127.0.0.2")
        #expect(try forger.exchange(.announce(connectionID: id, transactionID: 14, announce), port: udp.port)
            == .error(transactionID: 14, message: "unknown or expired connection id"))
        // Nothing too short to carry a transaction id is answered.
        forger.send([0, 1, 2], port: udp.port)
        #expect(forger.receive() == nil)
    }

    /// `get` and `seed` go through `TrackerClient`: a udp:// tracker in the tiers is announced to
    /// and scraped over BEP 15, and a peer announced over HTTP is learnt over UDP.
    @Test func trackerClientAnnouncesAndScrapesOverUDP() async throws {
        let http = try await TrackerServer.start(host: "127.0.0.1", port: 0, configuration: TrackerConfiguration(), logger: silentLogger)
        let udp = try await UDPTrackerServer.start(host: "127.0.0.1", port: 0, service: http.service, logger: silentLogger)
        defer { Task { await udp.shutdown(); await http.shutdown() } }
        let group = MultiThreadedEventLoopGroup.singleton
        let viaHTTP = TrackerClient(tiers: [["http://127.0.0.1:\(http.port)/announce"]], group: group, logger: silentLogger)
        var seeder = AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 7001)
        seeder.left = 0
        _ = try await viaHTTP.announce(seeder)

        let url = "udp://127.0.0.1:\(udp.port)/announce"
        let client = TrackerClient(tiers: [[url]], group: group, logger: silentLogger)
        var leecher = AnnounceRequest(infoHash: torrentA, peerID: peerID(2), port: 7002)
        leecher.left = 1000
        leecher.event = .started
        let (tracker, response) = try await client.announce(leecher)
        #expect(tracker == url)
        #expect(response.complete == 1)
        #expect(response.incomplete == 1)
        #expect(response.peers.map(\.address) == [PeerAddress(host: "127.0.0.1", port: 7001)!])
        // A second announce reuses the connection id from another socket (no connect, no error).
        _ = try await client.announce(leecher)
        #expect(!String(decoding: http.service.metrics.registry.emitToBuffer(), as: UTF8.self).contains("udp_errors"))
        let scrape = try await client.scrape([torrentA])
        #expect(scrape.files[torrentA] == ScrapeStats(complete: 1, downloaded: 0, incomplete: 1))
        let metrics = RawTCP.get(port: http.port, "/metrics")
        #expect(metrics.contains("vmswarm_tracker_announces_total 3"), "\(metrics)")
    }

    /// A tracker that reads and never answers: the request is sent again (after 200 ms, then 400 ms)
    /// and the exchange ends at its deadline, not after BEP 15's 15 · 2^8 s.
    @Test func aSilentTrackerCostsTheDeadlineAfterRetransmits() async throws {
        let silent = RawUDP(timeout: 0.2)
        var timing = UDPTrackerClient.Timing()
        timing.timeout = .seconds(1)
        timing.firstRetransmit = .milliseconds(200)
        let client = UDPTrackerClient(group: MultiThreadedEventLoopGroup.singleton, timing: timing)
        let started = Date()
        let seen = onThread {
            var count = 0
            let until = Date().addingTimeInterval(1.5)
            while Date() < until { if silent.receive() != nil { count += 1 } }
            return count
        }
        do {
            _ = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 1), to: "udp://127.0.0.1:\(silent.port)")
            Issue.record("announce to a silent tracker succeeded")
        } catch {
            #expect(error == .timedOut)
        }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.9 && elapsed < 1.6, "\(elapsed)")
        // Sent at 0, 0.2 and 0.6 s: three connect requests.
        #expect(await seen.value == 3)
    }

    /// Answers to another transaction (a late retransmit, a blind forgery) are not taken for the
    /// answer: the client waits for its own.
    @Test func anAnswerToAnotherTransactionIsIgnored() async throws {
        let fake = RawUDP(timeout: 2)
        var timing = UDPTrackerClient.Timing()
        timing.timeout = .seconds(3)
        let client = UDPTrackerClient(group: MultiThreadedEventLoopGroup.singleton, timing: timing)
        let tracker = onThread { () -> Bool in
            // Read the connect from the raw socket, learn the client's port from recvfrom.
            var buffer = [UInt8](repeating: 0, count: 2048)
            var from = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fake.fd, raw.baseAddress, raw.count, 0, $0, &length) }
                }
            }
            guard count == 16, case .connect(let transaction)? = try? UDPTrackerRequest(decoding: buffer.prefix(16)) else { return false }
            let port = Int(UInt16(bigEndian: from.sin_port))
            fake.send(UDPTrackerResponse.connect(transactionID: transaction &+ 1, connectionID: 1).encoded(), port: port)
            fake.send(UDPTrackerResponse.error(transactionID: transaction, message: "the real answer").encoded(), port: port)
            return true
        }
        do {
            _ = try await client.announce(AnnounceRequest(infoHash: torrentA, peerID: peerID(1), port: 1), to: "udp://127.0.0.1:\(fake.port)/announce")
            Issue.record("announce succeeded")
        } catch {
            #expect(error == .failure("the real answer"))
        }
        #expect(await tracker.value)
    }
}
