import Bencode
import Metainfo

/// BEP 3 `event`; `paused` is BEP 21's partial seed, announced like a regular one.
public enum AnnounceEvent: String, Sendable, Equatable {
    case none = ""
    case started, stopped, completed, paused
}

/// One `GET /announce`, as a client sends it and as the tracker reads it.
public struct AnnounceRequest: Sendable, Equatable {
    public var infoHash: InfoHash
    public var peerID: PeerID
    public var port: UInt16
    public var uploaded: Int64 = 0
    public var downloaded: Int64 = 0
    /// Bytes still missing; nil when the client did not say (then it counts as a leecher).
    public var left: Int64?
    public var event: AnnounceEvent = .none
    /// Peers wanted; nil for the tracker's default.
    public var numWant: Int?
    /// BEP 23: compact peer lists (the default answer).
    public var compact = true
    public var noPeerID = false
    /// An address the client claims for itself; trackers honour it only when configured to.
    public var ip: String?
    /// The client's private identification (libtorrent and Transmission send 8 ASCII characters).
    /// Kept only when it is UTF-8 of at most `maximumKeyLength` bytes; anything else is ignored.
    public var key: String?
    public static let maximumKeyLength = 64
    /// vmswarm's tree mode (docs/tree.md): `topology=tree` asks a vmswarm tracker for a place in the
    /// torrent's distribution tree; other trackers ignore it and answer as always.
    public var tree = false
    /// With `tree`: the parent this node lost (`lost=` its peer id, encoded like `peer_id`), so the
    /// tracker moves it and its siblings under another node at once.
    public var lostParent: PeerID?
    /// vmswarm's racks (docs/racks.md): the rack or site the node says it is in (`rack=`). A
    /// vmswarm tracker groups nodes by it (by subnet when absent) so that peer lists and trees
    /// cross a rack's uplink as little as they can.
    public var rack: String?
    /// A rack name is at most this many bytes of printable ASCII (letters, digits, `-_.:/`).
    public static let maximumRackLength = 64

    /// Whether `name` can be a rack: what `rack=` accepts and what the CLI checks before sending.
    public static func isValidRack(_ name: some StringProtocol) -> Bool {
        !name.isEmpty && name.utf8.count <= maximumRackLength && name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || "-_.:/".utf8.contains(byte)
        }
    }

    public init(infoHash: InfoHash, peerID: PeerID, port: UInt16) {
        self.infoHash = infoHash
        self.peerID = peerID
        self.port = port
    }

    public var isSeeder: Bool { left == 0 }

    /// Reads the query of an announce URL. Unknown parameters are ignored, as every tracker does.
    public init(query: some StringProtocol) throws(TrackerRequestError) {
        var infoHash: InfoHash?
        var peerID: PeerID?
        var port: UInt16?
        var request = AnnounceRequest.Fields()
        for (name, value) in try QueryString.parse(query) {
            switch name {
            case "info_hash":
                guard let hash = InfoHash(bytes: value) else {
                    throw .invalidParameter("info_hash", "must be 20 bytes, got \(value.count)")
                }
                infoHash = hash
            case "peer_id":
                guard let id = PeerID(bytes: value) else {
                    throw .invalidParameter("peer_id", "must be 20 bytes, got \(value.count)")
                }
                peerID = id
            case "port":
                guard let number = Self.integer(value), number >= 1, number <= 65535 else {
                    throw .invalidParameter("port", "must be a number from 1 to 65535")
                }
                port = UInt16(number)
            case "uploaded", "downloaded", "left":
                guard let number = Self.integer(value), number >= 0 else {
                    throw .invalidParameter(name, "must be a non-negative number")
                }
                if name == "uploaded" { request.uploaded = number }
                if name == "downloaded" { request.downloaded = number }
                if name == "left" { request.left = number }
            case "event":
                guard let text = String(validating: value, as: UTF8.self), let event = AnnounceEvent(rawValue: text) else {
                    throw .invalidParameter("event", "must be started, stopped, completed or empty")
                }
                request.event = event
            case "numwant":
                // Negative or huge values are clamped by the tracker, not refused: clients send -1.
                guard let text = String(validating: value, as: UTF8.self), let number = Int64(text) else {
                    throw .invalidParameter("numwant", "must be a number")
                }
                request.numWant = Int(clamping: number)
            case "compact":
                request.compact = value != Array("0".utf8)
            case "no_peer_id":
                request.noPeerID = value == Array("1".utf8)
            case "ip":
                request.ip = String(validating: value, as: UTF8.self)
            case "key":
                // Ignored rather than cut or repaired: a cut key, or one with U+FFFD in place of a
                // byte, would not be the key the client sent.
                if value.count <= Self.maximumKeyLength { request.key = String(validating: value, as: UTF8.self) }
            case "topology":
                request.tree = value == Array("tree".utf8)
            case "lost":
                guard let id = PeerID(bytes: value) else { throw .invalidParameter("lost", "must be 20 bytes, got \(value.count)") }
                request.lostParent = id
            case "rack":
                guard let name = String(validating: value, as: UTF8.self), Self.isValidRack(name) else {
                    throw .invalidParameter("rack", "must be 1 to \(Self.maximumRackLength) letters, digits or -_.:/")
                }
                request.rack = name
            default:
                break
            }
        }
        guard let infoHash else { throw .missingParameter("info_hash") }
        guard let peerID else { throw .missingParameter("peer_id") }
        guard let port else { throw .missingParameter("port") }
        self.init(infoHash: infoHash, peerID: peerID, port: port)
        self.uploaded = request.uploaded
        self.downloaded = request.downloaded
        self.left = request.left
        self.event = request.event
        self.numWant = request.numWant
        self.compact = request.compact
        self.noPeerID = request.noPeerID
        self.ip = request.ip
        self.key = request.key
        self.tree = request.tree
        self.lostParent = request.lostParent
        self.rack = request.rack
    }

    private struct Fields {
        var uploaded: Int64 = 0
        var downloaded: Int64 = 0
        var left: Int64?
        var event: AnnounceEvent = .none
        var numWant: Int?
        var compact = true
        var noPeerID = false
        var ip: String?
        var key: String?
        var tree = false
        var lostParent: PeerID?
        var rack: String?
    }

    /// A decimal number as `Int64(String)` reads it (an optional sign, then digits; nil on overflow),
    /// read from the bytes without making a string first: three of these come with every announce.
    static func integer(_ value: [UInt8]) -> Int64? {
        guard !value.isEmpty, value.count <= 20 else { return nil }
        let negative = value[0] == UInt8(ascii: "-")
        let signed = negative || value[0] == UInt8(ascii: "+")
        guard value.count > (signed ? 1 : 0) else { return nil }
        var result: Int64 = 0
        for byte in value[(signed ? 1 : 0)...] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let digit = Int64(byte - UInt8(ascii: "0"))
            let (times10, overflow1) = result.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { return nil }
            result = next
        }
        return result
    }

    /// The query string a client appends to the announce URL (after `?`).
    public var query: String {
        var parts = [
            "info_hash=\(PercentEncoding.encode(infoHash.bytes))",
            "peer_id=\(PercentEncoding.encode(peerID.bytes))",
            "port=\(port)", "uploaded=\(uploaded)", "downloaded=\(downloaded)",
        ]
        if let left { parts.append("left=\(left)") }
        if event != .none { parts.append("event=\(event.rawValue)") }
        if let numWant { parts.append("numwant=\(numWant)") }
        parts.append("compact=\(compact ? 1 : 0)")
        if noPeerID { parts.append("no_peer_id=1") }
        if let ip { parts.append("ip=\(PercentEncoding.encode(ip))") }
        if let key { parts.append("key=\(PercentEncoding.encode(key))") }
        if tree { parts.append("topology=tree") }
        if let lostParent { parts.append("lost=\(PercentEncoding.encode(lostParent.bytes))") }
        if let rack { parts.append("rack=\(PercentEncoding.encode(rack))") }
        return parts.joined(separator: "&")
    }
}

/// A peer in an announce answer.
public struct AnnouncedPeer: Hashable, Sendable {
    public var address: PeerAddress
    /// Only in non-compact answers without `no_peer_id`.
    public var peerID: PeerID?

    public init(address: PeerAddress, peerID: PeerID? = nil) {
        self.address = address
        self.peerID = peerID
    }
}

/// A tracker's answer to an announce.
public struct AnnounceResponse: Sendable, Equatable {
    /// Seconds until the client should announce again.
    public var interval: Int
    public var minInterval: Int?
    /// Seeders and leechers in the swarm, when the tracker says.
    public var complete: Int?
    public var incomplete: Int?
    public var peers: [AnnouncedPeer]
    public var warning: String?
    /// vmswarm's tree mode: the node's parents in the distribution tree, with their peer ids (a
    /// `tree` dictionary beside `peers`, which then holds the same parents for any client). Nil:
    /// not placed (a tracker without tree mode, or a request without `topology=tree`). Empty: a root.
    public var treeParents: [AnnouncedPeer]?
    /// At most this many parents are read.
    public static let maxTreeParents = 8
    /// vmswarm's racks: the rack the tracker counts this node in. When `racks` says the swarm
    /// spans more than one, the peers in the answer are chosen by rack (docs/racks.md), and a node
    /// that exchanged peers (PEX) would undo that, so it stops. A rack named by its subnet
    /// (`10.1.2.0/24`) also tells the node which peers are across its rack's uplink.
    public var rack: String?
    /// How many racks the swarm spans. Nil with a `rack`: a tracker that sent `rack` only when the
    /// swarm spanned racks (before session 19).
    public var racks: Int?
    /// Whether the answer says the swarm spans racks.
    public var spansRacks: Bool { rack != nil && (racks ?? 2) > 1 }

    public init(interval: Int, minInterval: Int? = nil, complete: Int? = nil, incomplete: Int? = nil,
        peers: [AnnouncedPeer] = [], warning: String? = nil) {
        self.interval = interval
        self.minInterval = minInterval
        self.complete = complete
        self.incomplete = incomplete
        self.peers = peers
        self.warning = warning
    }

    /// The bencoded answer: `peers` (and `peers6` for IPv6 peers, BEP 7) compact when asked, else
    /// a list of dictionaries, with peer ids unless `no_peer_id`.
    public func encoded(compact: Bool, includePeerIDs: Bool) -> [UInt8] {
        if compact { return encodedCompact() }
        var dictionary: [[UInt8]: BencodeValue] = [Array("interval".utf8): .integer(Int64(interval))]
        if let minInterval { dictionary[Array("min interval".utf8)] = .integer(Int64(minInterval)) }
        if let complete { dictionary[Array("complete".utf8)] = .integer(Int64(complete)) }
        if let incomplete { dictionary[Array("incomplete".utf8)] = .integer(Int64(incomplete)) }
        if let warning { dictionary[Array("warning message".utf8)] = .string(warning) }
        if let tree = encodedTree { dictionary[Array("tree".utf8)] = tree }
        if let rack { dictionary[Array("rack".utf8)] = .string(rack) }
        if let racks { dictionary[Array("racks".utf8)] = .integer(Int64(racks)) }
        if compact {
            dictionary[Array("peers".utf8)] = .bytes(peers.filter(\.address.isIPv4).flatMap(\.address.compact))
            let v6 = peers.filter { !$0.address.isIPv4 }
            if !v6.isEmpty { dictionary[Array("peers6".utf8)] = .bytes(v6.flatMap(\.address.compact)) }
        } else {
            dictionary[Array("peers".utf8)] = .list(peers.map { peer in
                var entry: [[UInt8]: BencodeValue] = [
                    Array("ip".utf8): .string(peer.address.host), Array("port".utf8): .integer(Int64(peer.address.port)),
                ]
                if includePeerIDs, let id = peer.peerID { entry[Array("peer id".utf8)] = .bytes(id.bytes) }
                return .dictionary(entry)
            })
        }
        return BencodeValue.dictionary(dictionary).encoded()
    }

    /// The compact answer written directly, keys in their canonical order: this is the tracker's
    /// hot path, and building a dictionary value to sort its keys cost more than the announce.
    private func encodedCompact() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(96 + peers.count * 6)
        func key(_ text: StaticString) {
            out += Array(String(text.utf8CodeUnitCount).utf8)
            out.append(UInt8(ascii: ":"))
            out += UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
        }
        func integer(_ value: Int) {
            out.append(UInt8(ascii: "i"))
            out += Array(String(value).utf8)
            out.append(UInt8(ascii: "e"))
        }
        func bytes(_ value: [UInt8]) {
            out += Array(String(value.count).utf8)
            out.append(UInt8(ascii: ":"))
            out += value
        }
        out.append(UInt8(ascii: "d"))
        if let complete { key("complete"); integer(complete) }
        if let incomplete { key("incomplete"); integer(incomplete) }
        key("interval"); integer(interval)
        if let minInterval { key("min interval"); integer(minInterval) }
        key("peers"); bytes(peers.filter(\.address.isIPv4).flatMap(\.address.compact))
        let v6 = peers.filter { !$0.address.isIPv4 }
        if !v6.isEmpty { key("peers6"); bytes(v6.flatMap(\.address.compact)) }
        if let rack { key("rack"); bytes(Array(rack.utf8)) }
        if let racks { key("racks"); integer(racks) }
        if let tree = encodedTree { key("tree"); out += tree.encoded() }
        if let warning { key("warning message"); bytes(Array(warning.utf8)) }
        out.append(UInt8(ascii: "e"))
        return out
    }

    /// `tree`: `{"parents": [{"ip", "port", "peer id"}, ...]}`.
    private var encodedTree: BencodeValue? {
        treeParents.map { parents in
            .dictionary([Array("parents".utf8): .list(parents.map { parent in
                var entry: [[UInt8]: BencodeValue] = [
                    Array("ip".utf8): .string(parent.address.host), Array("port".utf8): .integer(Int64(parent.address.port)),
                ]
                if let id = parent.peerID { entry[Array("peer id".utf8)] = .bytes(id.bytes) }
                return .dictionary(entry)
            })])
        }
    }

    /// The most peers a client accepts from one answer; beyond that the answer is hostile.
    public static let maxPeers = 10_000

    /// Reads a tracker's answer: compact (`peers`, `peers6`) or dictionary peer lists.
    public init(decoding bytes: some Collection<UInt8>) throws(TrackerResponseError) {
        self = try Self.parse(try decodeTrackerAnswer(bytes))
    }

    /// The longest wait a tracker may ask for: a tracker that answers `interval` 10^18 (or a
    /// `min interval` as long) would otherwise silence the client for good.
    public static let maxInterval = 24 * 3600
    /// The most bytes of a `warning message` (or `failure reason`) kept: it is shown to people, on
    /// one line.
    public static let maxMessageLength = 1024

    private static func parse(_ root: BencodeNode) throws(TrackerResponseError) -> AnnounceResponse {
        let interval = root["interval"]?.integer ?? -1
        guard interval >= 0 else { throw .malformed("no valid 'interval'") }
        var response = AnnounceResponse(interval: Int(min(interval, Int64(maxInterval))))
        // A negative count or minimum interval means nothing; it is dropped, as if not sent.
        func nonNegative(_ key: String, atMost limit: Int64 = .max) -> Int? {
            guard let value = root[key]?.integer, value >= 0 else { return nil }
            return Int(min(value, limit))
        }
        response.minInterval = nonNegative("min interval", atMost: Int64(maxInterval))
        response.complete = nonNegative("complete")
        response.incomplete = nonNegative("incomplete")
        response.warning = root["warning message"]?.bytes.map(displayText)
        response.peers = try peerLists(v4: root["peers"], v6: root["peers6"]).get()
        response.peers = Array(response.peers.prefix(maxPeers))
        if let tree = root["tree"] {
            guard case .list(let parents)? = tree["parents"]?.content else { throw .malformed("'tree' has no 'parents' list") }
            // A parent is known by its id (the child asks only it): one without an id is useless.
            response.treeParents = parents.prefix(maxTreeParents).compactMap(dictionaryPeer).filter { $0.peerID != nil }
        }
        // A rack name that is not one is ignored: the answer's peers are still good.
        if let name = root["rack"]?.bytes.flatMap({ String(validating: $0, as: UTF8.self) }), AnnounceRequest.isValidRack(name) {
            response.rack = name
            response.racks = nonNegative("racks")
        }
        return response
    }

    private static func peerLists(v4: BencodeNode?, v6: BencodeNode?) -> Result<[AnnouncedPeer], TrackerResponseError> {
        var peers: [AnnouncedPeer] = []
        switch v4?.content {
        case nil:
            break
        case .bytes(let compact)?:
            guard let decoded = compactPeers(compact, width: 6) else { return .failure(malformedCompact("peers", compact.count, 6)) }
            peers = decoded
        case .list(let list)?:
            peers = list.prefix(maxPeers).compactMap(dictionaryPeer)
        default:
            return .failure(.malformed("'peers' is neither a string nor a list"))
        }
        if case .bytes(let compact)? = v6?.content {
            guard let decoded = compactPeers(compact, width: 18) else { return .failure(malformedCompact("peers6", compact.count, 18)) }
            peers += decoded
        }
        return .success(peers)
    }

    /// A peer of the dictionary model; nil for a hostname or a bad entry, which is skipped.
    private static func dictionaryPeer(_ entry: BencodeNode) -> AnnouncedPeer? {
        guard let host = entry["ip"]?.bytes.flatMap({ String(validating: $0, as: UTF8.self) }),
            let port = entry["port"]?.integer, (1...65535).contains(port),
            let address = PeerAddress(host: host, port: UInt16(port))
        else { return nil }
        return AnnouncedPeer(address: address, peerID: entry["peer id"]?.bytes.flatMap { PeerID(bytes: $0) })
    }

    private static func malformedCompact(_ field: String, _ count: Int, _ width: Int) -> TrackerResponseError {
        .malformed("'\(field)' has \(count) bytes, not a multiple of \(width)")
    }

    /// Peers of the compact model, or nil when the length is not a multiple of `width`.
    private static func compactPeers(_ bytes: [UInt8], width: Int) -> [AnnouncedPeer]? {
        PeerAddress.compactList(bytes, ipv6: width == 18, limit: maxPeers)?.map { AnnouncedPeer(address: $0) }
    }
}

/// Decodes a tracker's bencoded answer, turning `failure reason` into an error.
func decodeTrackerAnswer(_ bytes: some Collection<UInt8>) throws(TrackerResponseError) -> BencodeNode {
    let root: BencodeNode
    do {
        root = try BencodeDecoder(mode: .lenient, limits: .init(maxInputSize: 4 << 20, maxDepth: 8)).decode(bytes)
    } catch {
        throw .malformed(error.description)
    }
    guard root.entries != nil else { throw .malformed("not a dictionary") }
    if let failure = root["failure reason"] {
        throw .failure(displayText(failure.bytes ?? []))
    }
    return root
}

/// A tracker's message as one printable line of at most `AnnounceResponse.maxMessageLength` bytes:
/// control characters (a newline, an escape sequence for the terminal) become spaces.
func displayText(_ bytes: [UInt8]) -> String {
    let text = String(decoding: bytes.prefix(AnnounceResponse.maxMessageLength), as: UTF8.self)
    return String(String.UnicodeScalarView(text.unicodeScalars.map {
        $0.value < 0x20 || (0x7F..<0xA0).contains($0.value) ? " " : $0
    }))
}

/// The answer that refuses a request, in the form every client shows to its user.
public func failureResponse(_ reason: String) -> [UInt8] {
    BencodeValue.dictionary([Array("failure reason".utf8): .string(reason)]).encoded()
}
