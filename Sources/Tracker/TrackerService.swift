import Bencode
import CoreMetrics
import Foundation
import Logging
import Metainfo
import Prometheus
import Synchronization
import TrackerProtocol

/// An HTTP answer, before it meets a socket.
public struct TrackerHTTPResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public var extraHeaders: [(String, String)] = []

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.status == rhs.status && lhs.contentType == rhs.contentType && lhs.body == rhs.body
    }
}

/// The tracker behind its HTTP front: routes requests to the shared `TrackerState`, counts what it
/// does in metrics, and renders the stats page. Thread-safe; the NIO handlers of all connections
/// share one instance. It never touches a socket, so tests drive it directly.
public final class TrackerService: Sendable {
    struct Locked {
        var state: TrackerState
        var window = RateWindow()
        var lastNoticeLog: Double = -.infinity
    }

    private let locked: Mutex<Locked>
    public let metrics: TrackerMetrics
    private let logger: Logger
    private let clock: @Sendable () -> Double
    let startedAt: Double

    public init(
        configuration: TrackerConfiguration, logger: Logger,
        clock: @escaping @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 },
        seed: UInt64 = UInt64.random(in: .min ... .max)
    ) {
        locked = Mutex(Locked(state: TrackerState(configuration: configuration, seed: seed)))
        metrics = TrackerMetrics()
        self.logger = logger
        self.clock = clock
        startedAt = clock()
    }

    /// Answers one request. `remote` is the connection's peer address.
    public func respond(method: String, uri: String, remote: PeerAddress?) -> TrackerHTTPResponse {
        guard method == "GET" || method == "HEAD" else {
            metrics.httpError(405)
            var response = TrackerHTTPResponse(status: 405, contentType: "text/plain", body: failureResponse("only GET is supported"))
            response.extraHeaders = [("Allow", "GET, HEAD")]
            return response
        }
        let (path, query) = Self.split(uri)
        switch path {
        case "/announce":
            return announce(query: query, remote: remote)
        case "/scrape":
            return scrape(query: query)
        case "/stats":
            return query.contains("format=json") ? statsJSON() : statsHTML()
        case _ where path.hasPrefix("/stats/"):
            return rollout(String(path.dropFirst("/stats/".count)), json: query.contains("format=json"))
        case "/metrics":
            refreshGauges()
            var body = metrics.registry.emitToBuffer()
            if body.last != UInt8(ascii: "\n") { body.append(UInt8(ascii: "\n")) }  // the text format ends lines with \n
            return TrackerHTTPResponse(status: 200, contentType: "text/plain; version=0.0.4", body: body)
        case "/":
            return TrackerHTTPResponse(status: 200, contentType: "text/plain",
                body: Array("vmswarm tracker: /announce, /scrape, /stats, /metrics\n".utf8))
        default:
            metrics.httpError(404)
            return TrackerHTTPResponse(status: 404, contentType: "text/plain", body: failureResponse("no such path: \(path.prefix(100))"))
        }
    }

    private static func split(_ uri: String) -> (String, Substring) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, "") }
        return (String(uri[..<mark]), uri[uri.index(after: mark)...])
    }

    private func announce(query: Substring, remote: PeerAddress?) -> TrackerHTTPResponse {
        let request: AnnounceRequest
        do throws(TrackerRequestError) {
            request = try AnnounceRequest(query: query)
        } catch {
            return refuse(error)
        }
        guard let remote else { return refuse(.malformedQuery("no peer address")) }
        switch serveAnnounce(request, from: remote) {
        case .success(let response):
            return TrackerHTTPResponse(status: 200, contentType: "text/plain",
                body: response.encoded(compact: request.compact, includePeerIDs: !request.noPeerID))
        case .failure(let error):
            return TrackerHTTPResponse(status: 200, contentType: "text/plain", body: failureResponse(error.failureReason))
        }
    }

    /// Serves a decoded announce from `remote` (the address the request came from, never one it
    /// claims): the one path of both fronts, HTTP and UDP, so both share the allowlist, the limits,
    /// the per-address caps and the metrics. A refusal is counted here.
    public func serveAnnounce(_ request: AnnounceRequest, from remote: PeerAddress) -> Result<AnnounceResponse, TrackerRequestError> {
        do throws(TrackerRequestError) {
            let now = clock()
            let (response, outcome, notices) = try locked.withLock { locked throws(TrackerRequestError) in
                locked.window.record(now: now)
                let response = try locked.state.announce(request, from: remote, now: now)
                let outcome = locked.state.lastOutcome
                var notices: [TrackerNotice] = []
                if !locked.state.notices.isEmpty && now - locked.lastNoticeLog >= 60 {
                    locked.lastNoticeLog = now
                    notices = locked.state.takeNotices()
                } else if locked.state.notices.count > 100 {
                    _ = locked.state.takeNotices()  // rate-limited: already logged this minute
                }
                return (response, outcome, notices)
            }
            for notice in notices { log(notice) }
            metrics.announces.increment()
            switch outcome {
            case .stored, .removed: break
            case .notOwner, .sourceLimit, .torrentFull: metrics.notStored(outcome.rawValue)
            }
            return .success(response)
        } catch {
            count(error)
            return .failure(error)
        }
    }

    private func scrape(query: Substring) -> TrackerHTTPResponse {
        do throws(TrackerRequestError) {
            let request = try ScrapeRequest(query: query)
            return TrackerHTTPResponse(status: 200, contentType: "text/plain", body: serveScrape(request).encoded())
        } catch {
            return refuse(error)
        }
    }

    /// Serves a decoded scrape (either front) and counts it.
    public func serveScrape(_ request: ScrapeRequest) -> ScrapeResponse {
        let response = locked.withLock { $0.state.scrape(request) }
        metrics.scrapes.increment()
        return response
    }

    /// The clock the tracker runs on (seconds), for the UDP front's connection-id epochs.
    public var now: Double { clock() }

    /// Refusals are HTTP 200 with a `failure reason`: that is what BitTorrent clients show to users.
    private func refuse(_ error: TrackerRequestError) -> TrackerHTTPResponse {
        count(error)
        return TrackerHTTPResponse(status: 200, contentType: "text/plain", body: failureResponse(error.failureReason))
    }

    /// Counts (and logs at debug) a refused request, whichever front it came by.
    public func count(_ error: TrackerRequestError) {
        metrics.rejected(error.metricLabel)
        logger.debug("refused request", metadata: ["reason": "\(error.failureReason)"])
    }

    private func log(_ notice: TrackerNotice) {
        switch notice {
        case .torrentLimitReached(let limit):
            logger.warning("torrent limit reached: new torrents are refused", metadata: ["limit": "\(limit)"])
        case .peerLimitReached(let hash, let limit):
            logger.warning("peer limit reached: new peers of this torrent are not stored",
                metadata: ["info_hash": "\(hash.hex)", "limit": "\(limit)"])
        case .sourceLimitReached(let hash, let source, let limit):
            logger.warning("per-address peer limit reached: new peers from this address are not stored",
                metadata: ["info_hash": "\(hash.hex)", "source": "\(source)", "limit": "\(limit)"])
        }
    }

    // MARK: Operations

    /// Forgets silent peers; called periodically by the server.
    public func expire() {
        let now = clock()
        let dropped = locked.withLock { $0.state.expire(now: now) }
        if dropped > 0 { logger.debug("expired peers", metadata: ["count": "\(dropped)"]) }
        refreshGauges()
    }

    public func setAllowlist(_ allowlist: Set<InfoHash>?) {
        locked.withLock { $0.state.setAllowlist(allowlist) }
        logger.info("allowlist loaded", metadata: ["torrents": "\(allowlist.map { "\($0.count)" } ?? "open")"])
    }

    public struct Snapshot: Sendable, Encodable {
        public let torrents: Int
        public let seeders: Int
        public let leechers: Int
        public let completed: Int
        public let announcesPerSecond: Double
        public let uptimeSeconds: Int
        public let mode: String
        public let largest: [Torrent]

        public struct Torrent: Sendable, Encodable {
            public let infoHash: String
            public let seeders: Int
            public let leechers: Int
            public let completed: Int

            enum CodingKeys: String, CodingKey {
                case seeders, leechers, completed
                case infoHash = "info_hash"
            }
        }

        enum CodingKeys: String, CodingKey {
            case torrents, seeders, leechers, completed, mode, largest
            case announcesPerSecond = "announces_per_second"
            case uptimeSeconds = "uptime_seconds"
        }
    }

    /// The figures for /stats. Only counters and (when `limit` > 0) a plain copy of one line per
    /// torrent are taken under the lock; the sort runs outside it, so a stats page over 100,000
    /// torrents never holds announces up (it used to sort them, formatting each hash as hex per
    /// comparison, under the lock).
    public func snapshot(largest limit: Int = 50) -> Snapshot {
        let now = clock()
        let (figures, summaries) = locked.withLock { locked in
            let state = locked.state
            let figures = (torrents: state.torrentCount, seeders: state.seederCount, leechers: state.leecherCount,
                completed: state.completedCount, rate: locked.window.rate(now: now),
                open: state.configuration.allowlist == nil)
            return (figures, limit > 0 ? state.torrentSummaries() : [])
        }
        return Snapshot(
            torrents: figures.torrents, seeders: figures.seeders, leechers: figures.leechers, completed: figures.completed,
            announcesPerSecond: figures.rate, uptimeSeconds: Int(now - startedAt), mode: figures.open ? "open" : "allowlist",
            largest: TrackerState.largest(summaries, limit: limit).map {
                .init(infoHash: $0.infoHash.hex, seeders: $0.seeders, leechers: $0.leechers, completed: $0.completed)
            })
    }

    private func refreshGauges() {
        let snapshot = snapshot(largest: 0)
        metrics.torrents.record(snapshot.torrents)
        metrics.seeders.record(snapshot.seeders)
        metrics.leechers.record(snapshot.leechers)
    }

    private func statsJSON() -> TrackerHTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(snapshot())) ?? Data("{}".utf8)
        return TrackerHTTPResponse(status: 200, contentType: "application/json", body: Array(body))
    }

    /// The rollout of one image (`/stats/INFOHASH`). The view is computed under the lock: it walks
    /// the peers of one torrent only (at most `maxPeersPerTorrent`).
    public func rolloutView(_ hash: InfoHash) -> RolloutView? {
        let now = clock()
        return locked.withLock { $0.state.rollout(of: hash, now: now) }
    }

    private func rollout(_ hex: String, json: Bool) -> TrackerHTTPResponse {
        guard let hash = InfoHash(hex: hex) else {
            metrics.httpError(404)
            return TrackerHTTPResponse(status: 404, contentType: "text/plain", body: Array("not an info-hash: \(hex.prefix(100))\n".utf8))
        }
        guard let view = rolloutView(hash) else {
            metrics.httpError(404)
            return TrackerHTTPResponse(status: 404, contentType: "text/plain", body: Array("no peers for \(hash.hex) here\n".utf8))
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return TrackerHTTPResponse(status: 200, contentType: "application/json", body: Array((try? encoder.encode(view)) ?? Data("{}".utf8)))
        }
        return TrackerHTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: Array(RolloutPage.html(view).utf8))
    }

    private func statsHTML() -> TrackerHTTPResponse {
        let s = snapshot()
        let rows = s.largest.map {
            "<tr><td><a href=\"/stats/\($0.infoHash)\"><code>\($0.infoHash)</code></a></td><td>\($0.seeders)</td><td>\($0.leechers)</td><td>\($0.completed)</td></tr>"
        }.joined(separator: "\n")
        let html = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
            <title>vmswarm tracker</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:2em;color:#222}
            .cards{display:flex;gap:1em;flex-wrap:wrap}
            .card{border:1px solid #ccc;border-radius:8px;padding:1em 1.5em;min-width:8em}
            .card b{display:block;font-size:2em}
            table{border-collapse:collapse;margin-top:1.5em}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:right}
            td:first-child,th:first-child{text-align:left}
            </style></head><body>
            <h1>vmswarm tracker</h1>
            <p>Mode: \(s.mode) &middot; up \(s.uptimeSeconds) s &middot; refreshes every 5 s &middot; <a href="/stats?format=json">JSON</a> &middot; <a href="/metrics">metrics</a></p>
            <div class="cards">
            <div class="card" id="torrents"><b>\(s.torrents)</b>torrents</div>
            <div class="card" id="seeders"><b>\(s.seeders)</b>seeders</div>
            <div class="card" id="leechers"><b>\(s.leechers)</b>leechers</div>
            <div class="card" id="completed"><b>\(s.completed)</b>completed</div>
            <div class="card" id="rate"><b>\(String(format: "%.1f", s.announcesPerSecond))</b>announces/s</div>
            </div>
            <table><thead><tr><th>info-hash</th><th>seeders</th><th>leechers</th><th>completed</th></tr></thead>
            <tbody>
            \(rows.isEmpty ? "<tr><td colspan=\"4\">no torrents yet</td></tr>" : rows)
            </tbody></table></body></html>
            """
        return TrackerHTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: Array(html.utf8))
    }
}

/// Announces per second over the last ten seconds.
struct RateWindow: Sendable {
    private var buckets = [Int](repeating: 0, count: 10)
    private var bucketSecond = [Int](repeating: -1, count: 10)

    mutating func record(now: Double) {
        let second = Int(now)
        let slot = second % buckets.count
        if bucketSecond[slot] != second {
            bucketSecond[slot] = second
            buckets[slot] = 0
        }
        buckets[slot] += 1
    }

    func rate(now: Double) -> Double {
        let second = Int(now)
        var total = 0
        for slot in buckets.indices where bucketSecond[slot] > second - buckets.count && bucketSecond[slot] < second {
            total += buckets[slot]
        }
        return Double(total) / Double(buckets.count - 1)
    }
}

/// The tracker's metrics, through swift-metrics with a Prometheus registry of the tracker's own (no
/// global bootstrap, so several trackers, or a tracker inside a seeder, can coexist).
public final class TrackerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    let announces: CoreMetrics.Counter
    let scrapes: CoreMetrics.Counter
    let torrents: CoreMetrics.Gauge
    let seeders: CoreMetrics.Gauge
    let leechers: CoreMetrics.Gauge

    init() {
        factory = PrometheusMetricsFactory(registry: registry)
        announces = CoreMetrics.Counter(label: "vmswarm_tracker_announces_total", factory: factory)
        scrapes = CoreMetrics.Counter(label: "vmswarm_tracker_scrapes_total", factory: factory)
        torrents = CoreMetrics.Gauge(label: "vmswarm_tracker_torrents", factory: factory)
        seeders = CoreMetrics.Gauge(label: "vmswarm_tracker_peers", dimensions: [("kind", "seeder")], factory: factory)
        leechers = CoreMetrics.Gauge(label: "vmswarm_tracker_peers", dimensions: [("kind", "leecher")], factory: factory)
    }

    /// A request refused with a `failure reason`, by reason.
    func rejected(_ reason: String) {
        CoreMetrics.Counter(label: "vmswarm_tracker_rejected_total", dimensions: [("reason", reason)], factory: factory).increment()
    }

    /// An announce answered but whose peer was not stored or changed, by reason (`not_owner`,
    /// `source_limit`, `torrent_full`).
    func notStored(_ reason: String) {
        CoreMetrics.Counter(label: "vmswarm_tracker_peers_not_stored_total", dimensions: [("reason", reason)], factory: factory).increment()
    }

    /// A UDP datagram refused before it reached the tracker (BEP 15 framing, forged or expired
    /// connection id), by reason.
    public func udpError(_ reason: String) {
        CoreMetrics.Counter(label: "vmswarm_tracker_udp_errors_total", dimensions: [("reason", reason)], factory: factory).increment()
    }

    /// An HTTP-level error (bad method, unknown path, unparsable request, slow client, too many connections).
    public func httpError(_ status: Int) {
        CoreMetrics.Counter(label: "vmswarm_tracker_http_errors_total", dimensions: [("status", "\(status)")], factory: factory).increment()
    }
}
