import Logging
import Metainfo
import NIOCore
import Swarm
import Synchronization
import TrackerClient

/// What a web seed's answer to one Range request must be, checked before a byte of it is used: a
/// pure function of the status, the `Content-Range` header and the body's length.
public enum WebSeedResponse {
    /// Nil when the answer holds exactly the bytes asked for. A 206 must name them in
    /// `Content-Range` (`bytes FIRST-LAST/LENGTH`, the file's length or `*`); a 200 is accepted
    /// only for a request of the whole file (what a server may answer for `bytes=0-` of it),
    /// since otherwise the body is the whole file where a part was asked for.
    public static func check(status: Int, contentRange: String?, bodyLength: Int, for request: WebSeedRequest) -> WebSeedPolicy.Failure? {
        switch status {
        case 206:
            guard let contentRange else { return .wrongRange("206 without one") }
            guard let (range, total) = parseContentRange(contentRange) else {
                return .wrongRange("'\(String(contentRange.prefix(80)))' is not 'bytes FIRST-LAST/LENGTH'")
            }
            guard range == request.range else {
                return .wrongRange("bytes \(range.lowerBound)-\(range.upperBound - 1) where \(request.rangeHeader.dropFirst(6)) were asked for")
            }
            if let total, total != request.fileLength {
                return .wrongRange("the file is \(total) bytes long, the torrent says \(request.fileLength)")
            }
        case 200:
            guard request.range == 0..<request.fileLength else { return .rangeIgnored }
        default:
            return .status(status)
        }
        guard bodyLength == request.length else { return .wrongLength(expected: request.length, got: bodyLength) }
        return nil
    }

    /// `bytes FIRST-LAST/LENGTH` or `bytes FIRST-LAST/*` (RFC 9110 14.4): the range as half-open,
    /// and the length when given. Nil for anything else, for a LAST before FIRST, or numbers
    /// beyond Int64 (each at most 19 digits, so nothing overflows).
    public static func parseContentRange(_ value: String) -> (range: Range<Int64>, total: Int64?)? {
        let text = value.trimmingSpaces
        guard text.utf8.count <= 64, text.lowercased().hasPrefix("bytes ") else { return nil }
        let spec = text.dropFirst(6).trimmingSpaces
        let parts = spec.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let bounds = parts[0].split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 2, let first = number(bounds[0]), let last = number(bounds[1]), first <= last, last < Int64.max else {
            return nil
        }
        var total: Int64?
        if parts[1] != "*" {
            guard let length = number(parts[1]), last < length else { return nil }
            total = length
        }
        return (first..<(last + 1), total)
    }

    private static func number(_ text: Substring) -> Int64? {
        guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        return Int64(text)
    }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: Substring {
        let scalars = self[...]
        let start = scalars.firstIndex { $0 != " " && $0 != "\t" } ?? scalars.endIndex
        let end = scalars.lastIndex { $0 != " " && $0 != "\t" }.map { scalars.index(after: $0) } ?? start
        return Substring(scalars[start..<Swift.max(start, end)])
    }
}

/// Fetches pieces from web seeds over HTTP and hands them to the runtime: the I/O edge of
/// `WebSeedPolicy`. It lives on the runtime's event loop (every method is called there); each
/// piece's Range requests run in a task of their own, one after another, and report back on the
/// loop. A piece is fetched whole into one buffer (padding files' bytes stay zero) and only
/// then given to the engine, which hashes it like any other.
final class WebSeedFetcher: @unchecked Sendable {
    /// What the fetcher needs of the runtime, on its loop.
    struct Hooks {
        /// The engine's view: pieces held, holders per piece, pieces it is fetching or verifying or
        /// leaves to another source, and pieces readers wait for.
        let state: () -> (have: Bitfield, availability: [Int], busy: Bitfield, urgent: [PieceIndex])
        /// A fetched piece for the engine; false if it would not take it (held or being verified).
        let deliver: (PieceIndex, [UInt8]) -> Bool
        /// The pieces the fetcher claims changed: the engine must not ask peers for them.
        let claimsChanged: () -> Void
        /// Takes up to `bytes` of download allowance now (`--max-down`), returning how much it got.
        let allowance: (Int) -> Int
        /// The runtime's clock, seconds since it started.
        let now: () -> Double
    }

    private let loop: any EventLoop
    private let client: HTTPGet
    private let maps: [WebSeedMap]
    private let layout: PieceLayout
    private let logger: Logger
    private let hooks: Hooks
    private(set) var policy: WebSeedPolicy
    private var stopped = false
    /// Download allowance taken and not yet spent; a piece starts when it covers the piece
    /// (with `--max-down` only).
    private let limited: Bool
    private var credit = 0
    /// Pieces handed to the engine, waiting for their hash: counted when they verify.
    private(set) var pieces = 0
    private(set) var bytes: Int64 = 0
    /// Bytes received from web seeds, verified or not (what the node's download rate shows).
    private(set) var received: Int64 = 0

    init(maps: [WebSeedMap], layout: PieceLayout, group: any EventLoopGroup, loop: any EventLoop, limited: Bool,
         configuration: WebSeedPolicy.Configuration = .init(), trust: HTTPTrust? = nil, logger: Logger, hooks: Hooks) {
        self.loop = loop
        var client = HTTPGet(group: group)
        client.trust = trust
        // A piece's request, connect included: 16 MiB pieces at 1 MiB/s fit.
        client.timeout = .seconds(30)
        self.client = client
        self.maps = maps
        self.layout = layout
        self.limited = limited
        self.logger = logger
        self.hooks = hooks
        policy = WebSeedPolicy(seeds: maps.map(\.url.text), layout: layout, configuration: configuration)
    }

    var claimed: Bitfield { policy.claimed }

    /// False once the runtime stops: a fetch that ends later is dropped instead of scheduled on
    /// an event loop that may be shutting down (which NIO reports as an error).
    private let open = Mutex(true)

    /// Called on the loop by the runtime's shutdown, before its loops stop.
    func stop() {
        stopped = true
        open.withLock { $0 = false }
    }

    /// Runs `body` on the loop unless the fetcher stopped. The check and the scheduling happen
    /// under one lock, so nothing is scheduled after `stop` returned.
    private func post(_ body: @escaping @Sendable () -> Void) {
        open.withLock { isOpen in if isOpen { loop.execute(body) } }
    }

    /// Starts what the policy assigns now. Called every tick and after every report.
    func pump(now: Double) {
        loop.preconditionInEventLoop()
        guard !stopped, policy.usableSeeds > 0 else { return }
        let (have, availability, busy, urgent) = hooks.state()
        guard !have.isComplete else { return }
        var assignments = policy.next(now: now, have: have, availability: availability, busy: busy, urgent: urgent)
        guard !assignments.isEmpty else { return }
        if limited {
            // The allowance peers left in the bucket (their requests drain it first) pays for whole
            // pieces; pieces it does not cover yet go back.
            let need = assignments.reduce(0) { $0 + layout.length(of: $1.piece) }
            credit += hooks.allowance(max(0, need - credit))
            var affordable: [WebSeedPolicy.Assignment] = []
            for assignment in assignments {
                let length = layout.length(of: assignment.piece)
                if credit >= length {
                    credit -= length
                    affordable.append(assignment)
                } else {
                    policy.discarded(assignment.piece, from: assignment.seed)
                }
            }
            assignments = affordable
        }
        hooks.claimsChanged()
        for assignment in assignments { fetch(assignment) }
    }

    private func fetch(_ assignment: WebSeedPolicy.Assignment) {
        let map = maps[assignment.seed]
        let requests = map.requests(for: assignment.piece)
        let length = layout.length(of: assignment.piece)
        let client = self.client
        Task {
            var piece = [UInt8](repeating: 0, count: length)
            var failure: WebSeedPolicy.Failure?
            var got = 0
            for request in requests {
                // 206 is the answer, or 200 for a request of a whole file; anything else ends
                // the exchange at its head, before a body (a whole image, for a server that
                // ignores Range) is read.
                let whole = request.range == 0..<request.fileLength
                do throws(HTTPGetError) {
                    // An object store may redirect (a signed URL elsewhere): followed, the Range sent again.
                    let response = try await client.get(map.url, target: request.target, extraHeaders: [("Range", request.rangeHeader)],
                        maxBody: request.length, status: whole ? nil : 206)
                    if let problem = WebSeedResponse.check(status: response.status, contentRange: response.header("Content-Range"),
                        bodyLength: response.body.count, for: request)
                    {
                        failure = problem
                        break
                    }
                    piece.replaceSubrange(request.pieceOffset..<(request.pieceOffset + request.length), with: response.body)
                    got += request.length
                } catch {
                    // A body beyond the range is cut off at its length by the client.
                    if case .bodyTooLarge = error {
                        failure = .bodyTooLong(expected: request.length)
                    } else if case .status(let code) = error {
                        failure = code == 200 ? .rangeIgnored : .status(code)
                    } else {
                        failure = .transport("\(error)")
                    }
                    break
                }
            }
            let outcome = failure
            let bytes = got
            let result = piece
            self.post { self.finished(assignment, result, failure: outcome, received: bytes) }
        }
    }

    private func finished(_ assignment: WebSeedPolicy.Assignment, _ data: [UInt8], failure: WebSeedPolicy.Failure?, received: Int) {
        self.received += Int64(received)
        let url = maps[assignment.seed].url.text
        if let failure {
            if let event = policy.failed(assignment.piece, from: assignment.seed, failure, now: hooks.now()) { log(event) }
            logger.debug("web seed fetch failed", metadata: ["url": "\(url)", "piece": "\(assignment.piece.value)", "error": "\(failure)"])
        } else if stopped {
            policy.discarded(assignment.piece, from: assignment.seed)
        } else {
            policy.fetched(assignment.piece, from: assignment.seed)
            if !hooks.deliver(assignment.piece, data) { policy.discarded(assignment.piece, from: assignment.seed) }
        }
        hooks.claimsChanged()
        pump(now: hooks.now())
    }

    /// The engine hashed a piece (any piece: those not from a web seed are ignored).
    func pieceChecked(_ piece: PieceIndex, valid: Bool, now: Double) {
        let owner = policy.owner(of: piece)
        let event = policy.checked(piece, valid: valid)
        guard let owner else { return }
        if valid {
            pieces += 1
            bytes += Int64(layout.length(of: piece))
        } else {
            logger.warning("a piece from a web seed failed its hash", metadata: ["url": "\(maps[owner].url.text)", "piece": "\(piece.value)"])
        }
        if let event { log(event) }
        // Its claim is gone: peers may be asked for the piece again (a failure), and the seed has room.
        hooks.claimsChanged()
        pump(now: now)
    }

    private func log(_ event: WebSeedPolicy.Event) {
        switch event {
        case .backedOff(let seed, let seconds, let failure):
            logger.warning("web seed backed off", metadata: ["url": "\(maps[seed].url.text)", "error": "\(failure)",
                "retry_in_s": "\(Int(seconds.rounded()))"])
        case .dropped(let seed, let reason):
            logger.error("web seed dropped: \(reason); its pieces come from peers now", metadata: ["url": "\(maps[seed].url.text)"])
        }
    }
}
