/// Why a tracker refused a request. `failureReason` is what the client is told; `metricLabel` is how
/// the refusal is counted.
public enum TrackerRequestError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformedQuery(String)
    case missingParameter(String)
    case invalidParameter(String, String)
    case unknownTorrent
    case trackerFull
    case tooManyHashes(limit: Int)

    public var failureReason: String {
        switch self {
        case .malformedQuery(let why): "malformed query: \(why)"
        case .missingParameter(let name): "missing parameter '\(name)'"
        case .invalidParameter(let name, let why): "invalid '\(name)': \(why)"
        case .unknownTorrent: "unregistered torrent: this tracker serves only the torrents it was given"
        case .trackerFull: "tracker is at its limit of torrents; try again later"
        case .tooManyHashes(let limit): "scrape at most \(limit) info_hash values per request"
        }
    }

    public var metricLabel: String {
        switch self {
        case .malformedQuery: "malformed_query"
        case .missingParameter: "missing_parameter"
        case .invalidParameter(let name, _): "invalid_\(name)"
        case .unknownTorrent: "unknown_torrent"
        case .trackerFull: "tracker_full"
        case .tooManyHashes: "too_many_hashes"
        }
    }

    public var description: String { failureReason }
}

/// Why a tracker's answer could not be used by the client.
public enum TrackerResponseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The tracker said no (`failure reason`).
    case failure(String)
    /// The answer is not a valid tracker response.
    case malformed(String)

    public var description: String {
        switch self {
        case .failure(let reason): "tracker refused: \(reason)"
        case .malformed(let why): "invalid tracker response: \(why)"
        }
    }
}
