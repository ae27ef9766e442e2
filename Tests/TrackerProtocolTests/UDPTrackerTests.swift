import Metainfo
import Testing

@testable import TrackerProtocol

private func decodeRequest(_ bytes: [UInt8]) -> Result<UDPTrackerRequest, UDPTrackerError> {
    do throws(UDPTrackerError) { return .success(try UDPTrackerRequest(decoding: bytes)) } catch { return .failure(error) }
}

private func decodeResponse(_ bytes: [UInt8], ipv6: Bool = false) -> Result<UDPTrackerResponse, UDPTrackerError> {
    do throws(UDPTrackerError) { return .success(try UDPTrackerResponse(decoding: bytes, ipv6: ipv6)) } catch { return .failure(error) }
}

private func be(_ value: UInt64, _ width: Int) -> [UInt8] {
    (0..<width).reversed().map { UInt8(truncatingIfNeeded: value >> (UInt64($0) * 8)) }
}

@Suite struct UDPTrackerCodecTests {
    /// The connect request of BEP 15 byte for byte: magic, action 0, transaction.
    @Test func connectRequestIsTheSpecsSixteenBytes() throws {
        let bytes = UDPTrackerRequest.connect(transactionID: 0xDEAD_BEEF).encoded()
        #expect(bytes == [0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF])
        #expect(try decodeRequest(bytes).get() == .connect(transactionID: 0xDEAD_BEEF))
    }

    @Test func announceRequestRoundTripsAtNinetyEightBytes() throws {
        var announce = UDPAnnounceRequest(infoHash: hash, peerID: peer, port: 51413)
        announce.downloaded = 1 << 40
        announce.left = 12345
        announce.uploaded = 7
        announce.event = .started
        announce.ip = 0x0A00_0001
        announce.key = 0xCAFE_F00D
        announce.numWant = -1
        let message = UDPTrackerRequest.announce(connectionID: 0x0102_0304_0506_0708, transactionID: 42, announce)
        let bytes = message.encoded()
        #expect(bytes.count == 98)
        #expect(Array(bytes[8..<12]) == [0, 0, 0, 1])
        #expect(Array(bytes[80..<84]) == [0, 0, 0, 2])  // event started
        #expect(try decodeRequest(bytes).get() == message)
        // BEP 41 options after the fixed part are ignored.
        #expect(try decodeRequest(bytes + [0x02, 0x05, 0x2F, 0x61, 0x6E, 0x6E, 0x6F, 0x01]).get() == message)
    }

    @Test func anAnnounceBecomesTheSameRequestAnHTTPTrackerServes() {
        var announce = UDPAnnounceRequest(infoHash: hash, peerID: peer, port: 6881)
        announce.left = 0
        announce.event = .completed
        announce.key = 0x00AB_CDEF
        announce.ip = 0x0A00_0009
        announce.numWant = 30
        let request = announce.announceRequest
        #expect(request.isSeeder)
        #expect(request.event == .completed)
        #expect(request.key == "00ABCDEF")
        #expect(request.ip == "10.0.0.9")
        #expect(request.numWant == 30)
        // And back, from the client's side: the key's 8 hex digits keep their value.
        #expect(UDPAnnounceRequest(request) == announce)
        // A negative `left` means nothing and is not a seeder; key 0 is no key.
        announce.left = -5
        announce.key = 0
        #expect(announce.announceRequest.left == nil)
        #expect(announce.announceRequest.key == nil)
    }

    @Test func scrapeRequestRoundTripsAndIsCappedAtSeventyFour() throws {
        let hashes = (0..<74).map { n in InfoHash(bytes: [UInt8](repeating: UInt8(n), count: 20))! }
        let message = UDPTrackerRequest.scrape(connectionID: 9, transactionID: 10, hashes)
        #expect(try decodeRequest(message.encoded()).get() == message)
        let tooMany = UDPTrackerRequest.scrape(connectionID: 9, transactionID: 10, hashes + [hash]).encoded()
        #expect(decodeRequest(tooMany) == .failure(.tooManyHashes(count: 75, limit: 74)))
        let head = Array(message.encoded().prefix(16))
        #expect(decodeRequest(head) == .failure(.noHashes))
        #expect(decodeRequest(head + [1, 2, 3]) == .failure(.badLength(message: "scrape request's info-hashes", count: 3, multipleOf: 20)))
    }

    @Test func hostileRequestsAreTypedRefusals() {
        #expect(decodeRequest([]) == .failure(.truncated(message: "request", needed: 16, got: 0)))
        #expect(decodeRequest(Array(repeating: 0, count: 15)) == .failure(.truncated(message: "request", needed: 16, got: 15)))
        // A connect without the magic.
        #expect(decodeRequest(be(0x1234, 8) + be(0, 4) + be(1, 4)) == .failure(.wrongProtocolID(0x1234)))
        #expect(decodeRequest(be(1, 8) + be(7, 4) + be(1, 4)) == .failure(.unknownAction(7)))
        // Only trackers send errors.
        #expect(decodeRequest(be(1, 8) + be(3, 4) + be(1, 4)) == .failure(.unknownAction(3)))
        let announce = UDPTrackerRequest.announce(connectionID: 1, transactionID: 2,
            UDPAnnounceRequest(infoHash: hash, peerID: peer, port: 1)).encoded()
        #expect(decodeRequest(Array(announce.prefix(97))) == .failure(.truncated(message: "announce request", needed: 98, got: 97)))
        var badEvent = announce
        badEvent.replaceSubrange(80..<84, with: be(9, 4))
        #expect(decodeRequest(badEvent) == .failure(.invalidEvent(9)))
        #expect(decodeRequest([UInt8](repeating: 0xFF, count: 70_000)) == .failure(.tooLong(message: "request", count: 65_508, limit: 65_507)))
        #expect(UDPTrackerRequest.transactionID(of: announce) == 2)
        #expect(UDPTrackerRequest.transactionID(of: [1, 2, 3]) == nil)
    }

    @Test func responsesRoundTripInBothFamilies() throws {
        let v4 = [PeerAddress(host: "10.0.0.1", port: 6881)!, PeerAddress(host: "10.0.0.2", port: 1)!]
        let v6 = [PeerAddress(host: "fd00::1", port: 6881)!]
        let announce4 = UDPTrackerResponse.announce(transactionID: 5, interval: 1800, leechers: 3, seeders: 4, peers: v4)
        let bytes4 = announce4.encoded(ipv6: false)
        #expect(bytes4.count == 20 + 12)
        #expect(try decodeResponse(bytes4).get() == announce4)
        // Over IPv6 the same answer carries only the IPv6 peers, 18 bytes each.
        let mixed = UDPTrackerResponse.announce(transactionID: 5, interval: 1800, leechers: 3, seeders: 4, peers: v4 + v6)
        let bytes6 = mixed.encoded(ipv6: true)
        #expect(bytes6.count == 20 + 18)
        #expect(try decodeResponse(bytes6, ipv6: true).get()
            == .announce(transactionID: 5, interval: 1800, leechers: 3, seeders: 4, peers: v6))
        // An IPv4-mapped entry of an IPv6 answer (::ffff:10.0.0.9) is the IPv4 peer it names (a
        // fuzz finding: the harness expected only IPv6 peers from an IPv6 answer).
        let mapped = be(1, 4) + be(5, 4) + be(1800, 4) + be(0, 4) + be(1, 4) + [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF, 10, 0, 0, 9] + be(6881, 2)
        #expect(try decodeResponse(mapped, ipv6: true).get()
            == .announce(transactionID: 5, interval: 1800, leechers: 0, seeders: 1, peers: [PeerAddress(host: "10.0.0.9", port: 6881)!]))
        for message in [
            UDPTrackerResponse.connect(transactionID: 1, connectionID: .max),
            .scrape(transactionID: 2, [ScrapeStats(complete: 1, downloaded: 2, incomplete: 3), ScrapeStats(complete: 0, downloaded: 0, incomplete: 0)]),
            .error(transactionID: 3, message: "unregistered torrent"),
        ] {
            #expect(try decodeResponse(message.encoded()).get() == message)
        }
        // Scrape lines are seeders, completed, leechers on the wire.
        #expect(UDPTrackerResponse.scrape(transactionID: 0, [ScrapeStats(complete: 1, downloaded: 2, incomplete: 3)]).encoded().suffix(12)
            == be(1, 4) + be(2, 4) + be(3, 4))
    }

    @Test func hostileAnswersAreBoundedOrRefused() {
        #expect(decodeResponse([0, 0, 0]) == .failure(.truncated(message: "answer", needed: 8, got: 3)))
        #expect(decodeResponse(be(0, 4) + be(1, 4) + be(0, 4)) == .failure(.truncated(message: "connect answer", needed: 16, got: 12)))
        #expect(decodeResponse(be(1, 4) + be(1, 4) + be(0, 8)) == .failure(.truncated(message: "announce answer", needed: 20, got: 16)))
        #expect(decodeResponse(be(9, 4) + be(1, 4)) == .failure(.unknownAction(9)))
        #expect(decodeResponse(be(1, 4) + be(1, 4) + be(0, 12) + [1, 2, 3, 4, 5])
            == .failure(.badLength(message: "announce answer's peers", count: 5, multipleOf: 6)))
        #expect(decodeResponse(be(2, 4) + be(1, 4) + be(0, 13)) == .failure(.badLength(message: "scrape answer", count: 13, multipleOf: 12)))
        // An interval of 2^32 − 1 (−1 as a signed number) is bounded to a day, not a silence for good.
        if case .announce(_, let interval, _, _, _)? = try? decodeResponse(be(1, 4) + be(1, 4) + be(0xFFFF_FFFF, 4) + be(0, 8)).get() {
            #expect(interval == AnnounceResponse.maxInterval)
        } else {
            Issue.record("announce answer not read")
        }
        // An error's message is shown on one line, bounded.
        let message = Array("line one\nline two\u{1B}[31m".utf8) + [UInt8](repeating: 0x41, count: 5000)
        if case .error(_, let text)? = try? decodeResponse(be(3, 4) + be(1, 4) + message).get() {
            #expect(!text.contains("\n") && !text.contains("\u{1B}"))
            #expect(text.utf8.count <= AnnounceResponse.maxMessageLength)
        } else {
            Issue.record("error answer not read")
        }
    }

    @Test func answersAreMatchedToTheirRequest() throws {
        let answer = UDPTrackerResponse.connect(transactionID: 7, connectionID: 1)
        #expect(try answer.answering(.connect, transactionID: 7) == answer)
        #expect(throws: UDPTrackerError.transactionMismatch(expected: 8, got: 7)) { try answer.answering(.connect, transactionID: 8) }
        #expect(throws: UDPTrackerError.wrongAction(expected: 1, got: 0)) { try answer.answering(.announce, transactionID: 7) }
        let error = UDPTrackerResponse.error(transactionID: 7, message: "no")
        #expect(try error.answering(.announce, transactionID: 7) == error)
    }
}

@Suite struct UDPConnectionIDTests {
    let alice = PeerAddress(host: "10.0.0.1", port: 6881)!
    let mallory = PeerAddress(host: "10.0.0.2", port: 6881)!

    @Test func anIDIsValidForItsAddressForTwoEpochsOnly() {
        let ids = UDPConnectionIDs(secret: Array(repeating: 7, count: 32))
        let t0 = 1000 * UDPConnectionIDs.epochLength  // the start of an epoch
        let id = ids.id(for: alice, now: t0)
        #expect(ids.isValid(id, for: alice, now: t0))
        #expect(ids.isValid(id, for: alice, now: t0 + 2 * UDPConnectionIDs.epochLength - 1))
        #expect(!ids.isValid(id, for: alice, now: t0 + 2 * UDPConnectionIDs.epochLength))
        #expect(!ids.isValid(id, for: alice, now: t0 - 1))  // not before it was made
        #expect(!ids.isValid(id, for: mallory, now: t0))
        // Another port of the same host is the same client (a new socket per exchange, a NAT).
        #expect(ids.isValid(id, for: PeerAddress(host: "10.0.0.1", port: 6882)!, now: t0))
        // Another tracker secret, another id: nothing to learn from one tracker about another.
        #expect(UDPConnectionIDs(secret: Array(repeating: 8, count: 32)).id(for: alice, now: t0) != id)
        // The same address as IPv4-mapped IPv6 is the same client.
        let mapped = PeerAddress(ip: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 0, 0, 1], port: 6881)!
        #expect(ids.isValid(id, for: mapped, now: t0))
    }

    @Test func hostileClockValuesDoNotTrap() {
        let ids = UDPConnectionIDs()
        for now in [Double.nan, -.infinity, .infinity, -1, 1e300] {
            _ = ids.isValid(ids.id(for: alice, now: now), for: alice, now: now)
        }
    }

    /// The HMAC matches RFC 2202's first HMAC-SHA1 test vector, so it is the construction it claims.
    @Test func theKeyedHashIsHMACSHA1() {
        let ids = UDPConnectionIDs(secret: [UInt8](repeating: 0x0B, count: 20))
        #expect(ids.hmac(Array("Hi There".utf8)) == HexCoding.decode("b617318655057264e28bc0b6fb378c8ef146be00"))
    }
}
