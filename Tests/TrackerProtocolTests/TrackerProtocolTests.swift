import Bencode
import Metainfo
import Testing

@testable import TrackerProtocol

let hash = InfoHash(bytes: Array(1...20))!
let peer = PeerID(bytes: Array("-TT0001-abcdefghijkl".utf8))!
let hashQuery = "info_hash=" + PercentEncoding.encode(hash.bytes)
let peerQuery = "peer_id=" + PercentEncoding.encode(peer.bytes)

func refusal(_ query: String) -> TrackerRequestError? {
    do {
        _ = try AnnounceRequest(query: query)
        return nil
    } catch {
        return error
    }
}

@Suite struct QueryStringTests {
    @Test func decodesPercentEscapesToBytes() throws {
        let pairs = try QueryString.parse("a=%00%ff%41&b=x+y&c&d=")
        #expect(pairs.map(\.name) == ["a", "b", "c", "d"])
        #expect(pairs[0].value == [0x00, 0xFF, 0x41])
        #expect(pairs[1].value == Array("x+y".utf8))
        #expect(pairs[2].value == [])
    }

    @Test func refusesBrokenEscapesAndFloods() {
        #expect(throws: TrackerRequestError.self) { try QueryString.parse("a=%4") }
        #expect(throws: TrackerRequestError.self) { try QueryString.parse("a=%zz") }
        #expect(throws: TrackerRequestError.self) { try QueryString.parse("=1") }
        let flood = (0..<200).map { "k\($0)=1" }.joined(separator: "&")
        #expect(throws: TrackerRequestError.malformedQuery("more than 128 parameters")) { try QueryString.parse(flood) }
        #expect(throws: TrackerRequestError.self) { try QueryString.parse("a=%") }
        #expect(throws: TrackerRequestError.self) { try QueryString.parse("%zz=1") }
    }

    /// The parser reads a query's bytes in place when it can (a native string or substring) and a
    /// copy when it cannot (a bridged or foreign string): both give the same pairs.
    @Test func substringsAndEscapedNamesParseAlike() throws {
        let uri = "/announce?%70eer=%41&&x==&y"
        let query = uri[uri.index(after: uri.firstIndex(of: "?")!)...]
        let pairs = try QueryString.parse(query)
        #expect(pairs.map(\.name) == ["peer", "x", "y"])
        #expect(pairs.map(\.value) == [[0x41], Array("=".utf8), []])
    }

    /// Numbers are read from the bytes as `Int64(String)` reads them.
    @Test func integersReadAsInt64Does() {
        for text in ["0", "7", "-1", "+5", "007", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
                     "", "-", "+", "1e3", " 1", "1 ", "0x10", "--1", "123456789012345678901"] {
            #expect(AnnounceRequest.integer(Array(text.utf8)) == Int64(text), "\(text)")
        }
    }
}

@Suite struct AnnounceRequestTests {
    @Test func parsesEveryField() throws {
        let request = try AnnounceRequest(query: "\(hashQuery)&\(peerQuery)&port=6881&uploaded=10&downloaded=20&left=0"
            + "&event=completed&numwant=30&compact=0&no_peer_id=1&ip=10.0.0.9&key=abc&unknown=1")
        #expect(request.infoHash == hash)
        #expect(request.peerID == peer)
        #expect(request.port == 6881)
        #expect((request.uploaded, request.downloaded, request.left) == (10, 20, 0))
        #expect(request.isSeeder)
        #expect(request.event == .completed)
        #expect(request.numWant == 30)
        #expect(!request.compact)
        #expect(request.noPeerID)
        #expect(request.ip == "10.0.0.9")
        #expect(request.key == "abc")
    }

    @Test func clientQueryRoundTrips() throws {
        var request = AnnounceRequest(infoHash: hash, peerID: peer, port: 51413)
        request.left = 12345
        request.event = .started
        request.numWant = 80
        request.key = "k 1"
        #expect(try AnnounceRequest(query: request.query) == request)
    }

    /// Issue 15, found by the tracker-request fuzzer: a key of 50 bytes 0xAA was cut to 64 bytes and
    /// then decoded with U+FFFD for each bad byte, so the stored key was 150 bytes the client never sent.
    @Test func aKeyThatIsNotShortUTF8IsIgnored() throws {
        let base = "\(hashQuery)&\(peerQuery)&port=6881"
        let binary = try AnnounceRequest(query: base + "&key=" + String(repeating: "%aa", count: 50))
        #expect(binary.key == nil)
        let long = try AnnounceRequest(query: base + "&key=" + String(repeating: "k", count: AnnounceRequest.maximumKeyLength + 1))
        #expect(long.key == nil)
        let longest = String(repeating: "é", count: AnnounceRequest.maximumKeyLength / 2)
        let kept = try AnnounceRequest(query: base + "&key=" + PercentEncoding.encode(Array(longest.utf8)))
        #expect(kept.key == longest)
        #expect(try AnnounceRequest(query: kept.query) == kept)
    }

    @Test func hostileValuesGetClearReasons() {
        #expect(refusal("\(peerQuery)&port=1") == .missingParameter("info_hash"))
        #expect(refusal("\(hashQuery)&port=1") == .missingParameter("peer_id"))
        #expect(refusal("\(hashQuery)&\(peerQuery)") == .missingParameter("port"))
        #expect(refusal("info_hash=%01%02&\(peerQuery)&port=1") == .invalidParameter("info_hash", "must be 20 bytes, got 2"))
        #expect(refusal("\(hashQuery)\(PercentEncoding.encode([0x15]))&\(peerQuery)&port=1")?.metricLabel == "invalid_info_hash")
        #expect(refusal("\(hashQuery)&peer_id=short&port=1")?.metricLabel == "invalid_peer_id")
        for port in ["0", "65536", "-1", "x", "99999999999999999999999"] {
            #expect(refusal("\(hashQuery)&\(peerQuery)&port=\(port)")?.metricLabel == "invalid_port", "port \(port)")
        }
        #expect(refusal("\(hashQuery)&\(peerQuery)&port=1&left=-5")?.metricLabel == "invalid_left")
        #expect(refusal("\(hashQuery)&\(peerQuery)&port=1&event=exploded")?.metricLabel == "invalid_event")
        #expect(refusal("\(hashQuery)&\(peerQuery)&port=1&numwant=lots")?.metricLabel == "invalid_numwant")
    }

    @Test func hugeAndNegativeNumwantAreKeptForTheTrackerToClamp() throws {
        #expect(try AnnounceRequest(query: "\(hashQuery)&\(peerQuery)&port=1&numwant=-1").numWant == -1)
        #expect(try AnnounceRequest(query: "\(hashQuery)&\(peerQuery)&port=1&numwant=9223372036854775807").numWant == .max)
    }
}

@Suite struct AnnounceResponseTests {
    let v4 = PeerAddress(host: "10.1.2.3", port: 6881)!
    let v6 = PeerAddress(host: "2001:db8::1", port: 443)!

    @Test func compactRoundTripWithIPv6() throws {
        let response = AnnounceResponse(interval: 900, minInterval: 60, complete: 3, incomplete: 4,
            peers: [AnnouncedPeer(address: v4), AnnouncedPeer(address: v6)])
        let bytes = response.encoded(compact: true, includePeerIDs: true)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("5:peers6:"))
        #expect(text.contains("6:peers618:"))
        #expect(try AnnounceResponse(decoding: bytes) == response)
    }

    @Test func dictionaryModelWithAndWithoutPeerIDs() throws {
        let response = AnnounceResponse(interval: 900, peers: [AnnouncedPeer(address: v4, peerID: peer), AnnouncedPeer(address: v6, peerID: peer)])
        let withIDs = try AnnounceResponse(decoding: response.encoded(compact: false, includePeerIDs: true))
        #expect(withIDs.peers == response.peers)
        let withoutIDs = try AnnounceResponse(decoding: response.encoded(compact: false, includePeerIDs: false))
        #expect(withoutIDs.peers.map(\.peerID) == [nil, nil])
    }

    @Test func hostileAnswersAreRefused() {
        func decode(_ text: String) -> TrackerResponseError? {
            do {
                _ = try AnnounceResponse(decoding: Array(text.utf8))
                return nil
            } catch {
                return error
            }
        }
        #expect(decode("d14:failure reason7:go awaye") == .failure("go away"))
        #expect(decode("d8:intervali60e5:peers5:abcdee") == .malformed("'peers' has 5 bytes, not a multiple of 6"))
        #expect(decode("d5:peers0:e") == .malformed("no valid 'interval'"))
        #expect(decode("d8:intervali60e5:peersi3ee") == .malformed("'peers' is neither a string nor a list"))
        #expect(decode("<html>") != nil)
        // Bad dictionary entries (hostnames, port 0) are skipped, the rest kept.
        let mixed = "d8:intervali60e5:peersld2:ip9:localhost4:porti1eed2:ip7:1.2.3.44:porti0eed2:ip7:1.2.3.44:porti9eeee"
        let peers = try? AnnounceResponse(decoding: Array(mixed.utf8)).peers
        #expect(peers?.map(\.address.description) == ["1.2.3.4:9"])
    }

    /// Issue 15: numbers and texts a tracker controls are bounded before they reach the client.
    /// Before, `interval` 2^63-1 was kept (the next announce never came), negative counts were kept,
    /// and a megabyte of warning with escape sequences went to the terminal as it was.
    @Test func hostileNumbersAndTextsAreBounded() throws {
        let huge = try AnnounceResponse(decoding: Array(
            "d8:completei-5e10:incompletei-1e8:intervali9223372036854775807e12:min intervali-60e5:peers0:e".utf8))
        #expect(huge.interval == AnnounceResponse.maxInterval)
        #expect(huge.minInterval == nil)
        #expect(huge.complete == nil)
        #expect(huge.incomplete == nil)
        let long = try AnnounceResponse(decoding: Array(
            "d8:intervali60e12:min intervali99999999999e5:peers0:15:warning message5000:\(String(repeating: "w", count: 4996))\u{1B}[2Je".utf8))
        #expect(long.minInterval == AnnounceResponse.maxInterval)
        #expect(long.warning?.utf8.count == AnnounceResponse.maxMessageLength)
        let escape = try AnnounceResponse(decoding: Array("d8:intervali60e5:peers0:15:warning message7:a\u{1B}[2J\nbe".utf8))
        #expect(escape.warning == "a [2J b")
        #expect(throws: TrackerResponseError.failure("no  thanks")) {
            try AnnounceResponse(decoding: Array("d14:failure reason10:no\r\nthankse".utf8))
        }
        // Compact lists: 18-byte IPv6 entries checked too, port 0 skipped, at most `maxPeers` kept.
        #expect(throws: TrackerResponseError.malformed("'peers6' has 17 bytes, not a multiple of 18")) {
            try AnnounceResponse(decoding: Array("d8:intervali60e5:peers0:6:peers617:\(String(repeating: "x", count: 17))e".utf8))
        }
        let portZero: [UInt8] = [1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 0, 7]
        let zero = try AnnounceResponse(decoding: Array("d8:intervali60e5:peers12:".utf8) + portZero + Array("e".utf8))
        #expect(zero.peers.map(\.address.description) == ["1.2.3.4:7"])
        let many = [UInt8]((0..<(AnnounceResponse.maxPeers + 5)).flatMap { _ in [10, 0, 0, 1, 0, 9] as [UInt8] })
        let flooded = try AnnounceResponse(decoding: Array("d8:intervali60e5:peers\(many.count):".utf8) + many + Array("e".utf8))
        #expect(flooded.peers.count == AnnounceResponse.maxPeers)
    }

    @Test func failureResponseIsBencoded() {
        #expect(String(decoding: failureResponse("no"), as: UTF8.self) == "d14:failure reason2:noe")
    }
}

@Suite struct ScrapeTests {
    @Test func parsesSeveralHashesAndLimitsThem() throws {
        let other = InfoHash(bytes: [UInt8](repeating: 9, count: 20))!
        let request = try ScrapeRequest(query: ScrapeRequest(infoHashes: [hash, other]).query)
        #expect(request.infoHashes == [hash, other])
        #expect(throws: TrackerRequestError.missingParameter("info_hash")) { try ScrapeRequest(query: "") }
        let many = (0..<101).map { _ in hashQuery }.joined(separator: "&")
        #expect(throws: TrackerRequestError.tooManyHashes(limit: 100)) { try ScrapeRequest(query: many) }
    }

    @Test func responseRoundTrips() throws {
        let response = ScrapeResponse(files: [hash: ScrapeStats(complete: 1, downloaded: 2, incomplete: 3)])
        #expect(try ScrapeResponse(decoding: response.encoded()) == response)
    }

    /// Issue 15: negative counts were kept as they came; keys that are not 20 bytes are skipped.
    @Test func hostileCountsAreBounded() throws {
        let entry = "d8:completei-3e10:downloadedi9223372036854775807e10:incompletei-9223372036854775808ee"
        let bytes = Array("d5:filesd20:".utf8) + hash.bytes + Array(entry.utf8) + Array("3:abcdeee".utf8)
        let response = try ScrapeResponse(decoding: bytes)
        #expect(response.files == [hash: ScrapeStats(complete: 0, downloaded: Int.max, incomplete: 0)])
        #expect(throws: TrackerResponseError.malformed("no 'files' dictionary")) {
            try ScrapeResponse(decoding: Array("d5:filesi1ee".utf8))
        }
    }
}

@Suite struct PeerAddressTests {
    @Test func parsesAndPrints() {
        #expect(PeerAddress(host: "127.0.0.1", port: 80)?.compact == [127, 0, 0, 1, 0, 80])
        #expect(PeerAddress(host: "::1", port: 1)?.description == "[0:0:0:0:0:0:0:1]:1")
        #expect(PeerAddress(host: "::ffff:10.0.0.1", port: 5)?.description == "10.0.0.1:5")
        #expect(PeerAddress(host: "fe80::1:2", port: 5)?.ip.count == 16)
        #expect(PeerAddress(host: "1:2:3:4:5:6:7:8", port: 5)?.host == "1:2:3:4:5:6:7:8")
        for bad in ["1.2.3", "01.2.3.4", "256.1.1.1", "1.2.3.4.5", "::g", "1::2::3", "", "host.example", "1:2:3:4:5:6:7:8:9"] {
            #expect(PeerAddress(host: bad, port: 1) == nil, "\(bad)")
        }
    }
}

@Suite struct CompactEncodingTests {
    /// The hand-written compact encoder must equal the canonical generic encoding, field for field.
    @Test func fastPathIsCanonical() {
        let v4 = PeerAddress(host: "10.1.2.3", port: 6881)!
        let v6 = PeerAddress(host: "2001:db8::1", port: 443)!
        let variants = [
            AnnounceResponse(interval: 1800),
            AnnounceResponse(interval: 1800, minInterval: 60, complete: 0, incomplete: 12, peers: [AnnouncedPeer(address: v4)]),
            AnnounceResponse(interval: 5, minInterval: 1, complete: 3, incomplete: 4,
                peers: [AnnouncedPeer(address: v6), AnnouncedPeer(address: v4)], warning: "slow down"),
        ]
        for response in variants {
            var dictionary: [[UInt8]: BencodeValue] = [Array("interval".utf8): .integer(Int64(response.interval))]
            if let value = response.minInterval { dictionary[Array("min interval".utf8)] = .integer(Int64(value)) }
            if let value = response.complete { dictionary[Array("complete".utf8)] = .integer(Int64(value)) }
            if let value = response.incomplete { dictionary[Array("incomplete".utf8)] = .integer(Int64(value)) }
            if let value = response.warning { dictionary[Array("warning message".utf8)] = .string(value) }
            dictionary[Array("peers".utf8)] = .bytes(response.peers.filter(\.address.isIPv4).flatMap(\.address.compact))
            let v6Peers = response.peers.filter { !$0.address.isIPv4 }
            if !v6Peers.isEmpty { dictionary[Array("peers6".utf8)] = .bytes(v6Peers.flatMap(\.address.compact)) }
            #expect(response.encoded(compact: true, includePeerIDs: false) == BencodeValue.dictionary(dictionary).encoded())
        }
    }
}
