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
        do {
            if handle == nil {
                pending.writeBuffer(&incoming)
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
                // What came after the handshake is decoded like a read of its own.
                incoming = pending
                pending = ByteBuffer()
            }
            guard let handle else { return }
            var messages: [PeerMessage] = []
            if pending.readableBytes > 0 {
                guard let message = try finishSplitMessage(from: &incoming) else { return }
                messages.append(message)
            }
            // Messages are decoded from the read itself: a piece's block is a slice of it.
            while let message = try decoder.next(from: &incoming) { messages.append(message) }
            if incoming.readableBytes > 0 {
                // The start of a message whose end comes with a later read.
                var rest = context.channel.allocator.buffer(capacity: max(incoming.readableBytes, expectedLength(of: incoming)))
                rest.writeBuffer(&incoming)
                pending = rest
            }
            if !messages.isEmpty { runtime.received(messages, from: handle) }
        } catch {
            runtime.protocolError("\(error)", peer: handle)
            context.close(promise: nil)
        }
    }

    /// Completes the message split across reads, copying only its missing bytes out of `incoming`;
    /// nil while it is still incomplete (`incoming` is then used up).
    private func finishSplitMessage(from incoming: inout ByteBuffer) throws(PeerWireError) -> PeerMessage? {
        while true {
            // Throws as soon as the length prefix is complete and over the limit.
            if let message = try decoder.next(from: &pending) {
                pending = ByteBuffer()
                return message
            }
            guard incoming.readableBytes > 0 else { return nil }
            let wanted = max(1, expectedLength(of: pending) - pending.readableBytes)
            var part = incoming.readSlice(length: min(wanted, incoming.readableBytes))!
            pending.writeBuffer(&part)
        }
    }

    /// The whole length of the message `buffer` starts with (length prefix included), or 4 while
    /// the prefix itself is incomplete; at most the decoder's limit.
    private func expectedLength(of buffer: ByteBuffer) -> Int {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return 4 }
        return 4 + min(Int(length), decoder.maxMessageLength)
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
