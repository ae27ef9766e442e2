/// A BEP 9 magnet link: what a torrent is (its v1 info-hash) and where to ask for it, without the
/// info dictionary itself, which is fetched from peers (ut_metadata) and checked against the hash.
///
/// Read: `xt=urn:btih:` (40 hex or 32 base32 characters), `dn` (display name), `tr` (trackers),
/// `ws` (web seeds) and `x.pe` (peers to dial, HOST:PORT). Other parameters are ignored, as BEP 9
/// asks. What a stranger's link can hold is bounded: its length, the number of parameters, each
/// value's length, and the trackers, web seeds and peers kept.
public struct MagnetLink: Equatable, Sendable {
    /// A peer named by `x.pe`: an IPv4 or IPv6 literal, or a host name, and a port.
    public struct Peer: Hashable, Sendable, CustomStringConvertible {
        public let host: String
        public let port: UInt16

        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public var infoHash: InfoHash
    public var name: String?
    public var trackers: [String]
    public var webSeeds: [String]
    public var peers: [Peer]

    /// The longest link read; real ones with a dozen trackers are under 2 KiB.
    public static let maxLength = 16 << 10
    /// The most `&`-separated parameters, and the most trackers, web seeds or peers kept.
    public static let maxParameters = 200
    public static let maxTrackers = 50
    public static let maxWebSeeds = 50
    public static let maxPeers = 50
    /// The longest value of one parameter, after percent-decoding.
    public static let maxValueLength = 2048

    public init(infoHash: InfoHash, name: String? = nil, trackers: [String] = [], webSeeds: [String] = [], peers: [Peer] = []) {
        self.infoHash = infoHash
        self.name = name
        self.trackers = trackers
        self.webSeeds = webSeeds
        self.peers = peers
    }

    /// Whether `text` is meant as a magnet link (so a caller can choose this parser over a file name).
    public static func looksLikeMagnet(_ text: String) -> Bool {
        text.utf8.count >= 7 && text.prefix(7).lowercased() == "magnet:"
    }

    public init(parsing text: String) throws(MagnetError) {
        let bytes = Array(text.utf8)
        guard bytes.count <= Self.maxLength else { throw .tooLong(length: bytes.count, limit: Self.maxLength) }
        guard Self.looksLikeMagnet(text) else { throw .notMagnet }
        // "magnet:?" then the query; some writers omit nothing, a few write "magnet:" with the query
        // straight after, which is refused rather than guessed at.
        guard bytes.count >= 8, bytes[7] == UInt8(ascii: "?") else { throw .notMagnet }
        let query = bytes[8...]
        let parameters = query.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true)
        guard parameters.count <= Self.maxParameters else {
            throw .tooManyParameters(count: parameters.count, limit: Self.maxParameters)
        }
        var hashes: [InfoHash] = []
        var name: String?
        var trackers: [String] = []
        var seeds: [String] = []
        var peers: [Peer] = []
        var sawOtherTopic: String?
        for parameter in parameters {
            let position = parameter.startIndex
            let pair = parameter.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let key = try Self.decode(pair[0], field: "parameter name", offset: position, plusIsSpace: false)
            guard pair.count == 2 else { continue }  // a key without a value carries nothing we read
            let valueOffset = pair[1].startIndex
            switch key {
            case "xt":
                let topic = try Self.decode(pair[1], field: key, offset: valueOffset, plusIsSpace: false)
                let prefix = "urn:btih:"
                if topic.lowercased().hasPrefix(prefix) {
                    let hash = try Self.infoHash(String(topic.dropFirst(prefix.count)), offset: valueOffset)
                    if !hashes.contains(hash) { hashes.append(hash) }
                } else {
                    sawOtherTopic = topic
                }
            case "dn":
                name = try Self.decode(pair[1], field: key, offset: valueOffset, plusIsSpace: true)
            case "tr":
                let tracker = try Self.decode(pair[1], field: key, offset: valueOffset, plusIsSpace: false)
                guard trackers.count < Self.maxTrackers else { throw .tooMany(field: "tr", limit: Self.maxTrackers) }
                if !tracker.isEmpty && !trackers.contains(tracker) { trackers.append(tracker) }
            case "ws":
                let seed = try Self.decode(pair[1], field: key, offset: valueOffset, plusIsSpace: false)
                guard seeds.count < Self.maxWebSeeds else { throw .tooMany(field: "ws", limit: Self.maxWebSeeds) }
                if !seed.isEmpty && !seeds.contains(seed) { seeds.append(seed) }
            case "x.pe":
                let text = try Self.decode(pair[1], field: key, offset: valueOffset, plusIsSpace: false)
                guard let peer = Self.peer(text) else { throw .invalidPeer(text, offset: valueOffset) }
                guard peers.count < Self.maxPeers else { throw .tooMany(field: "x.pe", limit: Self.maxPeers) }
                if !peers.contains(peer) { peers.append(peer) }
            default:
                continue
            }
        }
        guard let hash = hashes.first else {
            if let sawOtherTopic { throw .unsupportedTopic(sawOtherTopic) }
            throw .missingInfoHash
        }
        // Two different v1 hashes name two torrents; which one was meant cannot be told.
        guard hashes.count == 1 else { throw .conflictingInfoHashes(hashes.map(\.hex)) }
        self.init(infoHash: hash, name: name, trackers: trackers, webSeeds: seeds, peers: peers)
    }

    /// The link as `Metainfo.magnetURI` writes it: hash, name, trackers, web seeds, then peers.
    public var uri: String {
        var uri = "magnet:?xt=urn:btih:\(infoHash.hex)"
        if let name { uri += "&dn=\(PercentEncoding.encode(name))" }
        for tracker in trackers { uri += "&tr=\(PercentEncoding.encode(tracker))" }
        for seed in webSeeds { uri += "&ws=\(PercentEncoding.encode(seed))" }
        for peer in peers { uri += "&x.pe=\(PercentEncoding.encode(peer.description))" }
        return uri
    }

    // MARK: Pieces of the parser

    /// Percent-decodes one key or value, which must then be UTF-8 (URLs and names are text) of at
    /// most `maxValueLength` bytes. `+` is a space only in `dn`, as form-encoding writers mean it;
    /// in URLs it is a literal plus.
    static func decode(_ raw: ArraySlice<UInt8>, field: String, offset: Int, plusIsSpace: Bool) throws(MagnetError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(min(raw.count, Self.maxValueLength))
        var index = raw.startIndex
        while index < raw.endIndex {
            let byte = raw[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < raw.endIndex, let high = HexCoding.nibble(raw[index + 1]), let low = HexCoding.nibble(raw[index + 2])
                else { throw .badPercentEncoding(field: field, offset: index) }
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(plusIsSpace && byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
                index += 1
            }
            guard out.count <= Self.maxValueLength else {
                throw .valueTooLong(field: field, limit: Self.maxValueLength, offset: offset)
            }
        }
        guard let text = String(validating: out, as: UTF8.self) else { throw .invalidUTF8(field: field, offset: offset) }
        // Control characters have no place in a name or URL, and would end up in logs and on terminals.
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw .controlCharacter(field: field, offset: offset)
        }
        return text
    }

    /// 40 hex digits, or 32 base32 characters (RFC 4648, as older clients wrote them).
    static func infoHash(_ text: String, offset: Int) throws(MagnetError) -> InfoHash {
        if text.utf8.count == 40, let hash = InfoHash(hex: text) { return hash }
        if text.utf8.count == 32, let bytes = Base32.decode(text), let hash = InfoHash(bytes: bytes) { return hash }
        throw .invalidInfoHash(String(text.prefix(64)), offset: offset)
    }

    /// HOST:PORT, with an IPv6 literal in brackets; the port 1...65535.
    static func peer(_ text: String) -> Peer? {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard PeerAddress(host: String(host), port: 1) != nil else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard !host.contains(":") else { return nil }
        }
        guard !host.isEmpty, host.utf8.count <= 253,
            host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":") }),
            portText.count <= 5, portText.allSatisfy(\.isASCII), let port = UInt16(portText), port > 0
        else { return nil }
        return Peer(host: String(host), port: port)
    }
}

/// Why a magnet link was refused; each names the parameter and the byte offset in the link.
public enum MagnetError: Error, Equatable, Sendable, CustomStringConvertible {
    case notMagnet
    case tooLong(length: Int, limit: Int)
    case tooManyParameters(count: Int, limit: Int)
    case tooMany(field: String, limit: Int)
    case valueTooLong(field: String, limit: Int, offset: Int)
    case badPercentEncoding(field: String, offset: Int)
    case invalidUTF8(field: String, offset: Int)
    case controlCharacter(field: String, offset: Int)
    case missingInfoHash
    /// An `xt` other than `urn:btih:` (a v2-only `urn:btmh:` link, say) and no v1 hash.
    case unsupportedTopic(String)
    case invalidInfoHash(String, offset: Int)
    case conflictingInfoHashes([String])
    case invalidPeer(String, offset: Int)

    public var description: String {
        switch self {
        case .notMagnet: "not a magnet link (it must start with 'magnet:?')"
        case .tooLong(let length, let limit): "magnet link of \(length) bytes is longer than \(limit)"
        case .tooManyParameters(let count, let limit): "magnet link has \(count) parameters, more than \(limit)"
        case .tooMany(let field, let limit): "magnet link has more than \(limit) '\(field)' parameters"
        case .valueTooLong(let field, let limit, let offset): "magnet link at byte \(offset): '\(field)' is longer than \(limit) bytes"
        case .badPercentEncoding(let field, let offset): "magnet link at byte \(offset): '\(field)' has a '%' not followed by two hex digits"
        case .invalidUTF8(let field, let offset): "magnet link at byte \(offset): '\(field)' is not UTF-8 once decoded"
        case .controlCharacter(let field, let offset): "magnet link at byte \(offset): '\(field)' holds a control character"
        case .missingInfoHash: "magnet link has no 'xt=urn:btih:' info-hash"
        case .unsupportedTopic(let topic): "magnet link names only '\(topic.prefix(80))'; vmswarm reads v1 'urn:btih:' links"
        case .invalidInfoHash(let text, let offset): "magnet link at byte \(offset): info-hash '\(text)' is neither 40 hex nor 32 base32 characters"
        case .conflictingInfoHashes(let hashes): "magnet link names several torrents: \(hashes.joined(separator: ", "))"
        case .invalidPeer(let text, let offset): "magnet link at byte \(offset): 'x.pe' \"\(text.prefix(80))\" is not HOST:PORT"
        }
    }
}

/// RFC 4648 base32 (upper or lower case, no padding), the older form of magnet info-hashes.
public enum Base32 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for char in text.utf8 {
            let upper = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(char) ? char - 32 : char
            guard let value = alphabet.firstIndex(of: upper) else { return nil }
            buffer = (buffer << 5 | UInt32(value)) & 0xFFFF
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return out
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8 | UInt32(byte)) & 0xFFFF
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int((buffer >> UInt32(bits)) & 31)])
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
