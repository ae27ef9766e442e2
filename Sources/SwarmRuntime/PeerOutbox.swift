import Metainfo

/// What one peer asked of us and what its connection still holds, for backpressure. Pure
/// bookkeeping: the runtime says what it wrote and how many bytes the channel still buffers, and
/// the outbox answers which piece buffers the peer's queued blocks still keep alive.
///
/// Why this exists: a block goes out as a slice of the whole piece read for it (no copy on the
/// hot path), so a block waiting in the channel of a peer that does not read pins its entire piece.
/// Requests therefore wait here, as 12-byte `BlockRequest`s, until the channel is writable again,
/// and each slice handed to the channel is remembered with the byte offset where it ends, so the
/// runtime knows when the channel let go of it. A final class: the runtime changes it several
/// times per block, and it belongs to one connection on one event loop.
final class PeerOutbox {
    /// Requests not yet served, oldest first.
    private var waiting = Queue<BlockRequest>()
    /// Bytes of requested blocks whose piece is being read for this peer.
    var reading = 0
    /// Bytes written to the channel since it opened (every message, headers included).
    private(set) var written = 0
    /// Blocks handed to the channel as slices of a piece buffer, oldest first: the piece and the
    /// value of `written` just after the block.
    private var sliced = Queue<(piece: PieceIndex, end: Int)>()
    /// For each piece, how many of its slices the channel may still hold.
    private(set) var pieceRefs: [PieceIndex: Int] = [:]
    /// Set while the runtime serves this peer, so a writability change inside a write does not
    /// serve it again re-entrantly.
    var pumping = false
    /// How far the peer has read at the last sample (`Reading`), since when it has read nothing
    /// while bytes waited for it (nil: none waited, or it read some), and whether the engine was
    /// last told the peer does not read.
    private var readAtSample = 0
    private var sampledAt: Double?
    private var holdingSince: Double?
    /// The kernel reported what the peer acknowledged: its figures rule (see `Kernel`).
    private var kernelSeen = false
    /// The kernel said at the last sample that TCP is backing off from congestion (`Kernel`).
    private var congested = false
    var reportedBlocked = false

    /// Seconds bytes may wait for a peer that reads none of them before it counts as not reading:
    /// short for a peer that has not yet read `provenBytes` (a peer that never reads is found
    /// before it holds an upload slot long, so trying fifty of them costs seconds, not a minute),
    /// longer for one that has (a reader that pauses keeps its slot). A peer that reads at more
    /// than a few KB/s over a round trip under half a second reads some within the short time.
    /// While TCP backs off from congestion (`Kernel.congestionState`), every peer gets the longer
    /// time: the network, not the peer, holds the bytes back. Measured on the testbed (32 hosts at
    /// 10 Mbit/s, 60 upload slots): without this, 9,239 honest peers in one run were taken for
    /// non-readers, 96 % of them while their connection was in CWR, Recovery or Loss.
    static let firstStallSeconds = 0.5
    static let stallSeconds = 2.0
    /// More than a peer that reads nothing can make our side and its kernel take (socket buffers).
    static let provenBytes = 8 << 20

    /// What the kernel says of the connection (TCP_INFO): bytes the peer's kernel acknowledged,
    /// and bytes written to the socket not yet sent. A peer that does not read closes its receive
    /// window, so acknowledgements stop at once, while our socket's send buffer may still take
    /// megabytes: without these figures a non-reader is seen only once that buffer is full too.
    struct Kernel: Equatable {
        var acknowledged: UInt64
        var unsent: UInt32
        /// `tcpi_ca_state` (0 open, 1 disorder, 2 CWR, 3 recovery, 4 loss), unanswered zero-window
        /// probes, the retransmission timer's backoff, and the smoothed round trip. CWR (a queue on
        /// the way, our own qdisc included, dropped or marked), Recovery and Loss mean congestion.
        /// A peer that does not read closes its window instead: with nothing in flight to lose, its
        /// connection stays or returns to Open.
        var congestionState: UInt8 = 0
        var probes: UInt8 = 0
        var backoff: UInt8 = 0
        var roundTripMicroseconds: UInt32 = 0
    }
    /// The kernel's figures at the last sample.
    private(set) var lastKernel: Kernel?

    /// A few times a second, the bytes the channel still buffers and, when the kernel tells
    /// (`kernel` with a non-zero acknowledgement), how far the peer's kernel acknowledged: whether
    /// the peer took anything since the last sample.
    func sample(buffered: Int, kernel: Kernel? = nil, now: Double) {
        let read: Int
        let waiting: Bool
        lastKernel = kernel
        congested = false
        if let kernel, kernel.acknowledged > 0 {
            kernelSeen = true
            congested = kernel.congestionState >= 2
            read = Int(clamping: kernel.acknowledged)
            waiting = buffered > 0 || kernel.unsent > 0
        } else {
            read = written - buffered
            waiting = buffered > 0
        }
        if !waiting || read != readAtSample {
            holdingSince = nil
        } else if holdingSince == nil {
            holdingSince = sampledAt ?? now  // nothing was read since the last sample
        }
        readAtSample = read
        sampledAt = now
    }

    /// Bytes waited for the peer, untouched, too long: it does not read.
    func stalled(now: Double) -> Bool {
        guard let holdingSince else { return false }
        return now - holdingSince >= (readAtSample < Self.provenBytes && !congested ? Self.firstStallSeconds : Self.stallSeconds)
    }

    /// The channel let bytes go (it became writable again). The peer reads, unless the kernel
    /// says how far it read: the bytes may only have moved into our socket's send buffer.
    func progressed() {
        if !kernelSeen { holdingSince = nil }
    }

    var waitingCount: Int { waiting.count }
    var next: BlockRequest? { waiting.first }
    var holdsSlices: Bool { sliced.first != nil }

    func enqueue(_ request: BlockRequest) { waiting.append(request) }

    func dequeue() { waiting.removeFirst() }

    /// Drops waiting requests the peer no longer wants (it cancelled them, or we choked it).
    func removeWaiting(where unwanted: (BlockRequest) -> Bool) { waiting.removeAll(where: unwanted) }

    func clearWaiting() { waiting.removeAll() }

    func wrote(_ bytes: Int) { written += bytes }

    /// The block just written (its bytes already counted by `wrote`) is a slice of `piece`.
    func wroteSlice(of piece: PieceIndex) {
        sliced.append((piece, written))
        pieceRefs[piece, default: 0] += 1
    }

    /// The channel still buffers `buffered` bytes, the newest ones written: every slice that ended
    /// before them has left. `released` is called once per slice let go.
    func drained(buffered: Int, released: (PieceIndex) -> Void) {
        let gone = written - buffered
        while let oldest = sliced.first, oldest.end <= gone {
            release(oldest.piece, released)
            sliced.removeFirst()
        }
    }

    /// The connection closed: whatever it held is let go.
    func releaseAll(_ released: (PieceIndex) -> Void) {
        drained(buffered: 0, released: released)
    }

    private func release(_ piece: PieceIndex, _ released: (PieceIndex) -> Void) {
        if let count = pieceRefs[piece], count > 1 {
            pieceRefs[piece] = count - 1
        } else {
            pieceRefs[piece] = nil
        }
        released(piece)
    }
}

/// A first-in first-out queue as an array and the index of its head: taking the oldest is O(1) and
/// allocates nothing once the array has grown to the queue's usual length; the taken prefix is
/// dropped when the queue empties, or when it is at least half the array.
struct Queue<Element> {
    private var elements: [Element] = []
    private var head = 0

    var count: Int { elements.count - head }
    var first: Element? { head < elements.count ? elements[head] : nil }

    mutating func append(_ element: Element) { elements.append(element) }

    mutating func removeFirst() {
        guard head < elements.count else { return }
        head += 1
        if head == elements.count {
            removeAll()
        } else if head >= 256 && 2 * head >= elements.count {
            elements.removeFirst(head)
            head = 0
        }
    }

    mutating func removeAll(where unwanted: (Element) -> Bool) {
        elements = elements[head...].filter { !unwanted($0) }
        head = 0
    }

    mutating func removeAll() {
        elements.removeAll(keepingCapacity: true)
        head = 0
    }
}
