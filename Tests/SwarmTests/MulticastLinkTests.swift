#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing

@testable import SwarmRuntime

/// Issue 15, point 4: the booster's listening socket is bound to the group's address, not the
/// wildcard. The kernel then hands it only datagrams sent to the group: a forged announce unicast
/// to the booster's port (from a host off the LAN segment, or one that does not join the group)
/// never reaches it. Bound to 0.0.0.0, as before, it took both.
@Suite(.serialized) struct MulticastLinkTests {
    final class Inbox: Sendable {
        let datagrams = Mutex<[[UInt8]]>([])
        var all: [[UInt8]] { datagrams.withLock { $0 } }
    }

    /// Sends `bytes` from a plain UDP socket on the wildcard to HOST:PORT (multicast loops back to
    /// this host, IP_MULTICAST_LOOP being on by default).
    static func send(_ bytes: [UInt8], to host: String, port: Int) throws {
        let socketDescriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(socketDescriptor >= 0)
        defer { close(socketDescriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        try #require(inet_pton(AF_INET, host, &address.sin_addr) == 1)
        let sent = bytes.withUnsafeBytes { data in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(socketDescriptor, data.baseAddress, data.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        try #require(sent == bytes.count, "sendto \(host):\(port): \(String(cString: strerror(errno)))")
    }

    /// A booster link on a group and port of its own (so that nothing else on this host, other
    /// tests, shares them), collecting what it hears.
    struct Listening {
        let loops: MultiThreadedEventLoopGroup
        let group: String
        let port: Int
        let inbox = Inbox()
        let link: MulticastLink

        init(dropsData: Bool = false) async throws {
            loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            group = "239.255.\(Int.random(in: 100...199)).\(Int.random(in: 1...254))"
            port = Int.random(in: 40_000..<60_000)
            let inbox = self.inbox
            link = try await MulticastLink.open(MulticastOptions(group: group, port: port), on: loops, dropsData: dropsData) { bytes, _ in
                inbox.datagrams.withLock { $0.append(bytes) }
            }
        }

        func close() async throws {
            link.close()
            try await loops.shutdownGracefully()
        }
    }

    @Test func aDatagramUnicastToTheBoostersPortIsNotReceivedOnlyTheGroupsAre() async throws {
        let listening = try await Listening()
        let (group, port, inbox) = (listening.group, listening.port, listening.inbox)
        // The forged announce first, unicast to the booster's port on loopback (and on every
        // address of this host's interfaces), then a datagram to the group.
        var unicastTargets = ["127.0.0.1"]
        for device in (try? System.enumerateDevices()) ?? [] {
            if device.address?.protocol == .inet, let host = device.address?.ipAddress, !unicastTargets.contains(host) {
                unicastTargets.append(host)
            }
        }
        for host in unicastTargets { try Self.send(Array("unicast to \(host)".utf8), to: host, port: port) }
        try Self.send(Array("to the group".utf8), to: group, port: port)
        let heard = eventually(5) { inbox.all.contains(Array("to the group".utf8)) }
        // Anything unicast, sent first, would have been read before the group's datagram; a
        // moment more in case the loop handed them over out of order.
        try await Task.sleep(for: .milliseconds(200))
        try await listening.close()
        #expect(heard, "multicast to the group reaches the booster (loopback multicast works here)")
        #expect(inbox.all == [Array("to the group".utf8)], "received: \(inbox.all.map { String(decoding: $0, as: UTF8.self) })")
    }

    /// A sender's link (`dropsData`) never hears data packets (its own, looped back by the group,
    /// woke it up for each one it sent); it still hears everything else.
    @Test func aSendersLinkHearsNoDataPackets() async throws {
        let listening = try await Listening(dropsData: true)
        let (group, port, inbox) = (listening.group, listening.port, listening.inbox)
        let data: [UInt8] = [0xD2] + Array(repeating: 7, count: 40)
        try Self.send(data, to: group, port: port)
        try Self.send(Array("a nack".utf8), to: group, port: port)
        let heard = eventually(5) { inbox.all.contains(Array("a nack".utf8)) }
        try await Task.sleep(for: .milliseconds(100))
        try await listening.close()
        #expect(heard)
        #if os(Linux)
        #expect(inbox.all == [Array("a nack".utf8)])
        #endif
    }

    /// Reads pause between batches (fewer wake-ups), and lose nothing: a burst of datagrams all
    /// arrive, in order.
    @Test func aBurstOfDatagramsIsReadWhole() async throws {
        let listening = try await Listening()
        let (group, port, inbox) = (listening.group, listening.port, listening.inbox)
        let sent = (0..<300).map { Array("datagram \($0)".utf8) }
        for (index, datagram) in sent.enumerated() {
            try Self.send(datagram, to: group, port: port)
            if index % 50 == 49 { try await Task.sleep(for: .milliseconds(3)) }
        }
        let heard = eventually(5) { inbox.all.count >= sent.count }
        try await listening.close()
        #expect(heard && inbox.all == sent, "\(inbox.all.count) of \(sent.count)")
    }

    @Test func thePauseBetweenReadsLeavesAboutABatchInTheBuffer() {
        typealias Inbound = MulticastLink.Inbound
        #expect(Inbound.pause(datagrams: 0, elapsed: 1) == 0)
        // Slow (a datagram in a second, or one a millisecond): the longest pause.
        #expect(Inbound.pause(datagrams: 1, elapsed: 1) == Inbound.maxPause)
        #expect(Inbound.pause(datagrams: 4, elapsed: 0.004) == Inbound.maxPause)
        // 64 datagrams in 4 ms: 32 more come in 2 ms.
        #expect(abs(Inbound.pause(datagrams: 64, elapsed: 0.004) - 0.002) < 1e-9)
    }
}
