import Bencode
import Metainfo
import NIOCore
import Testing

@testable import PeerWire

/// A made-up info dictionary of `size` bytes (its content does not matter to BEP 9, only its hash).
func metadataBytes(_ size: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

func metadataRefusal(_ text: [UInt8]) -> PeerViolation? {
    do { _ = try MetadataMessage(payload: ByteBuffer(bytes: text)); return nil } catch { return error }
}

@Suite struct MetadataCodecTests {
    @Test func roundTripsEveryMessage() throws {
        for message in [MetadataMessage.request(piece: 3), .reject(piece: 0), .data(piece: 1, totalSize: 20_000, bytes: metadataBytes(20_000 - 16_384))] {
            #expect(try MetadataMessage(payload: message.encoded()) == message)
        }
        // BEP 9's own example, byte for byte.
        #expect(Array(MetadataMessage.request(piece: 0).encoded().readableBytesView) == Array("d8:msg_typei0e5:piecei0ee".utf8))
        let data = MetadataMessage.data(piece: 0, totalSize: 3, bytes: [1, 2, 3]).encoded()
        #expect(Array(data.readableBytesView) == Array("d8:msg_typei1e5:piecei0e10:total_sizei3ee".utf8) + [1, 2, 3])
    }

    @Test func piecesCoverTheSizeExactly() {
        #expect(MetadataPiece.count(forSize: 1) == 1)
        #expect(MetadataPiece.count(forSize: 16_384) == 1)
        #expect(MetadataPiece.count(forSize: 16_385) == 2)
        #expect(MetadataPiece.count(forSize: MetadataPiece.maxMetadataSize) == MetadataPiece.maxPieces)
        #expect(MetadataPiece.length(of: 1, size: 16_385) == 1)
        #expect(MetadataPiece.length(of: 2, size: 16_385) == nil)
        #expect(MetadataPiece.length(of: -1, size: 16_385) == nil)
    }

    @Test func refusesHostileMessages() {
        let refused: [(String, [UInt8])] = [
            ("a list", Array("li1ee".utf8)),
            ("no msg_type", Array("d5:piecei0ee".utf8)),
            ("negative piece", Array("d8:msg_typei0e5:piecei-1ee".utf8)),
            ("piece past the largest dictionary", Array("d8:msg_typei0e5:piecei\(MetadataPiece.maxPieces)ee".utf8)),
            ("huge piece", Array("d8:msg_typei0e5:piecei99999999999999999999ee".utf8)),
            ("unknown msg_type", Array("d8:msg_typei7e5:piecei0ee".utf8)),
            ("bytes after a request", Array("d8:msg_typei0e5:piecei0eexyz".utf8)),
            ("bytes after a reject", Array("d8:msg_typei2e5:piecei0eex".utf8)),
            ("data without total_size", Array("d8:msg_typei1e5:piecei0eeabc".utf8)),
            ("total_size 0", Array("d8:msg_typei1e5:piecei0e10:total_sizei0eeabc".utf8)),
            ("total_size over 8 MiB", Array("d8:msg_typei1e5:piecei0e10:total_sizei\(MetadataPiece.maxMetadataSize + 1)eeabc".utf8)),
            ("a data piece over 16 KiB", Array("d8:msg_typei1e5:piecei0e10:total_sizei99999ee".utf8) + [UInt8](repeating: 0, count: 16_385)),
            ("truncated header", Array("d8:msg_typei1e5:piec".utf8)),
            ("a string running past the header", Array("d8:msg_typei1e5:piecei0e9999:".utf8)),
            ("header over 256 bytes", Array("d1:x300:".utf8) + [UInt8](repeating: 0x61, count: 300) + Array("8:msg_typei0e5:piecei0ee".utf8)),
            ("empty", []),
        ]
        for (what, bytes) in refused {
            guard case .malformedExtension(let why)? = metadataRefusal(bytes) else {
                Issue.record("\(what) was accepted")
                continue
            }
            #expect(why.hasPrefix("ut_metadata"), "\(what): \(why)")
        }
        // Exactly 16 KiB of data is a full piece.
        let full = Array("d8:msg_typei1e5:piecei0e10:total_sizei99999ee".utf8) + [UInt8](repeating: 0, count: 16_384)
        #expect(metadataRefusal(full) == nil)
    }

    @Test func extensionHandshakeCarriesABoundedMetadataSize() throws {
        let ours = ExtensionHandshake.withMetadata(size: 40_000)
        let read = try ExtensionHandshake(payload: ByteBuffer(bytes: ours.encoded()))
        #expect(read.metadataSize == 40_000)
        #expect(read.messageIDs["ut_metadata"] == ExtensionHandshake.metadataID)
        #expect(read.messageIDs["ut_pex"] == ExtensionHandshake.pexID)
        func size(_ value: String) throws -> Int? {
            try ExtensionHandshake(payload: ByteBuffer(string: "d1:mde13:metadata_size\(value)e")).metadataSize
        }
        #expect(try size("i8388608e") == MetadataPiece.maxMetadataSize)
        #expect(try size("i8388609e") == nil)
        #expect(try size("i0e") == nil)
        #expect(try size("i-5e") == nil)
        #expect(throws: PeerViolation.self) { try size("i99999999999999999999e") }  // not bencode to the decoder
        #expect(try size("3:big") == nil)
        #expect(ExtensionHandshake.ours.metadataSize == nil)
    }
}

@Suite struct MetadataServerTests {
    @Test func answersEachPieceAndRejectsTheRest() {
        let metadata = metadataBytes(40_000)
        let server = MetadataServer(metadata: metadata)
        #expect(server.answer(.request(piece: 0), answered: 0) == .data(piece: 0, totalSize: 40_000, bytes: Array(metadata[0..<16_384])))
        #expect(server.answer(.request(piece: 2), answered: 0) == .data(piece: 2, totalSize: 40_000, bytes: Array(metadata[32_768...])))
        #expect(server.answer(.request(piece: 3), answered: 0) == .reject(piece: 3))
        #expect(server.answer(.reject(piece: 0), answered: 0) == nil)
        #expect(server.answer(.data(piece: 0, totalSize: 1, bytes: [0]), answered: 0) == nil)
        // A peer asking again and again gets its share (four copies and some), then rejects.
        #expect(server.maxAnswersPerPeer == 4 * 3 + 16)
        #expect(server.answer(.request(piece: 0), answered: server.maxAnswersPerPeer - 1) != .reject(piece: 0))
        #expect(server.answer(.request(piece: 0), answered: server.maxAnswersPerPeer) == .reject(piece: 0))
    }
}

/// Drives a `MetadataFetch` against scripted peers, as the runtime would over sockets.
struct MetadataSwarm {
    enum Behaviour {
        case honest([UInt8])
        /// Serves these bytes (another dictionary, or a corrupted one) as if they were right.
        case liar([UInt8])
        case rejects
        case silent
        /// Answers every request with this message instead.
        case answers(MetadataMessage)
    }

    var fetch: MetadataFetch
    var behaviours: [Int: Behaviour] = [:]
    var dropped: [Int: String] = [:]
    var completed: [UInt8]?
    var requestsTo: [Int: [Int]] = [:]
    var now: Double = 0

    init(hashOf metadata: [UInt8]) {
        fetch = MetadataFetch(infoHash: InfoHash(hashingInfo: metadata))
    }

    mutating func join(_ peer: Int, _ behaviour: Behaviour, size: Int?, ids: [String: UInt8] = ["ut_metadata": 3]) {
        behaviours[peer] = behaviour
        run(fetch.peerJoined(peer, handshake: ExtensionHandshake(messageIDs: ids, metadataSize: size), now: now))
    }

    mutating func tick(_ seconds: Double) {
        now += seconds
        run(fetch.tick(now: now))
    }

    mutating func run(_ actions: [MetadataFetch.Action]) {
        var queue = actions
        while !queue.isEmpty {
            let action = queue.removeFirst()
            switch action {
            case .disconnect(let peer, let reason):
                #expect(dropped[peer] == nil, "dropped twice")
                dropped[peer] = reason
                behaviours[peer] = nil
            case .completed(let bytes):
                #expect(completed == nil)
                completed = bytes
            case .send(let peer, .request(let piece)):
                requestsTo[peer, default: []].append(piece)
                guard let behaviour = behaviours[peer] else { continue }
                let answer: MetadataMessage?
                switch behaviour {
                case .honest(let bytes), .liar(let bytes):
                    answer = MetadataServer(metadata: bytes).answer(.request(piece: piece), answered: 0)
                case .rejects: answer = .reject(piece: piece)
                case .silent: answer = nil
                case .answers(let message): answer = message
                }
                if let answer { queue += fetch.received(answer, from: peer, now: now) }
            case .send:
                break
            }
        }
    }
}

@Suite struct MetadataFetchTests {
    let metadata = metadataBytes(40_000)  // three pieces

    @Test func assemblesFromSeveralPeersAndChecksTheHash() {
        var swarm = MetadataSwarm(hashOf: metadata)
        swarm.join(1, .silent, size: 40_000)
        // The silent peer holds every piece (four requests each); a second one gets nothing yet.
        #expect(swarm.requestsTo[1] == [0, 1, 2])
        swarm.behaviours[1] = .honest(metadata)
        swarm.join(2, .honest(metadata), size: 40_000)
        #expect(swarm.requestsTo[2] == nil)
        swarm.tick(16)  // peer 1 sat on its requests: dropped, peer 2 asked for all
        #expect(swarm.dropped[1]?.contains("no answer") == true)
        #expect(swarm.requestsTo[2] == [0, 1, 2])
        #expect(swarm.completed == metadata)
        #expect(swarm.fetch.isFinished)
    }

    @Test func spreadsPiecesOverPeers() {
        let big = metadataBytes(16_384 * 8 + 5)  // nine pieces
        var swarm = MetadataSwarm(hashOf: big)
        var fetch = swarm.fetch
        // Two peers join before any answer comes: four requests to the first, four to the second.
        var actions = fetch.peerJoined(1, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: big.count), now: 0)
        actions += fetch.peerJoined(2, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: big.count), now: 0)
        #expect(actions == (0..<4).map { .send(1, .request(piece: $0)) } + (4..<8).map { .send(2, .request(piece: $0)) })
        swarm.fetch = fetch
        swarm.behaviours = [1: .honest(big), 2: .honest(big)]
        swarm.run(actions)
        #expect(swarm.completed == big)
        #expect(swarm.dropped.isEmpty)
    }

    @Test func dropsPeersThatRejectOrBreakTheRules() {
        let cases: [(String, MetadataSwarm.Behaviour, String)] = [
            ("rejects", .rejects, "rejected"),
            ("unrequested piece", .answers(.data(piece: 2, totalSize: 40_000, bytes: [UInt8](repeating: 0, count: 40_000 - 32_768))), "not requested"),
            ("wrong total size", .answers(.data(piece: 0, totalSize: 50_000, bytes: [UInt8](repeating: 0, count: 16_384))), "total_size"),
            ("short piece", .answers(.data(piece: 0, totalSize: 40_000, bytes: [1, 2, 3])), "not its length"),
            ("another dictionary's piece count", .answers(.data(piece: 0, totalSize: 40_000, bytes: [UInt8](repeating: 0, count: 16_383))), "not its length"),
        ]
        for (what, behaviour, reason) in cases {
            var swarm = MetadataSwarm(hashOf: metadata)
            swarm.fetch = MetadataFetch(infoHash: InfoHash(hashingInfo: metadata), configuration: { var c = MetadataFetch.Configuration(); c.requestsPerPeer = 1; return c }())
            swarm.join(1, behaviour, size: 40_000)
            #expect(swarm.dropped[1]?.contains(reason) == true, "\(what): \(swarm.dropped[1] ?? "kept")")
            // An honest peer then delivers everything.
            swarm.join(2, .honest(metadata), size: 40_000)
            #expect(swarm.completed == metadata, "\(what)")
            #expect(swarm.dropped[2] == nil)
        }
    }

    @Test func refusesPeersThatOfferNothing() {
        var swarm = MetadataSwarm(hashOf: metadata)
        swarm.join(1, .honest(metadata), size: nil)
        swarm.join(2, .honest(metadata), size: 40_000, ids: ["ut_pex": 1])
        swarm.join(3, .honest(metadata), size: 40_000, ids: ["ut_metadata": 0])
        #expect(Set(swarm.dropped.keys) == [1, 2, 3])
        #expect(swarm.requestsTo.isEmpty)
    }

    @Test func aLoneLiarIsDroppedAndOthersFetchAgain() {
        var corrupted = metadata
        corrupted[20_000] ^= 0xFF
        var swarm = MetadataSwarm(hashOf: metadata)
        swarm.join(1, .liar(corrupted), size: 40_000)
        #expect(swarm.fetch.hashFailures == 1)
        #expect(swarm.dropped[1]?.contains("does not hash") == true)
        #expect(swarm.completed == nil)
        swarm.join(2, .honest(metadata), size: 40_000)
        #expect(swarm.completed == metadata)
    }

    @Test func aMismatchWithSeveralSendersBlamesNobodyAndFindsTheLiarAlone() {
        var corrupted = metadata
        corrupted[0] ^= 0xFF  // piece 0, which the liar is asked for
        var swarm = MetadataSwarm(hashOf: metadata)
        swarm.fetch = MetadataFetch(infoHash: InfoHash(hashingInfo: metadata), configuration: { var c = MetadataFetch.Configuration(); c.requestsPerPeer = 2; return c }())
        // Requests go out before answers: peer 1 gets pieces 0 and 1, peer 2 piece 2.
        var fetch = swarm.fetch
        var actions = fetch.peerJoined(1, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: 40_000), now: 0)
        actions += fetch.peerJoined(2, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: 40_000), now: 0)
        swarm.fetch = fetch
        swarm.behaviours = [1: .liar(corrupted), 2: .honest(metadata)]
        // The honest peer answers first, so that the first solo attempt goes to the liar (the lowest
        // handle among suspects, none being unsuspected).
        swarm.run(actions.filter { if case .send(2, _) = $0 { true } else { false } })
        swarm.run(actions.filter { if case .send(1, _) = $0 { true } else { false } })
        #expect(swarm.fetch.hashFailures == 2)
        // The first failure had two senders: nobody was blamed for it. The solo retry from peer 1
        // failed with peer 1 alone, which names it; peer 2 then delivered alone.
        #expect(Set(swarm.dropped.keys) == [1])
        #expect(swarm.completed == metadata)
        #expect(swarm.dropped[2] == nil)
    }

    @Test func afterAMixedFailureAnUninvolvedPeerIsAskedFirst() {
        var corrupted = metadata
        corrupted[0] ^= 0xFF
        var swarm = MetadataSwarm(hashOf: metadata)
        var fetch = MetadataFetch(infoHash: InfoHash(hashingInfo: metadata), configuration: { var c = MetadataFetch.Configuration(); c.requestsPerPeer = 2; return c }())
        var actions = fetch.peerJoined(1, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: 40_000), now: 0)
        actions += fetch.peerJoined(2, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: 40_000), now: 0)
        // A third peer joins before the failure: it took no part in it.
        actions += fetch.peerJoined(3, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: 40_000), now: 0)
        swarm.fetch = fetch
        swarm.behaviours = [1: .liar(corrupted), 2: .honest(metadata), 3: .honest(metadata)]
        swarm.run(actions)
        #expect(swarm.fetch.hashFailures == 1)
        #expect(swarm.dropped.isEmpty)
        #expect(swarm.requestsTo[3] == [0, 1, 2])
        #expect(swarm.completed == metadata)
    }

    @Test func aMinorityAnnouncingAnotherSizeIsNotAsked() {
        var swarm = MetadataSwarm(hashOf: metadata)
        var fetch = swarm.fetch
        var actions: [MetadataFetch.Action] = []
        for (peer, size) in [(1, 40_000), (2, 70_000), (3, 40_000)] {
            actions += fetch.peerJoined(peer, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: size), now: 0)
        }
        swarm.fetch = fetch
        swarm.behaviours = [1: .honest(metadata), 2: .liar(metadataBytes(70_000)), 3: .honest(metadata)]
        swarm.run(actions)
        #expect(swarm.requestsTo[2] == nil)
        #expect(swarm.completed == metadata)
    }

    @Test func anAttemptWhoseSendersLeftStartsOverWithTheOthers() {
        let real = metadataBytes(70_000)
        var swarm = MetadataSwarm(hashOf: real)
        swarm.join(1, .silent, size: 40_000)  // first, so the attempt is for its size
        swarm.join(2, .honest(real), size: 70_000)
        #expect(swarm.requestsTo[2] == nil)
        swarm.run(swarm.fetch.peerLeft(1, now: 0))
        #expect(swarm.requestsTo[2] == [0, 1, 2, 3, 4])
        #expect(swarm.completed == real)
    }

    @Test func requestsFromTheOtherSideAreRejected() {
        var fetch = MetadataFetch(infoHash: InfoHash(hashingInfo: metadata))
        _ = fetch.peerJoined(1, handshake: ExtensionHandshake(messageIDs: ["ut_metadata": 3], metadataSize: 40_000), now: 0)
        #expect(fetch.received(.request(piece: 0), from: 1, now: 0) == [.send(1, .reject(piece: 0))])
    }
}
