import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm

/// Smart ban and parole (issue 15, point 3): a liar that hides bad blocks among honest peers'
/// blocks must get itself banned, never them. Before, every sender of a failed piece took a strike
/// and two strikes banned, so one liar corrupting one block of each piece it sent got every honest
/// peer sharing those pieces banned.
@Suite struct SmartBanTests {
    /// Three honest seeds, one liar seed, two leechers. The liar corrupts one block of every
    /// `every`-th piece it shares with other senders (a liar that lied in pieces it sends alone
    /// would be banned at once, then as now). Both leechers complete with exact bytes, ban the
    /// liar and nobody else. Before, every seed was banned and the download never completed.
    func aLiarAmongHonestSeeds(every: Int, seed: UInt64) {
        // 16 blocks a piece: as their request queues refill, several seeds send parts of a piece.
        var swarm = SimulatedSwarm(pieceLength: 256 << 10, length: (256 << 10) * 24 + 1000, seeders: 3, leechers: 2, liars: 1,
            lieEvery: every, seed: seed)
        swarm.connectAll()
        let finished = swarm.run()
        #expect(finished)
        let liar = 3
        for leecher in [4, 5] {
            let node = swarm.nodes[leecher]
            let exact = node.data == swarm.content
            #expect(exact, "leecher \(leecher) holds the exact image")
            #expect(!node.engine.accepts(SimulatedSwarm.id(liar)), "leecher \(leecher) banned the liar")
            #expect(node.disconnects.contains { $0.peer == liar && $0.reason.contains("failed the hash") })
            for honest in swarm.nodes.indices where honest != liar && honest != leecher {
                #expect(node.engine.accepts(SimulatedSwarm.id(honest)), "leecher \(leecher) banned honest peer \(honest)")
            }
        }
        for (index, node) in swarm.nodes.enumerated() {
            let blamed = node.disconnects.filter { $0.reason.contains("failed the hash") && $0.peer != liar }
            #expect(blamed.isEmpty, "node \(index) dropped honest peers: \(blamed)")
        }
    }

    @Test func aLiarCorruptingOneBlockOfEveryPieceIsBannedAndNoHonestPeerIs() {
        aLiarAmongHonestSeeds(every: 1, seed: 11)
    }

    @Test func aLiarCorruptingOnlyEveryFewPiecesIsBannedAndNoHonestPeerIs() {
        aLiarAmongHonestSeeds(every: 3, seed: 11)
    }

    /// A block that arrives for a slot already filled never overwrites the bytes taken first. Here
    /// the liar still holds a request of an earlier try at the piece (it choked us, with the fast
    /// extension, so the request stayed open), and answers it after an honest peer has delivered
    /// the block in end-game: before, its bytes were copied over the honest ones.
    @Test func aLateDuplicateFromALiarDoesNotOverwriteAnAcceptedBlock() {
        var leecher = ScriptedLeecher(pieceLength: 32 << 10, pieces: 1)
        let piece = PieceIndex(0)
        let asked = ScriptedLeecher.requests(in: leecher.connectSeeder(1), to: 1)
        #expect(asked.count == 2)
        _ = leecher.engine.received(.choke, from: 1)
        // The booster's copy of the piece fails: the piece starts over, the liar's requests live on.
        let arrived = leecher.engine.pieceArrived(piece, data: [UInt8](repeating: 0xEE, count: 32 << 10))
        #expect(arrived?.count == 1)
        #expect(leecher.engine.pieceChecked(piece, valid: false).allSatisfy { if case .disconnect = $0 { false } else { true } })
        let honest = ScriptedLeecher.requests(in: leecher.connectSeeder(2), to: 2)
        #expect(honest == asked)
        #expect(leecher.engine.picker.isEndGame)

        let good = ByteBuffer(repeating: 0x11, count: 16 << 10)
        _ = leecher.engine.received(.piece(piece, begin: 0, block: good), from: 2)
        let wastedBefore = leecher.engine.wasted
        let late = leecher.engine.received(.piece(piece, begin: 0, block: ByteBuffer(repeating: 0x66, count: 16 << 10)), from: 1)
        #expect(!late.contains { if case .verify = $0 { true } else { false } })
        #expect(leecher.engine.wasted == wastedBefore + (16 << 10), "the duplicate counts as wasted")
        let last = leecher.engine.received(.piece(piece, begin: 16 << 10, block: good), from: 2)
        let verified = last.compactMap { if case .verify(piece, let bytes) = $0 { bytes } else { nil } }
        #expect(verified == [[UInt8](repeating: 0x11, count: 32 << 10)], "the honest bytes were kept")
    }
}


/// The engine step by step: who is paroled, who fetches what, and who is banned when.
@Suite struct ParoleTests {
    /// Four pieces of two blocks; each peer is asked one block at a time, so two peers share a piece.
    static func leecher() -> ScriptedLeecher {
        var configuration = SwarmEngine.Configuration()
        configuration.requestQueueDepth = 1
        configuration.minimumQueueDepth = 1
        return ScriptedLeecher(pieceLength: 32 << 10, pieces: 4, configuration: configuration)
    }

    /// The piece's true bytes in these tests.
    static func truth(_ block: BlockRequest) -> ByteBuffer { ByteBuffer(repeating: UInt8(block.piece.value + 1), count: block.length) }

    /// Runs the scripted swarm: every peer answers its requests (`lie` decides which blocks it
    /// corrupts), pieces are checked against the true bytes, until the download completes or
    /// nothing is left to answer. Returns the disconnects.
    static func run(_ leecher: inout ScriptedLeecher, _ first: [SwarmEngine.Action], lie: (Int, BlockRequest) -> Bool = { _, _ in false })
        -> [(peer: Int, reason: String)] {
        var pending: [(Int, BlockRequest)] = []
        var disconnects: [(peer: Int, reason: String)] = []
        var gone: Set<Int> = []
        func take(_ actions: [SwarmEngine.Action]) -> [SwarmEngine.Action] {
            var more: [SwarmEngine.Action] = []
            for action in actions {
                switch action {
                case .send(let peer, .request(let block)) where !gone.contains(peer):
                    pending.append((peer, block))
                case .send(let peer, .cancel(let block)):
                    pending.removeAll { $0 == (peer, block) }
                case .disconnect(let peer, let reason):
                    disconnects.append((peer, reason))
                    gone.insert(peer)
                    pending.removeAll { $0.0 == peer }
                case .verify(let piece, let bytes):
                    let valid = bytes.allSatisfy { $0 == UInt8(piece.value + 1) }
                    more += leecher.engine.pieceChecked(piece, valid: valid)
                default:
                    break
                }
            }
            return more
        }
        var next = take(first)
        while !next.isEmpty { next = take(next) }
        var rounds = 0
        while !pending.isEmpty && !leecher.engine.isComplete && rounds < 1000 {
            rounds += 1
            let (peer, block) = pending.removeFirst()
            var data = truth(block)
            if lie(peer, block) { data.setInteger(UInt8(0xFF), at: 0) }
            next = take(leecher.engine.received(.piece(block.piece, begin: block.begin, block: data), from: peer))
            while !next.isEmpty { next = take(next) }
        }
        return disconnects
    }

    /// Connects peers 1 and 2 (seeds); each is asked for one block, the two halves of one piece.
    static func twoPeersShareAPiece(_ leecher: inout ScriptedLeecher) -> ([SwarmEngine.Action], [BlockRequest], [BlockRequest]) {
        let actions = leecher.connectSeeder(1) + leecher.connectSeeder(2)
        let a = ScriptedLeecher.requests(in: actions, to: 1)
        let b = ScriptedLeecher.requests(in: actions, to: 2)
        #expect(a.count == 1 && b.count == 1 && a.first?.piece == b.first?.piece, "one piece, a block from each")
        return (actions, a, b)
    }

    /// A piece shared by an honest peer and a liar fails: nobody is banned on the spot, both go on
    /// parole. Once the piece verifies, the liar's recorded block differs and bans it; the honest
    /// peer's matched and clears it.
    @Test func aSharedFailureParolesBothAndTheVerifiedPieceShowsTheLiar() {
        var leecher = Self.leecher()
        let (actions, asked1, _) = Self.twoPeersShareAPiece(&leecher)
        let shared = asked1[0].piece
        var lied = false
        let disconnects = Self.run(&leecher, actions) { peer, block in
            // Peer 2 corrupts its block of the shared piece, once, then tells the truth.
            guard peer == 2, block.piece == shared, !lied else { return false }
            lied = true
            return true
        }
        #expect(lied)
        #expect(leecher.engine.isComplete)
        #expect(disconnects.map(\.peer) == [2], "\(disconnects)")
        #expect(disconnects.first?.reason.contains("differs from the verified piece") == true)
        #expect(!leecher.engine.accepts(ScriptedLeecher.id(2)))
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1)))
        #expect(!leecher.engine.isOnParole(ScriptedLeecher.id(1)), "cleared once the piece verified")
        #expect(leecher.engine.recordedFailureBlocks == 0)
    }

    /// After a shared failure each sender fetches whole pieces alone: the liar's next bad piece
    /// has it as the only sender and bans it at once, before the failed piece is fetched again.
    @Test func aPeerOnParoleFetchesAloneAndItsNextBadPieceBansIt() {
        var leecher = Self.leecher()
        let (_, a1, b1) = Self.twoPeersShareAPiece(&leecher)
        let a2 = ScriptedLeecher.requests(in: Self.deliver(&leecher, a1[0], from: 1), to: 1)
        let b2 = ScriptedLeecher.requests(in: Self.deliver(&leecher, b1[0], from: 2, bad: true), to: 2)
        #expect(Self.disconnects(leecher.engine.pieceChecked(a1[0].piece, valid: false)).isEmpty)
        // The failed piece waits (as for the booster), so only the liar's own pieces can give it away.
        var aside = Bitfield(pieceCount: 4)
        aside.insert(a1[0].piece)
        _ = leecher.engine.deferPieces(aside)
        let pending = (a2.map { SwarmEngine.Action.send(1, .request($0)) }) + b2.map { .send(2, .request($0)) }
        let dropped = Self.run(&leecher, pending) { peer, _ in peer == 2 }
        #expect(dropped.map(\.peer) == [2], "\(dropped)")
        #expect(dropped.first?.reason.hasPrefix("sent data that failed the hash") == true, "banned as the only sender")
        // The rest, from the honest peer alone: it is cleared of every failure it shared.
        let rest = Self.run(&leecher, leecher.engine.deferPieces(nil))
        #expect(rest.isEmpty && leecher.engine.isComplete)
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1)) && !leecher.engine.isOnParole(ScriptedLeecher.id(1)))
        #expect(leecher.engine.recordedFailureBlocks == 0)
    }

    /// Delivers `block` from `peer`, corrupted or not; returns the engine's actions.
    static func deliver(_ leecher: inout ScriptedLeecher, _ block: BlockRequest, from peer: Int, bad: Bool = false) -> [SwarmEngine.Action] {
        var data = truth(block)
        if bad { data.setInteger(UInt8(0xFF), at: 0) }
        return leecher.engine.received(.piece(block.piece, begin: block.begin, block: data), from: peer)
    }

    static func verified(_ actions: [SwarmEngine.Action]) -> [PieceIndex] {
        actions.compactMap { if case .verify(let piece, _) = $0 { piece } else { nil } }
    }

    static func disconnects(_ actions: [SwarmEngine.Action]) -> [Int] {
        actions.compactMap { if case .disconnect(let peer, _) = $0 { peer } else { nil } }
    }

    /// A peer in `lastingParoleFailures` (2) unresolved failures stays on parole even after a piece
    /// it fetched alone verifies, and a paroled peer's piece is given to nobody else. Here the liar
    /// corrupts its block of the two pieces it shares with an honest peer, then behaves.
    @Test func twoUnresolvedFailuresKeepAPeerOnParole() {
        var leecher = Self.leecher()
        let (_, a1, b1) = Self.twoPeersShareAPiece(&leecher)
        var actions: [SwarmEngine.Action]
        // The first shared piece: peer 2's block is bad. Each was asked for a block of a second
        // piece meanwhile (before the hash result), so that one is shared too.
        let a2 = ScriptedLeecher.requests(in: Self.deliver(&leecher, a1[0], from: 1), to: 1)
        actions = Self.deliver(&leecher, b1[0], from: 2, bad: true)
        let b2 = ScriptedLeecher.requests(in: actions, to: 2)
        #expect(Self.verified(actions) == [a1[0].piece])
        #expect(a2.count == 1 && b2.count == 1 && a2[0].piece == b2[0].piece)
        #expect(Self.disconnects(leecher.engine.pieceChecked(a1[0].piece, valid: false)).isEmpty, "nobody is banned on the spot")
        #expect(leecher.engine.isOnParole(ScriptedLeecher.id(1)) && leecher.engine.isOnParole(ScriptedLeecher.id(2)))
        #expect(leecher.engine.recordedFailureBlocks == 2)
        // The failed piece is left aside for now (as if the booster were about to deliver it), so
        // the pieces the two fetch alone next are fresh ones, whose verification resolves nothing.
        var aside = Bitfield(pieceCount: 4)
        aside.insert(a1[0].piece)
        _ = leecher.engine.deferPieces(aside)

        // The second shared piece fails the same way. On parole, each is now given a piece of its own.
        let own1 = ScriptedLeecher.requests(in: Self.deliver(&leecher, a2[0], from: 1), to: 1)
        actions = Self.deliver(&leecher, b2[0], from: 2, bad: true)
        let own2 = ScriptedLeecher.requests(in: actions, to: 2)
        #expect(Self.verified(actions) == [a2[0].piece])
        #expect(Self.disconnects(leecher.engine.pieceChecked(a2[0].piece, valid: false)).isEmpty)
        #expect(leecher.engine.recordedFailureBlocks == 4)
        #expect(own1.count == 1 && own2.count == 1 && own1[0].piece != own2[0].piece)
        // A newcomer is given neither of those pieces, but the one piece left.
        let asked3 = ScriptedLeecher.requests(in: leecher.connectSeeder(3), to: 3)
        #expect(asked3.map(\.piece) == [a2[0].piece], "\(asked3)")
        _ = leecher.engine.peerDisconnected(3)
        aside.insert(a2[0].piece)
        _ = leecher.engine.deferPieces(aside)

        // Peer 2 delivers its own piece whole and true: with two failures unresolved it stays on parole.
        let rest2 = ScriptedLeecher.requests(in: Self.deliver(&leecher, own2[0], from: 2), to: 2)
        #expect(rest2.count == 1 && rest2[0].piece == own2[0].piece, "the rest of its own piece")
        actions = Self.deliver(&leecher, rest2[0], from: 2)
        #expect(Self.verified(actions) == [own2[0].piece])
        actions += leecher.engine.pieceChecked(own2[0].piece, valid: true)
        #expect(leecher.engine.isOnParole(ScriptedLeecher.id(2)), "two unresolved failures: parole lasts")

        // Everyone tells the truth from now on: once the failed pieces verify, peer 2's recorded
        // blocks give it away, and peer 1 is cleared.
        let pending = ScriptedLeecher.requests(in: actions, to: 2).map { (2, $0) } + [(1, own1[0])]
        var first = leecher.engine.deferPieces(nil)
        for (peer, block) in pending { first += Self.deliver(&leecher, block, from: peer) }
        let dropped = Self.run(&leecher, first)
        #expect(leecher.engine.isComplete)
        #expect(dropped.map(\.peer) == [2], "\(dropped)")
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1)) && !leecher.engine.isOnParole(ScriptedLeecher.id(1)))
        #expect(leecher.engine.recordedFailureBlocks == 0)
    }
}
