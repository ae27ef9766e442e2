import Foundation
import Metainfo
import TestSupport
import Testing
import TrackerProtocol

@testable import Tracker

/// The plain-HTTP front's request framer, without sockets: bytes in as a client sends them (whole,
/// split anywhere, pipelined, hostile), requests or one failure out.
@Suite struct TrackerHTTPFramerTests {
    /// Feeds `chunks` one append at a time, collecting every event.
    static func frame(_ chunks: [[UInt8]], maxURILength: Int = 8192) -> [TrackerHTTPFramer.Event] {
        var framer = TrackerHTTPFramer(maxURILength: maxURILength)
        var events: [TrackerHTTPFramer.Event] = []
        for chunk in chunks {
            framer.append(chunk)
            while let event = framer.next() { events.append(event) }
        }
        return events
    }

    static func frame(_ text: String, maxURILength: Int = 8192) -> [TrackerHTTPFramer.Event] {
        frame([Array(text.utf8)], maxURILength: maxURILength)
    }

    static let announce = "GET /announce?info_hash=%01%02&port=6881 HTTP/1.1\r\nHost: tracker\r\nUser-Agent: x\r\n\r\n"

    @Test func aWholeRequestInOneReadIsOneRequest() {
        #expect(Self.frame(Self.announce) == [.request(TrackerHTTPRequest(
            method: "GET", uri: "/announce?info_hash=%01%02&port=6881", http10: false, keepAlive: true))])
    }

    @Test func aRequestSplitAtAnyByteIsTheSameRequest() {
        let bytes = Array(Self.announce.utf8)
        let whole = Self.frame([bytes])
        for cut in 1..<bytes.count {
            #expect(Self.frame([Array(bytes[..<cut]), Array(bytes[cut...])]) == whole, "cut at \(cut)")
        }
        #expect(Self.frame(bytes.map { [$0] }) == whole, "one byte at a time")
    }

    @Test func pipelinedRequestsComeOutInOrderAndAHalfOneWaits() {
        var framer = TrackerHTTPFramer()
        framer.append(Array("GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c HT".utf8))
        #expect(framer.next() == .request(TrackerHTTPRequest(method: "GET", uri: "/a")))
        #expect(framer.next() == .request(TrackerHTTPRequest(method: "HEAD", uri: "/b")))
        #expect(framer.next() == nil)
        #expect(!framer.isIdle)
        framer.append(Array("TP/1.1\r\n\r\n".utf8))
        #expect(framer.next() == .request(TrackerHTTPRequest(method: "GET", uri: "/c")))
        #expect(framer.next() == nil)
        #expect(framer.isIdle)
    }

    @Test func keepAliveFollowsTheVersionAndTheConnectionHeader() {
        func keepAlive(_ text: String) -> Bool? {
            guard case .request(let request)? = Self.frame(text).first else { return nil }
            return request.keepAlive
        }
        #expect(keepAlive("GET / HTTP/1.1\r\n\r\n") == true)
        #expect(keepAlive("GET / HTTP/1.1\r\nConnection: close\r\n\r\n") == false)
        #expect(keepAlive("GET / HTTP/1.1\r\nconnection:  Upgrade, CLOSE \r\n\r\n") == false)
        #expect(keepAlive("GET / HTTP/1.0\r\n\r\n") == false)
        #expect(keepAlive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") == true)
        guard case .request(let request)? = Self.frame("GET / HTTP/1.0\r\n\r\n").first else {
            Issue.record("no request")
            return
        }
        #expect(request.http10)
    }

    @Test func bareLineFeedsAndEmptyLinesBeforeARequestAreRead() {
        #expect(Self.frame("\r\n\r\nGET /x HTTP/1.1\nHost: y\n\n") == [.request(TrackerHTTPRequest(method: "GET", uri: "/x"))])
    }

    @Test func aBodyIsDroppedEvenWhenItComesInPieces() {
        let head = Array("POST /announce HTTP/1.1\r\nContent-Length: 10\r\n\r\n".utf8)
        let body = Array("0123456789".utf8)
        let next = Array("GET /after HTTP/1.1\r\n\r\n".utf8)
        let expected: [TrackerHTTPFramer.Event] = [
            .request(TrackerHTTPRequest(method: "POST", uri: "/announce")), .request(TrackerHTTPRequest(method: "GET", uri: "/after")),
        ]
        #expect(Self.frame([head + body + next]) == expected)
        let stream = head + body + next
        for cut in 1..<stream.count {
            #expect(Self.frame([Array(stream[..<cut]), Array(stream[cut...])]) == expected, "cut at \(cut)")
        }
        // The request waits for the whole body.
        var framer = TrackerHTTPFramer()
        framer.append(head + body.prefix(4))
        #expect(framer.next() == nil)
        framer.append(Array(body.dropFirst(4)))
        #expect(framer.next() == .request(TrackerHTTPRequest(method: "POST", uri: "/announce")))
    }

    @Test func aLineLongerThanTheLimitIs414AsSoonAsItIsTooLong() {
        var framer = TrackerHTTPFramer(maxURILength: 100)
        framer.append(Array("GET /".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 120))
        #expect(framer.next() == nil, "within the limit plus the method and version: more may come")
        framer.append([UInt8](repeating: UInt8(ascii: "a"), count: 100))
        #expect(framer.next() == .failure(status: 414))
        framer.append(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(framer.next() == nil, "nothing after a failure")
        #expect(framer.buffered == 0)
        // A whole line far over the limit at once, with its end.
        #expect(Self.frame("GET /" + String(repeating: "b", count: 100_000) + " HTTP/1.1\r\n\r\n", maxURILength: 100) == [.failure(status: 414)])
    }

    @Test func aURIJustOverTheLimitOnALineThatFitsIsAnsweredWith414AndClosed() {
        let uri = "/announce?" + String(repeating: "a", count: 95)
        let events = Self.frame("GET \(uri) HTTP/1.1\r\n\r\n", maxURILength: 100)
        #expect(events == [.request(TrackerHTTPRequest(method: "GET", uri: uri))])
        guard case .request(let request)? = events.first else { return }
        let service = TrackerService(configuration: TrackerConfiguration(), logger: silentLogger, seed: 1)
        var out: [UInt8] = []
        #expect(!service.answer(request, remote: nil, maxURILength: 100, into: &out))
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 414 URI Too Long\r\n") && text.contains("Connection: close\r\n"), "\(text)")
    }

    @Test func headersBeyondTheirLimitAre400() {
        let header = "X-Filler: " + String(repeating: "f", count: 1000) + "\r\n"
        var framer = TrackerHTTPFramer(maxURILength: 100)
        framer.append(Array("GET / HTTP/1.1\r\n".utf8))
        var failed: TrackerHTTPFramer.Event?
        for _ in 0..<40 where failed == nil {
            framer.append(Array(header.utf8))
            failed = framer.next()
        }
        #expect(failed == .failure(status: 400))
        #expect(framer.buffered == 0)
        // The same headers all at once, with the end of the head.
        #expect(Self.frame("GET / HTTP/1.1\r\n" + String(repeating: header, count: 40) + "\r\n") == [.failure(status: 400)])
    }

    @Test func whatIsNotAnHTTP1RequestIs400() {
        let hostile = [
            "\u{01}\u{02}GARBAGE\r\n\r\n",
            "GET /\r\n\r\n",  // HTTP/0.9
            "GET / HTTP/2.0\r\n\r\n",
            "GET / http/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / x HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            " GET / HTTP/1.1\r\n\r\n",
            "GET /a\u{7F} HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\rX\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\u{00}b\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ]
        for text in hostile {
            #expect(Self.frame(text) == [.failure(status: 400)], "\(text.debugDescription)")
        }
        // The same length twice is one length.
        #expect(Self.frame("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")
            == [.request(TrackerHTTPRequest(method: "POST", uri: "/"))])
    }

    /// A client sending a byte at a time costs linear time: the search for the head's end resumes
    /// where it stopped (16 KiB of headers, one byte each).
    @Test func aTrickleIsReadInLinearTime() {
        let text = "GET / HTTP/1.1\r\n" + String(repeating: "X-A: b\r\n", count: 2000) + "\r\n"
        let started = Date()
        var framer = TrackerHTTPFramer()
        var events: [TrackerHTTPFramer.Event] = []
        for byte in text.utf8 {
            framer.append([byte])
            if let event = framer.next() { events.append(event) }
        }
        #expect(events == [.request(TrackerHTTPRequest(method: "GET", uri: "/"))])
        #expect(-started.timeIntervalSinceNow < 2)
    }

    /// Random bytes, and requests with random bytes changed, split at random: never a crash, at most
    /// one failure and nothing after it, and memory held within the limits.
    @Test func randomBytesNeverBreakIt() {
        var random = SplitMix64(seed: 16)
        let good = Array(Self.announce.utf8)
        for round in 0..<2000 {
            var stream: [UInt8] = []
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                if Bool.random(using: &random) {
                    var request = good
                    for _ in 0..<Int.random(in: 0...3, using: &random) {
                        request[Int.random(in: 0..<request.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                    }
                    stream += request
                } else {
                    stream += (0..<Int.random(in: 0...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                }
            }
            var framer = TrackerHTTPFramer(maxURILength: 64)
            var failures = 0
            var afterFailure = 0
            var rest = stream[...]
            while !rest.isEmpty {
                let take = Int.random(in: 1...max(1, rest.count), using: &random)
                framer.append(Array(rest.prefix(take)))
                rest = rest.dropFirst(take)
                while let event = framer.next() {
                    if failures > 0 { afterFailure += 1 }
                    if case .failure(let status) = event {
                        #expect(status == 400 || status == 414)
                        failures += 1
                    }
                }
                #expect(framer.buffered <= 64 + TrackerHTTPFramer.requestLineOverhead + TrackerHTTPFramer.maxHeaderBytes + take,
                    "round \(round)")
            }
            #expect(failures <= 1 && afterFailure == 0, "round \(round)")
        }
    }
}

/// The bytes both fronts write for an answer (`TrackerService.answer`).
@Suite struct TrackerHTTPWireTests {
    let service = TrackerService(configuration: TrackerConfiguration(), logger: silentLogger, seed: 1)

    func answer(_ request: TrackerHTTPRequest) -> (String, Bool) {
        var out: [UInt8] = []
        let keepAlive = service.answer(request, remote: PeerAddress(ip: [10, 0, 0, 1], port: 1), maxURILength: 8192, into: &out)
        return (String(decoding: out, as: UTF8.self), keepAlive)
    }

    @Test func anAnswerIsStatusLineHeadersAndBody() {
        let body = "vmswarm tracker: /announce, /scrape, /stats, /metrics\n"
        #expect(answer(TrackerHTTPRequest(method: "GET", uri: "/")) == (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: keep-alive\r\n\r\n\(body)", true))
        #expect(answer(TrackerHTTPRequest(method: "HEAD", uri: "/", http10: true, keepAlive: false)) == (
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n", false))
        let (refused, open) = answer(TrackerHTTPRequest(method: "POST", uri: "/announce"))
        #expect(refused.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n") && refused.contains("\r\nAllow: GET, HEAD\r\n") && open)
    }

    @Test func unreadableRequestsAreAnsweredAndCounted() {
        var out: [UInt8] = []
        service.answerUnreadable(status: 400, into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        out = []
        service.answerUnreadable(status: 414, into: &out)
        #expect(String(decoding: out, as: UTF8.self).hasPrefix("HTTP/1.1 414 URI Too Long\r\n"))
        let metrics = String(decoding: service.metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(metrics.contains("status=\"400\"} 1") && metrics.contains("status=\"414\"} 1"), "\(metrics)")
    }
}
