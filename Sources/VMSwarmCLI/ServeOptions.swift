import ArgumentParser
import Foundation
import HTTPRanges
import Logging
import NBD
import NIOCore
import SwarmRuntime

/// `get --serve nbd://HOST[:PORT]` and `--serve http://HOST[:PORT]`: the image, read-only, while it
/// downloads (docs/streaming.md).
struct ServeOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Serve the image read-only while it downloads, over NBD (nbd://HOST[:PORT], port 10809 by default) or HTTP with byte ranges (http://HOST:PORT). Repeatable. A read waits only for the pieces under it; get then keeps running (serving and seeding) until interrupted.",
        valueName: "URL"))
    var serve: [String] = []

    enum Kind { case nbd, http }

    struct Endpoint {
        let kind: Kind
        let host: String
        let port: Int

        /// The URL a client uses (the port the server got, for port 0).
        func url(port actual: Int?) -> String {
            "\(kind == .nbd ? "nbd" : "http")://\(host.contains(":") ? "[\(host)]" : host):\(actual ?? port)"
        }
    }

    static let usage = "--serve takes nbd://HOST[:PORT] or http://HOST:PORT, such as nbd://127.0.0.1:10809"

    static func endpoint(_ url: String) throws -> Endpoint {
        let lowered = url.lowercased()
        let kind: Kind
        if lowered.hasPrefix("nbd://") { kind = .nbd } else if lowered.hasPrefix("http://") { kind = .http } else {
            throw ValidationError("\(usage) (got '\(url)').")
        }
        let rest = url.split(separator: "/", omittingEmptySubsequences: false).dropFirst(2).first.map(String.init) ?? ""
        if let endpoint = HostPort(rest) { return Endpoint(kind: kind, host: endpoint.host, port: endpoint.port) }
        if kind == .nbd, !rest.isEmpty, !rest.contains(":") || (rest.hasPrefix("[") && rest.hasSuffix("]")),
            let endpoint = HostPort("\(rest):10809")
        {
            return Endpoint(kind: kind, host: endpoint.host, port: endpoint.port)
        }
        throw ValidationError("\(usage) (got '\(url)').")
    }

    func endpoints() throws -> [Endpoint] { try serve.map(Self.endpoint) }

    func validate() throws { _ = try endpoints() }

    /// A running server: how to stop it.
    struct Running {
        let url: String
        let shutdown: @Sendable () async -> Void
    }

    /// Starts a server per `--serve` over the runtime's image; none without the flag.
    func start(_ runtime: SwarmRuntime, name: String, size: Int64, logger: Logger) async throws(CLIError) -> [Running] {
        let source = ImageInFlight(runtime: runtime)
        var running: [Running] = []
        do {
            for endpoint in (try? endpoints()) ?? [] {
                try await running.append(CLIError.wrapAsync("cannot listen on \(endpoint.host):\(endpoint.port) for --serve") {
                    switch endpoint.kind {
                    case .nbd:
                        let export = NBDServerSession.Export(name: name, size: size, description: "\(name), served by vmswarm while it downloads")
                        let server = try await NBDServer.start(host: endpoint.host, port: endpoint.port, export: export, source: source, logger: logger)
                        return Running(url: endpoint.url(port: server.port), shutdown: server.shutdown)
                    case .http:
                        let server = try await HTTPRangeServer.start(host: endpoint.host, port: endpoint.port, name: name, size: size, source: source, logger: logger)
                        return Running(url: endpoint.url(port: server.port) + "/" + name, shutdown: server.shutdown)
                    }
                })
            }
        } catch {
            for server in running { await server.shutdown() }
            throw error
        }
        return running
    }
}

/// The image of a running download, for every kind of reader.
struct ImageInFlight: NBDDataSource, HTTPRangeSource {
    let runtime: SwarmRuntime

    func read(offset: Int64, length: Int) async throws -> ByteBuffer {
        try await runtime.readImage(at: offset, length: length)
    }
}
