import NIOCore
import NIOPosix

/// A TCP listening socket on an event loop of its own, the edge every small server of a node shares
/// (`--metrics-listen`, `--serve nbd://` and `--serve http://`): bound with SO_REUSEADDR, each
/// accepted connection's pipeline made by `initializer`, and everything released by `shutdown`,
/// also when binding fails. Its own loop keeps these servers from waiting behind the swarm's.
public final class TCPListener: Sendable {
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup

    /// The bound port (what port 0 became).
    public var port: Int? { channel.localAddress?.port }

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup) {
        self.channel = channel
        self.group = group
    }

    /// `configure` may set child channel options before the bind (NBD reads only on demand).
    public static func start(
        host: String, port: Int, configure: @Sendable (ServerBootstrap) -> ServerBootstrap = { $0 },
        initializer: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> TCPListener {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let bootstrap = ServerBootstrap(group: group).serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            let channel = try await configure(bootstrap)
                .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try initializer(channel) } }
                .bind(host: host, port: port).get()
            return TCPListener(channel: channel, group: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Closing an already closed channel or group is no failure worth reporting at exit.
    public func shutdown() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}
