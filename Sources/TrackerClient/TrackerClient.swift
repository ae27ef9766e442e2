import Logging
import Metainfo
import NIOCore
import Synchronization
import TrackerProtocol

/// Every tracker of a torrent failed; what each one said.
public struct TrackerClientError: Error, Sendable, CustomStringConvertible {
    public let failures: [(tracker: String, reason: String)]

    public var description: String {
        failures.isEmpty
            ? "the torrent lists no tracker"
            : "no tracker answered: " + failures.map { "\($0.tracker): \($0.reason)" }.joined(separator: "; ")
    }
}

/// Announces and scrapes for one torrent over its tracker tiers (BEP 12). This is what the swarm
/// engine calls; scheduling (when to call again) follows `RetryPolicy`.
public final class TrackerClient: Sendable {
    private let tiers: Mutex<TrackerTiers>
    private let http: HTTPGet
    private let udp: UDPTrackerClient
    private let logger: Logger

    /// `trust`: whom https:// trackers must prove themselves to (nil: the system's trust store).
    /// `localAddress`: the address HTTP announces leave from (nil: the route decides).
    public init(tiers: [[String]], group: any EventLoopGroup, logger: Logger, timeout: TimeAmount = .seconds(15), trust: HTTPTrust? = nil,
                localAddress: String? = nil) {
        self.tiers = Mutex(TrackerTiers(tiers))
        var http = HTTPGet(group: group)
        http.timeout = timeout
        http.trust = trust
        http.localAddress = localAddress
        self.http = http
        var timing = UDPTrackerClient.Timing()
        timing.timeout = timeout
        udp = UDPTrackerClient(group: group, timing: timing)
        self.logger = logger
    }

    /// Tries the trackers in BEP 12 order until one answers. A `failure reason` counts as an answer
    /// from that tracker but the next one is still tried; the first real answer wins.
    public func announce(_ request: AnnounceRequest) async throws(TrackerClientError) -> (tracker: String, response: AnnounceResponse) {
        try await announce(request, deadline: nil)
    }

    /// `announce`, all trackers together within `limit`: for the `stopped` announce at shutdown,
    /// which must not keep a node alive for a tracker's full timeout per tier (a black-holed
    /// tracker used to hold a stopping seeder for 15 s each, connect then answer). Trackers not
    /// tried before the time is up are reported as such.
    public func announce(_ request: AnnounceRequest, within limit: TimeAmount) async throws(TrackerClientError)
        -> (tracker: String, response: AnnounceResponse)
    {
        try await announce(request, deadline: .now() + limit)
    }

    private func announce(_ request: AnnounceRequest, deadline: NIODeadline?) async throws(TrackerClientError)
        -> (tracker: String, response: AnnounceResponse)
    {
        var failures: [(tracker: String, reason: String)] = []
        for tracker in tiers.withLock({ $0.order }) {
            var http = self.http
            if let deadline {
                let left = deadline - .now()
                guard left > .milliseconds(10) else {
                    failures.append((tracker, "not tried: the announce's time was up"))
                    continue
                }
                http.timeout = min(http.timeout, left)
            }
            do {
                let response: AnnounceResponse
                if Self.isUDP(tracker) {
                    response = try await udp.announce(request, to: tracker, timeout: http.timeout)
                } else {
                    let url = tracker + (tracker.contains("?") ? "&" : "?") + request.query
                    response = try decode(try await http.fetch(url))
                }
                tiers.withLock { $0.succeeded(tracker) }
                if let warning = response.warning {
                    logger.warning("tracker warning", metadata: ["tracker": "\(tracker)", "warning": "\(warning)"])
                }
                return (tracker, response)
            } catch {
                logger.debug("announce failed", metadata: ["tracker": "\(tracker)", "error": "\(error)"])
                failures.append((tracker, "\(error)"))
            }
        }
        throw TrackerClientError(failures: failures)
    }

    private func decode(_ body: [UInt8]) throws(TrackerResponseError) -> AnnounceResponse {
        try AnnounceResponse(decoding: body)
    }

    /// Scrapes the first tracker that supports it (BEP 48: `.../announce` becomes `.../scrape`).
    public func scrape(_ hashes: [InfoHash]) async throws(TrackerClientError) -> ScrapeResponse {
        var failures: [(tracker: String, reason: String)] = []
        for tracker in tiers.withLock({ $0.order }) {
            if Self.isUDP(tracker) {
                do {
                    return try await udp.scrape(Array(hashes.prefix(UDPTracker.maxScrapeHashes)), at: tracker)
                } catch {
                    failures.append((tracker, "\(error)"))
                }
                continue
            }
            guard let base = Self.scrapeURL(forAnnounce: tracker) else {
                failures.append((tracker, "does not support scrape (its path does not end in 'announce')"))
                continue
            }
            let url = base + (base.contains("?") ? "&" : "?") + ScrapeRequest(infoHashes: hashes).query
            do {
                return try ScrapeResponse(decoding: try await http.fetch(url))
            } catch {
                failures.append((tracker, "\(error)"))
            }
        }
        throw TrackerClientError(failures: failures)
    }

    /// BEP 15 trackers: announced to over UDP, the others over HTTP.
    static func isUDP(_ url: String) -> Bool { url.lowercased().hasPrefix("udp://") }

    /// BEP 48's convention: the last path component `announce…` becomes `scrape…`; nil when absent.
    public static func scrapeURL(forAnnounce url: String) -> String? {
        let queryStart = url.firstIndex(of: "?") ?? url.endIndex
        let path = url[..<queryStart]
        guard let slash = path.lastIndex(of: "/") else { return nil }
        let last = path[path.index(after: slash)...]
        guard last.hasPrefix("announce") else { return nil }
        return String(path[...slash]) + "scrape" + last.dropFirst("announce".count) + url[queryStart...]
    }
}
