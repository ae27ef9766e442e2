/// One HTTP/1.x request as the tracker reads it: what `TrackerService.respond` needs, and how to
/// answer (the version, and whether the connection stays open).
public struct TrackerHTTPRequest: Sendable, Equatable {
    public var method: String
    public var uri: String
    /// HTTP/1.0 (answered as 1.0); otherwise HTTP/1.1.
    public var http10: Bool
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    public var keepAlive: Bool

    public init(method: String, uri: String, http10: Bool = false, keepAlive: Bool = true) {
        self.method = method
        self.uri = uri
        self.http10 = http10
        self.keepAlive = keepAlive
    }
}

/// Cuts a connection's bytes into HTTP/1.x requests, for the tracker's own plain-HTTP front: bytes
/// in (as they come, split anywhere), complete requests or one failure out. Pure: no socket, no clock.
///
/// What it takes: a request line `METHOD SP TARGET SP HTTP/1.0|HTTP/1.1`, header lines, an empty
/// line (CRLF or a bare LF ends a line; empty lines before a request are skipped, RFC 9112 2.2), and
/// pipelined requests one after another. A `Content-Length` body is read and dropped (the tracker
/// takes no bodies; a POST is answered 405 once its body is in). What it refuses, with the
/// connection to be closed after the answer: a request line longer than the URI limit allows (414),
/// a head larger than `maxHeaderBytes` beyond it, anything that is not HTTP/1.x, control bytes,
/// header folding, `Transfer-Encoding` (no chunked bodies) and conflicting lengths (400). A URI
/// over the limit on a line that does fit is a request like any other; `TrackerService.answer`
/// refuses it (414), as it does for the NIO front.
///
/// Memory is bounded by the limits plus what one read adds: bytes of a body are dropped as they
/// come, and the search for a head's end resumes where the last one stopped, so a client trickling
/// a byte at a time costs linear time.
public struct TrackerHTTPFramer: Sendable {
    public enum Event: Sendable, Equatable {
        case request(TrackerHTTPRequest)
        /// The bytes are not a request the tracker reads: answer `status` (400 or 414) and close.
        /// The framer yields nothing after it.
        case failure(status: Int)
    }

    /// Header bytes allowed after the request line. Tracker clients send a handful of short headers.
    public static let maxHeaderBytes = 16 * 1024
    /// Bytes a request line may hold besides its URI: the method, two spaces, the version, CRLF.
    static let requestLineOverhead = 32

    public let maxURILength: Int
    private var bytes: [UInt8] = []
    /// The first byte not consumed yet.
    private var start = 0
    /// Where the search for the end of the head resumes (no head ends before it).
    private var searchFrom = 0
    /// Whether the request line being read has ended (a LF seen since `start`).
    private var lineEnded = false
    /// Body bytes still to drop before `waiting` is complete.
    private var bodyLeft = 0
    private var waiting: TrackerHTTPRequest?
    private var failed = false

    public init(maxURILength: Int = 8192) {
        self.maxURILength = maxURILength
    }

    /// No byte held and no request half-read: the connection is between requests.
    public var isIdle: Bool { start == bytes.count && waiting == nil }

    /// Bytes held, waiting to make up a request.
    public var buffered: Int { bytes.count - start }

    public mutating func append(_ input: UnsafeRawBufferPointer) {
        guard !failed, !input.isEmpty else { return }
        var input = input[...]
        if bodyLeft > 0 {
            // Everything buffered was dropped into the body before bodyLeft was set: these come next.
            let dropped = min(bodyLeft, input.count)
            bodyLeft -= dropped
            input = input.dropFirst(dropped)
        }
        if start == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            start = 0
            searchFrom = 0
        } else if start >= 4096 && start * 2 >= bytes.count {
            bytes.removeFirst(start)
            searchFrom -= start
            start = 0
        }
        bytes.append(contentsOf: input)
    }

    public mutating func append(_ input: [UInt8]) {
        input.withUnsafeBytes { append($0) }
    }

    /// The next complete request, a failure, or nil when more bytes are needed.
    public mutating func next() -> Event? {
        if failed { return nil }
        if let request = waiting {
            guard bodyLeft == 0 else { return nil }
            waiting = nil
            return .request(request)
        }
        let count = bytes.count
        if !lineEnded {
            // Empty lines before a request line are skipped.
            while start < count && (bytes[start] == .cr || bytes[start] == .lf) { start += 1 }
        }
        var scan = max(searchFrom, start)
        var end = -1
        while scan < count {
            guard let lf = bytes[scan..<count].firstIndex(of: .lf) else {
                scan = count
                break
            }
            lineEnded = true
            if lf + 1 < count && bytes[lf + 1] == .lf {
                end = lf + 2
                break
            }
            if lf + 2 < count && bytes[lf + 1] == .cr && bytes[lf + 2] == .lf {
                end = lf + 3
                break
            }
            if lf + 1 >= count || (lf + 2 >= count && bytes[lf + 1] == .cr) {
                scan = lf  // the head may end with the next bytes: look at this LF again
                break
            }
            scan = lf + 1
        }
        let lineLimit = maxURILength + Self.requestLineOverhead
        if end < 0 {
            searchFrom = scan
            if !lineEnded && count - start > lineLimit { return fail(414) }
            if count - start > lineLimit + Self.maxHeaderBytes { return fail(400) }
            return nil
        }
        if end - start > lineLimit + Self.maxHeaderBytes {
            // All of it in at once: too long a request line is a URI too long, as above.
            let lineEnd = bytes[start..<end].firstIndex(of: .lf) ?? end
            return fail(lineEnd - start > lineLimit ? 414 : 400)
        }
        let head = Self.parseHead(bytes[start..<end], lineLimit: lineLimit)
        start = end
        searchFrom = end
        lineEnded = false
        switch head {
        case .failure(let status):
            return fail(status)
        case .request(let request, let bodyLength):
            let here = min(bodyLength, count - start)
            start += here
            searchFrom = start
            bodyLeft = bodyLength - here
            if bodyLeft > 0 {
                waiting = request
                return nil
            }
            return .request(request)
        }
    }

    private mutating func fail(_ status: Int) -> Event {
        failed = true
        bytes = []
        start = 0
        searchFrom = 0
        return .failure(status: status)
    }

    enum Head: Equatable {
        case request(TrackerHTTPRequest, bodyLength: Int)
        case failure(Int)
    }

    /// One head (request line, headers, the empty line), whole.
    static func parseHead(_ head: ArraySlice<UInt8>, lineLimit: Int) -> Head {
        var lines = Lines(rest: head)
        guard let firstLine = lines.next() else { return .failure(400) }
        let line = firstLine.last == .cr ? firstLine.dropLast() : firstLine
        if line.count > lineLimit { return .failure(414) }
        // METHOD SP TARGET SP VERSION, one space each.
        guard let space1 = line.firstIndex(of: .space), let space2 = line.lastIndex(of: .space), space1 < space2 else {
            return .failure(400)
        }
        let method = line[line.startIndex..<space1]
        let target = line[(space1 + 1)..<space2]
        let version = line[(space2 + 1)...]
        guard !method.isEmpty, method.count <= 32, method.allSatisfy(\.isTokenByte),
            !target.isEmpty, target.allSatisfy({ $0 > 0x20 && $0 != 0x7F })
        else { return .failure(400) }
        let http10: Bool
        if version.elementsEqual("HTTP/1.1".utf8) {
            http10 = false
        } else if version.elementsEqual("HTTP/1.0".utf8) {
            http10 = true
        } else {
            return .failure(400)
        }
        var close = false
        var keepAliveAsked = false
        var contentLength: Int?
        while let rawLine = lines.next() {
            let field = rawLine.last == .cr ? rawLine.dropLast() : rawLine
            if field.isEmpty { break }  // the empty line: the end of the head
            guard let colon = field.firstIndex(of: .colon) else { return .failure(400) }
            let name = field[field.startIndex..<colon]
            // No folding (a line starting with white space), no space before the colon.
            guard !name.isEmpty, name.allSatisfy(\.isTokenByte) else { return .failure(400) }
            var value = field[(colon + 1)...]
            while let first = value.first, first == .space || first == .tab { value = value.dropFirst() }
            while let last = value.last, last == .space || last == .tab { value = value.dropLast() }
            guard value.allSatisfy({ $0 == .tab || ($0 >= 0x20 && $0 != 0x7F) }) else { return .failure(400) }
            if name.equalsLowercased("connection") {
                for token in value.split(separator: .comma) {
                    var token = token[...]
                    while let first = token.first, first == .space || first == .tab { token = token.dropFirst() }
                    while let last = token.last, last == .space || last == .tab { token = token.dropLast() }
                    if token.equalsLowercased("close") { close = true }
                    if token.equalsLowercased("keep-alive") { keepAliveAsked = true }
                }
            } else if name.equalsLowercased("content-length") {
                guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= .zero && $0 <= .nine }) else {
                    return .failure(400)
                }
                let length = value.reduce(0) { $0 * 10 + Int($1 - .zero) }
                if let contentLength, contentLength != length { return .failure(400) }
                contentLength = length
            } else if name.equalsLowercased("transfer-encoding") {
                return .failure(400)  // no chunked bodies: a tracker takes no body at all
            }
        }
        let keepAlive = http10 ? keepAliveAsked && !close : !close
        let request = TrackerHTTPRequest(
            method: String(decoding: method, as: UTF8.self), uri: String(decoding: target, as: UTF8.self),
            http10: http10, keepAlive: keepAlive)
        return .request(request, bodyLength: contentLength ?? 0)
    }
}

/// The lines of a head, without their LF (and without allocating an array of them).
private struct Lines: IteratorProtocol {
    var rest: ArraySlice<UInt8>

    mutating func next() -> ArraySlice<UInt8>? {
        guard !rest.isEmpty else { return nil }
        guard let lf = rest.firstIndex(of: .lf) else {
            defer { rest = rest[rest.endIndex...] }
            return rest
        }
        defer { rest = rest[(lf + 1)...] }
        return rest[..<lf]
    }
}

extension UInt8 {
    fileprivate static let lf = UInt8(ascii: "\n")
    fileprivate static let cr = UInt8(ascii: "\r")
    fileprivate static let space = UInt8(ascii: " ")
    fileprivate static let tab = UInt8(ascii: "\t")
    fileprivate static let colon = UInt8(ascii: ":")
    fileprivate static let comma = UInt8(ascii: ",")
    fileprivate static let zero = UInt8(ascii: "0")
    fileprivate static let nine = UInt8(ascii: "9")

    /// RFC 9110 `tchar`: what a method or a header name is made of.
    fileprivate var isTokenByte: Bool {
        switch self {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}

extension ArraySlice<UInt8> {
    /// ASCII case-insensitive comparison with a lowercase name.
    fileprivate func equalsLowercased(_ lowercase: StaticString) -> Bool {
        guard count == lowercase.utf8CodeUnitCount else { return false }
        let other = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        return zip(self, other).allSatisfy { a, b in (a >= 0x41 && a <= 0x5A ? a | 0x20 : a) == b }
    }
}
