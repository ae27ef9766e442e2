import ServerSocket
import Logging
import NIOCore
import NIOPosix

/// Where an export's bytes come from: an image in flight answers a read once the pieces under it
/// have verified (which may take a while), and says with `prefetch` what a client announced it
/// will read.
public protocol NBDDataSource: Sendable {
    /// Exactly `length` bytes at `offset` (inside the export), or an error (the client gets EIO).
    func read(offset: Int64, length: Int) async throws -> ByteBuffer
    /// The client said (`NBD_CMD_CACHE`) it will read this range soon.
    func prefetch(offset: Int64, length: Int)
}

extension NBDDataSource {
    public func prefetch(offset: Int64, length: Int) {}
}

/// A read-only NBD server over SwiftNIO: the thin front of `NBDServerSession`. Each connection
/// gets a session; reads run concurrently and are answered as their data comes (NBD allows any
/// order), and the socket is read only while the session takes more requests.
public final class NBDServer: Sendable {
    private let listener: TCPListener

    public var port: Int? { listener.port }

    private init(listener: TCPListener) { self.listener = listener }

    public static func start(host: String, port: Int, export: NBDServerSession.Export, source: any NBDDataSource,
                             logger: Logger) async throws -> NBDServer {
        let listener = try await TCPListener.start(host: host, port: port) {
            $0.childChannelOption(.autoRead, value: false).childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        } initializer: { channel in
            try channel.pipeline.syncOperations.addHandler(
                NBDConnectionHandler(session: NBDServerSession(export: export), source: source, logger: logger))
        }
        return NBDServer(listener: listener)
    }

    public func shutdown() async { await listener.shutdown() }
}

/// One client connection. Lives on its channel's event loop; reads of the source run as tasks and
/// come back to the loop to write their reply.
final class NBDConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: NBDServerSession
    private let source: any NBDDataSource
    private let logger: Logger
    private var context: ChannelHandlerContext?

    init(session: NBDServerSession, source: any NBDDataSource, logger: Logger) {
        self.session = session
        self.source = source
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        context.writeAndFlush(wrapOutboundOut(NBDServerSession.greeting()), promise: nil)
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handle(session.receive(unwrapInboundIn(data)), context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        if session.wantsInput { context.read() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("NBD connection failed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func handle(_ events: [NBDServerSession.Event], context: ChannelHandlerContext) {
        for event in events {
            switch event {
            case .send(let bytes):
                context.write(wrapOutboundOut(bytes), promise: nil)
            case .started:
                logger.debug("NBD client entered transmission", metadata: ["client": "\(context.remoteAddress?.description ?? "?")"])
            case .read(let handle, let offset, let length):
                startRead(handle: handle, offset: offset, length: length, loop: context.eventLoop)
            case .prefetch(let offset, let length):
                source.prefetch(offset: offset, length: length)
            case .close(let reason):
                logger.debug("NBD connection closed", metadata: ["reason": "\(reason)"])
                // What was written before (an answer to ABORT, say) goes out first.
                context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in self.context?.close(promise: nil) }
            }
        }
    }

    private func startRead(handle: UInt64, offset: Int64, length: Int, loop: any EventLoop) {
        let source = self.source
        Task {
            let result: Result<ByteBuffer, any Error>
            do {
                result = .success(try await source.read(offset: offset, length: length))
            } catch {
                result = .failure(error)
            }
            loop.execute { self.answer(handle: handle, length: length, result: result) }
        }
    }

    /// On the loop: the reply goes out, and once the socket took it (not merely the channel's
    /// buffer: a client that does not read must not make us hold more) the session may parse the
    /// requests that waited behind its caps.
    private func answer(handle: UInt64, length: Int, result: Result<ByteBuffer, any Error>) {
        guard let context, !session.isClosed else { return }
        let written = context.eventLoop.makePromise(of: Void.self)
        switch result {
        case .success(let data) where data.readableBytes == length:
            context.write(wrapOutboundOut(NBDServerSession.reply(handle: handle)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(data), promise: written)
        case .success(let data):
            logger.warning("NBD read returned the wrong length", metadata: ["asked": "\(length)", "got": "\(data.readableBytes)"])
            context.writeAndFlush(wrapOutboundOut(NBDServerSession.reply(handle: handle, error: .io)), promise: written)
        case .failure(let error):
            logger.info("NBD read failed", metadata: ["error": "\(error)"])
            context.writeAndFlush(wrapOutboundOut(NBDServerSession.reply(handle: handle, error: .io)), promise: written)
        }
        written.futureResult.whenComplete { _ in
            guard let context = self.context else { return }
            let wanted = self.session.wantsInput
            self.handle(self.session.readAnswered(length: length), context: context)
            context.flush()
            if !wanted && self.session.wantsInput { context.read() }
        }
    }
}
