import Metainfo
import NIOCore
import PeerWire
import Testing

@testable import Swarm
@testable import SwarmRuntime

/// Peers that do not play along (issue 15): squatters on someone's peer id, peers that ask and
/// never read, and requests for a piece the seed can no longer read.
@Suite struct HostilePeerTests {
    static let hash = ScriptedLeecher.hash

    /// A seed engine of 8 pieces of 16 KiB with `slots` upload slots.
    func seed(slots: Int = 8) -> SwarmEngine {
        let pieces = 8
        let info = try! TorrentInfo(name: "t.img", files: [FileEntry(path: ["t.img"], length: Int64(16384 * pieces))], isMultiFile: false,
            privacy: .unspecified, pieceLength: 16384, pieceHashes: [UInt8](repeating: 0, count: 20 * pieces))
        var configuration = SwarmEngine.Configuration()
        configuration.maxUnchoked = slots
        return SwarmEngine(info: info, have: Bitfield(pieceCount: pieces, all: true),
            handshake: Handshake(infoHash: Self.hash, peerID: ScriptedLeecher.id(0)), configuration: configuration, seed: 5)
    }

    func join(_ engine: inout SwarmEngine, _ peer: Int, fast: Bool = true, ip: UInt8 = 1) -> [SwarmEngine.Action] {
        var actions = engine.peerConnected(peer, handshake: Handshake(infoHash: Self.hash, peerID: ScriptedLeecher.id(peer), fast: fast),
            address: PeerAddress(ip: [10, 0, 0, ip], port: 6881)!)
        actions += engine.received(fast ? .haveNone : .bitfield([0]), from: peer)
        actions += engine.received(.interested, from: peer)
        return actions
    }

    /// Upload slots follow what the uplink has shown it carries: 8 until then (and on a slow
    /// link), one per 2 Mbit/s beyond once 2 s of upload ran faster; a fixed count
    /// (`--upload-slots`) stays fixed.
    @Test func aFastUplinkOpensMoreUploadSlots() {
        func run(_ configure: (inout SwarmEngine.Configuration) -> Void, bytesPerSecond: Int) -> (before: Int, after: Int) {
            let pieces = 8
            let info = try! TorrentInfo(name: "t.img", files: [FileEntry(path: ["t.img"], length: Int64(16384 * pieces))], isMultiFile: false,
                privacy: .unspecified, pieceLength: 16384, pieceHashes: [UInt8](repeating: 0, count: 20 * pieces))
            var configuration = SwarmEngine.Configuration()
            configure(&configuration)
            var engine = SwarmEngine(info: info, have: Bitfield(pieceCount: pieces, all: true),
                handshake: Handshake(infoHash: Self.hash, peerID: ScriptedLeecher.id(0)), configuration: configuration, seed: 5)
            for peer in 1...30 { _ = join(&engine, peer, ip: UInt8(peer)) }
            let before = engine.peersWeUnchoke
            let block = BlockRequest(piece: PieceIndex(0), begin: 0, length: 16384)
            for second in 1...6 {
                // The unchoked peers take `bytesPerSecond` between them.
                var sent = 0
                while sent < bytesPerSecond {
                    for peer in 1...30 where sent < bytesPerSecond && engine.received(.request(block), from: peer).contains(.readBlock(peer, block)) {
                        _ = engine.blockRead(block, data: ByteBuffer(repeating: 0, count: 16384), for: peer)
                        sent += 16384
                    }
                }
                _ = engine.tick(now: Double(second))
            }
            return (before, engine.peersWeUnchoke)
        }
        let fast = run({ _ in }, bytesPerSecond: 5_000_000)
        #expect(fast.before == 8)
        #expect(fast.after == 16, "5 MB/s is 20 slots of 2 Mbit/s, and 16 is the most")
        // 8 and the optimistic unchoke of the first choking round.
        #expect(run({ _ in }, bytesPerSecond: 1_250_000).after == 8 + 1, "10 Mbit/s keeps 8")
        #expect(run({ $0.uploadSlotRate = nil }, bytesPerSecond: 5_000_000).after == 8 + 1, "a fixed count stays")
    }

    /// Bans key on the address and the id together: bad data sent under an honest peer's id from
    /// another address bans the sender, not the honest peer.
    @Test func aSquatterSendingBadDataUnderSomeonesIdDoesNotGetThemBanned() {
        var leecher = ScriptedLeecher(pieceLength: 16384, pieces: 4)
        let squatter = PeerAddress(ip: [10, 0, 0, 66], port: 6881)!
        let asked = ScriptedLeecher.requests(in: leecher.connectSeeder(1, address: squatter), to: 1)
        var actions: [SwarmEngine.Action] = []
        let block = asked[0]
        actions += leecher.engine.received(.piece(block.piece, begin: block.begin, block: ByteBuffer(repeating: 9, count: block.length)), from: 1)
        let verify = actions.compactMap { if case .verify(let piece, _) = $0 { piece } else { nil } }
        #expect(verify == [block.piece])
        let failed = leecher.engine.pieceChecked(block.piece, valid: false)
        #expect(failed.contains { if case .disconnect(1, let reason) = $0 { reason.contains("failed the hash") } else { false } })
        // The same id from the squatter's address is refused; from the honest peer's, it is not.
        #expect(!leecher.engine.accepts(ScriptedLeecher.id(1), ip: squatter.ip))
        #expect(leecher.engine.accepts(ScriptedLeecher.id(1), ip: [10, 0, 0, 7]))
        let honest = leecher.engine.peerConnected(2, handshake: Handshake(infoHash: Self.hash, peerID: ScriptedLeecher.id(1)),
            address: PeerAddress(ip: [10, 0, 0, 7], port: 6881)!)
        #expect(!honest.contains { if case .disconnect = $0 { true } else { false } })
        #expect(leecher.engine.peerCount == 1)
    }

    /// A peer whose connection stopped taking our writes does not hold the upload slot: the next
    /// interested peer is unchoked at once, the choking round ranks it last, and after
    /// `sendStallTimeout` it is dropped.
    @Test func aPeerThatDoesNotReadGivesUpItsSlotAndIsDropped() {
        var engine = seed(slots: 1)
        #expect(ScriptedLeecher.sent(join(&engine, 1), to: 1).contains(.unchoke))
        _ = engine.peerWriteBlocked(1, true)
        #expect(ScriptedLeecher.sent(join(&engine, 2), to: 2).contains(.unchoke), "a blocked peer does not count against the free slot")
        #expect(!ScriptedLeecher.sent(join(&engine, 3), to: 3).contains(.unchoke), "the only slot is taken")
        // Peer 2 stops reading with a request pending: its slot goes to peer 3 at once, and the
        // request is rejected (BEP 6), not left waiting.
        let pending = BlockRequest(piece: PieceIndex(1), begin: 0, length: 16384)
        #expect(engine.received(.request(pending), from: 2) == [.readBlock(2, pending)])
        #expect(engine.peerWriteBlocked(2, true) == [.send(2, .choke), .send(2, .reject(pending)), .send(3, .unchoke)])
        _ = engine.peerWriteBlocked(2, false)
        // The choking round: the reading peers get the regular and the optimistic slot, peer 1 is choked.
        let round = engine.tick(now: 10)
        #expect(ScriptedLeecher.sent(round, to: 1).contains(.choke))
        _ = engine.tick(now: 20)
        let late = engine.tick(now: 30)
        #expect(late.contains { if case .disconnect(1, let reason) = $0 { reason.contains("read nothing") } else { false } })
        #expect(!late.contains { if case .disconnect(2, _) = $0 { true } else { false } })
        // A peer that reads again is not dropped.
        _ = engine.peerWriteBlocked(2, true)
        _ = engine.tick(now: 40)
        _ = engine.peerWriteBlocked(2, false)
        #expect(!engine.tick(now: 80).contains { if case .disconnect(2, _) = $0 { true } else { false } })
    }

    /// A free slot goes to a peer served before, else to the newest never served: fifty
    /// identities that connected first and never read cannot make an honest newcomer wait until
    /// each of them has had its try (issue 15's "trying phase"), nor keep a peer that was served
    /// and lost its slot at a choking round from getting the next one.
    @Test func aFreeSlotGoesToAPeerServedBeforeElseToTheNewest() {
        var engine = seed(slots: 2)
        for peer in 1...20 { _ = join(&engine, peer, ip: UInt8(peer)) }  // 1 and 2 are unchoked at once
        #expect(!ScriptedLeecher.sent(join(&engine, 21, ip: 21), to: 21).contains(.unchoke), "no slot free")
        #expect(engine.peerWriteBlocked(1, true).contains(.send(21, .unchoke)), "the newest, not one of the eighteen before it")

        var served = seed(slots: 2)
        _ = served.tick(now: 0)  // the first choking round; the next is at 10
        var unchoked: Set<Int> = []
        for peer in 1...2 {
            if ScriptedLeecher.sent(join(&served, peer, ip: UInt8(peer)), to: peer).contains(.unchoke) { unchoked.insert(peer) }
            let block = BlockRequest(piece: PieceIndex(peer), begin: 0, length: 16384)
            _ = served.received(.request(block), from: peer)
            _ = served.blockRead(block, data: ByteBuffer(repeating: 1, count: 16384), for: peer)
        }
        #expect(unchoked == [1, 2])
        for peer in 3...10 { _ = join(&served, peer, ip: UInt8(peer)) }
        // 1 and 2 keep asking and reading until the choking round, which serves least-served
        // first: they give way (but for the optimistic slot).
        for second in 1...9 {
            for peer in 1...2 {
                let block = BlockRequest(piece: PieceIndex(second % 8), begin: 0, length: 16384)
                _ = served.received(.request(block), from: peer)
                _ = served.blockRead(block, data: ByteBuffer(repeating: 1, count: 16384), for: peer)
            }
            _ = served.tick(now: Double(second))
        }
        for action in served.tick(now: 10) {
            if case .send(let peer, .unchoke) = action { unchoked.insert(peer) }
            if case .send(let peer, .choke) = action { unchoked.remove(peer) }
        }
        let waitingServed = Set([1, 2]).subtracting(unchoked)
        #expect(!waitingServed.isEmpty)
        let stranger = try! #require(unchoked.subtracting([1, 2]).min())
        let handedOver = served.peerWriteBlocked(stranger, true).compactMap { if case .send(let peer, .unchoke) = $0 { peer } else { nil } }
        #expect(handedOver.count == 1 && waitingServed.contains(handedOver[0]), "\(handedOver) took the slot of \(stranger)")
    }

    /// An unchoked peer that asks for nothing does not keep an interested one choked: after
    /// `idleSlotTimeout` its slot counts as free, and at the next choking round it ranks last.
    @Test func aPeerThatAsksForNothingDoesNotHoldASlot() {
        var engine = seed(slots: 1)
        _ = engine.tick(now: 0)
        #expect(ScriptedLeecher.sent(join(&engine, 1), to: 1).contains(.unchoke))
        #expect(!ScriptedLeecher.sent(join(&engine, 2), to: 2).contains(.unchoke))
        #expect(!ScriptedLeecher.sent(engine.tick(now: 2), to: 2).contains(.unchoke), "peer 1 may still ask")
        #expect(ScriptedLeecher.sent(engine.tick(now: 3), to: 2).contains(.unchoke))
        // Peer 2 asks; at the choking round it keeps the regular slot and peer 1, which wasted
        // its slot, gets at most the optimistic one.
        for second in 4...9 {
            _ = engine.received(.request(BlockRequest(piece: PieceIndex(second % 8), begin: 0, length: 16384)), from: 2)
            _ = engine.tick(now: Double(second))
        }
        _ = engine.received(.request(BlockRequest(piece: PieceIndex(2), begin: 0, length: 16384)), from: 2)
        #expect(!ScriptedLeecher.sent(engine.tick(now: 10), to: 2).contains(.choke))
    }

    /// A peer that completed (it holds every piece and is no longer interested) gives up its slot
    /// at once. It used to hold it until `idleSlotTimeout` after its last request, at every seed
    /// at once: the last node of a testbed swarm (16 × 40 Mbit/s) finished 2 s after the rest.
    /// A leecher that is merely not interested for a while keeps its slot.
    @Test func aPeerThatCompletedGivesUpItsSlotAtOnce() {
        var engine = seed(slots: 1)
        _ = engine.tick(now: 0)
        #expect(ScriptedLeecher.sent(join(&engine, 1), to: 1).contains(.unchoke))
        _ = engine.received(.request(BlockRequest(piece: PieceIndex(0), begin: 0, length: 16384)), from: 1)
        #expect(!ScriptedLeecher.sent(join(&engine, 2, ip: 2), to: 2).contains(.unchoke), "the only slot is taken")
        #expect(!ScriptedLeecher.sent(engine.received(.notInterested, from: 1), to: 2).contains(.unchoke), "peer 1 still lacks pieces")
        // It gets the rest elsewhere, asks once more and is done.
        for piece in 0..<8 { _ = engine.received(.have(PieceIndex(piece)), from: 1) }
        _ = engine.received(.interested, from: 1)
        #expect(ScriptedLeecher.sent(engine.received(.notInterested, from: 1), to: 2).contains(.unchoke))
    }

    /// A peer that completed need not have told us of every piece (it does not tell a peer of a
    /// piece that peer holds): its handshake sent again with `upload_only` (BEP 21) says it is
    /// done, its slot goes to another peer, and a seed waiting for the swarm no longer counts it.
    @Test func aPeerThatSaysItIsDoneGivesUpItsSlot() {
        var engine = seed(slots: 1)
        _ = engine.tick(now: 0)
        _ = join(&engine, 1)
        _ = engine.received(.request(BlockRequest(piece: PieceIndex(0), begin: 0, length: 16384)), from: 1)
        _ = join(&engine, 2, ip: 2)
        #expect(engine.peersMissingPieces == 2)
        let done = ExtensionHandshake(messageIDs: [:], uploadOnly: true)
        #expect(ScriptedLeecher.sent(engine.received(.extended(id: 0, payload: ByteBuffer(bytes: done.encoded())), from: 1), to: 2).contains(.unchoke))
        #expect(engine.peersMissingPieces == 1)
    }

    /// A piece sent to a peer that does not read is not "on its way" to the swarm: a seed's
    /// decline-and-suggest (BEP 6) must not turn every other peer away from it.
    @Test func aNonReadersPiecesAreNotDeclinedToOthers() {
        var engine = seed()
        _ = join(&engine, 1)
        _ = join(&engine, 2, ip: 2)
        let block = BlockRequest(piece: PieceIndex(5), begin: 0, length: 16384)
        #expect(engine.received(.request(block), from: 1) == [.readBlock(1, block)])
        #expect(engine.received(.request(block), from: 2).first == .send(2, .reject(block)), "declined while peer 1 reads")
        _ = engine.peerWriteBlocked(1, true)
        #expect(engine.received(.request(block), from: 2) == [.readBlock(2, block)])
    }

    /// A piece the seed cannot read is refused: rejected with the fast extension (and later
    /// requests for it without another read), the peer choked without it; never left waiting.
    @Test func anUnreadablePieceIsRejectedOrChokedNeverLeftWaiting() {
        var engine = seed()
        _ = join(&engine, 1)
        let block = BlockRequest(piece: PieceIndex(3), begin: 0, length: 16384)
        #expect(engine.received(.request(block), from: 1) == [.readBlock(1, block)])
        #expect(engine.blockUnavailable(block, for: 1) == [.send(1, .reject(block))])
        #expect(!engine.isRequested(block, by: 1))
        #expect(engine.received(.request(block), from: 1) == [.send(1, .reject(block))], "no second read")

        _ = join(&engine, 2, fast: false, ip: 2)
        #expect(engine.received(.request(block), from: 2) == [.send(2, .choke)])
        #expect(!engine.isRequested(block, by: 2))
    }
}

/// The runtime's per-peer send bookkeeping: which pieces queued blocks keep alive.
@Suite struct PeerOutboxTests {
    @Test func slicesAreLetGoOnlyOnceTheChannelWroteThem() {
        let outbox = PeerOutbox()
        outbox.wrote(17)  // a have message
        outbox.wrote(16397)
        outbox.wroteSlice(of: PieceIndex(1))
        outbox.wrote(16397)
        outbox.wroteSlice(of: PieceIndex(2))
        outbox.wrote(16397)
        outbox.wroteSlice(of: PieceIndex(1))
        #expect(outbox.pieceRefs == [PieceIndex(1): 2, PieceIndex(2): 1])
        var released: [PieceIndex] = []
        // Everything still buffered: nothing left.
        outbox.drained(buffered: outbox.written) { released.append($0) }
        #expect(released.isEmpty)
        // The first block left, half of the second is still buffered.
        outbox.drained(buffered: 16397 + 8000) { released.append($0) }
        #expect(released == [PieceIndex(1)])
        #expect(outbox.pieceRefs == [PieceIndex(1): 1, PieceIndex(2): 1])
        outbox.releaseAll { released.append($0) }
        #expect(released == [PieceIndex(1), PieceIndex(2), PieceIndex(1)])
        #expect(outbox.pieceRefs.isEmpty && !outbox.holdsSlices)
    }

    @Test func waitingRequestsKeepTheirOrderAndCancelledOnesGo() {
        let outbox = PeerOutbox()
        let blocks = (0..<600).map { BlockRequest(piece: PieceIndex($0 / 16), begin: ($0 % 16) * 16384, length: 16384) }
        for block in blocks { outbox.enqueue(block) }
        for _ in 0..<300 { outbox.dequeue() }
        #expect(outbox.next == blocks[300] && outbox.waitingCount == 300)
        outbox.removeWaiting { $0.begin != 0 }
        #expect(outbox.waitingCount == blocks[300...].count { $0.begin == 0 })
        #expect(outbox.next?.begin == 0)
        outbox.clearWaiting()
        #expect(outbox.next == nil)
    }

    /// A peer that reads nothing is found within a second, before it holds an upload slot long
    /// (50 such identities used to keep a seed's slots from an honest newcomer for 18 s); one that
    /// has read megabytes gets longer before a pause costs it its slot, and any that takes a few
    /// bytes in the meantime is not stalled.
    @Test func aPeerThatNeverReadsIsFoundWithinASecond() {
        let fresh = PeerOutbox()
        fresh.wrote(300_000)
        fresh.sample(buffered: 200_000, now: 0)  // the kernel took the first 100 KB
        #expect(!fresh.stalled(now: 0))
        fresh.sample(buffered: 200_000, now: 0.25)
        #expect(!fresh.stalled(now: 0.25))
        fresh.sample(buffered: 200_000, now: 0.5)
        #expect(fresh.stalled(now: 0.5), "nothing taken for half a second")

        let slow = PeerOutbox()  // reads 16 KB every 0.4 s: about 40 KB/s
        slow.wrote(300_000)
        for step in 0..<20 {
            slow.sample(buffered: 300_000 - (step / 2 + 1) * 16_384, now: Double(step) * 0.2)
            #expect(!slow.stalled(now: Double(step) * 0.2 + 0.2))
        }

        let proven = PeerOutbox()
        proven.wrote(PeerOutbox.provenBytes + 300_000)
        proven.sample(buffered: 300_000, now: 0)
        proven.sample(buffered: 300_000, now: 1)
        #expect(!proven.stalled(now: 1.5), "a reader of megabytes may pause")
        #expect(proven.stalled(now: 2), "two seconds without taking a byte")
        proven.progressed()
        #expect(!proven.stalled(now: 3), "writable again: it read")
        proven.sample(buffered: 0, now: 4)
        #expect(!proven.stalled(now: 10), "nothing held, nothing to read")
    }

    /// With the kernel's figures (TCP_INFO) a peer that reads nothing is found by its
    /// acknowledgements, which stop as soon as its receive window closes, not once our socket's
    /// send buffer is full too: bytes moving from the channel into that buffer are no sign of
    /// reading. A kernel that reports nothing leaves the channel's own figures in charge.
    @Test func theKernelsAcknowledgementsSayWhetherAPeerReads() {
        let outbox = PeerOutbox()
        outbox.wrote(2_000_000)
        // The channel keeps handing bytes to the kernel, whose queue grows; the peer acknowledged
        // its first 4 KiB and nothing since.
        outbox.sample(buffered: 1_000_000, kernel: .init(acknowledged: 4096, unsent: 200_000), now: 0)
        outbox.progressed()  // the channel became writable: bytes moved into the send buffer
        outbox.sample(buffered: 600_000, kernel: .init(acknowledged: 4096, unsent: 600_000), now: 0.25)
        outbox.progressed()
        outbox.sample(buffered: 200_000, kernel: .init(acknowledged: 4096, unsent: 1_000_000), now: 0.5)
        #expect(outbox.stalled(now: 0.5), "nothing acknowledged for half a second")

        let reader = PeerOutbox()
        reader.wrote(2_000_000)
        for step in 0..<8 {  // acknowledges a little more at every sample, with a queue waiting
            reader.sample(buffered: 100_000, kernel: .init(acknowledged: UInt64(4096 + step * 30_000), unsent: 500_000), now: Double(step) * 0.25)
            #expect(!reader.stalled(now: Double(step) * 0.25))
        }
        // Everything sent and acknowledged: nothing waits, nothing to read.
        reader.sample(buffered: 0, kernel: .init(acknowledged: 2_000_000, unsent: 0), now: 3)
        reader.sample(buffered: 0, kernel: .init(acknowledged: 2_000_000, unsent: 0), now: 9)
        #expect(!reader.stalled(now: 9))

        let oldKernel = PeerOutbox()  // acknowledgements read as 0: the channel's figures
        oldKernel.wrote(300_000)
        oldKernel.sample(buffered: 200_000, kernel: .init(acknowledged: 0, unsent: 0), now: 0)
        oldKernel.sample(buffered: 150_000, kernel: .init(acknowledged: 0, unsent: 0), now: 0.5)
        #expect(!oldKernel.stalled(now: 0.5), "the channel let bytes go")
        oldKernel.sample(buffered: 150_000, kernel: .init(acknowledged: 0, unsent: 0), now: 1)
        #expect(oldKernel.stalled(now: 1))
    }

    /// A peer whose acknowledgements stop while TCP backs off from congestion (CWR, Recovery,
    /// Loss: a full queue on a thin link) is not taken for a non-reader at half a second, only at
    /// the longer time; a peer whose connection is Open and acknowledges nothing is, as before.
    @Test func congestionIsNotTakenForAPeerThatDoesNotRead() {
        for state: UInt8 in [2, 3, 4] {
            let congested = PeerOutbox()
            congested.wrote(400_000)
            congested.sample(buffered: 0, kernel: .init(acknowledged: 178, unsent: 98_464, congestionState: state), now: 0)
            congested.sample(buffered: 0, kernel: .init(acknowledged: 178, unsent: 98_464, congestionState: state), now: 0.25)
            congested.sample(buffered: 0, kernel: .init(acknowledged: 178, unsent: 98_464, congestionState: state), now: 0.5)
            #expect(!congested.stalled(now: 1.5), "state \(state): the network holds the bytes back")
            congested.sample(buffered: 0, kernel: .init(acknowledged: 178, unsent: 98_464, congestionState: state), now: 2)
            #expect(congested.stalled(now: 2), "state \(state): two seconds is long enough for anyone")
        }
        let closed = PeerOutbox()  // its window closed: Open, probing
        closed.wrote(400_000)
        for step in 0...2 {
            closed.sample(buffered: 0, kernel: .init(acknowledged: 65_536, unsent: 300_000, congestionState: 0, probes: 1), now: Double(step) * 0.25)
        }
        #expect(closed.stalled(now: 0.5))
    }

    /// A read of the image in flight (NBD, HTTP ranges) is checked before its end is computed: an
    /// offset near Int64.max trapped on `offset + length` before the bounds check.
    @Test func aReadOutsideTheImageIsRefusedWithoutOverflow() {
        #expect(SwarmRuntime.imageRange(offset: 0, length: 10, storedLength: 10) == 0..<10)
        #expect(SwarmRuntime.imageRange(offset: 9, length: 1, storedLength: 10) == 9..<10)
        #expect(SwarmRuntime.imageRange(offset: 9, length: 2, storedLength: 10) == nil)
        #expect(SwarmRuntime.imageRange(offset: 11, length: 1, storedLength: 10) == nil)
        #expect(SwarmRuntime.imageRange(offset: -1, length: 1, storedLength: 10) == nil)
        #expect(SwarmRuntime.imageRange(offset: 0, length: 0, storedLength: 10) == nil)
        #expect(SwarmRuntime.imageRange(offset: .max, length: .max, storedLength: 10) == nil)
        #expect(SwarmRuntime.imageRange(offset: .max - 1, length: 16, storedLength: .max) == nil)
    }
}
