import Metainfo
import NIOCore
import PeerWire

/// One peer connection on the wire: the handshake, then framed messages, handed to the runtime.
final class PeerChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let runtime: SwarmRuntime
    private let outgoing: Bool
    /// What arrived before the handshake was complete.
    private var handshakeBytes = ByteBuffer()
    private var handle: Int?
    private var framer = PeerWireFramer()
    /// The key the runtime counts this connection under (nil: not admitted, or closed).
    private var admitted: String?

    init(runtime: SwarmRuntime, outgoing: Bool) {
        self.runtime = runtime
        self.outgoing = outgoing
    }

    func channelActive(context: ChannelHandlerContext) {
        // Caps on half-open and per-address connections apply before a byte is read.
        guard let key = runtime.channelOpened(context.channel, outgoing: outgoing) else {
            context.close(promise: nil)
            return
        }
        admitted = key
        // The side that connects speaks first; the other answers once it knows the torrent matches.
        if outgoing { sendHandshake(context: context) }
        context.fireChannelActive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let handle { runtime.writabilityChanged(handle, writable: context.channel.isWritable) }
        context.fireChannelWritabilityChanged()
    }

    private func sendHandshake(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: Handshake.length)
        runtime.ourHandshake.write(to: &buffer)
        context.writeAndFlush(NIOAny(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        do {
            if handle == nil {
                guard admitted != nil else { return }
                handshakeBytes.writeBuffer(&incoming)
                guard let theirs = try Handshake.read(from: &handshakeBytes) else { return }
                guard theirs.infoHash == runtime.metainfo.infoHash else {
                    runtime.refuse(.wrongTorrent, context.channel) as Void?
                    context.close(promise: nil)
                    return
                }
                if !outgoing { sendHandshake(context: context) }
                guard let assigned = runtime.peerConnected(theirs, channel: context.channel, outgoing: outgoing) else {
                    context.close(promise: nil)
                    return
                }
                handle = assigned
                // What came after the handshake is framed like a read of its own.
                incoming = handshakeBytes
                handshakeBytes = ByteBuffer()
            }
            guard let handle else { return }
            let messages = try framer.messages(in: incoming)
            if !messages.isEmpty { runtime.received(messages, from: handle) }
        } catch {
            runtime.protocolError("\(error)", peer: handle)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let admitted {
            runtime.channelClosed(context.channel, address: admitted, handle: handle)
        } else if let handle {
            runtime.peerDisconnected(handle)
        }
        admitted = nil
        handle = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
