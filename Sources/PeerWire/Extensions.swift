import Bencode
import Metainfo
import NIOCore

/// The BEP 10 extension handshake: which extensions a peer speaks and under which message ids.
public struct ExtensionHandshake: Equatable, Sendable {
    /// Extension name to the id the sender wants to receive it under (0: not supported).
    public var messageIDs: [String: UInt8]
    public var listenPort: UInt16?
    public var client: String?
    /// How many outstanding requests the peer will queue.
    public var requestQueue: Int?
    /// BEP 9: the size of the info dictionary the peer can send (nil: it has none to offer, or
    /// announced a size outside 1...`MetadataPiece.maxMetadataSize`).
    public var metadataSize: Int?
    /// BEP 21 `upload_only`: the peer wants nothing more (it is a seed, or has all it means to
    /// fetch). A peer may send its handshake again to say so (BEP 10).
    public var uploadOnly: Bool

    /// The extensions vmswarm speaks, and the ids it receives them under. `ut_metadata` is
    /// named only by a node that holds the info dictionary (`withMetadata`) or fetches it.
    public static let ours = ExtensionHandshake(messageIDs: ["ut_pex": 1], client: "vmswarm 0.1")
    public static let pexID: UInt8 = 1
    public static let metadataID: UInt8 = 2

    /// Ours, offering an info dictionary of `size` bytes over ut_metadata (BEP 9).
    public static func withMetadata(size: Int) -> ExtensionHandshake {
        var handshake = ours
        handshake.messageIDs["ut_metadata"] = metadataID
        handshake.metadataSize = size
        return handshake
    }

    public init(messageIDs: [String: UInt8], listenPort: UInt16? = nil, client: String? = nil, requestQueue: Int? = nil,
                metadataSize: Int? = nil, uploadOnly: Bool = false) {
        self.messageIDs = messageIDs
        self.uploadOnly = uploadOnly
        self.listenPort = listenPort
        self.client = client
        self.requestQueue = requestQueue
        self.metadataSize = metadataSize
    }

    /// The most extensions read from one handshake, and the longest name kept; real clients name
    /// a dozen, each under 20 bytes.
    public static let maxExtensions = 64
    public static let maxNameLength = 64
    /// The largest `reqq` believed; more says nothing (libtorrent announces 500 to 2,000).
    public static let maxRequestQueue = 65_535
    /// The longest client name (`v`) kept.
    public static let maxClientLength = 100

    /// Reads a peer's handshake. What a hostile peer controls is bounded: ids outside 0...255,
    /// overlong names and entries past `maxExtensions` are dropped, `p` outside 1...65535 and a
    /// `reqq` below 1 read as not sent, `reqq` is capped, and `v` is cut to `maxClientLength`
    /// bytes without control characters (it ends up in logs); names that are not UTF-8 are dropped.
    /// `metadata_size` outside 1...8 MiB reads as not sent: a fetcher allocates what it says.
    public init(payload: ByteBuffer) throws(PeerViolation) {
        let root = try decodeExtensionPayload(payload, "handshake")
        var ids: [String: UInt8] = [:]
        for entry in (root["m"]?.entries ?? []).prefix(Self.maxExtensions) where entry.key.count <= Self.maxNameLength {
            // A name that is not UTF-8 names no extension; decoded with U+FFFD for its bad bytes it
            // would be a name the peer never sent (and could collide with one it did).
            guard let name = String(validating: entry.key, as: UTF8.self) else { continue }
            if let id = entry.value.integer, (0...255).contains(id) { ids[name] = UInt8(id) }
        }
        messageIDs = ids
        listenPort = root["p"]?.integer.flatMap { (1...65535).contains($0) ? UInt16($0) : nil }
        client = root["v"]?.bytes.map { bytes in
            let text = String(decoding: bytes.prefix(Self.maxClientLength), as: UTF8.self)
            return String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }))
        }
        requestQueue = root["reqq"]?.integer.flatMap { $0 >= 1 ? Int(min($0, Int64(Self.maxRequestQueue))) : nil }
        metadataSize = root["metadata_size"]?.integer.flatMap {
            (1...Int64(MetadataPiece.maxMetadataSize)).contains($0) ? Int($0) : nil
        }
        uploadOnly = (root["upload_only"]?.integer ?? 0) != 0
    }

    public func encoded() -> [UInt8] {
        var dictionary: [[UInt8]: BencodeValue] = [
            Array("m".utf8): .dictionary(Dictionary(uniqueKeysWithValues: messageIDs.map { (Array($0.key.utf8), .integer(Int64($0.value))) })),
        ]
        if let listenPort { dictionary[Array("p".utf8)] = .integer(Int64(listenPort)) }
        if let client { dictionary[Array("v".utf8)] = .string(client) }
        if let requestQueue { dictionary[Array("reqq".utf8)] = .integer(Int64(requestQueue)) }
        if let metadataSize { dictionary[Array("metadata_size".utf8)] = .integer(Int64(metadataSize)) }
        if uploadOnly { dictionary[Array("upload_only".utf8)] = .integer(1) }
        return BencodeValue.dictionary(dictionary).encoded()
    }
}

/// A BEP 11 peer exchange message: peers the sender connected to and dropped since its last one.
public struct PeerExchange: Equatable, Sendable {
    public var added: [PeerAddress]
    public var dropped: [PeerAddress]

    /// At most this many peers per message are read (BEP 11 asks senders for 50).
    public static let maxPeers = 200

    public init(added: [PeerAddress], dropped: [PeerAddress]) {
        self.added = added
        self.dropped = dropped
    }

    public init(payload: ByteBuffer) throws(PeerViolation) {
        let root = try decodeExtensionPayload(payload, "ut_pex")
        func compact(_ key: String, width: Int) throws(PeerViolation) -> [PeerAddress] {
            guard let bytes = root[key]?.bytes else { return [] }
            guard let peers = PeerAddress.compactList(bytes, ipv6: width == 18, limit: Self.maxPeers) else {
                throw .malformedExtension("ut_pex '\(key)' is \(bytes.count) bytes")
            }
            return peers
        }
        added = try compact("added", width: 6) + compact("added6", width: 18)
        dropped = try compact("dropped", width: 6) + compact("dropped6", width: 18)
    }

    public func encoded() -> [UInt8] {
        func compact(_ peers: [PeerAddress], v4: Bool) -> BencodeValue {
            .bytes(peers.filter { $0.isIPv4 == v4 }.prefix(Self.maxPeers).flatMap(\.compact))
        }
        return BencodeValue.dictionary([
            Array("added".utf8): compact(added, v4: true), Array("added6".utf8): compact(added, v4: false),
            Array("dropped".utf8): compact(dropped, v4: true), Array("dropped6".utf8): compact(dropped, v4: false),
        ]).encoded()
    }
}

/// Extension payloads are small bencoded dictionaries; anything else is a malformed message.
private func decodeExtensionPayload(_ payload: ByteBuffer, _ what: String) throws(PeerViolation) -> BencodeNode {
    let root: BencodeNode
    do {
        root = try BencodeDecoder(mode: .lenient, limits: .init(maxInputSize: 64 << 10, maxDepth: 4))
            .decode(payload.readableBytesView)
    } catch {
        throw .malformedExtension("\(what): \(error)")
    }
    guard root.entries != nil else { throw .malformedExtension("\(what): \(root.kindName), not a dictionary") }
    return root
}
