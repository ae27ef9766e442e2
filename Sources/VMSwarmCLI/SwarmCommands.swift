import ArgumentParser
import Foundation
import Logging
import Metainfo
import Multicast
import NIOPosix
import Sealing
import Storage
import SwarmRuntime
import TorrentCreation
import Tracker
import TrackerClient
import TrackerProtocol
import Units

extension DistributionMethod: ExpressibleByArgument {}

/// Flags `seed` and `get` share.
struct PeerOptions: ParsableArguments {
    @Option(help: "TCP port for incoming peers (0: any free port).")
    var port: Int = 6881

    @Option(help: "Address and port to listen on (HOST:PORT); overrides --port.")
    var listen: String?

    @Option(help: "Local address of this host for peer connections, both ways, on multi-homed hosts.")
    var bind: String?

    @Option(name: .customLong("peer"), help: "Also connect to this peer (HOST:PORT). Repeatable.")
    var peers: [String] = []

    @Option(name: .customLong("max-peers"), help: "Most peer connections at once.")
    var maxPeers: Int = 60

    @Option(name: .customLong("upload-slots"),
        help: "Peers to upload to at once, plus one optimistic unchoke (default: 8, and one more per 2 Mbit/s of upload this node has shown beyond 16 Mbit/s, up to 16). Peers that do not read what they are sent never keep a slot.")
    var uploadSlots: Int?

    @Option(name: .customLong("max-up"), help: "Upload limit, such as 50M (bytes per second; K, M, G binary).")
    var maxUp: String?

    @Option(name: .customLong("max-down"), help: "Download limit, such as 50M (bytes per second).")
    var maxDown: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "warning"

    @Flag(help: "Print status as JSON lines on standard output.")
    var json = false

    @Option(name: .customLong("metrics-listen"), help: "Serve Prometheus metrics at http://HOST:PORT/metrics.")
    var metricsListen: String?

    @Flag(name: .customLong("lan-discovery"),
        help: "Find peers on the LAN without a tracker (BEP 14 Local Service Discovery, as libtorrent and Transmission do; not for private torrents).")
    var lanDiscovery = false

    @Option(help: ArgumentHelp("How pieces travel: mesh (a BitTorrent swarm); tree (vmswarm's tracker places this node in a distribution tree; it fetches only from its parent, forwards each piece the moment it verifies and serves whoever connects); multicast (the booster's group, --multicast, with the mesh for what it misses); auto (multicast when a booster sender is heard within 2 s, else tree when the tracker places trees and the chain is short enough for the image, else mesh). See docs/tree.md.",
        valueName: "mesh|tree|multicast|auto"))
    var method: DistributionMethod = .mesh

    @Option(help: ArgumentHelp("The rack or site this node is in, for vmswarm's tracker: peers and trees then cross a rack's uplink about once (docs/racks.md). Default: the tracker counts the node by its subnet.",
        valueName: "name"))
    var rack: String?

    @Option(name: .customLong("site-tracker"),
        help: ArgumentHelp("This site's tracker, usually a pool node's (docs/pool.md): announce here instead of the torrent's trackers. Repeatable: each is a tier of its own, the later ones used when the earlier fail. For vmswarm pool: its siblings' site trackers, also announced to.",
            valueName: "URL"))
    var siteTrackers: [String] = []

    @Option(name: .customLong("site-network"),
        help: ArgumentHelp("A network of this site, as CIDR (10.2.0.0/16). With it a node connects only with peers inside the site's networks, both ways, whatever a tracker or a peer names, and uses none of the torrent's web seeds. For vmswarm pool: peers inside are the site, all others the WAN. Repeatable.",
            valueName: "CIDR"))
    var siteNetworks: [String] = []

    @Option(name: .customLong("ca-file"),
        help: ArgumentHelp("Also trust the CA certificates in this PEM file for https:// trackers, torrent URLs and web seeds (beside the system's store). Repeatable.", valueName: "file"))
    var caFiles: [String] = []

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be from 0 to 65535.") }
        guard maxPeers >= 1 else { throw ValidationError("--max-peers must be at least 1.") }
        guard uploadSlots.map({ $0 >= 1 }) ?? true else { throw ValidationError("--upload-slots must be at least 1.") }
        if let listen, HostPort(listen) == nil { throw ValidationError("--listen must be HOST:PORT (got '\(listen)').") }
        if let metricsListen, HostPort(metricsListen) == nil {
            throw ValidationError("--metrics-listen must be HOST:PORT (got '\(metricsListen)').")
        }
        if let rack, !AnnounceRequest.isValidRack(rack) {
            throw ValidationError("--rack must be 1 to \(AnnounceRequest.maximumRackLength) letters, digits or -_.:/ (got '\(rack)').")
        }
        for peer in peers where HostPort(peer) == nil { throw ValidationError("--peer must be HOST:PORT (got '\(peer)').") }
        for network in siteNetworks where IPNetwork(network) == nil {
            throw ValidationError("--site-network must be an address block such as 10.2.0.0/16, without host bits (got '\(network)').")
        }
        for url in siteTrackers where !(url.lowercased().hasPrefix("http://") || url.lowercased().hasPrefix("https://") || url.lowercased().hasPrefix("udp://")) {
            throw ValidationError("--site-tracker must be an http://, https:// or udp:// announce URL (got '\(url)').")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'.") }
        for (flag, value) in [("--max-up", maxUp), ("--max-down", maxDown)] {
            if let value, Format.parseSize(value) == nil {
                throw ValidationError("\(flag) must be a rate such as 800K or 50M (got '\(value)').")
            }
        }
    }

    /// `--method multicast` is the booster's: it needs its group.
    func checkMethod(group: String?) throws(CLIError) {
        if method == .multicast && group == nil {
            throw CLIError("--method multicast needs the booster's group: --multicast GROUP:PORT (or booster.group in the settings file)")
        }
    }

    /// Whom https:// servers must prove themselves to: nil (the system's store) without --ca-file.
    /// Made once per command (it reads the PEM files) and handed to everything that fetches.
    func httpTrust() throws(CLIError) -> HTTPTrust? {
        guard !caFiles.isEmpty else { return nil }
        do throws(HTTPGetError) { return try HTTPTrust(caFiles: caFiles) } catch { throw CLIError("--ca-file: \(error)") }
    }

    /// `interface`: the booster's, which LAN discovery uses too.
    func runtimeOptions(interface: String? = nil) -> SwarmRuntime.Options {
        var options = SwarmRuntime.Options()
        options.lanDiscovery = lanDiscovery ? .init(interface: interface) : nil
        let listening = listen.flatMap(HostPort.init)
        options.port = listening?.port ?? port
        options.listenHost = listening?.host ?? bind ?? "0.0.0.0"
        options.bindAddress = bind
        options.peers = peers.compactMap(HostPort.init).map { ($0.host, $0.port) }
        options.maxPeers = maxPeers
        options.uploadSlots = uploadSlots
        options.method = method
        options.rack = rack
        options.hashThreads = ProcessInfo.processInfo.activeProcessorCount
        options.maxUp = maxUp.flatMap(Format.parseSize).map(Double.init)
        options.maxDown = maxDown.flatMap(Format.parseSize).map(Double.init)
        options.peerNetworks = siteNetworks.isEmpty ? nil : siteNetworkValues
        return options
    }

    var siteNetworkValues: [IPNetwork] { siteNetworks.compactMap(IPNetwork.init) }

    /// The torrent as this node announces it: to the site's trackers when it has them (the info
    /// dictionary, and so the info-hash, stays).
    func siteView(of metainfo: Metainfo) -> Metainfo {
        guard !siteTrackers.isEmpty else { return metainfo }
        var metainfo = metainfo
        metainfo.announceTiers = siteTrackers.map { [$0] }
        return metainfo
    }
}

/// Verifies data on disk against the torrent, with progress.
func checkData(_ store: PieceStore, json: Bool) -> Bitfield {
    let progress = ProgressReporter(label: "checking", total: store.info.totalLength, style: .choose(json: json))
    let have = store.verify(threads: ProcessInfo.processInfo.activeProcessorCount) { progress.update(done: $0) }
    progress.finish()
    return have
}

/// Opens the download's store in `folder` under `name`, or, when that path holds other data (an
/// earlier version of the image in a node's cache, say), under the first of NAME.1 ... NAME.99
/// (the number before the extension, as aria2 names them) that is free, partly downloaded, or
/// already this torrent's: what is there is never overwritten, and a rerun finds its own copy.
/// Returns the store, the pieces it holds (checked: a fresh `.part` holds nothing) and the name
/// that was taken, if it was.
func openDownload(_ info: TorrentInfo, in folder: String, name: String, transform: (any PieceTransform)?, json: Bool)
    throws(CLIError) -> (store: PieceStore, have: Bitfield, taken: String?) {
    for attempt in 0..<100 {
        let candidate = attempt == 0 ? name : numbered(name, attempt)
        let store = try CLIError.wrap { try PieceStore.download(info, into: folder, name: candidate, transform: transform) }
        let have = store.isNew ? Bitfield(pieceCount: info.pieceCount) : checkData(store, json: json)
        if !store.isFinished || have.isComplete { return (store, have, attempt == 0 ? nil : name) }
    }
    throw CLIError("\(folder)/\(name) and \(numbered(name, 1)) to \(numbered(name, 99)) all hold other data; move some away or choose another --output")
}

/// `disk.img` -> `disk.N.img`, `user` -> `user.N`.
func numbered(_ name: String, _ number: Int) -> String {
    guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "\(name).\(number)" }
    return "\(name[..<dot]).\(number)\(name[dot...])"
}

/// A torrent's bytes (sealed torrents keep recipients and signature outside what `Metainfo` holds)
/// and its metainfo, from a file or an http:// or https:// URL (fetched with the tracker client's
/// HTTP GET; `trust` for https, nil: the system's store).
func loadTorrent(fileOrURL source: String, trust: HTTPTrust? = nil) async throws(CLIError) -> (bytes: [UInt8], metainfo: Metainfo) {
    let bytes: [UInt8]
    if source.lowercased().hasPrefix("http://") || source.lowercased().hasPrefix("https://") {
        var http = HTTPGet(group: MultiThreadedEventLoopGroup.singleton)
        http.trust = trust
        http.maxBodySize = InspectCommand.maxTorrentSize
        do {
            bytes = try await http.fetch(source)
        } catch {
            throw CLIError("cannot fetch \(source): \(error)")
        }
    } else {
        bytes = try InspectCommand.readTorrent(source)
    }
    return (bytes, try CLIError.wrap(source) { try Metainfo(parsing: bytes) })
}

/// Starts `--metrics-listen`'s endpoint, if asked: each scrape reads the runtime's status afresh
/// and the rates the progress loop measures into `rates`; `reused` is what the node took from
/// its own data before joining (shown as the `cache` source).
func startMetrics(_ runtime: SwarmRuntime, role: String, peer: PeerOptions, rates: RateBoard, reused: Int64 = 0,
                  logger: Logger) async throws(CLIError) -> MetricsServer? {
    guard let address = peer.metricsListen.flatMap(HostPort.init) else { return nil }
    let metainfo = runtime.metainfo
    let server = try await CLIError.wrapAsync("cannot serve metrics on \(address.host):\(address.port)") {
        try await MetricsServer.start(host: address.host, port: address.port, logger: logger) {
            let (down, up) = rates.rates
            var metrics = NodeMetrics(role: role, infoHash: metainfo.infoHash.hex, name: metainfo.info.name,
                status: await runtime.status(), downloadRate: down, uploadRate: up)
            metrics.downloadedCacheBytes = reused
            return metrics
        }
    }
    if !peer.json { FileHandle.standardError.write(Data("metrics at http://\(address.host):\(server.port ?? address.port)/metrics\n".utf8)) }
    return server
}

/// Shows the swarm's progress until `until` returns how it ended, or forever. The rate shown is
/// measured now (`rates`, shared with the metrics endpoint): the download rate while downloading,
/// the upload rate while seeding or serving.
func followProgress(_ runtime: SwarmRuntime, label: String, json: Bool, rates: RateBoard = RateBoard(), uploading: Bool = true,
                    counters extra: [String: Int64] = [:], until: @escaping @Sendable () async -> ProgressReporter.Ending?) async {
    let info = runtime.metainfo.info
    let progress = ProgressReporter(label: label, total: info.totalLength, style: .choose(json: json))
    var reached: Int64 = 0
    var ending: ProgressReporter.Ending = .done
    var toldChoice = false
    while true {
        let status = await runtime.status()
        reached = status.bytesHave
        if let choice = status.autoChoice, !toldChoice {
            toldChoice = true
            progress.note("method auto: \(choice.method.rawValue) (\(choice.reason))",
                json: ["event": "method", "method": choice.method.rawValue, "reason": choice.reason])
        }
        let (down, up) = rates.record(downloaded: status.downloaded + status.webSeedBytes + status.multicastBytes, uploaded: status.uploaded, at: ProcessInfo.processInfo.systemUptime)
        // Refused connections by reason, and the piece data held for sending (bounded by
        // `uploadBufferBytes`): what an operator looks at when a node is under attack.
        let refused = status.refusals.values.reduce(0, +)
        let refusals = Dictionary(uniqueKeysWithValues: status.refusals.map {
            ("refused_" + $0.key.rawValue.replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "-", with: "_"), Int64($0.value))
        })
        progress.update(done: status.bytesHave, rate: uploading ? .up(up) : .down(down),
            note: "\(status.peers) peers, up \(Format.bytes(status.uploaded))"
                + (refused > 0 ? ", \(refused) connections refused, \(Format.bytes(Int64(status.uploadBufferBytes))) held for sending" : ""),
            counters: ["peers": Int64(status.peers), "uploaded": status.uploaded, "downloaded": status.downloaded, "wasted": status.wasted,
                       "down_bytes_per_s": Int64(down), "up_bytes_per_s": Int64(up),
                       "upload_buffer_bytes": Int64(status.uploadBufferBytes)]
                .merging(refusals) { $1 }
                .merging(extra) { $1 }
                .merging(status.multicast.map { ["multicast_packets": Int64($0.dataPackets), "multicast_pieces": Int64(status.multicastPieces)] } ?? [:]) { $1 }
                .merging(status.webSeedsConfigured > 0 ? ["web_seed_bytes": status.webSeedBytes, "web_seed_pieces": Int64(status.webSeedPieces)] : [:]) { $1 })
        if let end = await until() {
            ending = end
            break
        }
        try? await Task.sleep(for: .milliseconds(250))
    }
    progress.finish(done: reached, ending: ending)
}

struct SeedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed",
        abstract: "Serve an image to the swarm.",
        discussion: """
            vmswarm seed FILE.torrent --data PATH   serves PATH (checked against the torrent first).
            vmswarm seed IMAGE                      makes IMAGE.torrent, starts a tracker inside this \
            process, prints the torrent's path and serves the image: one command starts a swarm.
            Runs until SIGINT or SIGTERM; SIGHUP applies the settings file's rate limits anew.
            """)

    @Argument(help: "A .torrent file, or an image to make a torrent of.")
    var source: String

    @Option(help: "The data a .torrent describes (default: its name in the current folder).")
    var data: String?

    @Option(name: .customLong("tracker-port"), help: "With an image: port of the embedded tracker.")
    var trackerPort: Int = 6969

    @Option(name: .customLong("announce-host"), help: "With an image: the address peers reach this host at, put in the torrent's tracker URL.")
    var announceHost: String = "127.0.0.1"

    @Option(name: [.short, .customLong("output")], help: "With an image: where to write the torrent (default: IMAGE.torrent here).")
    var output: String?

    @Flag(name: .customLong("skip-check"), help: "Do not verify the data before seeding.")
    var skipCheck = false

    @Option(help: ArgumentHelp("Record the data in this content store (docs/reuse.md): a later get --cache DIR on this node takes the pieces it holds from it. Not for a sealed image seeded with its key.",
        valueName: "DIR"))
    var cache: String?

    @OptionGroup var peer: PeerOptions

    @OptionGroup var settings: ConfigOption

    @OptionGroup(title: "Sealed images (with a key --data is the plain image; without, the sealed one)")
    var keys: KeyOptions

    @OptionGroup(title: "Multicast booster") var booster: MulticastFlags

    @OptionGroup(title: "Multicast booster, sending") var sending: MulticastSendFlags

    func run() async throws {
        try peer.checkMethod(group: booster.multicast)
        let logger = makeLogger(label: "vmswarm.seed", level: peer.logLevel)
        let trust = try peer.httpTrust()
        var embedded: TrackerServer?
        let metainfo: Metainfo
        let dataPath: String
        var sealer: PieceSealer?
        var contentKey: ContentKey?
        if source.hasSuffix(".torrent") {
            let torrent = try await loadTorrent(fileOrURL: source, trust: trust)
            metainfo = torrent.metainfo
            (sealer, contentKey) = try keys.sealing(torrentBytes: torrent.bytes, metainfo: metainfo, keyRequired: false).map { ($0.sealer, $0.contentKey) } ?? (nil, nil)
            dataPath = data ?? metainfo.info.name
        } else {
            var options = TorrentCreator.Options(threads: ProcessInfo.processInfo.activeProcessorCount)
            options.announceTiers = [["http://\(announceHost):\(trackerPort)/announce"]]
            options.createdBy = "vmswarm \(VMSwarm.version)"
            options.creationDate = Int64(Date().timeIntervalSince1970)
            let creator = TorrentCreator(options: options)
            let plan = try CLIError.wrap { try creator.plan(source) }
            let progress = ProgressReporter(label: "hashing", total: plan.totalLength, style: .choose(json: peer.json))
            metainfo = try CLIError.wrap { try creator.create(source) { progress.update(done: $0) } }
            progress.finish()
            let target = output ?? "\(plan.source.baseName).torrent"
            try CLIError.wrap("cannot write \(target)") { try Data(metainfo.encoded()).write(to: URL(fileURLWithPath: target), options: .atomic) }
            print(target)
            dataPath = source
            embedded = try await CLIError.wrapAsync("cannot start the tracker on port \(trackerPort)") {
                try await TrackerServer.start(host: "0.0.0.0", port: trackerPort, configuration: TrackerConfiguration(), logger: logger)
            }
        }
        let store = try CLIError.wrap { try PieceStore.seed(metainfo.info, data: dataPath, transform: sealer) }
        var have = Bitfield(pieceCount: metainfo.info.pieceCount, all: true)
        if !skipCheck && source.hasSuffix(".torrent") {  // an image was just hashed to make its torrent
            have = checkData(store, json: peer.json)
            guard have.isComplete else {
                throw CLIError("\(dataPath) is not this torrent's data: \(have.count) of \(metainfo.info.pieceCount) pieces match")
            }
        }
        // A key holder's data is plaintext while the torrent hashes ciphertext: nothing to index.
        if let cache {
            if sealer != nil {
                FileHandle.standardError.write(Data("--cache is not used for a sealed image seeded with its key\n".utf8))
            } else {
                try CLIError.wrap("cannot record \(dataPath) in the content store \(cache)") {
                    try ContentStore(directory: cache).record(metainfo.info, at: dataPath)
                }
            }
        }
        let announced = peer.siteView(of: metainfo)
        var options = peer.runtimeOptions(interface: booster.interface)
        options.trust = trust
        let runtime = try await CLIError.wrapAsync("cannot listen on \(options.listenHost):\(options.port)") {
            try await SwarmRuntime.start(metainfo: announced, store: store, have: have, options: options, logger: logger)
        }
        if !peer.json { FileHandle.standardError.write(Data("seeding \(metainfo.info.name) on port \(runtime.listeningPort ?? 0)\n".utf8)) }
        let rates = RateBoard()
        let metrics: MetricsServer?
        do {
            metrics = try await startMetrics(runtime, role: "seed", peer: peer, rates: rates, logger: logger)
        } catch {
            await runtime.shutdown()
            await embedded?.shutdown()
            throw error
        }
        var multicast: MulticastSenderRuntime?
        // A sealed image's booster packets are authenticated with a key derived from its content key.
        let keyBytes = contentKey?.bytes
        if let options = try booster.checked(for: metainfo).map(sending.apply).map({ var sealed = $0; sealed.contentKey = keyBytes; return sealed }) {
            let sender = MulticastSenderRuntime(metainfo: metainfo, store: store, options: options, logger: logger)
            try await CLIError.wrapAsync("cannot send to the multicast group \(options.group):\(options.port)") { try await sender.start() }
            let json = peer.json
            sender.finished.whenSuccess { counters in Self.report(counters, imageLength: metainfo.info.totalLength, json: json) }
            multicast = sender
        }
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        let stop = Stop()
        Task { for await signal in signals.stream { if signal == SIGHUP { await NodeConfig.reload(runtime) } else { stop.set(); break } } }
        await followProgress(runtime, label: "seeding", json: peer.json, rates: rates) { stop.isSet ? .stopped : nil }
        await metrics?.shutdown()
        await multicast?.shutdown()
        await runtime.shutdown()
        await embedded?.shutdown()
    }

    /// What the booster sent: one pass of the image, and the repairs receivers asked for.
    static func report(_ counters: MulticastSender.Counters, imageLength: Int64, json: Bool) {
        let repairShare = Double(counters.repairBytes) / Double(max(imageLength, 1))
        if json {
            print(#"{"event":"multicast-done","passes":\#(counters.passes),"data_packets":\#(counters.dataPackets),"repair_packets":\#(counters.repairPackets),"data_bytes":\#(counters.dataBytes),"repair_bytes":\#(counters.repairBytes),"nacks":\#(counters.nacksReceived),"urgent_requests":\#(counters.urgentRequests),"urgent_packets":\#(counters.urgentPackets),"urgent_bytes":\#(counters.urgentBytes),"urgent_refused":\#(counters.urgentRefused)}"#)
        } else {
            FileHandle.standardError.write(Data(("multicast: \(counters.passes) passes, \(counters.dataPackets) data packets (\(Format.bytes(counters.dataBytes))), "
                + "\(counters.repairPackets) repair packets (\(Format.bytes(counters.repairBytes)), \(String(format: "%.1f", repairShare * 100)) % of the image), "
                + "\(counters.nacksReceived) NACKs heard"
                + (counters.urgentRequests > 0 ? ", \(counters.urgentRequests) urgent requests (\(counters.urgentPackets) packets, \(Format.bytes(counters.urgentBytes)) put on the group for readers, \(counters.urgentRefused) pieces refused)" : "")
                + "\n").utf8))
        }
    }
}

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Download an image from the swarm.",
        discussion: """
            Writes NAME.part in the output folder and renames it to NAME only when every piece has \
            verified. Run it again after an interruption: what is on disk is checked and only the \
            missing pieces are fetched. Exit status 0 only with the complete, verified image.
            """)

    @Argument(help: "The .torrent file, an http:// or https:// URL of one, or a magnet link ('magnet:?xt=urn:btih:…').")
    var torrent: String

    @Option(name: [.short, .customLong("output")], help: "Folder to download into.")
    var output: String = "."

    @Option(name: .customLong("seed-after"), help: ArgumentHelp(stringLiteral: SeedAfter.help))
    var seedAfter: String = "none"

    @OptionGroup var peer: PeerOptions

    @OptionGroup var settings: ConfigOption

    @OptionGroup(title: "Sealed images") var keys: KeyOptions

    @Flag(name: .customLong("relay-only"), help: "Keep a sealed image's ciphertext (as NAME.sealed), to seed and relay it without the key.")
    var relayOnly = false

    @OptionGroup(title: "Multicast booster") var booster: MulticastFlags

    @OptionGroup(title: "Serving the image while it downloads") var serving: ServeOptions

    @Option(name: .customLong("web-seed"), help: "Also fetch pieces from this http:// or https:// web seed (BEP 19), besides the torrent's. Repeatable.")
    var webSeeds: [String] = []

    @Flag(name: .customLong("no-web-seeds"), help: "Fetch nothing from web seeds, not even the torrent's.")
    var noWebSeeds = false
    @Flag(name: .customLong("web-seed-fallback"),
        help: "Use web seeds as a fallback only: after 5 s, and only for pieces no connected peer has, so an origin serving a fleet sends what the swarm lacks. Without it web seeds also add their bandwidth to the peers'.")
    var webSeedFallback = false

    @Option(help: ArgumentHelp("This node's content store (docs/reuse.md): before fetching, take every piece that the images recorded in it hold (by piece hash or layer digest, each verified by its hash); afterwards record this image in it. The `cache` setting names it (and --output).",
        valueName: "DIR"))
    var cache: String?

    @Option(help: ArgumentHelp("An earlier version of this image (its file, or folder): take the pieces that did not change (same offset, same hash) from it, and, if the torrent carries rolling checksums (create --rolling-checksums), the pieces whose data moved in it. Repeatable.",
        valueName: "OLD"))
    var reuse: [String] = []

    func validate() throws {
        if noWebSeeds && !webSeeds.isEmpty { throw ValidationError("--web-seed and --no-web-seeds contradict each other.") }
        for url in webSeeds {
            do throws(WebSeedError) { _ = try WebSeedURL(url) } catch { throw ValidationError("--web-seed: \(error)") }
        }
        if !serving.serve.isEmpty && relayOnly {
            throw ValidationError("--serve needs the image itself; with --relay-only this node keeps only the ciphertext.")
        }
        guard SeedAfter(seedAfter) != nil else {
            throw ValidationError("--seed-after must be none, forever, done, a time (90, 90s, 10m, 2h) or a ratio (2x); got '\(seedAfter)'.")
        }
    }

    func run() async throws {
        try peer.checkMethod(group: booster.multicast)
        let logger = makeLogger(label: "vmswarm.get", level: peer.logLevel)
        let trust = try peer.httpTrust()
        let magnet = MagnetLink.looksLikeMagnet(torrent) ? try CLIError.wrap { try MagnetLink(parsing: torrent) } : nil
        let (bytes, loaded) = if let magnet {
            try await fetchMagnet(magnet, into: output, peer: peer, trust: trust, logger: logger)
        } else {
            try await loadTorrent(fileOrURL: torrent, trust: trust)
        }
        let metainfo = peer.siteView(of: loaded)
        let sealing = relayOnly ? nil : try keys.sealing(torrentBytes: bytes, metainfo: metainfo, keyRequired: true)
        let sealer = sealing?.sealer
        let storedName = relayOnly && SealedTorrent.isSealed(metainfo) ? metainfo.info.name + ".sealed" : nil
        try CLIError.wrap("cannot create \(output)") { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) }
        let (store, checked, taken) = try openDownload(metainfo.info, in: output, name: storedName ?? metainfo.info.name,
            transform: sealer, json: peer.json)
        var have = checked
        if let taken {
            let note = "\(output)/\(taken) holds other data (an earlier version?) and is left as it is; this image goes to \(store.finalPath)"
            if peer.json {
                print(#"{"event":"renamed","path":"\#(store.finalPath)"}"#)
                fflush(nil)
            } else {
                FileHandle.standardError.write(Data((note + "\n").utf8))
            }
        }
        // A key holder's store keeps plaintext while pieces are hashed as ciphertext, so neither
        // the content store nor an old version can be matched against it (docs/reuse.md).
        let contentStore = sealer == nil ? try cache.map { dir in try CLIError.wrap { try ContentStore(directory: dir) } } : nil
        if sealer != nil && (cache != nil || !reuse.isEmpty) {
            FileHandle.standardError.write(Data("--cache and --reuse are not used for a sealed image opened with its key\n".utf8))
        }
        for old in reuse where !FileManager.default.fileExists(atPath: old) { throw CLIError("--reuse: \(old) does not exist") }
        var reused = LocalPieces.Report(pieceCount: metainfo.info.pieceCount)
        if !have.isComplete && !store.isFinished && sealer == nil && (contentStore != nil || !reuse.isEmpty) {
            let index = contentStore?.load() ?? ContentIndex()
            let olds = reuse.map { LocalPieces.sameOffsets(in: $0, of: metainfo.info) }
            reused = LocalPieces.fill(store, have: have, threads: ProcessInfo.processInfo.activeProcessorCount) { piece in
                index.candidates(for: piece, of: metainfo.info) + olds.flatMap { $0(piece) }
            }
            reused.pieces.forEachPiece { _ = have.insert($0) }
            // Data that moved in an old version (named, or held in the store under the same file
            // name): found by the torrent's rolling checksums.
            var moved = 0
            let earlier = reuse + index.earlierVersions(of: metainfo.info)
            if let weak = metainfo.rollingChecksums, !earlier.isEmpty, !have.isComplete {
                let found = LocalPieces.moved(in: earlier, of: metainfo.info, weak: weak, have: have,
                    threads: ProcessInfo.processInfo.activeProcessorCount)
                let filled = LocalPieces.fill(store, have: have, threads: ProcessInfo.processInfo.activeProcessorCount) { piece in
                    found.candidates[piece].map { [$0] } ?? []
                }
                filled.pieces.forEachPiece { _ = have.insert($0); _ = reused.pieces.insert($0) }
                reused.bytes += filled.bytes
                reused.rejected += filled.rejected
                moved = filled.pieces.count
            }
            let note = "reused \(Format.bytes(reused.bytes)) (\(reused.pieces.count) of \(metainfo.info.pieceCount) pieces) already on this node"
                + (moved > 0 ? ", \(moved) of them found where their data moved" : "")
                + (reused.rejected > 0 ? "; \(reused.rejected) local copies were changed, cut short or gone, and those pieces are fetched" : "")
            if peer.json {
                print(#"{"event":"reused","bytes":\#(reused.bytes),"pieces":\#(reused.pieces.count),"moved":\#(moved),"rejected":\#(reused.rejected)}"#)
                fflush(nil)  // a pipe is block-buffered: progress lines must not overtake it
            } else {
                FileHandle.standardError.write(Data((note + "\n").utf8))
            }
        }
        var options = peer.runtimeOptions(interface: booster.interface)
        options.trust = trust
        options.readersFirst = !serving.serve.isEmpty && ProcessInfo.processInfo.environment["VMSWARM_READERS_FIRST"] == "1"
        options.peers += magnet?.peers.map { ($0.host, Int($0.port)) } ?? []
        options.multicast = try booster.checked(for: metainfo)
        options.multicast?.contentKey = sealing?.contentKey.bytes
        // The torrent's web seeds, then those given here; a given one that cannot serve this
        // torrent is an error, a torrent's is skipped with a warning (the runtime logs it).
        for url in webSeeds {
            do throws(WebSeedError) { _ = try WebSeedMap(url: url, info: metainfo.info) } catch { throw CLIError("--web-seed: \(error)") }
        }
        // A node confined to its site takes only the web seeds it was given: the torrent's are
        // named by the publisher, and their hosts may lie outside the site.
        let torrentSeeds = peer.siteNetworks.isEmpty ? metainfo.webSeeds : []
        options.webSeeds = noWebSeeds ? [] : torrentSeeds + webSeeds.filter { !torrentSeeds.contains($0) }
        if webSeedFallback { options.webSeedPolicy = .fallback() }
        let profile = try serving.profile(carried: metainfo.bootProfile)
        let runtime = try await CLIError.wrapAsync("cannot start (listening on \(options.listenHost):\(options.port), multicast \(booster.multicast ?? "none"))") {
            try await SwarmRuntime.start(metainfo: metainfo, store: store, have: have, options: options, logger: logger)
        }
        if let profile, !have.isComplete {
            let pieces = try await runtime.prefetch(profile)
            FileHandle.standardError.write(Data("fetching first the \(pieces) pieces the boot profile reads (\(serving.prefetch ?? "the torrent's"))\n".utf8))
        }
        let rates = RateBoard()
        let metrics: MetricsServer?
        do {
            metrics = try await startMetrics(runtime, role: "get", peer: peer, rates: rates, reused: reused.bytes, logger: logger)
        } catch {
            await runtime.shutdown()
            throw error
        }
        let servers: [ServeOptions.Running]
        do {
            servers = try await serving.start(runtime, name: metainfo.info.name, size: store.storedLength, logger: logger)
        } catch {
            await metrics?.shutdown()
            await runtime.shutdown()
            throw error
        }
        for server in servers {
            FileHandle.standardError.write(Data("serving \(metainfo.info.name) read-only at \(server.url) while it downloads\n".utf8))
        }
        let done = Stop()
        Task {
            do {
                try await runtime.waitForCompletion()
                done.set()
            } catch {
                done.fail("\(error)")
            }
        }
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        let interrupted = Stop()
        Task { for await signal in signals.stream { if signal == SIGHUP { await NodeConfig.reload(runtime) } else { interrupted.set(); break } } }
        // Failure is checked first: a run that failed must not end on a line saying "done".
        await followProgress(runtime, label: "downloading", json: peer.json, rates: rates, uploading: false,
                             counters: contentStore != nil || !reuse.isEmpty ? ["reused": reused.bytes] : [:]) {
            done.failure != nil ? .failed : done.isSet ? .done : interrupted.isSet ? .stopped : nil
        }
        if let failure = done.failure {
            for server in servers { await server.shutdown() }
            await metrics?.shutdown()
            await runtime.shutdown()
            throw CLIError(failure)
        }
        guard done.isSet else {
            for server in servers { await server.shutdown() }
            await metrics?.shutdown()
            await runtime.shutdown()
            throw CLIError("interrupted; run the same command again to resume")
        }
        let status = await runtime.status()
        let fetched = status.downloaded
        if let contentStore {
            do throws(StorageError) {
                try contentStore.record(metainfo.info, at: store.finalPath)
            } catch {
                FileHandle.standardError.write(Data("warning: \(store.finalPath) was not recorded in the content store: \(error)\n".utf8))
            }
        }
        let reuseJSON = contentStore != nil || !reuse.isEmpty ? #","reused":\#(reused.bytes),"reused_pieces":\#(reused.pieces.count)"# : ""
        let reuseText = contentStore != nil || !reuse.isEmpty ? ", \(reused.bytes) bytes reused from this node" : ""
        // Reads served while the image was in flight, and how many found their data here.
        let reads = servers.isEmpty ? nil : await runtime.readCounters()
        if peer.json {
            let multicast = status.multicast.map {
                #","multicast_pieces":\#(status.multicastPieces),"multicast_packets":\#($0.dataPackets),"multicast_duplicates":\#($0.duplicates),"nacks_sent":\#($0.nacksSent),"partials_dropped":\#($0.partialsDropped)"#
            } ?? ""
            let served = reads.map { #","reads":\#($0.reads),"read_hits":\#($0.hits)"# } ?? ""
            let webSeeded = status.webSeedsConfigured > 0 ? #","web_seed_bytes":\#(status.webSeedBytes),"web_seed_pieces":\#(status.webSeedPieces)"# : ""
            print(#"{"event":"complete","path":"\#(store.finalPath)","downloaded":\#(fetched)\#(reuseJSON)\#(webSeeded)\#(multicast)\#(served)}"#)
        } else {
            let multicast = status.multicast.map { counters in
                "; \(status.multicastPieces) of \(metainfo.info.pieceCount) pieces wholly or partly from the multicast booster, \(counters.nacksSent) NACKs sent"
            } ?? ""
            let served = reads.map { counters in
                "; \(counters.reads) reads served while it downloaded, \(counters.hits) found their data here"
                    + (counters.hitRate.map { " (\(Int(($0 * 100).rounded())) %)" } ?? "")
            } ?? ""
            let webSeeded = status.webSeedsConfigured > 0 ? ", \(status.webSeedBytes) from web seeds (\(status.webSeedPieces) pieces)" : ""
            print("complete: \(store.finalPath) (\(fetched) bytes downloaded from peers by this run\(reuseText)\(webSeeded)\(multicast)\(served))")
        }
        // Piped standard output is block-buffered, and with --serve or --seed-after get goes on
        // running: whoever reads the pipe learns of the completion now, not at exit; so does
        // systemd (a fetch unit of Type=notify is ready, and the VMs after it may boot).
        fflush(nil)
        SystemdNotify.send("READY=1\nSTATUS=\(metainfo.info.name) complete and verified; seeding")
        let policy = SeedAfter(seedAfter) ?? .none
        if !servers.isEmpty {
            // Serving goes on (and so does seeding) until the user stops it.
            await followProgress(runtime, label: "serving", json: peer.json, rates: rates) { interrupted.isSet ? .stopped : nil }
            for server in servers { await server.shutdown() }
            let served = await runtime.readCounters()
            if peer.json {
                print(#"{"event":"served","reads":\#(served.reads),"read_hits":\#(served.hits),"bytes":\#(served.bytes)}"#)
            } else {
                print("served \(served.reads) reads (\(Format.bytes(served.bytes))), \(served.hits) found their data here")
            }
            fflush(nil)
        } else if policy != .none {
            let started = Date()
            let watch = SwarmDoneWatch()
            await followProgress(runtime, label: "seeding", json: peer.json, rates: rates) {
                let status = await runtime.status()
                let swarmDone = status.peersMissingPieces == 0 && (status.trackerIncomplete ?? 0) == 0
                if interrupted.isSet { return .stopped }
                return policy.isSatisfied(seedingFor: -started.timeIntervalSinceNow, uploaded: status.uploaded,
                    imageLength: metainfo.info.totalLength, swarmDoneFor: watch.update(swarmDone)) ? .done : nil
            }
        }
        await metrics?.shutdown()
        await runtime.shutdown()
    }
}

/// How long the swarm has looked finished without a break.
final class SwarmDoneWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var since: Date?

    func update(_ done: Bool) -> Double {
        lock.withLock {
            if !done { since = nil } else if since == nil { since = Date() }
            return since.map { -$0.timeIntervalSinceNow } ?? 0
        }
    }
}

/// A flag set from one task and read from another.
final class Stop: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    private var error: String?

    func set() { lock.withLock { value = true } }
    func fail(_ message: String) { lock.withLock { error = message } }
    var isSet: Bool { lock.withLock { value } }
    var failure: String? { lock.withLock { error } }
}

/// The multicast booster's flags for both ends (docs/multicast.md).
struct MulticastFlags: ParsableArguments {
    @Option(help: "Multicast booster group (GROUP:PORT, e.g. 239.255.42.1:7000): seed sends the pieces to it once; get keeps what it hears and fetches the rest from peers.")
    var multicast: String?

    @Option(help: "Network interface for the booster (default: the route to the group).")
    var interface: String?

    func validate() throws {
        if let multicast {
            guard let endpoint = HostPort(multicast), let first = endpoint.host.split(separator: ".").first.flatMap({ Int($0) }),
                (224...239).contains(first), endpoint.host.split(separator: ".").count == 4
            else { throw ValidationError("--multicast must be an IPv4 multicast GROUP:PORT such as 239.255.42.1:7000 (got '\(multicast)').") }
        }
    }

    /// The options, once the torrent is known to fit the booster.
    func checked(for metainfo: Metainfo) throws -> MulticastOptions? {
        guard let options else { return nil }
        guard metainfo.info.layout.fitsMulticast else {
            throw CLIError("--multicast: the booster carries pieces of up to \(Format.bytes(Int64(MulticastPacket.maxBlocksPerPiece * MulticastPacket.blockLength))); this torrent's are \(Format.bytes(Int64(metainfo.info.pieceLength)))")
        }
        return options
    }

    var options: MulticastOptions? {
        guard let multicast, let endpoint = HostPort(multicast) else { return nil }
        var options = MulticastOptions(group: endpoint.host, port: endpoint.port)
        options.interface = interface
        return options
    }
}

/// How `seed` sends to the booster's group.
struct MulticastSendFlags: ParsableArguments {
    @Option(help: "Booster sending rate, IP and UDP included (such as 95mbit; a little under the link rate).")
    var rate: String = "95mbit"

    @Option(help: "Multicast TTL (1 keeps the booster on the LAN).")
    var ttl: Int = 1

    @Flag(help: "Keep cycling through the pieces for nodes that join late, instead of one pass plus repairs.")
    var carousel = false

    @Option(name: .customLong("min-receivers"),
        help: "Start the first pass once this many receivers joined the group (as udp-sender --min-receivers), or after 60 s.")
    var minReceivers = 0

    func validate() throws {
        guard Format.parseBitRate(rate) != nil else { throw ValidationError("--rate must be a rate such as 95mbit or 1gbit (got '\(rate)').") }
        guard (1...255).contains(ttl) else { throw ValidationError("--ttl must be from 1 to 255.") }
        guard minReceivers >= 0 else { throw ValidationError("--min-receivers cannot be negative.") }
    }

    func apply(to options: MulticastOptions) -> MulticastOptions {
        var options = options
        options.ttl = UInt8(ttl)
        options.rate = Format.parseBitRate(rate) ?? options.rate
        options.carousel = carousel
        options.minReceivers = minReceivers
        return options
    }
}
