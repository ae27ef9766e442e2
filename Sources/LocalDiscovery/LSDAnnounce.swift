import Metainfo

/// Why a datagram is not a BEP 14 announce vmswarm reads. Anyone on the LAN can send to the group,
/// so nothing here traps: lengths and counts are checked before use.
public enum LSDError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooLong(Int)
    case notText
    case notBTSearch
    case missingPort
    case badPort(String)
    case badInfoHash(String)
    case noInfoHash
    case tooManyLines(Int)

    public var description: String {
        switch self {
        case .tooLong(let count): "a \(count)-byte datagram (at most \(LSDAnnounce.maxDatagram))"
        case .notText: "not ASCII text"
        case .notBTSearch: "does not start with BT-SEARCH * HTTP/1.1"
        case .missingPort: "no Port header"
        case .badPort(let text): "Port '\(text.prefix(16))' is not 1 to 65535"
        case .badInfoHash(let text): "Infohash '\(text.prefix(48))' is not 40 hex digits"
        case .noInfoHash: "no Infohash header"
        case .tooManyLines(let count): "\(count) header lines (at most \(LSDAnnounce.maxLines))"
        }
    }
}

/// A BEP 14 (Local Service Discovery) announce: "BT-SEARCH * HTTP/1.1" with Host, Port, one or more
/// Infohash headers and an optional cookie (by which a node knows its own announces), sent to
/// 239.192.152.143:6771. Pure: bytes in, value out, and back.
public struct LSDAnnounce: Equatable, Sendable {
    public static let group = "239.192.152.143"
    public static let port = 6771
    /// Far above what a real announce needs (a few hashes), under one unfragmented datagram.
    public static let maxDatagram = 1400
    public static let maxLines = 32
    public static let maxCookie = 64

    public var port: UInt16
    public var infoHashes: [InfoHash]
    public var cookie: String?

    public init(port: UInt16, infoHashes: [InfoHash], cookie: String? = nil) {
        self.port = port
        self.infoHashes = infoHashes
        self.cookie = cookie
    }

    public func encoded() -> [UInt8] {
        var text = "BT-SEARCH * HTTP/1.1\r\nHost: \(Self.group):\(Self.port)\r\nPort: \(port)\r\n"
        for hash in infoHashes { text += "Infohash: \(hash.hex)\r\n" }
        if let cookie { text += "cookie: \(cookie)\r\n" }
        return Array((text + "\r\n\r\n").utf8)
    }

    public init(decoding datagram: [UInt8]) throws(LSDError) {
        guard datagram.count <= Self.maxDatagram else { throw .tooLong(datagram.count) }
        guard datagram.allSatisfy({ $0 < 0x80 }) else { throw .notText }
        // Lines split on bytes: a Swift String holds "\r\n" as one Character, which is not "\n".
        let lines = datagram.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
            Substring(String(decoding: line.last == 0x0D ? line.dropLast() : line[...], as: UTF8.self))
        }
        guard lines.count <= Self.maxLines + 4 else { throw .tooManyLines(lines.count) }
        guard let first = lines.first, first.split(separator: " ") == ["BT-SEARCH", "*", "HTTP/1.1"] else { throw .notBTSearch }
        var port: UInt16?
        var hashes: [InfoHash] = []
        var cookie: String?
        for line in lines.dropFirst() {
            guard !line.isEmpty else { break }  // the blank line ends the headers
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingSpaces.lowercased()
            let value = String(line[line.index(after: colon)...].trimmingSpaces)
            switch name {
            case "port":
                guard let number = UInt16(value), number > 0 else { throw .badPort(value) }
                port = number
            case "infohash":
                guard value.count == 40, let hash = InfoHash(hex: value) else { throw .badInfoHash(value) }
                if !hashes.contains(hash) { hashes.append(hash) }
            case "cookie":
                cookie = value.count <= Self.maxCookie && value.allSatisfy({ $0.isASCII && !$0.isWhitespace }) ? value : nil
            default:
                continue  // Host and anything a future client adds
            }
        }
        guard let port else { throw .missingPort }
        guard !hashes.isEmpty else { throw .noInfoHash }
        self.init(port: port, infoHashes: hashes, cookie: cookie)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}

/// Which announced peers to act on: each address once a minute at most, and at most `capacity`
/// remembered, so a LAN host flooding announces from many addresses costs bounded memory and makes
/// no more dials than the runtime's caps allow.
public struct LSDPeerFilter: Sendable {
    public static let capacity = 1024
    public static let memory: Double = 60
    private var seen: [PeerAddress: Double] = [:]

    public init() {}

    public mutating func admit(_ peer: PeerAddress, now: Double) -> Bool {
        if let last = seen[peer], now - last < Self.memory { return false }
        if seen[peer] == nil, seen.count >= Self.capacity {
            seen = seen.filter { now - $0.value < Self.memory }
            guard seen.count < Self.capacity else { return false }
        }
        seen[peer] = now
        return true
    }
}
