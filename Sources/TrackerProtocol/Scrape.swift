import Bencode
import Metainfo

/// BEP 48 scrape: counts for one or more torrents.
public struct ScrapeRequest: Sendable, Equatable {
    public static let maxHashes = 100
    public var infoHashes: [InfoHash]

    public init(infoHashes: [InfoHash]) { self.infoHashes = infoHashes }

    public init(query: some StringProtocol) throws(TrackerRequestError) {
        var hashes: [InfoHash] = []
        for (name, value) in try QueryString.parse(query) where name == "info_hash" {
            guard let hash = InfoHash(bytes: value) else {
                throw .invalidParameter("info_hash", "must be 20 bytes, got \(value.count)")
            }
            guard hashes.count < Self.maxHashes else { throw .tooManyHashes(limit: Self.maxHashes) }
            hashes.append(hash)
        }
        guard !hashes.isEmpty else { throw .missingParameter("info_hash") }
        infoHashes = hashes
    }

    public var query: String {
        infoHashes.map { "info_hash=\(PercentEncoding.encode($0.bytes))" }.joined(separator: "&")
    }
}

public struct ScrapeStats: Sendable, Equatable {
    public var complete: Int
    public var downloaded: Int
    public var incomplete: Int

    public init(complete: Int, downloaded: Int, incomplete: Int) {
        self.complete = complete
        self.downloaded = downloaded
        self.incomplete = incomplete
    }
}

public struct ScrapeResponse: Sendable, Equatable {
    public var files: [InfoHash: ScrapeStats]

    public init(files: [InfoHash: ScrapeStats]) { self.files = files }

    public func encoded() -> [UInt8] {
        var files: [[UInt8]: BencodeValue] = [:]
        for (hash, stats) in self.files {
            files[hash.bytes] = .dictionary([
                Array("complete".utf8): .integer(Int64(stats.complete)),
                Array("downloaded".utf8): .integer(Int64(stats.downloaded)),
                Array("incomplete".utf8): .integer(Int64(stats.incomplete)),
            ])
        }
        return BencodeValue.dictionary([Array("files".utf8): .dictionary(files)]).encoded()
    }

    public init(decoding bytes: some Collection<UInt8>) throws(TrackerResponseError) {
        let root = try decodeTrackerAnswer(bytes)
        guard let entries = root["files"]?.entries else { throw .malformed("no 'files' dictionary") }
        var files: [InfoHash: ScrapeStats] = [:]
        for entry in entries {
            guard let hash = InfoHash(bytes: entry.key) else { continue }
            // A negative count is a lie or a bug; it is read as none.
            func count(_ key: String) -> Int { entry.value[key]?.integer.map { Int(max(0, $0)) } ?? 0 }
            files[hash] = ScrapeStats(complete: count("complete"), downloaded: count("downloaded"), incomplete: count("incomplete"))
        }
        self.files = files
    }
}
