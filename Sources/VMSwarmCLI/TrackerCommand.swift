import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOSSL
import Tracker

struct TrackerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tracker",
        abstract: "Run a BitTorrent tracker for a site: HTTP (BEP 3/23/7/48), and UDP (BEP 15) with --udp-listen.",
        discussion: """
            Serves /announce and /scrape to any BitTorrent client, /stats (an HTML page; ?format=json for \
            JSON) and /metrics (Prometheus). Open by default: any torrent is tracked. With --allow, only \
            the torrents listed (a file of hex info-hashes, one per line, or a folder of .torrent files); \
            send SIGHUP to reload the list without losing the peers. SIGINT or SIGTERM stops it. With \
            --udp-listen it also answers BEP 15 (udp://HOST:PORT/announce) from the same peer tables, \
            limits and metrics.
            """)

    @Option(help: "Address and port to listen on.")
    var listen: String = "0.0.0.0:6969"

    @Option(name: .customLong("udp-listen"), help: "Also serve the UDP tracker protocol (BEP 15) on this address and port.")
    var udpListen: String?

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("Serve HTTPS with this certificate chain (PEM); needs --tls-key.", valueName: "FILE"))
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The private key (PEM) of --tls-cert.", valueName: "FILE"))
    var tlsKey: String?

    @Option(help: "Serve only these torrents: a file of hex info-hashes or a folder of .torrent files.")
    var allow: String?

    @Option(help: "Seconds between announces that clients are told.")
    var interval: Int = 1800

    @Option(name: .customLong("min-interval"), help: "Seconds a client must wait at least between announces.")
    var minInterval: Int = 60

    @Option(name: .customLong("max-torrents"), help: "Most torrents tracked at once; beyond it new ones are refused.")
    var maxTorrents: Int = 100_000

    @Option(name: .customLong("max-peers"), help: "Most peers stored per torrent.")
    var maxPeers: Int = 50_000

    @Option(name: .customLong("max-peers-per-ip"),
        help: ArgumentHelp("Most peers of one torrent stored from one IPv4 address or IPv6 /64 (0: no cap).",
            discussion: "Loopback addresses are not capped unless --cap-loopback is given."))
    var maxPeersPerIP: Int = 16

    @Flag(name: .customLong("cap-loopback"), help: "Apply --max-peers-per-ip to loopback addresses too.")
    var capLoopback = false

    @Flag(name: .customLong("accept-ip-param"),
        help: "Honour the announce 'ip' parameter (off: clients are seen at their connection's address).")
    var acceptIPParameter = false

    @Option(name: .customLong("tree-fan-out"),
        help: ArgumentHelp("Children per node in tree-mode swarms (`--method tree` on seed and get; docs/tree.md).",
            discussion: "1 (chains) is fastest when nodes upload at equal rates; 2 is the paper's binary tree."))
    var treeFanOut: Int = 1

    @Option(name: .customLong("rack-entry-parents"),
        help: ArgumentHelp("Connections over which the first node of a rack takes a tree-mode image from the rack above (docs/tree.md).",
            discussion: "Its parent there and the nodes next below it; each piece is still asked once, so the rack's uplink carries one copy."))
    var rackEntryParents: Int = 1

    @Option(name: .customLong("rack-prefix"),
        help: ArgumentHelp("Count a node that names no rack (`--rack`) in the rack of its IPv4 subnet of this many bits (docs/racks.md).",
            discussion: "Each rack then fetches an image from outside through one node; 0 puts such nodes in one rack (a rack-blind swarm)."))
    var rackPrefix: Int = 24

    @Option(help: "Event-loop threads (default: one per core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @OptionGroup var settings: ConfigOption

    /// The TLS context of `--tls-cert` and `--tls-key`, or nil for plain HTTP.
    func tlsContext() throws(CLIError) -> NIOSSLContext? {
        guard let tlsCert, let tlsKey else { return nil }
        let chain = try CLIError.wrap("cannot read the certificate chain \(tlsCert)") { try NIOSSLCertificate.fromPEMFile(tlsCert) }
        guard !chain.isEmpty else { throw CLIError("\(tlsCert) holds no PEM certificate") }
        let key = try CLIError.wrap("cannot read the private key \(tlsKey)") { try NIOSSLPrivateKey(file: tlsKey, format: .pem) }
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        return try CLIError.wrap("\(tlsCert) and \(tlsKey) do not make a TLS server") { try NIOSSLContext(configuration: configuration) }
    }

    func validate() throws {
        guard HostPort(listen) != nil else { throw ValidationError("--listen must be HOST:PORT, such as 0.0.0.0:6969 or [::]:6969.") }
        if let udpListen, HostPort(udpListen) == nil {
            throw ValidationError("--udp-listen must be HOST:PORT, such as 0.0.0.0:6969 or [::]:6969.")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'.") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together.") }
        guard interval >= 10, minInterval >= 1, minInterval <= interval else {
            throw ValidationError("--interval must be at least 10 s and --min-interval from 1 s to the interval.")
        }
        guard maxTorrents >= 1, maxPeers >= 1 else { throw ValidationError("limits must be at least 1.") }
        guard maxPeersPerIP >= 0 else { throw ValidationError("--max-peers-per-ip must be 0 (no cap) or more.") }
        guard (1...64).contains(treeFanOut) else { throw ValidationError("--tree-fan-out must be from 1 to 64.") }
        guard (1...4).contains(rackEntryParents) else { throw ValidationError("--rack-entry-parents must be from 1 to 4.") }
        guard (0...32).contains(rackPrefix) else { throw ValidationError("--rack-prefix must be from 0 to 32 (bits of an IPv4 address).") }
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be from 1 to 256.") }
    }

    func run() async throws {
        let logger = makeLogger(label: "vmswarm.tracker", level: logLevel)
        var configuration = TrackerConfiguration()
        configuration.interval = interval
        configuration.minInterval = minInterval
        configuration.maxTorrents = maxTorrents
        configuration.maxPeersPerTorrent = maxPeers
        configuration.maxPeersPerSource = maxPeersPerIP == 0 ? nil : maxPeersPerIP
        configuration.capLoopback = capLoopback
        configuration.acceptIPParameter = acceptIPParameter
        configuration.treeFanOut = treeFanOut
        configuration.rackEntryParents = rackEntryParents
        configuration.rackPrefix = rackPrefix
        if let allow {
            configuration.allowlist = try CLIError.wrap { try Allowlist.load(allow) }
        }
        guard let address = HostPort(listen) else { throw CLIError("--listen must be HOST:PORT") }
        var limits = TrackerServer.Limits()
        limits.threads = threads
        let tls = try tlsContext()
        let server = try await CLIError.wrapAsync("cannot listen on \(listen)") {
            try await TrackerServer.start(
                host: address.host, port: address.port, configuration: configuration, limits: limits, logger: logger, tls: tls)
        }
        var udpServer: UDPTrackerServer?
        if let udpListen, let udpAddress = HostPort(udpListen) {
            do {
                udpServer = try await CLIError.wrapAsync("cannot listen on UDP \(udpListen)") {
                    try await UDPTrackerServer.start(host: udpAddress.host, port: udpAddress.port, service: server.service, logger: logger)
                }
            } catch {
                await server.shutdown()
                throw error
            }
        }
        if let allow {
            logger.info("allowlist mode", metadata: ["torrents": "\(configuration.allowlist?.count ?? 0)", "source": "\(allow)"])
        }

        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        for await signal in signals.stream {
            if signal == SIGHUP {
                guard let allow else {
                    logger.info("SIGHUP: open mode, nothing to reload")
                    continue
                }
                do {
                    server.service.setAllowlist(try Allowlist.load(allow))
                } catch {
                    logger.error("SIGHUP: allowlist not reloaded, keeping the previous one", metadata: ["error": "\(error)"])
                }
                continue
            }
            logger.info("shutting down", metadata: ["signal": "\(signal == SIGINT ? "SIGINT" : "SIGTERM")"])
            break
        }
        await udpServer?.shutdown()
        await server.shutdown()
    }
}

/// `HOST:PORT`, with IPv6 hosts in brackets.
struct HostPort {
    let host: String
    let port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }
}

/// Turns POSIX signals into an async sequence (the default action of each is disabled).
final class SignalWatcher {
    let stream: AsyncStream<Int32>
    private let sources: [any DispatchSourceSignal]

    init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }
}

/// swift-log to standard error, once per process: journal entries under systemd, else lines with
/// time and level.
func makeLogger(label: String, level: String) -> Logger {
    LoggingBootstrap.once
    var logger = Logger(label: label)
    logger.logLevel = Logger.Level(rawValue: level) ?? .info
    return logger
}

enum LoggingBootstrap {
    static let once: Void = {
        if JournalLogHandler.standardErrorIsJournal() {
            LoggingSystem.bootstrap { JournalLogHandler(label: $0) }
        } else {
            LoggingSystem.bootstrap(StreamLogHandler.standardError)
        }
    }()
}
