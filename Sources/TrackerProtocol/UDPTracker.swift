import Metainfo

// BEP 15, the UDP tracker protocol, as pure values: datagrams in, messages out, and back. Every
// number is big-endian. A client first asks for a connection id (`connect`), then announces or
// scrapes with it; the id proves to the tracker that the client receives at the address it sends
// from, so a spoofed source cannot make the tracker answer a third party with a larger datagram.

/// The `action` field of every BEP 15 message.
public enum UDPTrackerAction: UInt32, Sendable, Equatable {
    case connect = 0
    case announce = 1
    case scrape = 2
    case error = 3
}

/// Why a datagram is not a BEP 15 message (or not the one expected). Never a trap: every length and
/// count is checked before it is read.
public enum UDPTrackerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Shorter than the fixed part of `message`.
    case truncated(message: String, needed: Int, got: Int)
    /// A connect request without the protocol's magic number.
    case wrongProtocolID(UInt64)
    case unknownAction(UInt32)
    /// An answer with another action than the request's (and not an error).
    case wrongAction(expected: UInt32, got: UInt32)
    /// An answer to another request: a stale retransmit, or a forgery.
    case transactionMismatch(expected: UInt32, got: UInt32)
    /// A scrape of more info-hashes than fit one datagram (BEP 15: about 74).
    case tooManyHashes(count: Int, limit: Int)
    /// A variable part whose length is not a whole number of entries.
    case badLength(message: String, count: Int, multipleOf: Int)
    case noHashes
    case invalidEvent(UInt32)
    /// A datagram longer than any message of its kind may be.
    case tooLong(message: String, count: Int, limit: Int)

    public var description: String {
        switch self {
        case .truncated(let message, let needed, let got): "truncated \(message): needs \(needed) bytes, got \(got)"
        case .wrongProtocolID(let id): "connect request without the BEP 15 magic (got 0x\(String(id, radix: 16)))"
        case .unknownAction(let action): "unknown action \(action)"
        case .wrongAction(let expected, let got): "answer has action \(got), expected \(expected)"
        case .transactionMismatch(let expected, let got): "answer to transaction \(got), expected \(expected)"
        case .tooManyHashes(let count, let limit): "scrape of \(count) info-hashes, at most \(limit) per request"
        case .badLength(let message, let count, let width): "\(message) has \(count) bytes, not a multiple of \(width)"
        case .noHashes: "scrape without an info-hash"
        case .invalidEvent(let event): "unknown announce event \(event)"
        case .tooLong(let message, let count, let limit): "\(message) of \(count) bytes, at most \(limit)"
        }
    }

    /// How the tracker counts this refusal.
    public var metricLabel: String {
        switch self {
        case .truncated: "truncated"
        case .wrongProtocolID: "wrong_protocol_id"
        case .unknownAction: "unknown_action"
        case .wrongAction: "wrong_action"
        case .transactionMismatch: "transaction_mismatch"
        case .tooManyHashes: "too_many_hashes"
        case .badLength: "bad_length"
        case .noHashes: "no_hashes"
        case .invalidEvent: "invalid_event"
        case .tooLong: "too_long"
        }
    }
}

public enum UDPTracker {
    /// The `protocol_id` of a connect request.
    public static let protocolID: UInt64 = 0x417_2710_1980
    /// BEP 15: "up to about 74 torrents can be scraped at once" (16 + 74 × 20 = 1,496 bytes).
    public static let maxScrapeHashes = 74
    /// The largest datagram either side reads: UDP's own limit. Anything the socket delivers fits.
    public static let maxDatagram = 65_507
    /// The payload that crosses an Ethernet link unfragmented over IPv6 (1,500 − 40 − 8); the tracker
    /// keeps its answers within it, because fragmented UDP is often dropped on real networks.
    public static let unfragmentedPayload = 1452

    /// Peers that fit one unfragmented announce answer: 238 IPv4 or 79 IPv6.
    public static func maxPeers(ipv6: Bool) -> Int { (unfragmentedPayload - 20) / (ipv6 ? 18 : 6) }
}

/// The announce of BEP 15, field for field as on the wire.
public struct UDPAnnounceRequest: Sendable, Equatable {
    public var infoHash: InfoHash
    public var peerID: PeerID
    public var downloaded: Int64 = 0
    public var left: Int64 = 0
    public var uploaded: Int64 = 0
    public var event: AnnounceEvent = .none
    /// An IPv4 address the client claims (0: the datagram's source).
    public var ip: UInt32 = 0
    public var key: UInt32 = 0
    /// -1: the tracker's default.
    public var numWant: Int32 = -1
    public var port: UInt16

    public init(infoHash: InfoHash, peerID: PeerID, port: UInt16) {
        self.infoHash = infoHash
        self.peerID = peerID
        self.port = port
    }

    /// The client's side: the same announce an HTTP tracker would get. An absent `left` cannot be
    /// sent as 0 (that is a seeder), so it is sent as Int64.max; the key, when it is 8 hex digits (as
    /// libtorrent sends over HTTP), keeps its value, else it is folded into 32 bits.
    public init(_ request: AnnounceRequest) {
        self.init(infoHash: request.infoHash, peerID: request.peerID, port: request.port)
        downloaded = request.downloaded
        uploaded = request.uploaded
        left = request.left ?? Int64.max
        event = request.event
        numWant = request.numWant.map { Int32(clamping: $0) } ?? -1
        if let key = request.key {
            if key.utf8.count == 8, let number = UInt32(key, radix: 16) {
                self.key = number
            } else {
                self.key = key.utf8.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 }  // FNV-1a
            }
        }
        if let ip = request.ip, let address = PeerAddress(host: ip, port: 1), address.isIPv4 {
            self.ip = address.ip.reduce(0) { $0 << 8 | UInt32($1) }
        }
    }

    /// The tracker's side: what `TrackerState` serves. The key becomes 8 upper-case hex digits, as
    /// libtorrent writes it over HTTP, so the same client owns its peer over either protocol.
    public var announceRequest: AnnounceRequest {
        var request = AnnounceRequest(infoHash: infoHash, peerID: peerID, port: port)
        request.downloaded = max(0, downloaded)
        request.uploaded = max(0, uploaded)
        // A negative `left` means nothing; it is read as "still missing something".
        request.left = left < 0 ? nil : left
        request.event = event
        request.numWant = Int(numWant)
        request.key = key == 0 ? nil : Self.hex(key)
        if ip != 0 {
            request.ip = [ip >> 24, ip >> 16 & 0xFF, ip >> 8 & 0xFF, ip & 0xFF].map(String.init).joined(separator: ".")
        }
        return request
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: (0..<8).reversed().map { digits[Int(value >> (UInt32($0) * 4) & 0xF)] }, as: UTF8.self)
    }

    /// BEP 15 event numbers; 4 is libtorrent's `paused` (BEP 21).
    static func eventNumber(_ event: AnnounceEvent) -> UInt32 {
        switch event {
        case .none: 0
        case .completed: 1
        case .started: 2
        case .stopped: 3
        case .paused: 4
        }
    }

    static func event(_ number: UInt32) -> AnnounceEvent? {
        switch number {
        case 0: AnnounceEvent.none
        case 1: .completed
        case 2: .started
        case 3: .stopped
        case 4: .paused
        default: nil
        }
    }
}

/// What a client sends: the tracker reads these.
public enum UDPTrackerRequest: Sendable, Equatable {
    case connect(transactionID: UInt32)
    case announce(connectionID: UInt64, transactionID: UInt32, UDPAnnounceRequest)
    case scrape(connectionID: UInt64, transactionID: UInt32, [InfoHash])

    /// Fixed length of an announce; BEP 41 options may follow and are ignored.
    static let announceLength = 98

    public var transactionID: UInt32 {
        switch self {
        case .connect(let id), .announce(_, let id, _), .scrape(_, let id, _): id
        }
    }

    public func encoded() -> [UInt8] {
        var out = ByteWriter()
        switch self {
        case .connect(let transaction):
            out.u64(UDPTracker.protocolID)
            out.u32(UDPTrackerAction.connect.rawValue)
            out.u32(transaction)
        case .announce(let connection, let transaction, let a):
            out.u64(connection)
            out.u32(UDPTrackerAction.announce.rawValue)
            out.u32(transaction)
            out.bytes(a.infoHash.bytes)
            out.bytes(a.peerID.bytes)
            out.u64(UInt64(bitPattern: a.downloaded))
            out.u64(UInt64(bitPattern: a.left))
            out.u64(UInt64(bitPattern: a.uploaded))
            out.u32(UDPAnnounceRequest.eventNumber(a.event))
            out.u32(a.ip)
            out.u32(a.key)
            out.u32(UInt32(bitPattern: a.numWant))
            out.u16(a.port)
        case .scrape(let connection, let transaction, let hashes):
            out.u64(connection)
            out.u32(UDPTrackerAction.scrape.rawValue)
            out.u32(transaction)
            for hash in hashes { out.bytes(hash.bytes) }
        }
        return out.buffer
    }

    /// Reads a client's datagram. The connection id is returned as sent; checking it is the
    /// tracker's business (`UDPConnectionIDs`).
    public init(decoding datagram: some Collection<UInt8>) throws(UDPTrackerError) {
        let bytes = Array(datagram.prefix(UDPTracker.maxDatagram + 1))
        guard bytes.count <= UDPTracker.maxDatagram else {
            throw .tooLong(message: "request", count: bytes.count, limit: UDPTracker.maxDatagram)
        }
        var reader = ByteReader(bytes)
        guard bytes.count >= 16 else { throw .truncated(message: "request", needed: 16, got: bytes.count) }
        let connection = reader.u64()
        let actionNumber = reader.u32()
        let transaction = reader.u32()
        guard let action = UDPTrackerAction(rawValue: actionNumber) else { throw .unknownAction(actionNumber) }
        switch action {
        case .connect:
            guard connection == UDPTracker.protocolID else { throw .wrongProtocolID(connection) }
            self = .connect(transactionID: transaction)
        case .announce:
            guard bytes.count >= Self.announceLength else {
                throw .truncated(message: "announce request", needed: Self.announceLength, got: bytes.count)
            }
            // Both are exactly 20 bytes, so neither initializer can fail; the guard only satisfies the type.
            guard let hash = InfoHash(bytes: reader.bytes(20)), let peer = PeerID(bytes: reader.bytes(20)) else {
                throw .truncated(message: "announce request", needed: Self.announceLength, got: bytes.count)
            }
            var announce = UDPAnnounceRequest(infoHash: hash, peerID: peer, port: 0)
            announce.downloaded = Int64(bitPattern: reader.u64())
            announce.left = Int64(bitPattern: reader.u64())
            announce.uploaded = Int64(bitPattern: reader.u64())
            let eventNumber = reader.u32()
            guard let event = UDPAnnounceRequest.event(eventNumber) else { throw .invalidEvent(eventNumber) }
            announce.event = event
            announce.ip = reader.u32()
            announce.key = reader.u32()
            announce.numWant = Int32(bitPattern: reader.u32())
            announce.port = reader.u16()
            self = .announce(connectionID: connection, transactionID: transaction, announce)
        case .scrape:
            let rest = bytes.count - 16
            guard rest > 0 else { throw .noHashes }
            guard rest % 20 == 0 else { throw .badLength(message: "scrape request's info-hashes", count: rest, multipleOf: 20) }
            guard rest / 20 <= UDPTracker.maxScrapeHashes else {
                throw .tooManyHashes(count: rest / 20, limit: UDPTracker.maxScrapeHashes)
            }
            var hashes: [InfoHash] = []
            for _ in 0..<(rest / 20) {
                guard let hash = InfoHash(bytes: reader.bytes(20)) else { throw .noHashes }
                hashes.append(hash)
            }
            self = .scrape(connectionID: connection, transactionID: transaction, hashes)
        case .error:
            throw .unknownAction(actionNumber)  // only trackers send errors
        }
    }

    /// The transaction id of a datagram that is long enough to have one, so the tracker can address
    /// an error answer to a request it could not read.
    public static func transactionID(of datagram: some Collection<UInt8>) -> UInt32? {
        let head = Array(datagram.prefix(16))
        guard head.count == 16 else { return nil }
        var reader = ByteReader(head)
        _ = reader.bytes(12)
        return reader.u32()
    }
}

/// What a tracker answers.
public enum UDPTrackerResponse: Sendable, Equatable {
    case connect(transactionID: UInt32, connectionID: UInt64)
    /// `peers` are all IPv4 for a request that came over IPv4, all IPv6 over IPv6.
    case announce(transactionID: UInt32, interval: Int, leechers: Int, seeders: Int, peers: [PeerAddress])
    /// One line per info-hash of the request, in its order.
    case scrape(transactionID: UInt32, [ScrapeStats])
    case error(transactionID: UInt32, message: String)

    public var transactionID: UInt32 {
        switch self {
        case .connect(let id, _), .announce(let id, _, _, _, _), .scrape(let id, _), .error(let id, _): id
        }
    }

    public var action: UDPTrackerAction {
        switch self {
        case .connect: .connect
        case .announce: .announce
        case .scrape: .scrape
        case .error: .error
        }
    }

    /// The datagram. Counts beyond 32 bits are clamped (no real swarm is that large, but the
    /// encoder must not trap on any value). Announce peers of the other address family than
    /// `ipv6` are left out: BEP 15 tells them apart by the answer's family alone.
    public func encoded(ipv6: Bool = false) -> [UInt8] {
        var out = ByteWriter()
        out.u32(action.rawValue)
        out.u32(transactionID)
        switch self {
        case .connect(_, let connection):
            out.u64(connection)
        case .announce(_, let interval, let leechers, let seeders, let peers):
            out.u32(UInt32(clamping: interval))
            out.u32(UInt32(clamping: leechers))
            out.u32(UInt32(clamping: seeders))
            for peer in peers where peer.isIPv4 != ipv6 { out.bytes(peer.compact) }
        case .scrape(_, let lines):
            for line in lines {
                out.u32(UInt32(clamping: line.complete))
                out.u32(UInt32(clamping: line.downloaded))
                out.u32(UInt32(clamping: line.incomplete))
            }
        case .error(_, let message):
            out.bytes(Array(message.utf8.prefix(AnnounceResponse.maxMessageLength)))
        }
        return out.buffer
    }

    /// Reads a tracker's datagram; `ipv6` is the family of the socket it came over, which sets the
    /// width of announce peers. Does not check that it answers the request sent: `answering` does.
    public init(decoding datagram: some Collection<UInt8>, ipv6: Bool = false) throws(UDPTrackerError) {
        let bytes = Array(datagram.prefix(UDPTracker.maxDatagram + 1))
        guard bytes.count <= UDPTracker.maxDatagram else {
            throw .tooLong(message: "answer", count: bytes.count, limit: UDPTracker.maxDatagram)
        }
        guard bytes.count >= 8 else { throw .truncated(message: "answer", needed: 8, got: bytes.count) }
        var reader = ByteReader(bytes)
        let actionNumber = reader.u32()
        let transaction = reader.u32()
        guard let action = UDPTrackerAction(rawValue: actionNumber) else { throw .unknownAction(actionNumber) }
        switch action {
        case .connect:
            guard bytes.count >= 16 else { throw .truncated(message: "connect answer", needed: 16, got: bytes.count) }
            self = .connect(transactionID: transaction, connectionID: reader.u64())
        case .announce:
            guard bytes.count >= 20 else { throw .truncated(message: "announce answer", needed: 20, got: bytes.count) }
            // Read as unsigned: a "negative" interval or count is a huge one, then bounded like an
            // HTTP answer's (a day at most), so a hostile tracker cannot silence the client for good.
            let interval = min(Int(reader.u32()), AnnounceResponse.maxInterval)
            let leechers = Int(reader.u32())
            let seeders = Int(reader.u32())
            let rest = reader.rest()
            guard let peers = PeerAddress.compactList(rest, ipv6: ipv6, limit: AnnounceResponse.maxPeers) else {
                throw .badLength(message: "announce answer's peers", count: rest.count, multipleOf: ipv6 ? 18 : 6)
            }
            self = .announce(transactionID: transaction, interval: interval, leechers: leechers, seeders: seeders, peers: peers)
        case .scrape:
            let rest = reader.rest()
            guard rest.count % 12 == 0 else { throw .badLength(message: "scrape answer", count: rest.count, multipleOf: 12) }
            var lines: [ScrapeStats] = []
            var lineReader = ByteReader(rest)
            for _ in 0..<(rest.count / 12) {
                let seeders = Int(lineReader.u32())
                let completed = Int(lineReader.u32())
                let leechers = Int(lineReader.u32())
                lines.append(ScrapeStats(complete: seeders, downloaded: completed, incomplete: leechers))
            }
            self = .scrape(transactionID: transaction, lines)
        case .error:
            self = .error(transactionID: transaction, message: displayText(reader.rest()))
        }
    }

    /// Checks that this answers the request with `transactionID` and `action`; an error answer to
    /// it is returned as is (the caller shows its message).
    public func answering(_ expected: UDPTrackerAction, transactionID expectedID: UInt32) throws(UDPTrackerError) -> Self {
        guard transactionID == expectedID else { throw .transactionMismatch(expected: expectedID, got: transactionID) }
        guard action == expected || action == .error else {
            throw .wrongAction(expected: expected.rawValue, got: action.rawValue)
        }
        return self
    }
}

/// Connection ids without per-client state: an HMAC-SHA1, under a secret of the tracker's, of the
/// client's address and the current time epoch. An id is accepted in its epoch and the next, so it
/// lives from `epochLength` to twice that (BEP 15 asks two minutes of the tracker); a client that
/// never received the connect answer cannot produce one, so a spoofed source gets nothing but the
/// 16-byte connect answer, no larger than its request.
public struct UDPConnectionIDs: Sendable {
    public static let epochLength: Double = 120
    private let inner: [UInt8]
    private let outer: [UInt8]

    /// `secret`: at least 16 random bytes, kept for the tracker's life.
    public init(secret: [UInt8]) {
        // HMAC (RFC 2104) over SHA-1, from the SHA-1 the package already has (InfoHash's): a key
        // longer than the block is hashed first, then padded to the 64-byte block.
        var key = secret.count > 64 ? InfoHash(hashingInfo: secret).bytes : secret
        key += [UInt8](repeating: 0, count: 64 - key.count)
        inner = key.map { $0 ^ 0x36 }
        outer = key.map { $0 ^ 0x5C }
    }

    public init() {
        var random = SystemRandomNumberGenerator()
        self.init(secret: (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) })
    }

    /// The id for `address` (its IP; the port is not part of it) at `now` (seconds on any clock the tracker keeps).
    public func id(for address: PeerAddress, now: Double) -> UInt64 {
        id(for: address, epoch: Self.epoch(now))
    }

    /// True for an id made for `address` in this epoch or the previous one.
    public func isValid(_ id: UInt64, for address: PeerAddress, now: Double) -> Bool {
        let epoch = Self.epoch(now)
        return id == self.id(for: address, epoch: epoch) || (epoch > 0 && id == self.id(for: address, epoch: epoch - 1))
    }

    static func epoch(_ now: Double) -> UInt64 {
        // Clock values outside 0...2^53 (nan, negative, infinite) fall into epoch 0 rather than trap.
        guard now.isFinite, now > 0, now < 9e15 else { return 0 }
        return UInt64(now / epochLength)
    }

    func id(for address: PeerAddress, epoch: UInt64) -> UInt64 {
        // A fixed-length message: the address as 16 bytes (IPv4-mapped for IPv4), then the epoch.
        // Not the port: a client may send each exchange from a new socket (vmswarm does, and a NAT
        // may move it), and what the id proves is that the host receives at that address.
        var message = address.isIPv4 ? [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + address.ip : address.ip
        message += (0..<8).reversed().map { UInt8(truncatingIfNeeded: epoch >> (UInt64($0) * 8)) }
        return hmac(message).prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// HMAC-SHA1 of `message` under the secret.
    func hmac(_ message: [UInt8]) -> [UInt8] {
        InfoHash(hashingInfo: outer + InfoHash(hashingInfo: inner + message).bytes).bytes
    }
}

/// Big-endian writes into a byte array.
struct ByteWriter {
    var buffer: [UInt8] = []

    mutating func u16(_ value: UInt16) { buffer += [UInt8(value >> 8), UInt8(value & 0xFF)] }
    mutating func u32(_ value: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
    mutating func u64(_ value: UInt64) { for shift in stride(from: 56, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) } }
    mutating func bytes(_ value: [UInt8]) { buffer += value }
}

/// Big-endian reads; callers check the length first, and a read past the end yields zeros rather
/// than trapping, so a missed check is a wrong value, never a crash.
struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func bytes(_ count: Int) -> [UInt8] {
        let end = min(bytes.count, offset + count)
        defer { offset = end }
        let slice = Array(bytes[min(offset, end)..<end])
        return slice.count == count ? slice : slice + [UInt8](repeating: 0, count: count - slice.count)
    }

    mutating func u16() -> UInt16 { bytes(2).reduce(0) { $0 << 8 | UInt16($1) } }
    mutating func u32() -> UInt32 { bytes(4).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() -> UInt64 { bytes(8).reduce(0) { $0 << 8 | UInt64($1) } }

    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[min(offset, bytes.count)...])
    }
}
