import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm

/// A node that holds the info dictionary serves it over ut_metadata (BEP 9): it says so in its
/// extension handshake and answers requests with exactly the .torrent's `info` bytes.
@Suite struct MetadataServingTests {
    static let hash = InfoHash(bytes: [UInt8](repeating: 4, count: 20))!
    let metadata = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 * 7) }

    func engine(serving: Bool) -> SwarmEngine {
        let info = try! TorrentInfo(name: "t.img", files: [FileEntry(path: ["t.img"], length: 16384 * 2)], isMultiFile: false,
            privacy: .unspecified, pieceLength: 16384, pieceHashes: [UInt8](repeating: 0, count: 40))
        var engine = SwarmEngine(info: info, have: Bitfield(pieceCount: 2, all: true),
            handshake: Handshake(infoHash: Self.hash, peerID: PeerID(bytes: [UInt8](repeating: 1, count: 20))!), seed: 1)
        if serving { engine.metadata = MetadataServer(metadata: metadata) }
        return engine
    }

    func connect(_ engine: inout SwarmEngine, peer: Int = 1) -> [SwarmEngine.Action] {
        engine.peerConnected(peer, handshake: Handshake(infoHash: Self.hash, peerID: PeerID(bytes: [UInt8](repeating: UInt8(peer + 1), count: 20))!),
            address: PeerAddress(ip: [10, 0, 0, 2], port: 6881)!)
    }

    func ourHandshake(_ actions: [SwarmEngine.Action]) throws -> ExtensionHandshake? {
        for case .send(_, .extended(0, let payload)) in actions { return try ExtensionHandshake(payload: payload) }
        return nil
    }

    func metadataSent(_ actions: [SwarmEngine.Action], to peer: Int) throws -> [MetadataMessage] {
        var messages: [MetadataMessage] = []
        for case .send(peer, .extended(let id, let payload)) in actions where id == 9 { messages.append(try MetadataMessage(payload: payload)) }
        return messages
    }

    @Test func advertisesAndServesTheInfoDictionary() throws {
        var node = engine(serving: true)
        let handshake = try #require(try ourHandshake(connect(&node)))
        #expect(handshake.messageIDs["ut_metadata"] == ExtensionHandshake.metadataID)
        #expect(handshake.metadataSize == metadata.count)
        // The peer names its own id for ut_metadata (9); answers go to that id.
        _ = node.received(.extended(id: 0, payload: ByteBuffer(bytes: ExtensionHandshake(messageIDs: ["ut_metadata": 9]).encoded())), from: 1)
        var fetched: [UInt8] = []
        for piece in 0..<2 {
            let answer = node.received(.extended(id: ExtensionHandshake.metadataID, payload: MetadataMessage.request(piece: piece).encoded()), from: 1)
            guard case .data(piece, 20_000, let bytes)? = try metadataSent(answer, to: 1).first else {
                Issue.record("piece \(piece) not served: \(answer)")
                return
            }
            fetched += bytes
        }
        #expect(fetched == metadata)
        let beyond = node.received(.extended(id: ExtensionHandshake.metadataID, payload: MetadataMessage.request(piece: 2).encoded()), from: 1)
        #expect(try metadataSent(beyond, to: 1) == [.reject(piece: 2)])
    }

    @Test func aPeerAskingForeverIsRejectedAfterItsShare() throws {
        var node = engine(serving: true)
        _ = connect(&node)
        _ = node.received(.extended(id: 0, payload: ByteBuffer(bytes: ExtensionHandshake(messageIDs: ["ut_metadata": 9]).encoded())), from: 1)
        let share = MetadataServer(metadata: metadata).maxAnswersPerPeer
        var answers: [MetadataMessage] = []
        for _ in 0..<(share + 5) {
            answers += try metadataSent(node.received(.extended(id: ExtensionHandshake.metadataID, payload: MetadataMessage.request(piece: 0).encoded()), from: 1), to: 1)
        }
        #expect(answers.filter { if case .data = $0 { true } else { false } }.count == share)
        #expect(answers.suffix(5) == Array(repeating: .reject(piece: 0), count: 5))
    }

    @Test func aMalformedMetadataMessageDropsThePeer() {
        var node = engine(serving: true)
        _ = connect(&node)
        let actions = node.received(.extended(id: ExtensionHandshake.metadataID, payload: ByteBuffer(string: "d8:msg_typei0e5:piecei-4ee")), from: 1)
        #expect(actions.contains { if case .disconnect(1, let reason) = $0 { reason.contains("ut_metadata") } else { false } })
    }

    @Test func withoutTheDictionaryNothingIsOffered() throws {
        var node = engine(serving: false)
        let handshake = try #require(try ourHandshake(connect(&node)))
        #expect(handshake.messageIDs["ut_metadata"] == nil)
        #expect(handshake.metadataSize == nil)
    }
}
