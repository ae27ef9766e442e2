import LocalDiscovery
import Metainfo
import NIOCore

/// Local Service Discovery (BEP 14) for one torrent: announces it to 239.192.152.143:6771 at start
/// and every `interval`, and hands on the peers that announce it, as libtorrent, qBittorrent and
/// Transmission do on a LAN without a tracker. It rides the booster's `MulticastLink` (a socket
/// bound to the group, so unicast to the port never reaches it; SO_REUSEADDR, so other clients on
/// the host share the port). A peer is the datagram's source address with the announced port:
/// a LAN host can point a node only at an address it sends from, each address is acted on once a
/// minute at most, and the runtime's dial caps bound the rest. Loop-confined: the runtime's group
/// has one loop, which is the link's.
final class LocalPeerDiscovery: @unchecked Sendable {
    private let link: MulticastLink
    private var timer: RepeatedTask?
    private let infoHash: InfoHash
    private let cookie: String
    private let announce: [UInt8]
    private var filter = LSDPeerFilter()
    private let found: (PeerAddress) -> Void
    /// Datagrams that were not a readable announce, and announces of other torrents.
    private(set) var malformed = 0
    private(set) var foreign = 0

    private init(link: MulticastLink, infoHash: InfoHash, port: UInt16, found: @escaping (PeerAddress) -> Void) {
        self.link = link
        self.infoHash = infoHash
        cookie = String((0..<8).map { _ in "0123456789abcdef".randomElement()! })
        announce = LSDAnnounce(port: port, infoHashes: [infoHash], cookie: cookie).encoded()
        self.found = found
    }

    static func start(infoHash: InfoHash, port: UInt16, interface: String?, interval: TimeAmount, on group: any EventLoopGroup,
                      found: @escaping (PeerAddress) -> Void) async throws -> LocalPeerDiscovery {
        var options = MulticastOptions(group: LSDAnnounce.group, port: LSDAnnounce.port)
        options.interface = interface
        let box = Box()
        let link = try await MulticastLink.open(options, on: group) { datagram, source in box.discovery?.received(datagram, from: source) }
        let discovery = LocalPeerDiscovery(link: link, infoHash: infoHash, port: port, found: found)
        try await group.next().submit {
            box.discovery = discovery
            discovery.send()
            discovery.timer = group.next().scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in discovery.send() }
        }.get()
        return discovery
    }

    private final class Box: @unchecked Sendable { var discovery: LocalPeerDiscovery? }

    private func send() {
        link.write(link.allocator.buffer(bytes: announce))
        link.flush()
    }

    private func received(_ datagram: [UInt8], from source: SocketAddress) {
        let message: LSDAnnounce
        do {
            message = try LSDAnnounce(decoding: datagram)
        } catch {
            malformed += 1
            return
        }
        guard message.cookie != cookie else { return }  // our own, looped back
        guard message.infoHashes.contains(infoHash) else {
            foreign += 1
            return
        }
        guard let ip = source.ipAddress, let peer = PeerAddress(host: ip, port: message.port) else { return }
        let now = Double(NIODeadline.now().uptimeNanoseconds) / 1e9
        if filter.admit(peer, now: now) { found(peer) }
    }

    func close() {
        timer?.cancel()
        link.close()
    }
}
