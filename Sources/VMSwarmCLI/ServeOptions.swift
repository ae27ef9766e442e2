import ArgumentParser
import Foundation
import HTTPRanges
import Logging
import NBD
import NIOCore
import Metainfo
import SwarmRuntime

/// `get --serve nbd://HOST[:PORT]` and `--serve http://HOST[:PORT]`: the image, read-only, while it
/// downloads (docs/streaming.md).
struct ServeOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Serve the image read-only while it downloads, over NBD (nbd://HOST[:PORT], port 10809 by default) or HTTP with byte ranges (http://HOST:PORT). Repeatable. A read waits only for the pieces under it; get then keeps running (serving and seeding) until interrupted.",
        valueName: "URL"))
    var serve: [String] = []

    @Option(name: .customLong("record-reads"), help: ArgumentHelp(
        "Append every read served by --serve to FILE as it is made (\"OFFSET LENGTH\" lines): a boot profile for --prefetch, create --boot-profile and tools/nbd-replay.",
        valueName: "FILE"))
    var recordReads: String?

    @Option(help: ArgumentHelp(
        "Fetch the pieces that this read profile reads first, first (default: the torrent's boot profile, if it has one; 'none' for neither).",
        valueName: "FILE"))
    var prefetch: String?

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

    func validate() throws {
        _ = try endpoints()
        if recordReads != nil && serve.isEmpty { throw ValidationError("--record-reads records the reads of --serve: add --serve.") }
    }

    /// The read profile to fetch in order of: `--prefetch FILE`, else the torrent's.
    func profile(carried: ReadProfile?) throws -> ReadProfile? {
        guard let prefetch else { return carried }
        return prefetch == "none" ? nil : try ReadProfileFile.read(prefetch)
    }

    /// A running server: how to stop it.
    struct Running {
        let url: String
        let shutdown: @Sendable () async -> Void
    }

    /// Starts a server per `--serve` over the runtime's image; none without the flag.
    func start(_ runtime: SwarmRuntime, name: String, size: Int64, logger: Logger) async throws(CLIError) -> [Running] {
        let recorder = try recordReads.map { path throws(CLIError) in try ReadRecorder(path: path) }
        let source = ImageInFlight(runtime: runtime, recorder: recorder)
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
    let recorder: ReadRecorder?

    func read(offset: Int64, length: Int) async throws -> ByteBuffer {
        recorder?.record(offset: offset, length: length)
        return try await runtime.readImage(at: offset, length: length)
    }
}

/// `--record-reads`: each read is appended as it is asked for (not when answered: the order a
/// reader asks in is the order it needs), and written at once, so a VM killed mid-boot still
/// leaves its profile.
final class ReadRecorder: Sendable {
    private let handle: FileHandle

    init(path: String) throws(CLIError) {
        guard FileManager.default.createFile(atPath: path, contents: Data("# reads served by vmswarm get --serve: OFFSET LENGTH\n".utf8)),
            let handle = FileHandle(forWritingAtPath: path)
        else { throw CLIError("cannot write the read profile \(path)") }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    func record(offset: Int64, length: Int) {
        // FileHandle writes are one write(2) each: lines of concurrent readers do not interleave.
        handle.write(Data("\(offset) \(length)\n".utf8))
    }
}

/// Read profiles in their text form, from a file.
enum ReadProfileFile {
    /// A profile of `ReadProfile.maximumReads` lines of two 19-digit numbers is under 3 MiB.
    static let maximumSize = 16 << 20

    static func read(_ path: String) throws -> ReadProfile {
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard size <= maximumSize else { throw CLIError("\(path): a read profile is at most \(maximumSize >> 20) MiB") }
        let data = try CLIError.wrap("cannot read the read profile \(path)") { try Data(contentsOf: URL(fileURLWithPath: path)) }
        guard let text = String(data: data, encoding: .utf8) else { throw CLIError("\(path): a read profile is UTF-8 text") }
        do { return try ReadProfile(text: text) } catch { throw CLIError("\(path): \(error)") }
    }
}
