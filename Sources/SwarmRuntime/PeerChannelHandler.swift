import Metainfo
import NIOCore
import PeerWire

/// One peer connection on the wire: the handshake, then framed messages, handed to the runtime.
final class PeerChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let runtime: SwarmRuntime
    private let outgoing: Bool
    private var pending = ByteBuffer()
    private var handle: Int?
    private let decoder = PeerWireDecoder()

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
        // Most reads start on a message boundary: decode from the read itself, not from a copy.
        if pending.readableBytes == 0 {
            pending = incoming
        } else {
            pending.writeBuffer(&incoming)
        }
        do {
            if handle == nil {
                guard let theirs = try Handshake.read(from: &pending) else { return }
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
            }
            guard let handle else { return }
            var messages: [PeerMessage] = []
            while let message = try decoder.next(from: &pending) { messages.append(message) }
            pending.discardReadBytes()
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
