import Metainfo
import NIOCore
import TestSupport
import Testing

@testable import PeerWire

let layout = try! PieceLayout(pieceLength: 32768, fileLengths: [32768 * 9 + 1000])  // 10 pieces, last 1000 B
let hash = InfoHash(bytes: [UInt8](repeating: 7, count: 20))!
let us = PeerID(bytes: Array("-VS0100-aaaaaaaaaaaa".utf8))!
let them = PeerID(bytes: Array("-LT2080-bbbbbbbbbbbb".utf8))!

func encode(_ messages: [PeerMessage]) -> ByteBuffer {
    var buffer = ByteBuffer()
    for message in messages { PeerWireEncoder.write(message, to: &buffer) }
    return buffer
}

func + (lhs: ByteBuffer, rhs: ByteBuffer) -> ByteBuffer {
    var joined = lhs
    var rhs = rhs
    joined.writeBuffer(&rhs)
    return joined
}

func decodeAll(_ buffer: ByteBuffer) throws(PeerWireError) -> [PeerMessage] {
    var buffer = buffer
    var messages: [PeerMessage] = []
    while let message = try PeerWireDecoder().next(from: &buffer) { messages.append(message) }
    return messages
}

func session(fast: Bool = true) -> PeerSession {
    PeerSession(layout: layout, ourHandshake: Handshake(infoHash: hash, peerID: us),
        theirHandshake: Handshake(infoHash: hash, peerID: them, fast: fast))
}

let block0 = BlockRequest(piece: PieceIndex(0), begin: 0, length: 16384)

@Suite struct CodecTests {
    static let all: [PeerMessage] = [
        .keepAlive, .choke, .unchoke, .interested, .notInterested, .have(PieceIndex(3)), .bitfield([0xFF, 0xC0]),
        .request(block0), .cancel(block0), .reject(block0), .port(6881), .suggest(PieceIndex(2)), .haveAll, .haveNone,
        .allowedFast(PieceIndex(1)), .piece(PieceIndex(9), begin: 0, block: ByteBuffer(bytes: [1, 2, 3])),
        .extended(id: 0, payload: ByteBuffer(bytes: Array("d1:md6:ut_pexi1eee".utf8))), .unknown(id: 99, length: 5),
    ]

    @Test func everyMessageRoundTrips() throws {
        #expect(try decodeAll(encode(Self.all)) == Self.all)
    }

    @Test func bytesArrivingOneAtATimeDecodeTheSame() throws {
        let whole = encode(Self.all)
        var buffer = ByteBuffer()
        var messages: [PeerMessage] = []
        for byte in whole.readableBytesView {
            buffer.writeInteger(byte)
            while let message = try PeerWireDecoder().next(from: &buffer) { messages.append(message) }
        }
        #expect(messages == Self.all)
    }

    /// Reads split anywhere (inside a length prefix, a header or a block) frame the same messages
    /// as the whole stream, and a split message holds only its own bytes.
    @Test func framerSplitsAnywhere() throws {
        let block = ByteBuffer(bytes: (0..<16384).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let stream = Self.all + [.piece(PieceIndex(4), begin: 16384, block: block), .have(PieceIndex(5))] + Self.all
        let whole = encode(stream)
        var rng = SplitMix64(seed: 5)
        for round in 0..<200 {
            var framer = PeerWireFramer()
            var messages: [PeerMessage] = []
            var offset = 0
            while offset < whole.readableBytes {
                let size = round == 0 ? 1 : min(whole.readableBytes - offset, Int.random(in: 1...40000, using: &rng))
                messages += try framer.messages(in: whole.getSlice(at: offset, length: size)!)
                #expect(framer.pendingBytes <= 16384 + 13)
                offset += size
            }
            #expect(messages == stream, "round \(round)")
            #expect(framer.pendingBytes == 0)
        }
    }

    /// An over-long length prefix split across reads is refused once its fourth byte arrives,
    /// before any payload is held.
    @Test func framerRefusesAnOverlongPrefixSplitAcrossReads() throws {
        var framer = PeerWireFramer()
        #expect(try framer.messages(in: encode([.have(PieceIndex(1))]) + ByteBuffer(bytes: [0x7F, 0xFF])) == [.have(PieceIndex(1))])
        #expect(framer.pendingBytes == 2)
        #expect(throws: PeerWireError.messageTooLong(length: 0x7FFF_FFFF, limit: (1 << 20) + 9)) {
            try framer.messages(in: ByteBuffer(bytes: [0xFF, 0xFF, 7, 7, 7]))
        }
    }

    @Test func hugeLengthPrefixIsRefusedBeforeBuffering() {
        var buffer = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 7])
        #expect(throws: PeerWireError.messageTooLong(length: 0xFFFF_FFFF, limit: (1 << 20) + 9)) {
            try PeerWireDecoder().next(from: &buffer)
        }
    }

    @Test func wrongPayloadLengthsAreRefused() {
        for bytes: [UInt8] in [[0, 0, 0, 2, 0, 9], [0, 0, 0, 3, 4, 0, 0], [0, 0, 0, 5, 6, 0, 0, 0, 0], [0, 0, 0, 4, 7, 0, 0, 0], [0, 0, 0, 1, 20]] {
            var buffer = ByteBuffer(bytes: bytes)
            #expect(throws: PeerWireError.self, "\(bytes)") { try PeerWireDecoder().next(from: &buffer) }
        }
    }

    @Test func handshakeRoundTripAndStrangers() throws {
        var buffer = ByteBuffer()
        let handshake = Handshake(infoHash: hash, peerID: us)
        handshake.write(to: &buffer)
        #expect(buffer.readableBytes == 68)
        var partial = buffer.getSlice(at: 0, length: 30)!
        #expect(try Handshake.read(from: &partial) == nil)
        let read = try #require(try Handshake.read(from: &buffer))
        #expect(read == handshake)
        #expect(read.supportsFast && read.supportsExtensions)
        var http = ByteBuffer(string: "GET / HTTP/1.1\r\n")
        #expect(throws: PeerWireError.notBitTorrent) { try Handshake.read(from: &http) }
        var early = ByteBuffer(bytes: [19] + Array("BitTorrent prxtocol".utf8))
        #expect(throws: PeerWireError.notBitTorrent) { try Handshake.read(from: &early) }
    }

    /// Random bytes never crash the decoder or the session: they decode, wait, or are refused.
    @Test func randomGarbageNeverCrashes() {
        var rng = SplitMix64(seed: 77)
        for _ in 0..<3000 {
            let bytes = (0..<Int.random(in: 0...64, using: &rng)).map { index -> UInt8 in
                index < 3 && Bool.random(using: &rng) ? 0 : UInt8.random(in: 0...255, using: &rng)
            }
            var buffer = ByteBuffer(bytes: bytes)
            var peer = session()
            do {
                while let message = try PeerWireDecoder().next(from: &buffer) { _ = try peer.receive(message) }
            } catch {
                continue
            }
        }
    }
}

@Suite struct SessionRuleTests {
    @Test func bitfieldMustFitTheTorrentAndOnlyAdds() throws {
        var peer = session()
        #expect(throws: PeerViolation.badBitfield(.wrongSize(expected: 2, got: 1))) { try peer.receive(.bitfield([0xFF])) }
        peer = session()
        #expect(throws: PeerViolation.badBitfield(.spareBitsSet)) { try peer.receive(.bitfield([0xFF, 0xE0])) }
        peer = session()
        #expect(try peer.receive(.bitfield([0xFF, 0xC0])) == [.hasPieces(Bitfield(pieceCount: 10, all: true))])
        #expect(peer.peerPieces.isComplete)
        #expect(try peer.receive(.haveNone) == [.hasPieces(Bitfield(pieceCount: 10))], "a later piece set adds nothing")
        // libtorrent sends its extension handshake before the bitfield: allowed.
        peer = session()
        _ = try peer.receive(.extended(id: 0, payload: ByteBuffer(bytes: ExtensionHandshake.ours.encoded())))
        #expect(try peer.receive(.haveAll) == [.hasPieces(Bitfield(pieceCount: 10, all: true))])
        // aria2 may send a have before its bitfield: merged, and only new pieces reported.
        peer = session()
        _ = try peer.receive(.have(PieceIndex(0)))
        var expected = Bitfield(pieceCount: 10)
        expected.insert(PieceIndex(1))
        #expect(try peer.receive(.bitfield([0xC0, 0x00])) == [.hasPieces(expected)])
        #expect(peer.peerPieces.count == 2)
    }

    @Test func haveOutsideTheTorrentIsRefused() throws {
        var peer = session()
        #expect(try peer.receive(.have(PieceIndex(9))) == [.has(PieceIndex(9))])
        #expect(try peer.receive(.have(PieceIndex(9))) == [])
        #expect(throws: PeerViolation.pieceOutOfRange(PieceIndex(10))) { try peer.receive(.have(PieceIndex(10))) }
    }

    @Test func requestsMustLieInsideTheirPiece() throws {
        var peer = session()
        peer.sent(.unchoke)
        #expect(try peer.receive(.request(block0)) == [.requested(block0)])
        for bad in [
            BlockRequest(piece: PieceIndex(9), begin: 0, length: 1001), BlockRequest(piece: PieceIndex(10), begin: 0, length: 1),
            BlockRequest(piece: PieceIndex(0), begin: 32000, length: 16384), BlockRequest(piece: PieceIndex(0), begin: 0, length: 0),
            BlockRequest(piece: PieceIndex(0), begin: 0, length: 200_000),
        ] {
            #expect(throws: PeerViolation.invalidRequest(bad)) { try peer.receive(.request(bad)) }
        }
        #expect(try peer.receive(.cancel(block0)) == [.cancelled(block0)])
        #expect(peer.peerRequests.isEmpty)
    }

    @Test func requestFloodsAreRefused() throws {
        var peer = session()
        peer.sent(.unchoke)
        for n in 0..<PeerSession.maxPeerRequests { _ = try peer.receive(.request(BlockRequest(piece: PieceIndex(n % 9), begin: 0, length: 1 + n / 9))) }
        #expect(throws: PeerViolation.tooManyRequests(limit: 500)) { try peer.receive(.request(block0)) }
    }

    @Test func requestsWhileChokedAreIgnored() throws {
        var peer = session()
        #expect(try peer.receive(.request(block0)) == [.ignored("request while choked: reject it")])
        #expect(peer.peerRequests.isEmpty)
    }

    @Test func onlyRequestedBlocksAreAccepted() throws {
        var peer = session()
        let data = ByteBuffer(repeating: 1, count: 16384)
        #expect(throws: PeerViolation.unrequestedBlock(block0)) { try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) }
        peer.sent(.request(block0))
        #expect(try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) == [.block(block0, data)])
        #expect(peer.outstanding.isEmpty)
        // A block we cancelled may still arrive: tolerated once, not a violation.
        peer.sent(.request(block0))
        peer.sent(.cancel(block0))
        #expect(try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) == [.lateBlock(block0)])
        #expect(throws: PeerViolation.unrequestedBlock(block0)) { try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) }
    }

    /// Asked, cancelled and asked again, twice over (an urgent piece jumping the queue): the block
    /// may come once per request, and every copy is taken, none a violation (this dropped the only
    /// seed of a download that served a reader).
    @Test func aBlockAskedAgainAfterCancelsMayArriveOncePerRequest() throws {
        var peer = session()
        let data = ByteBuffer(repeating: 1, count: 16384)
        for _ in 0..<2 {
            peer.sent(.request(block0))
            peer.sent(.cancel(block0))
        }
        peer.sent(.request(block0))
        #expect(try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) == [.block(block0, data)])
        #expect(try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) == [.lateBlock(block0)])
        #expect(try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) == [.lateBlock(block0)])
        #expect(throws: PeerViolation.unrequestedBlock(block0)) { try peer.receive(.piece(PieceIndex(0), begin: 0, block: data)) }
    }

    @Test func chokeDropsRequestsUnlessFast() throws {
        var plain = session(fast: false)
        plain.sent(.request(block0))
        #expect(try plain.receive(.choke) == [.choked, .requestsDropped([block0])])
        var fast = session(fast: true)
        fast.sent(.request(block0))
        #expect(try fast.receive(.choke) == [.choked])
        #expect(try fast.receive(.reject(block0)) == [.rejected(block0)])
        #expect(fast.outstanding.isEmpty)
    }

    @Test func fastMessagesNeedTheFastExtension() {
        for message: PeerMessage in [.haveAll, .haveNone, .reject(block0), .suggest(PieceIndex(1)), .allowedFast(PieceIndex(1))] {
            var peer = session(fast: false)
            #expect(throws: PeerViolation.self, "\(message)") { try peer.receive(message) }
        }
    }

    @Test func extensionHandshakeAndPeerExchange() throws {
        var peer = session()
        let theirs = ExtensionHandshake(messageIDs: ["ut_pex": 3, "ut_metadata": 2], listenPort: 51413, client: "libtorrent 2.0", requestQueue: 500)
        let events = try peer.receive(.extended(id: 0, payload: ByteBuffer(bytes: theirs.encoded())))
        #expect(events == [.extensionHandshake(theirs)])
        #expect(peer.peerExtensions?.messageIDs["ut_pex"] == 3)
        let pex = PeerExchange(added: [PeerAddress(host: "10.0.0.2", port: 6881)!, PeerAddress(host: "fd00::2", port: 7000)!],
            dropped: [PeerAddress(host: "10.0.0.3", port: 1)!])
        #expect(try peer.receive(.extended(id: ExtensionHandshake.pexID, payload: ByteBuffer(bytes: pex.encoded()))) == [.peerExchange(pex)])
        #expect(throws: PeerViolation.self) {
            try peer.receive(.extended(id: ExtensionHandshake.pexID, payload: ByteBuffer(string: "d5:added5:abcdee")))
        }
        #expect(throws: PeerViolation.self) { try peer.receive(.extended(id: 0, payload: ByteBuffer(string: "not bencode"))) }
        #expect(try peer.receive(.extended(id: 42, payload: ByteBuffer())) == [.ignored("extension message 42")])
    }
}

/// Issue 15: what a hostile peer controls in the codec, the session and BEP 10/11 payloads is
/// bounded or refused, never trusted as a number to allocate by or trapped on.
@Suite struct HostilePeerInputTests {
    func handshake(_ text: String) throws -> ExtensionHandshake {
        try ExtensionHandshake(payload: ByteBuffer(string: text))
    }

    @Test func extensionHandshakeNumbersAndTextsAreBounded() throws {
        // Before: reqq -5 and 10^18 were kept as they came, `v` kept its escape sequences.
        #expect(try handshake("d4:reqqi-5ee").requestQueue == nil)
        #expect(try handshake("d4:reqqi0ee").requestQueue == nil)
        #expect(try handshake("d4:reqqi1000000000000000000ee").requestQueue == ExtensionHandshake.maxRequestQueue)
        #expect(try handshake("d4:reqqi250ee").requestQueue == 250)
        #expect(try handshake("d1:pi0ee").listenPort == nil)
        #expect(try handshake("d1:pi65536ee").listenPort == nil)
        #expect(try handshake("d1:v13:evil\u{1B}[2J\nnamee").client == "evil[2Jname")
        let long = try handshake("d1:v500:\(String(repeating: "x", count: 500))e")
        #expect(long.client?.utf8.count == ExtensionHandshake.maxClientLength)
        // Ids outside a byte and overlong names are dropped; at most `maxExtensions` entries read.
        let name = String(repeating: "n", count: ExtensionHandshake.maxNameLength + 1)
        let odd = try handshake("d1:md\(name.utf8.count):\(name)i3e4:ut_ai256e4:ut_bi-1e4:ut_ci7eee")
        #expect(odd.messageIDs == ["ut_c": 7])
        // Found by the extensions fuzzer: a name with bytes that are not UTF-8 became one with
        // U+FFFD in their place, longer than the cap and not the name sent. It names no extension.
        var binary = Array("d1:md11:ut_metada".utf8) + [0xFF, 0xFF] + Array("i3e6:ut_pexi1eee".utf8)
        #expect(try ExtensionHandshake(payload: ByteBuffer(bytes: binary)).messageIDs == ["ut_pex": 1])
        binary = Array("d1:md2:".utf8) + [0xC3, 0x28] + Array("i3eee".utf8)
        #expect(try ExtensionHandshake(payload: ByteBuffer(bytes: binary)).messageIDs.isEmpty)
        let many = (0..<200).map { "4:\(1000 + $0)i1e" }.joined()
        #expect(try handshake("d1:md\(many)ee").messageIDs.count == ExtensionHandshake.maxExtensions)
        // Not a dictionary, too deep, or over 64 KiB: a malformed extension message.
        #expect(throws: PeerViolation.self) { try handshake("i1e") }
        #expect(throws: PeerViolation.self) { try handshake("d1:md1:ad1:ad1:ad1:ai1eeeeee") }
        #expect(throws: PeerViolation.self) {
            try ExtensionHandshake(payload: ByteBuffer(string: "d1:v70000:" + String(repeating: "v", count: 70_000) + "e"))
        }
    }

    @Test func peerExchangeListsAreCheckedAndCapped() throws {
        let peers = (0..<300).flatMap { n -> [UInt8] in [10, 0, UInt8(n >> 8), UInt8(n & 0xFF), 0x1A, 0xE1] }
        var payload = ByteBuffer(string: "d5:added\(peers.count):")
        payload.writeBytes(peers)
        payload.writeString("7:added.f0:7:dropped6:")
        payload.writeBytes([10, 0, 0, 9, 0, 0])  // port 0: skipped
        payload.writeString("e")
        let pex = try PeerExchange(payload: payload)
        #expect(pex.added.count == PeerExchange.maxPeers)
        #expect(pex.dropped.isEmpty)
        for bad in ["d5:added5:abcdee", "d6:added617:\(String(repeating: "x", count: 17))e", "d7:dropped7:abcdefge"] {
            #expect(throws: PeerViolation.self, "\(bad)") { try PeerExchange(payload: ByteBuffer(string: bad)) }
        }
    }

    /// Before: every allowed-fast offer was kept, millions for a peer naming every piece.
    @Test func allowedFastOffersAreCapped() throws {
        let big = try PieceLayout(pieceLength: 16384, fileLengths: [16384 * 1000])
        var peer = PeerSession(layout: big, ourHandshake: Handshake(infoHash: hash, peerID: us),
            theirHandshake: Handshake(infoHash: hash, peerID: them))
        for n in 0..<1000 { _ = try peer.receive(.allowedFast(PieceIndex(n))) }
        #expect(peer.allowedFastFromPeer.count == PeerSession.maxAllowedFast)
        #expect(try peer.receive(.allowedFast(PieceIndex(0))) == [.allowedFast(PieceIndex(0))])
        #expect(throws: PeerViolation.pieceOutOfRange(PieceIndex(1000))) { try peer.receive(.allowedFast(PieceIndex(1000))) }
    }

    /// Every field of a request, have or piece message is a UInt32 from the peer: all of them at
    /// their maximum, so `begin + length` would overflow 32 bits, give a refusal and no trap.
    @Test func extremeWireNumbersAreRefusedNotTrapped() throws {
        var bytes = ByteBuffer()
        bytes.writeInteger(UInt32(13))
        bytes.writeInteger(UInt8(6))
        for _ in 0..<3 { bytes.writeInteger(UInt32.max) }
        let messages = try decodeAll(bytes)
        let extreme = BlockRequest(piece: PieceIndex(Int(UInt32.max)), begin: Int(UInt32.max), length: Int(UInt32.max))
        #expect(messages == [.request(extreme)])
        var peer = session()
        peer.sent(.unchoke)
        #expect(throws: PeerViolation.invalidRequest(extreme)) { try peer.receive(.request(extreme)) }
        let inPiece = BlockRequest(piece: PieceIndex(0), begin: Int(UInt32.max), length: 16384)
        #expect(throws: PeerViolation.invalidRequest(inPiece)) { try peer.receive(.request(inPiece)) }
        #expect(throws: PeerViolation.pieceOutOfRange(PieceIndex(Int(UInt32.max)))) { try peer.receive(.have(PieceIndex(Int(UInt32.max)))) }
        let late = PeerMessage.piece(PieceIndex(Int(UInt32.max)), begin: Int(UInt32.max), block: ByteBuffer())
        #expect(throws: PeerViolation.self) { try peer.receive(late) }
        // A bitfield as long as the frame allows, for a torrent of 10 pieces.
        #expect(throws: PeerViolation.badBitfield(.wrongSize(expected: 2, got: 1 << 20))) {
            try peer.receive(.bitfield([UInt8](repeating: 0xFF, count: 1 << 20)))
        }
        // A decoder limit beyond 32 bits used to trap in `UInt32(maxMessageLength)`.
        var prefix = ByteBuffer()
        prefix.writeInteger(UInt32.max)
        #expect(try PeerWireDecoder(maxMessageLength: .max).next(from: &prefix) == nil)
    }
}

@Suite struct BlockGeometryTests {
    @Test func blocksCoverEachPiece() {
        #expect(layout.blocks(of: PieceIndex(0)) == [block0, BlockRequest(piece: PieceIndex(0), begin: 16384, length: 16384)])
        #expect(layout.blocks(of: PieceIndex(9)) == [BlockRequest(piece: PieceIndex(9), begin: 0, length: 1000)])
    }

    @Test func bitfieldBits() throws {
        var bits = Bitfield(pieceCount: 10)
        let first = bits.insert(PieceIndex(0))
        let last = bits.insert(PieceIndex(9))
        let again = bits.insert(PieceIndex(9))
        #expect(first && last && !again)
        #expect(bits.bytes == [0x80, 0x40])
        #expect(bits.count == 2)
        #expect(Bitfield(pieceCount: 10, all: true).bytes == [0xFF, 0xC0])
        #expect(try Bitfield(bytes: [0x80, 0x40], pieceCount: 10) == bits)
    }
}
