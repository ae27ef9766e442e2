import Metainfo
import NIOHTTP1
import TrackerProtocol

/// What both HTTP fronts of the tracker write: the NIO one (HTTPS, and plain HTTP off Linux) and the
/// listener of its own (plain HTTP on Linux). One function answers a request for both, so the URI
/// limit, the routing, the counters and the bytes on the wire cannot drift apart.
extension TrackerService {
    /// Answers `request`, appending the whole response (status line, headers, body) to `out`.
    /// Returns whether the connection stays open for another request.
    ///
    /// A URI longer than `maxURILength` is refused with 414 and the connection closed; anything
    /// else goes to `respond`. HEAD gets the headers of the GET answer, without its body.
    public func answer(_ request: TrackerHTTPRequest, remote: PeerAddress?, maxURILength: Int, into out: inout [UInt8]) -> Bool {
        let response: TrackerHTTPResponse
        if request.uri.utf8.count > maxURILength {
            metrics.httpError(414)
            response = TrackerHTTPWire.uriTooLong
        } else {
            response = respond(method: request.method, uri: request.uri, remote: remote)
        }
        let keepAlive = request.keepAlive && response.status != 414
        TrackerHTTPWire.write(response, http10: request.http10, keepAlive: keepAlive, omitBody: request.method == "HEAD", into: &out)
        return keepAlive
    }

    /// Answers bytes that are not a request the tracker reads (`TrackerHTTPFramer`'s failure, or
    /// NIO's parser error): counted, answered, and the connection is to be closed after it.
    public func answerUnreadable(status: Int, into out: inout [UInt8]) {
        metrics.httpError(status)
        if status == 414 {
            TrackerHTTPWire.write(TrackerHTTPWire.uriTooLong, http10: false, keepAlive: false, omitBody: false, into: &out)
        } else {
            out.append(contentsOf: TrackerHTTPWire.badRequest.utf8)
        }
    }
}

enum TrackerHTTPWire {
    static let uriTooLong = TrackerHTTPResponse(status: 414, contentType: "text/plain", body: failureResponse("request URI too long"))
    static let badRequest = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    /// The status line, headers and body in one buffer (one write on the socket). Content-Length is
    /// the body's, also for HEAD.
    static func write(_ response: TrackerHTTPResponse, http10: Bool, keepAlive: Bool, omitBody: Bool, into out: inout [UInt8]) {
        out.reserveCapacity(out.count + 160 + (omitBody ? 0 : response.body.count))
        out.append(contentsOf: (http10 ? "HTTP/1.0 " : "HTTP/1.1 ").utf8)
        if response.status == 200 {
            out.append(contentsOf: "200 OK\r\n".utf8)
        } else {
            out.append(contentsOf: "\(response.status) \(HTTPResponseStatus(statusCode: response.status).reasonPhrase)\r\n".utf8)
        }
        out.append(contentsOf: "Content-Type: ".utf8)
        out.append(contentsOf: response.contentType.utf8)
        out.append(contentsOf: "\r\nContent-Length: ".utf8)
        appendDecimal(response.body.count, to: &out)
        out.append(contentsOf: (keepAlive ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n").utf8)
        for (name, value) in response.extraHeaders {
            out.append(contentsOf: name.utf8)
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: value.utf8)
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: "\r\n".utf8)
        if !omitBody { out.append(contentsOf: response.body) }
    }

    private static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var value = max(0, value)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { raw in
            repeat {
                raw[19 - count] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
                count += 1
            } while value > 0
            out.append(contentsOf: raw[(20 - count)...])
        }
    }
}
