import Metainfo

/// The network a simulation runs on, described as the testbed builds it (`tools/testbed`): hosts
/// with one capped link each, split into racks whose uplinks to a core router are capped too.
public struct NetworkShape: Sendable, Equatable {
    public var hosts: Int
    /// Bytes per second each host sends (`--rate`).
    public var rate: Double
    /// The testbed's `--cap both`: a host also receives at most `rate`. Off: `--cap egress`.
    public var capsDownload = true
    /// `--racks`: hosts h1… fill rack 1 first, as evenly as they go.
    public var racks = 1
    /// `--uplink`: bytes per second each way between a rack and the core (nil: not capped).
    public var uplink: Double?
    /// One-way delay between two hosts of a rack, in seconds.
    public var latency: Double = 0.000_2
    /// Added one way when a path crosses the core.
    public var coreLatency: Double = 0.000_2
    /// Fraction of packets lost, independently, on each host's link each way (`--loss`).
    public var loss: Double = 0

    public init(hosts: Int, rate: Double) {
        self.hosts = hosts
        self.rate = rate
    }

    /// Each host's rack (0-based), when not the even split of `racks` (a site of one source
    /// beside a site of many nodes); `racks` must count them.
    public var rackOf: [Int]?

    public func rack(of host: Int) -> Int {
        if let rackOf { return rackOf[host] }
        return racks <= 1 ? 0 : host * racks / hosts
    }

    /// One-way delay between two hosts.
    public func delay(from a: Int, to b: Int) -> Double {
        latency + (rack(of: a) == rack(of: b) ? 0 : coreLatency)
    }
}

/// A flow-level model of that network in virtual time: every message crosses the links of its path
/// (the sender's uplink, the rack uplink and downlink when it leaves its rack, the receiver's
/// downlink) one after the other, each link serving the connections that wait for it in turn,
/// one message at a time. So a single connection gets its bottleneck's capacity, connections that
/// share a link share it equally, a message is never delivered before the one sent ahead of it on
/// its connection, and the cost of a run grows with the messages sent, not with packets or bytes.
///
/// What it leaves out, on purpose: TCP's slow start (a connection is at its fair share at once);
/// queueing in switch buffers beyond one message per link. Loss is modelled twice over: a lost
/// packet costs its connection one round trip (fast retransmit) for the message that carried it,
/// every message behind it on that connection waiting too; and each connection is held to TCP's
/// throughput under that loss rate (the Mathis formula) by a link of its own at the head of its path. Messages below `smallMessage` bytes (requests,
/// haves, choking) take no link time: they ride behind whatever their connection still carries, or
/// arrive after the path's delay when it carries nothing.
public final class Network<Payload> {
    public let shape: NetworkShape
    public private(set) var now: Double = 0
    /// Messages below this many bytes take no link time.
    public var smallMessage = 1024
    /// Called with each message as it arrives.
    public var onDeliver: (Channel, Payload) -> Void = { _, _ in }
    /// Called when a timer set with `setTimer` is due.
    public var onTimer: (_ host: Int, _ kind: Int, _ argument: Int) -> Void = { _, _, _ in }

    public final class Link {
        public let capacity: Double
        /// Bytes that crossed the link.
        public internal(set) var bytes: Int64 = 0
        /// Seconds the link was busy.
        public internal(set) var busy: Double = 0
        var serving: Transit?
        /// Connections with a message waiting at this link, served in turn, and the index of this
        /// link in each one's path.
        var waiting: [(Channel, Int)] = []
        var head = 0

        init(capacity: Double) { self.capacity = capacity }
    }

    /// One direction of a connection.
    public final class Channel {
        public let from: Int
        public let to: Int
        let path: [Link]
        let delay: Double
        /// Per link of the path, the messages waiting for it.
        var queues: [[Transit]]
        var queueHeads: [Int]
        /// The last message sent and not yet delivered (later small messages ride behind it).
        var last: Transit?
        /// When the last message scheduled for delivery arrives: none may arrive before it.
        var lastArrival: Double = 0
        public internal(set) var isOpen = true
        /// Bytes sent on this channel.
        public internal(set) var bytes: Int64 = 0
        /// Datagrams, not a TCP stream: a message that lost a packet is gone, not late.
        public let isDatagram: Bool
        /// Datagrams lost on the way.
        public internal(set) var lost = 0

        init(from: Int, to: Int, path: [Link], delay: Double, isDatagram: Bool = false) {
            self.from = from
            self.to = to
            self.path = path
            self.delay = delay
            self.isDatagram = isDatagram
            queues = Array(repeating: [], count: path.count)
            queueHeads = Array(repeating: 0, count: path.count)
        }
    }

    final class Transit {
        let payload: Payload
        let bytes: Int
        let channel: Channel
        var riders: [Payload] = []
        var delivered = false

        init(payload: Payload, bytes: Int, channel: Channel) {
            self.payload = payload
            self.bytes = bytes
            self.channel = channel
        }
    }

    enum Event {
        case linkDone(Link)
        case deliver(Transit)
        case timer(Int, Int, Int)
    }

    private var events = EventQueue<Event>()
    private var random: SeededRandom
    public let uploads: [Link]
    public let downloads: [Link?]
    /// Per rack, its uplink toward the core and its downlink from it (nil when not capped).
    public let rackUplinks: [Link?]
    public let rackDownlinks: [Link?]
    /// Events handled so far.
    public private(set) var handled = 0

    public init(shape: NetworkShape, seed: UInt64 = 1) {
        self.shape = shape
        random = SeededRandom(seed: seed)
        uploads = (0..<shape.hosts).map { _ in Link(capacity: shape.rate) }
        downloads = (0..<shape.hosts).map { _ in shape.capsDownload ? Link(capacity: shape.rate) : nil }
        let racks = max(shape.racks, 1)
        rackUplinks = (0..<racks).map { _ in shape.racks > 1 ? shape.uplink.map { Link(capacity: $0) } : nil }
        rackDownlinks = (0..<racks).map { _ in shape.racks > 1 ? shape.uplink.map { Link(capacity: $0) } : nil }
    }

    /// A new direction of a connection from one host to another.
    public func open(from: Int, to: Int) -> Channel {
        let delay = shape.delay(from: from, to: to)
        var path = [uploads[from]]
        if shape.loss > 0 {
            // TCP's own limit under loss (Mathis et al.): MSS / RTT × 1.22 / √p, p over both links.
            let lost = 1 - (1 - shape.loss) * (1 - shape.loss)
            path.insert(Link(capacity: 1448 / (2 * delay) * 1.22 / lost.squareRoot()), at: 0)
        }
        let (source, target) = (shape.rack(of: from), shape.rack(of: to))
        if source != target {
            if let link = rackUplinks[source] { path.append(link) }
            if let link = rackDownlinks[target] { path.append(link) }
        }
        if let link = downloads[to] { path.append(link) }
        return Channel(from: from, to: to, path: path, delay: delay)
    }

    /// A multicast group's traffic from one host, as far as its own uplink: a datagram sent on it
    /// is delivered (to whoever fans it out, `groupDelivery`) once it has left the host.
    public func openGroupUplink(from host: Int) -> Channel {
        Channel(from: host, to: host, path: [uploads[host]], delay: 0, isDatagram: true)
    }

    /// A group's datagrams from one host into another: the receiver's downlink and the delay
    /// between them, each datagram lost with the links' loss rate (a switch copies multicast to
    /// every port of the group; the testbed's core does not carry it between racks).
    public func openGroupDownlink(from: Int, to: Int) -> Channel {
        Channel(from: from, to: to, path: downloads[to].map { [$0] } ?? [], delay: shape.delay(from: from, to: to), isDatagram: true)
    }

    /// Nothing more is delivered on the channel; what it still carries is dropped where it is.
    public func close(_ channel: Channel) {
        channel.isOpen = false
        channel.last = nil
    }

    /// Sends a message of `bytes` bytes (as on the wire) on the channel.
    public func send(_ payload: Payload, bytes: Int, on channel: Channel) {
        guard channel.isOpen else { return }
        channel.bytes += Int64(bytes)
        if bytes < smallMessage {
            if let last = channel.last, !last.delivered {
                last.riders.append(payload)
                return
            }
            let transit = Transit(payload: payload, bytes: bytes, channel: channel)
            channel.last = transit
            arrive(transit, leftAt: now)
            return
        }
        let transit = Transit(payload: payload, bytes: bytes, channel: channel)
        channel.last = transit
        if channel.path.isEmpty {
            arrive(transit, leftAt: now)
        } else {
            enqueue(transit, at: 0)
        }
    }

    /// Calls `onTimer(host, kind, argument)` at the given time.
    public func setTimer(host: Int, kind: Int, argument: Int = 0, at time: Double) {
        events.schedule(.timer(host, kind, argument), at: max(time, now))
    }

    /// Runs events until none is left, `time` is reached, or `stop` holds (checked after each event).
    public func run(until time: Double = .infinity, stop: () -> Bool = { false }) {
        while let due = events.nextTime, due <= time {
            let (at, event) = events.pop()!
            now = at
            handled += 1
            switch event {
            case .linkDone(let link): finish(link)
            case .deliver(let transit): deliver(transit)
            case .timer(let host, let kind, let argument): onTimer(host, kind, argument)
            }
            if stop() { return }
        }
        if time.isFinite { now = max(now, time) }
    }

    public var pendingEvents: Int { events.count }

    // MARK: Links

    private func enqueue(_ transit: Transit, at hop: Int) {
        let channel = transit.channel
        let link = channel.path[hop]
        let wasEmpty = channel.queueHeads[hop] == channel.queues[hop].count
        channel.queues[hop].append(transit)
        if wasEmpty { link.waiting.append((channel, hop)) }
        if link.serving == nil { serveNext(link) }
    }

    private func serveNext(_ link: Link) {
        while link.head < link.waiting.count {
            let (channel, hop) = link.waiting[link.head]
            link.head += 1
            guard channel.isOpen else {
                channel.queues[hop].removeAll()
                channel.queueHeads[hop] = 0
                continue
            }
            let transit = channel.queues[hop][channel.queueHeads[hop]]
            channel.queueHeads[hop] += 1
            if channel.queueHeads[hop] == channel.queues[hop].count {
                channel.queues[hop].removeAll(keepingCapacity: true)
                channel.queueHeads[hop] = 0
            } else {
                link.waiting.append((channel, hop))  // its next message waits for its next turn
            }
            if link.head > 1024, link.head * 2 > link.waiting.count {
                link.waiting.removeFirst(link.head)
                link.head = 0
            }
            link.serving = transit
            let seconds = Double(transit.bytes) / link.capacity
            link.busy += seconds
            link.bytes += Int64(transit.bytes)
            events.schedule(.linkDone(link), at: now + seconds)
            return
        }
        link.waiting.removeAll(keepingCapacity: true)
        link.head = 0
    }

    private func finish(_ link: Link) {
        let transit = link.serving!
        link.serving = nil
        let channel = transit.channel
        let hop = channel.path.firstIndex { $0 === link }!
        if channel.isOpen {
            if hop + 1 < channel.path.count {
                enqueue(transit, at: hop + 1)
            } else {
                arrive(transit, leftAt: now)
            }
        }
        serveNext(link)
    }

    /// Schedules the message's arrival: after the path's delay, a round trip more when a packet of
    /// it was lost on either host's link, and never before the message ahead of it.
    private func arrive(_ transit: Transit, leftAt time: Double) {
        let channel = transit.channel
        var arrival = time + channel.delay
        // A group's datagram is lost (or not) on its way into each receiver, on both links' odds;
        // leaving the sender (a channel to itself) it is not drawn for.
        if shape.loss > 0 && channel.from != channel.to {
            // A datagram is one packet (the booster's fill an MTU and are never fragmented).
            let packets = channel.isDatagram ? 1 : max(1, (transit.bytes + 1447) / 1448)
            let intact = pow1p(-shape.loss, 2 * packets)
            if Double.random(in: 0..<1, using: &random) >= intact {
                guard !channel.isDatagram else {
                    channel.lost += 1
                    transit.delivered = true
                    if channel.last === transit { channel.last = nil }
                    return
                }
                arrival += 2 * channel.delay
            }
        }
        arrival = max(arrival, channel.lastArrival)
        channel.lastArrival = arrival
        events.schedule(.deliver(transit), at: arrival)
    }

    private func deliver(_ transit: Transit) {
        transit.delivered = true
        let channel = transit.channel
        guard channel.isOpen else { return }
        if channel.last === transit { channel.last = nil }
        onDeliver(channel, transit.payload)
        for rider in transit.riders where channel.isOpen { onDeliver(channel, rider) }
    }

    /// (1 + x)^n for small x, without a Foundation dependency.
    private func pow1p(_ x: Double, _ n: Int) -> Double {
        var result = 1.0
        var base = 1 + x
        var exponent = n
        while exponent > 0 {
            if exponent & 1 == 1 { result *= base }
            base *= base
            exponent >>= 1
        }
        return result
    }
}
