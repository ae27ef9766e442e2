import Foundation
import Metainfo

/// The torrents a tracker in allowlist mode serves: read from a file of hex info-hashes (one per line,
/// `#` comments, blank lines ignored; opentracker's format) or a folder of .torrent files.
public enum Allowlist {
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func load(_ path: String) throws(LoadError) -> Set<InfoHash> {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw LoadError(description: "\(path): no such file or folder")
        }
        return isDirectory.boolValue ? try loadTorrents(in: path) : try loadHashes(path)
    }

    private static func loadHashes(_ path: String) throws(LoadError) -> Set<InfoHash> {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadError(description: "cannot read \(path): \(error.localizedDescription)")
        }
        var hashes = Set<InfoHash>()
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                .trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            guard let hash = InfoHash(hex: line) else {
                throw LoadError(description: "\(path):\(number + 1): \"\(line.prefix(60))\" is not a 40-digit hex info-hash")
            }
            hashes.insert(hash)
        }
        return hashes
    }

    private static func loadTorrents(in folder: String) throws(LoadError) -> Set<InfoHash> {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw LoadError(description: "cannot list \(folder): \(error.localizedDescription)")
        }
        var hashes = Set<InfoHash>()
        for name in names.sorted() where name.hasSuffix(".torrent") {
            let path = folder + "/" + name
            do {
                let metainfo = try Metainfo(parsing: try Data(contentsOf: URL(fileURLWithPath: path)))
                hashes.insert(metainfo.infoHash)
            } catch {
                throw LoadError(description: "\(path): \(error)")
            }
        }
        return hashes
    }
}
