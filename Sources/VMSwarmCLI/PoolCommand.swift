import ArgumentParser
import Foundation
import Logging
import Metainfo
import Sealing
import Storage
import Swarm
import SwarmRuntime
import Tracker
import TrackerClient
import TrackerProtocol
import Units

/// `vmswarm pool`: a dual-homed node that joins images' swarms on the WAN and serves them into its
/// site (docs/pool.md).
struct PoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Relay images from the WAN into a private site, caching them (a pool node).",
        discussion: """
            Runs on a host with a foot in two networks: the WAN, where the images' swarms are, and \
            the site, whose nodes may have no route out. For each image it joins the torrent's swarm \
            on the WAN and runs a site tracker that the site's nodes announce to (their settings name \
            it: get --site-tracker URL --site-network CIDR). A piece is offered in the site as soon \
            as it verifies. Several pool nodes of one site (--pool-peer) split the pieces they fetch \
            over the WAN, so the WAN carries about one copy; when one dies the others take its share. \
            A sealed image passes through as ciphertext: the pool node never holds its key.

            Images stay in --output (the cache) and are served from it after a restart, without \
            fetching them again; beyond --cache-budget the least recently used go. --max-up and \
            --max-down limit the WAN only: the site's LAN is not limited.
            Runs until SIGINT or SIGTERM.
            """)

    @Argument(help: "Torrents to relay: files or http(s):// URLs. More can arrive in --watch.")
    var torrents: [String] = []

    @Option(name: [.short, .customLong("output")], help: "The cache: images, and the torrents they came from.")
    var output: String = "pool-cache"

    @Option(name: .customLong("site-tracker-listen"),
        help: ArgumentHelp("Run the site's tracker on this address (HOST:PORT, an address of this host in the site). Its URL, http://HOST:PORT/announce, is what the site's nodes use.",
            valueName: "HOST:PORT"))
    var siteTrackerListen: String?

    @Option(name: .customLong("site-address"),
        help: ArgumentHelp("This host's address in the site (default: the host of --site-tracker-listen). Pool nodes share the WAN work by it.", valueName: "IP"))
    var siteAddress: String?

    @Option(name: .customLong("pool-peer"),
        help: ArgumentHelp("The site address of another pool node of this site; they fetch disjoint pieces over the WAN. Repeatable.", valueName: "IP"))
    var poolPeers: [String] = []

    @Option(name: .customLong("cache-budget"),
        help: ArgumentHelp("Most bytes of images kept (such as 500G); the least recently used beyond it are removed. Default: no limit.", valueName: "SIZE"))
    var cacheBudget: String?

    @Option(help: ArgumentHelp("A folder to watch: every .torrent that appears in it is relayed too.", valueName: "DIR"))
    var watch: String?

    @Option(name: .customLong("admin-listen"),
        help: ArgumentHelp("Serve the pool node's page here: GET / lists the images, GET /metrics, and POST /images with a torrent's URL or path as the body relays one more. No authentication: keep it on localhost or an admin network.",
            valueName: "HOST:PORT"))
    var adminListen: String?

    @OptionGroup var peer: PeerOptions

    @OptionGroup var settings: ConfigOption

    func validate() throws {
        guard !peer.siteNetworks.isEmpty else {
            throw ValidationError("--site-network is needed: the site's networks (CIDR) tell its nodes from the WAN.")
        }
        guard let own = ownSiteAddress else {
            throw ValidationError("--site-address or --site-tracker-listen is needed: this host's address in the site.")
        }
        let networks = peer.siteNetworkValues
        guard let ip = PeerAddress(host: own, port: 0)?.ip, networks.contains(where: { $0.contains(ip) }) else {
            throw ValidationError("the site address \(own) must be an IP address inside --site-network.")
        }
        for other in poolPeers {
            guard let ip = PeerAddress(host: other, port: 0)?.ip, networks.contains(where: { $0.contains(ip) }) else {
                throw ValidationError("--pool-peer \(other): an IP address inside --site-network.")
            }
        }
        if let siteTrackerListen, HostPort(siteTrackerListen) == nil {
            throw ValidationError("--site-tracker-listen must be HOST:PORT (got '\(siteTrackerListen)').")
        }
        if let adminListen, HostPort(adminListen) == nil {
            throw ValidationError("--admin-listen must be HOST:PORT (got '\(adminListen)').")
        }
        if let cacheBudget, Format.parseSize(cacheBudget) == nil {
            throw ValidationError("--cache-budget must be a size such as 500G (got '\(cacheBudget)').")
        }
        if torrents.isEmpty && watch == nil && adminListen == nil && !FileManager.default.fileExists(atPath: PoolCache.torrentsFolder(in: output)) {
            throw ValidationError("nothing to relay: give torrents, --watch DIR, or an --output that already holds images.")
        }
    }

    /// A site tracker serves a LAN: nodes may ask it again within seconds (a node whose pool node
    /// died finds the others at once), and they announce every two minutes.
    static var siteTrackerConfiguration: TrackerConfiguration {
        var configuration = TrackerConfiguration()
        configuration.interval = 120
        configuration.minInterval = 5
        return configuration
    }

    var ownSiteAddress: String? { siteAddress ?? siteTrackerListen.flatMap(HostPort.init)?.host }

    func run() async throws {
        let logger = makeLogger(label: "vmswarm.pool", level: peer.logLevel)
        let trust = try peer.httpTrust()
        try CLIError.wrap("cannot create \(output)") {
            try FileManager.default.createDirectory(atPath: PoolCache.torrentsFolder(in: output), withIntermediateDirectories: true)
        }
        var siteTracker: TrackerServer?
        var siteURLs = peer.siteTrackers
        if let address = siteTrackerListen.flatMap(HostPort.init) {
            let server = try await CLIError.wrapAsync("cannot start the site tracker on \(address.host):\(address.port)") {
                try await TrackerServer.start(host: address.host, port: address.port, configuration: Self.siteTrackerConfiguration, logger: logger)
            }
            siteTracker = server
            let host = address.host.contains(":") ? "[\(address.host)]" : address.host
            siteURLs.insert("http://\(host):\(server.port)/announce", at: 0)
            if !peer.json { FileHandle.standardError.write(Data("site tracker at http://\(host):\(server.port)/announce\n".utf8)) }
        }
        var template = peer.runtimeOptions()
        template.trust = trust
        template.peerNetworks = nil  // a pool node reaches both sides
        template.siteNetworks = peer.siteNetworkValues
        template.siteTrackers = siteURLs
        template.siteAddress = ownSiteAddress
        // A rack-aware tracker on the WAN (vmswarm's) would make one pool node of a site its rack's
        // gateway and hide the WAN's peers from the others; the pool nodes share the WAN work
        // themselves, so each names a rack of its own there.
        template.rack = peer.rack ?? "pool-\(ownSiteAddress ?? "")"
        let sides = PoolSides(site: peer.siteNetworkValues, own: PeerAddress(host: ownSiteAddress ?? "", port: 0)?.ip ?? [],
            siblings: poolPeers.compactMap { PeerAddress(host: $0, port: 0)?.ip })
        let cache = PoolCache(folder: output, budget: cacheBudget.flatMap(Format.parseSize).map(Int64.init), template: template, sides: sides,
            basePort: peer.listen.flatMap(HostPort.init)?.port ?? peer.port, json: peer.json, logger: logger)
        // What the cache held before: served again without crossing the WAN.
        for path in PoolCache.cachedTorrents(in: output) { await cache.add(path, trust: trust) }
        for source in torrents { await cache.add(source, trust: trust) }
        let metrics = try await startPoolMetrics(cache, siteTracker: siteTracker, logger: logger)
        let admin = try await startAdmin(cache, trust: trust, logger: logger)
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        let stop = Stop()
        Task {
            for await signal in signals.stream {
                if signal == SIGHUP { await NodeConfig.reload { up, down in await cache.setRateLimits(up: up, down: down) } } else { stop.set(); break }
            }
        }
        var seen: Set<String> = []
        var lastReport = Date.distantPast
        while !stop.isSet {
            if let watch {
                for path in PoolCache.newTorrents(in: watch, seen: &seen) { await cache.add(path, trust: trust) }
            }
            var stats: [InfoHash: ScrapeStats] = [:]
            if let siteTracker {
                let hashes = await cache.infoHashes
                for start in stride(from: 0, to: hashes.count, by: ScrapeRequest.maxHashes) {
                    let batch = Array(hashes[start..<min(hashes.count, start + ScrapeRequest.maxHashes)])
                    stats.merge(siteTracker.service.serveScrape(ScrapeRequest(infoHashes: batch)).files) { $1 }
                }
            }
            await cache.update(siteStats: stats)
            if -lastReport.timeIntervalSinceNow >= (peer.json ? 2 : 10) {
                lastReport = Date()
                await cache.report()
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
        await metrics?.shutdown()
        await admin?.shutdown()
        await cache.shutdown()
        await siteTracker?.shutdown()
    }

    /// `--admin-listen`: the page, the metrics and adding an image.
    private func startAdmin(_ cache: PoolCache, trust: HTTPTrust?, logger: Logger) async throws(CLIError) -> MetricsServer? {
        guard let address = adminListen.flatMap(HostPort.init) else { return nil }
        let server = try await CLIError.wrapAsync("cannot serve the admin page on \(address.host):\(address.port)") {
            try await MetricsServer.start(host: address.host, port: address.port, logger: logger) { method, path, body in
                switch (method, path) {
                case (.GET, "/metrics"), (.HEAD, "/metrics"):
                    return .init(status: .ok, body: await cache.metrics().prometheusText, contentType: "text/plain; version=0.0.4; charset=utf-8")
                case (.GET, "/"), (.HEAD, "/"):
                    return .init(status: .ok, body: await cache.page())
                case (.POST, "/images"):
                    let source = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    guard !source.isEmpty, !source.contains("\n") else { return .init(status: .badRequest, body: "the body is one torrent's URL or path\n") }
                    let outcome = await cache.add(source, trust: trust)
                    return outcome.error.map { .init(status: .unprocessableEntity, body: $0 + "\n") } ?? .init(status: .ok, body: outcome.told + "\n")
                case (_, "/"), (_, "/metrics"), (_, "/images"):
                    return .notAllowed
                default:
                    return nil
                }
            }
        }
        if !peer.json { FileHandle.standardError.write(Data("admin page at http://\(address.host):\(server.port ?? address.port)/\n".utf8)) }
        return server
    }

    private func startPoolMetrics(_ cache: PoolCache, siteTracker: TrackerServer?, logger: Logger) async throws(CLIError) -> MetricsServer? {
        guard let address = peer.metricsListen.flatMap(HostPort.init) else { return nil }
        let server = try await CLIError.wrapAsync("cannot serve metrics on \(address.host):\(address.port)") {
            try await MetricsServer.start(host: address.host, port: address.port, logger: logger, text: {
                await cache.metrics().prometheusText
            })
        }
        if !peer.json { FileHandle.standardError.write(Data("metrics at http://\(address.host):\(server.port ?? address.port)/metrics\n".utf8)) }
        return server
    }
}

/// Who the pool node is in its site: the values each image's `PoolPolicy` is made of.
struct PoolSides: Sendable {
    let site: [IPNetwork]
    let own: [UInt8]
    let siblings: [[UInt8]]

    func policy(pieceCount: Int) -> PoolPolicy {
        PoolPolicy(site: site, ownAddress: own, siblings: siblings, pieceCount: pieceCount)
    }
}

/// The images a pool node relays: one swarm runtime each, their files in the cache folder with a
/// copy of their torrents, and the budget that removes the least recently used.
actor PoolCache {
    struct Entry {
        let metainfo: Metainfo
        let runtime: SwarmRuntime
        let path: String
        let torrentCopy: String
        let length: Int64
        var lastUsed: Date
        var status: SwarmRuntime.Status?
        var siteUploaded: Int64 = 0
        var site: ScrapeStats?
        /// Download (peers and web seeds) and upload rates over the last seconds.
        var downRate = RateMeter()
        var upRate = RateMeter()
        /// The image is in the content store (recorded once complete), or cannot be (sealed).
        var recorded: Bool
        /// Bytes taken from images already held here before the swarm started (docs/reuse.md).
        var reusedBytes: Int64 = 0
    }

    let folder: String
    let budget: Int64?
    /// What every image's runtime starts with (SIGHUP changes its rate limits).
    private var template: SwarmRuntime.Options
    let sides: PoolSides
    let basePort: Int
    let json: Bool
    let logger: Logger
    private var entries: [InfoHash: Entry] = [:]
    private var nextPort: Int
    private var removed = 0
    /// The cache folder's content store (docs/reuse.md): a new image takes from the images held
    /// here every piece they share with it (a common base layer, what an update left unchanged),
    /// each verified by its hash, and crosses the WAN for the rest only.
    private let contentStore: ContentStore?

    init(folder: String, budget: Int64?, template: SwarmRuntime.Options, sides: PoolSides, basePort: Int, json: Bool, logger: Logger) {
        self.folder = folder
        self.budget = budget
        self.template = template
        self.sides = sides
        self.basePort = basePort
        self.json = json
        self.logger = logger
        nextPort = basePort
        contentStore = try? ContentStore(directory: folder)
    }

    static func torrentsFolder(in folder: String) -> String { (folder as NSString).appendingPathComponent(".torrents") }

    /// The torrents of images cached by an earlier run.
    static func cachedTorrents(in folder: String) -> [String] {
        let torrents = torrentsFolder(in: folder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: torrents)) ?? []
        return names.filter { $0.hasSuffix(".torrent") }.sorted().map { (torrents as NSString).appendingPathComponent($0) }
    }

    /// `.torrent` files in `folder` not seen before (by name and modification time).
    static func newTorrents(in folder: String, seen: inout Set<String>) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        var fresh: [String] = []
        for name in names.sorted() where name.hasSuffix(".torrent") {
            let path = (folder as NSString).appendingPathComponent(name)
            let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            if seen.insert("\(path)@\(modified)").inserted { fresh.append(path) }
        }
        return fresh
    }

    /// Starts relaying an image (again: a cached one is served from the cache). Errors are told
    /// and the image skipped; the pool goes on with the others. Returns what was told.
    @discardableResult
    func add(_ source: String, trust: HTTPTrust?) async -> (told: String, error: String?) {
        do throws(CLIError) {
            let (bytes, metainfo) = try await loadTorrent(fileOrURL: source, trust: trust)
            if entries[metainfo.infoHash] != nil {
                entries[metainfo.infoHash]?.lastUsed = Date()
                return ("\(metainfo.info.name) is relayed already", nil)
            }
            return (try await start(metainfo, bytes: bytes), nil)
        } catch {
            say("\(source): \(error)", json: ["event": "error", "torrent": source, "error": "\(error)"])
            return ("", "\(source): \(error)")
        }
    }

    private func start(_ metainfo: Metainfo, bytes: [UInt8]) async throws(CLIError) -> String {
        let info = metainfo.info
        // A sealed image is kept as its ciphertext: a pool node has no key.
        let name = SealedTorrent.isSealed(metainfo) ? info.name + ".sealed" : nil
        let store = try CLIError.wrap { try PieceStore.download(info, into: folder, name: name, transform: nil) }
        var have = store.isNew ? Bitfield(pieceCount: info.pieceCount) : store.verify(threads: ProcessInfo.processInfo.activeProcessorCount) { _ in }
        if store.isFinished && !have.isComplete {
            throw CLIError("\(store.finalPath) is not this torrent's complete data; move it away")
        }
        // A sealed image's pieces are ciphertext under its own key: nothing held here shares them.
        let sealed = SealedTorrent.isSealed(metainfo)
        var reused = LocalPieces.Report(pieceCount: info.pieceCount)
        if let contentStore, !sealed, !have.isComplete {
            let index = contentStore.load()
            reused = LocalPieces.fill(store, have: have, threads: ProcessInfo.processInfo.activeProcessorCount) { piece in
                index.candidates(for: piece, of: info)
            }
            reused.pieces.forEachPiece { _ = have.insert($0) }
        }
        let copy = (Self.torrentsFolder(in: folder) as NSString).appendingPathComponent("\(metainfo.infoHash.hex).torrent")
        try CLIError.wrap("cannot keep the torrent in \(copy)") { try Data(bytes).write(to: URL(fileURLWithPath: copy), options: .atomic) }
        await makeRoom(for: store.storedLength)
        var options = template
        options.policy = sides.policy(pieceCount: info.pieceCount)
        options.webSeeds = metainfo.webSeeds
        if basePort != 0 {
            options.port = nextPort
            nextPort += 1
        }
        let runtime: SwarmRuntime
        do {
            runtime = try await SwarmRuntime.start(metainfo: metainfo, store: store, have: have, options: options, logger: logger)
        } catch {
            throw CLIError(error, context: "cannot start \(info.name) (port \(options.port))")
        }
        entries[metainfo.infoHash] = Entry(metainfo: metainfo, runtime: runtime, path: store.finalPath, torrentCopy: copy,
            length: store.storedLength, lastUsed: Date(), recorded: sealed || contentStore == nil, reusedBytes: reused.bytes)
        let shared = reused.pieces.count > 0 ? ", \(reused.pieces.count) of them from images held here" : ""
        let told = "relaying \(info.name) (\(Format.bytes(store.storedLength)), \(have.count) of \(info.pieceCount) pieces cached\(shared)) on port \(runtime.listeningPort ?? 0)"
        say(told, json: ["event": "image", "name": info.name, "info_hash": metainfo.infoHash.hex, "cached_pieces": have.count,
                         "reused_pieces": reused.pieces.count, "reused_bytes": reused.bytes, "pieces": info.pieceCount, "port": runtime.listeningPort ?? 0])
        return told
    }

    /// Removes the least recently used images until `length` more fits in the budget.
    private func makeRoom(for length: Int64) async {
        guard let budget else { return }
        var held = entries.values.reduce(Int64(0)) { $0 + $1.length }
        while held + length > budget, let oldest = entries.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
            entries[oldest.key] = nil
            await oldest.value.runtime.shutdown()
            for path in [oldest.value.path, oldest.value.path + ".part", oldest.value.torrentCopy] { try? FileManager.default.removeItem(atPath: path) }
            held -= oldest.value.length
            removed += 1
            say("removed \(oldest.value.metainfo.info.name) from the cache (least recently used; budget \(Format.bytes(budget)))",
                json: ["event": "evicted", "name": oldest.value.metainfo.info.name, "info_hash": oldest.key.hex])
        }
    }

    var infoHashes: [InfoHash] { Array(entries.keys) }

    /// New WAN rate limits (SIGHUP): for every image relayed now and every one added later.
    func setRateLimits(up: Double?, down: Double?) async {
        template.maxUp = up
        template.maxDown = down
        for entry in entries.values { await entry.runtime.setRateLimits(up: up, down: down) }
    }

    /// Takes each runtime's status; an image the site fetched from since the last look is used now.
    func update(siteStats: [InfoHash: ScrapeStats]) async {
        for (hash, entry) in entries {
            let status = await entry.runtime.status()
            let now = ProcessInfo.processInfo.systemUptime
            entries[hash]?.status = status
            entries[hash]?.downRate.record(status.downloaded + status.webSeedBytes, at: now)
            entries[hash]?.upRate.record(status.uploaded, at: now)
            entries[hash]?.site = siteStats[hash]
            if status.complete && !entry.recorded, let contentStore {
                entries[hash]?.recorded = true
                do throws(StorageError) {
                    try contentStore.record(entry.metainfo.info, at: entry.path)
                } catch {
                    logger.warning("an image was not recorded in the content store", metadata: ["image": "\(entry.metainfo.info.name)", "error": "\(error)"])
                }
            }
            if status.siteUploaded > entry.siteUploaded {
                entries[hash]?.siteUploaded = status.siteUploaded
                entries[hash]?.lastUsed = Date()
            }
        }
    }

    /// One line per image.
    func report() {
        for (hash, entry) in entries.sorted(by: { $0.value.metainfo.info.name < $1.value.metainfo.info.name }) {
            guard let status = entry.status else { continue }
            let site = entry.site.map { "site: \($0.complete) complete, \($0.incomplete) fetching" } ?? "site: no tracker here"
            say("\(entry.metainfo.info.name): \(status.piecesHave)/\(status.pieceCount) pieces, WAN in \(Format.bytes(status.wanDownloaded)) out \(Format.bytes(status.wanUploaded)), "
                + "site out \(Format.bytes(status.siteUploaded)) in \(Format.bytes(status.siteDownloaded)), \(status.peers) peers; \(site)",
                json: ["event": "status", "name": entry.metainfo.info.name, "info_hash": hash.hex, "pieces_have": status.piecesHave,
                       "pieces": status.pieceCount, "wan_downloaded": status.wanDownloaded, "wan_uploaded": status.wanUploaded,
                       "site_downloaded": status.siteDownloaded, "site_uploaded": status.siteUploaded, "peers": status.peers,
                       "site_complete": entry.site?.complete ?? 0, "site_incomplete": entry.site?.incomplete ?? 0])
        }
    }

    /// The admin page: the cache, then a line per image.
    func page() -> String {
        let images = metrics()
        var text = "vmswarm pool: \(images.images.count) images, \(Format.bytes(images.images.reduce(Int64(0)) { $0 + $1.length }))"
            + (budget.map { " of \(Format.bytes($0))" } ?? "") + " cached, \(removed) removed\n\n"
        for image in images.images {
            let site = image.siteComplete.map { "site \($0) complete, \(image.siteIncomplete ?? 0) fetching" } ?? "no site tracker here"
            text += "\(image.infoHash)  \(image.name)  \(Format.bytes(image.heldBytes))/\(Format.bytes(image.length))  "
                + "WAN in \(Format.bytes(image.wanDownloaded)) out \(Format.bytes(image.wanUploaded))  "
                + "site out \(Format.bytes(image.siteUploaded)) in \(Format.bytes(image.siteDownloaded))  \(site)\n"
        }
        return text
    }

    func metrics() -> PoolMetrics {
        PoolMetrics(budget: budget, removed: removed, images: entries.map { hash, entry in
            var image = PoolMetrics.Image(infoHash: hash.hex, name: entry.metainfo.info.name, length: entry.length,
                heldBytes: entry.status?.bytesHave ?? 0, wanDownloaded: entry.status?.wanDownloaded ?? 0, wanUploaded: entry.status?.wanUploaded ?? 0,
                siteDownloaded: entry.status?.siteDownloaded ?? 0, siteUploaded: entry.status?.siteUploaded ?? 0,
                siteComplete: entry.site?.complete, siteIncomplete: entry.site?.incomplete)
            if let status = entry.status {
                image.peerBytes = status.downloaded
                image.webSeedBytes = status.webSeedBytes
                image.wastedBytes = status.wasted
                image.piecesVerified = status.piecesVerified
                image.piecesFailed = status.hashFailures
                image.peersConnected = status.peers
                image.peersBanned = status.peersBanned
            }
            image.cacheBytes = entry.reusedBytes
            image.downloadRate = entry.downRate.bytesPerSecond
            image.uploadRate = entry.upRate.bytesPerSecond
            return image
        }.sorted { $0.infoHash < $1.infoHash })
    }

    func shutdown() async {
        for entry in entries.values { await entry.runtime.shutdown() }
        entries = [:]
    }

    private nonisolated func say(_ text: String, json fields: [String: Any]) {
        if json {
            if let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]), let line = String(data: data, encoding: .utf8) {
                print(line)
                fflush(nil)
            }
        } else {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
    }
}

/// What a pool node exposes at `/metrics`: its cache and, per image, WAN and site bytes and the
/// site's progress (its tracker's counts). Pure, so the text is tested on its own.
struct PoolMetrics: Sendable, Equatable {
    struct Image: Sendable, Equatable {
        var infoHash: String
        var name: String
        var length: Int64
        var heldBytes: Int64
        var wanDownloaded: Int64
        var wanUploaded: Int64
        var siteDownloaded: Int64
        var siteUploaded: Int64
        /// The site tracker's counts (nil: this pool node runs no site tracker).
        var siteComplete: Int?
        var siteIncomplete: Int?
        /// As a seed's or a get's `NodeMetrics`: piece data received by source (peer blocks,
        /// web seed pieces that verified) and the part thrown away, pieces hashed, peers, bans, rates.
        var peerBytes: Int64 = 0
        var webSeedBytes: Int64 = 0
        var cacheBytes: Int64 = 0
        var wastedBytes: Int64 = 0
        var piecesVerified = 0
        var piecesFailed = 0
        var peersConnected = 0
        var peersBanned = 0
        var downloadRate: Double = 0
        var uploadRate: Double = 0
    }

    var budget: Int64?
    var removed: Int
    var images: [Image]

    var prometheusText: String {
        var text = PrometheusText()
        text.family("vmswarm_pool_images", "gauge", "Images in the pool node's cache.", [([], "\(images.count)")])
        text.family("vmswarm_pool_cached_bytes", "gauge", "Bytes of the images in the cache (their full length).",
            [([], "\(images.reduce(Int64(0)) { $0 + $1.length })")])
        if let budget { text.family("vmswarm_pool_cache_budget_bytes", "gauge", "The cache's budget (--cache-budget).", [([], "\(budget)")]) }
        text.family("vmswarm_pool_evictions_total", "counter", "Images removed to stay within the budget.", [([], "\(removed)")])
        text.family("vmswarm_pool_image_held_bytes", "gauge", "Verified bytes held, per image.",
            images.map { ([("info_hash", $0.infoHash), ("name", $0.name)], "\($0.heldBytes)") })
        text.family("vmswarm_pool_bytes_total", "counter", "Piece bytes per image, by side (wan, site) and direction (in, out).",
            images.flatMap { image in
                [("wan", "in", image.wanDownloaded), ("wan", "out", image.wanUploaded), ("site", "in", image.siteDownloaded), ("site", "out", image.siteUploaded)]
                    .map { ([("info_hash", image.infoHash), ("side", $0.0), ("direction", $0.1)], "\($0.2)") }
            })
        func each(_ value: (Image) -> String) -> [(labels: [(String, String)], value: String)] {
            images.map { ([("info_hash", $0.infoHash)], value($0)) }
        }
        func rate(_ value: Double) -> String { value.isFinite ? String(format: "%.1f", value) : "0" }
        text.family("vmswarm_pool_downloaded_bytes_total", "counter",
            "Piece data per image, by source (peer blocks, verified web seed pieces, pieces taken from images already in the cache).",
            images.flatMap { image in
                [("peer", image.peerBytes), ("web_seed", image.webSeedBytes), ("cache", image.cacheBytes)].map { ([("info_hash", image.infoHash), ("source", $0.0)], "\($0.1)") }
            })
        text.family("vmswarm_pool_wasted_bytes_total", "counter", "Received bytes thrown away per image: failed hashes and late duplicates.",
            each { "\($0.wastedBytes)" })
        text.family("vmswarm_pool_pieces_verified_total", "counter", "Pieces per image that passed their hash in this run.", each { "\($0.piecesVerified)" })
        text.family("vmswarm_pool_pieces_failed_total", "counter", "Pieces per image that failed their hash in this run.", each { "\($0.piecesFailed)" })
        text.family("vmswarm_pool_peers_connected", "gauge", "Peer connections per image, WAN and site.", each { "\($0.peersConnected)" })
        text.family("vmswarm_pool_peers_banned", "gauge", "Peer identities banned per image for bad data.", each { "\($0.peersBanned)" })
        text.family("vmswarm_pool_download_rate_bytes_per_second", "gauge", "Download rate per image over the last 5 seconds.", each { rate($0.downloadRate) })
        text.family("vmswarm_pool_upload_rate_bytes_per_second", "gauge", "Upload rate per image over the last 5 seconds.", each { rate($0.uploadRate) })
        text.family("vmswarm_pool_site_nodes", "gauge", "Peers per image at this node's site tracker (pool nodes included): complete, or still fetching.",
            images.flatMap { image -> [(labels: [(String, String)], value: String)] in
                guard let complete = image.siteComplete, let incomplete = image.siteIncomplete else { return [] }
                return [([("info_hash", image.infoHash), ("state", "complete")], "\(complete)"),
                        ([("info_hash", image.infoHash), ("state", "fetching")], "\(incomplete)")]
            })
        return text.text
    }
}
