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

    init(runtime: SwarmRuntime, outgoing: Bool) {
        self.runtime = runtime
        self.outgoing = outgoing
    }

    func channelActive(context: ChannelHandlerContext) {
        // The side that connects speaks first; the other answers once it knows the torrent matches.
        if outgoing { sendHandshake(context: context) }
        context.fireChannelActive()
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
                handshakeBytes.writeBuffer(&incoming)
                guard let theirs = try Handshake.read(from: &handshakeBytes) else { return }
                guard theirs.infoHash == runtime.metainfo.infoHash else {
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
        if let handle { runtime.peerDisconnected(handle) }
        handle = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
