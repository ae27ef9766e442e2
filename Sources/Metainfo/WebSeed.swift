/// Web seeds (BEP 19, "GetRight style"): the torrent's data on an HTTP server, fetched by byte range.
/// This file is the pure half: which URL and which bytes of it hold a piece. The URL comes from a
/// torrent (anyone's bytes) or the command line, so it is checked here once: a later stage only
/// ever sees a host, a port and a request target that cannot break the request line.

/// Why a web seed URL was refused.
public enum WebSeedError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidURL(String, problem: String)
    /// Neither http:// nor https://.
    case unsupportedScheme(String, scheme: String)

    public var description: String {
        switch self {
        case .invalidURL(let url, let problem): "web seed '\(Self.shown(url))' is not a usable URL: \(problem)"
        case .unsupportedScheme(let url, let scheme):
            "web seed '\(Self.shown(url))': \(scheme):// is not supported (http:// or https://)"
        }
    }

    /// At most 200 characters of a URL, control characters replaced: an error line stays one line.
    public static func shown(_ url: String) -> String {
        let clean = String(url.unicodeScalars.prefix(200).map { $0.value < 0x20 || $0.value == 0x7f ? "?" : Character($0) })
        return url.unicodeScalars.count > 200 ? clean + "…" : clean
    }
}

/// A web seed's address, parsed and checked: `http[s]://HOST[:PORT]/PATH[?QUERY]`.
public struct WebSeedURL: Hashable, Sendable, CustomStringConvertible {
    /// The URL as given.
    public let text: String
    /// The host as written (an IPv6 literal keeps its brackets, as the Host header wants it).
    public let host: String
    public let port: Int
    /// https://: the exchange is TLS.
    public let isTLS: Bool
    /// The path, starting with `/`, as written (already percent-encoded by whoever wrote it).
    public let path: String
    /// The query without its `?`, if any (an object store's signed URL carries one).
    public let query: String?
    /// The URL names a folder: its path ends in `/` (`http://host` has no path, so it does not).
    public let isFolder: Bool

    /// The longest URL accepted: far beyond any real one, small enough that a hostile torrent's
    /// URL list cannot make every request line huge.
    public static let maxLength = 4096

    public init(_ text: String) throws(WebSeedError) {
        guard text.utf8.count <= Self.maxLength else { throw .invalidURL(text, problem: "longer than \(Self.maxLength) bytes") }
        // Bytes that would end or split the request line, or that a URL never holds unencoded.
        guard !text.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f || $0 >= 0x80 }) else {
            throw .invalidURL(text, problem: "contains spaces, control or non-ASCII characters (percent-encode them)")
        }
        guard let colon = text.utf8.firstIndex(of: UInt8(ascii: ":")) else { throw .invalidURL(text, problem: "no scheme") }
        let scheme = text[..<colon].lowercased()
        guard text[colon...].hasPrefix("://") else { throw .invalidURL(text, problem: "no '//' after the scheme") }
        guard scheme == "http" || scheme == "https" else {
            if scheme.isEmpty || !scheme.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == "." }) {
                throw .invalidURL(text, problem: "no scheme")
            }
            throw .unsupportedScheme(text, scheme: scheme)
        }
        var rest = text[text.index(colon, offsetBy: 3)...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }  // a fragment is never sent
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.contains("@") else { throw .invalidURL(text, problem: "user names and passwords are not supported") }
        var host = Substring(authority)
        let isTLS = scheme == "https"
        var port = isTLS ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURL(text, problem: "an IPv6 address without ']'") }
            host = authority[...close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()), (1...65535).contains(number) else {
                    throw .invalidURL(text, problem: "the port is not a number from 1 to 65535")
                }
                port = number
            }
        } else if let portColon = authority.lastIndex(of: ":") {
            host = authority[..<portColon]
            guard let number = Int(authority[authority.index(after: portColon)...]), (1...65535).contains(number) else {
                throw .invalidURL(text, problem: "the port is not a number from 1 to 65535")
            }
            port = number
        }
        guard !host.isEmpty, host != "[]" else { throw .invalidURL(text, problem: "no host") }
        var target = rest[authorityEnd...]
        var query: Substring?
        if let mark = target.firstIndex(of: "?") {
            query = target[target.index(after: mark)...]
            target = target[..<mark]
        }
        self.text = text
        self.host = String(host)
        self.port = port
        self.isTLS = isTLS
        self.path = target.isEmpty ? "/" : String(target)
        self.isFolder = target.hasSuffix("/")
        self.query = query.map(String.init)
    }

    /// The host to connect to: an IPv6 literal without its brackets.
    public var connectHost: String { host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host }

    /// `Host:` as HTTP/1.1 wants it: the port only when it is not the scheme's own.
    public var hostHeader: String { port == (isTLS ? 443 : 80) ? host : "\(host):\(port)" }

    public var description: String { text }
}

/// One HTTP Range request that fills part of a piece: `bytes=range` of the resource at `target`,
/// copied into the piece at `pieceOffset`.
public struct WebSeedRequest: Hashable, Sendable {
    /// The file of the torrent this request reads.
    public let fileIndex: Int
    /// The request target (path and query, percent-encoded), for `GET target HTTP/1.1`.
    public let target: String
    /// The bytes of the file, as a half-open range (the Range header says `first-last`).
    public let range: Range<Int64>
    /// Where in the piece the bytes go.
    public let pieceOffset: Int
    /// The file's whole length, which a `Content-Range` answer must name.
    public let fileLength: Int64

    public init(fileIndex: Int, target: String, range: Range<Int64>, pieceOffset: Int, fileLength: Int64) {
        self.fileIndex = fileIndex
        self.target = target
        self.range = range
        self.pieceOffset = pieceOffset
        self.fileLength = fileLength
    }

    public var length: Int { Int(range.upperBound - range.lowerBound) }
    /// The `Range` header's value.
    public var rangeHeader: String { "bytes=\(range.lowerBound)-\(range.upperBound - 1)" }
}

/// A web seed for one torrent: each file's request target, fixed once, and the requests of a piece.
public struct WebSeedMap: Sendable {
    public let url: WebSeedURL
    /// Each file's request target; nil for padding files (BEP 47), which are zeros nobody serves.
    public let targets: [String?]
    let layout: PieceLayout
    let fileLengths: [Int64]

    /// BEP 19: for a single-file torrent the URL is the file itself, unless it ends in `/`, when
    /// the torrent's name is appended. For a multi-file torrent the URL is a folder: the name and
    /// each path component are appended, percent-encoded, with `/` between (a `/` is added after
    /// the URL when it has none, as libtorrent does). A multi-file URL with a query is refused:
    /// there is nowhere to put the path that every server would read the same way.
    public init(url text: String, info: TorrentInfo) throws(WebSeedError) {
        let url = try WebSeedURL(text)
        let query = url.query.map { "?" + $0 } ?? ""
        if info.isMultiFile {
            guard url.query == nil else {
                throw .invalidURL(text, problem: "a multi-file torrent's web seed names a folder, which cannot carry a query")
            }
            let folder = (url.path.hasSuffix("/") ? url.path : url.path + "/") + Self.percentEncoded(info.name) + "/"
            targets = info.files.map { file in
                file.isPadding ? nil : folder + file.path.map(Self.percentEncoded).joined(separator: "/")
            }
        } else {
            let target = url.isFolder ? url.path + Self.percentEncoded(info.name) : url.path
            targets = info.files.map { $0.isPadding ? nil : target + query }
        }
        self.url = url
        layout = info.layout
        fileLengths = info.files.map(\.length)
    }

    /// The requests that together hold the piece, in piece order: one per file segment it covers.
    /// Bytes of padding files have no request; the caller's buffer holds zeros there.
    public func requests(for piece: PieceIndex) -> [WebSeedRequest] {
        var offset = 0
        var requests: [WebSeedRequest] = []
        for segment in layout.segments(of: piece) {
            defer { offset += segment.length }
            guard let target = targets[segment.fileIndex] else { continue }
            let start = segment.offsetInFile
            requests.append(WebSeedRequest(fileIndex: segment.fileIndex, target: target,
                range: start..<(start + Int64(segment.length)), pieceOffset: offset, fileLength: fileLengths[segment.fileIndex]))
        }
        return requests
    }

    /// RFC 3986 percent-encoding of one path component: everything but the unreserved characters,
    /// byte by byte of its UTF-8 (so `/` in no case survives, though a parsed torrent holds none).
    public static func percentEncoded(_ component: String) -> String {
        var out = ""
        let hex = Array("0123456789ABCDEF")
        for byte in component.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(Character(Unicode.Scalar(byte)))
            default:
                out.append("%")
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 15)])
            }
        }
        return out
    }
}
