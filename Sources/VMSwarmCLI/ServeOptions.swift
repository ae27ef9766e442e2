import ArgumentParser
import Logging
import NBD
import NIOCore
import SwarmRuntime

/// `get --serve nbd://HOST:PORT`: the image, read-only, while it downloads (docs/streaming.md).
struct ServeOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Serve the image read-only while it downloads: nbd://HOST[:PORT] (port 10809 by default). A read waits only for the pieces under it; get then keeps running (serving and seeding) until interrupted.",
        valueName: "URL"))
    var serve: String?

    static let defaultPort = 10809

    /// Host and port of `--serve`, or nil when it is not given.
    func endpoint() throws -> HostPort? {
        guard let serve else { return nil }
        guard serve.lowercased().hasPrefix("nbd://") else {
            throw ValidationError("--serve takes nbd://HOST[:PORT], such as nbd://127.0.0.1:10809 (got '\(serve)').")
        }
        let rest = String(serve.dropFirst("nbd://".count)).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        if let endpoint = HostPort(rest) { return endpoint }
        if !rest.isEmpty, !rest.contains(":") || (rest.hasPrefix("[") && rest.hasSuffix("]")) {
            return HostPort("\(rest):\(Self.defaultPort)")
        }
        throw ValidationError("--serve takes nbd://HOST[:PORT], such as nbd://127.0.0.1:10809 (got '\(serve)').")
    }

    func validate() throws { _ = try endpoint() }

    /// Starts the NBD server over the runtime's image, or returns nil without `--serve`.
    func start(_ runtime: SwarmRuntime, name: String, size: Int64, logger: Logger) async throws(CLIError) -> NBDServer? {
        guard let endpoint = try? endpoint() else { return nil }
        let export = NBDServerSession.Export(name: name, size: size, description: "\(name), served by vmswarm while it downloads")
        return try await CLIError.wrapAsync("cannot listen on \(endpoint.host):\(endpoint.port) for --serve") {
            try await NBDServer.start(host: endpoint.host, port: endpoint.port, export: export, source: ImageInFlight(runtime: runtime), logger: logger)
        }
    }
}

/// The image of a running download as an NBD export.
struct ImageInFlight: NBDDataSource {
    let runtime: SwarmRuntime

    func read(offset: Int64, length: Int) async throws -> ByteBuffer {
        try await runtime.readImage(at: offset, length: length)
    }
}
