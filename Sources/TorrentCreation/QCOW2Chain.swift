#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The part of a qcow2 header that names a backing file, read from untrusted bytes: nothing is
/// trusted beyond what `bytes` holds, every offset is checked before it is used, and the name is
/// bounded as QEMU bounds it (1,023 bytes, inside the first cluster).
public struct QCOW2Header: Equatable, Sendable {
    public let version: UInt32
    public let clusterBits: UInt32
    /// Where the backing file's name is in the file, or nil for an image without one.
    public let backingFileName: Range<UInt64>?

    static let magic: UInt32 = 0x5146_49fb  // "QFI\xfb"
    /// A version 2 header's length; version 3 headers are longer and start the same way.
    public static let minimumLength = 72
    static let maxNameLength: UInt64 = 1023

    public enum Problem: Error, Equatable, Sendable, CustomStringConvertible {
        case notQCOW2
        case truncated(length: Int)
        case unsupportedVersion(UInt32)
        case invalidClusterBits(UInt32)
        case invalidBackingFileName(offset: UInt64, length: UInt32)

        public var description: String {
            switch self {
            case .notQCOW2: return "not a qcow2 image"
            case .truncated(let length): return "a qcow2 header needs \(QCOW2Header.minimumLength) bytes, the file has \(length)"
            case .unsupportedVersion(let version): return "qcow2 version \(version) is not 2 or 3"
            case .invalidClusterBits(let bits): return "cluster bits \(bits) are outside 9...21"
            case .invalidBackingFileName(let offset, let length):
                return "the backing file name (\(length) bytes at \(offset)) is outside the first cluster or longer than 1,023 bytes"
            }
        }
    }

    /// Reads the header from the first bytes of a file (at least `minimumLength`).
    public init(parsing bytes: some Collection<UInt8>) throws(Problem) {
        let header = Array(bytes.prefix(Self.minimumLength))
        guard header.count >= 4, Self.integer(header, 0, 4) == UInt64(Self.magic) else { throw .notQCOW2 }
        guard header.count == Self.minimumLength else { throw .truncated(length: header.count) }
        version = UInt32(Self.integer(header, 4, 4))
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        clusterBits = UInt32(Self.integer(header, 20, 4))
        guard (9...21).contains(clusterBits) else { throw .invalidClusterBits(clusterBits) }
        let offset = Self.integer(header, 8, 8)
        let length = UInt32(Self.integer(header, 16, 4))
        if offset == 0 || length == 0 {
            backingFileName = nil
            return
        }
        let cluster = UInt64(1) << UInt64(clusterBits)
        guard UInt64(length) <= Self.maxNameLength, offset >= UInt64(Self.minimumLength), offset <= cluster - UInt64(length)
        else { throw .invalidBackingFileName(offset: offset, length: length) }
        backingFileName = offset..<(offset + UInt64(length))
    }

    static func integer(_ bytes: [UInt8], _ start: Int, _ count: Int) -> UInt64 {
        bytes[start..<(start + count)].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// A qcow2 image and the images below it (its backing file, that one's, ...), base first: the
/// layers `create --align-files TOP.qcow2` puts into one torrent. Backing names relative to the
/// image that names them (`base.qcow2`, `../base/base.qcow2`) are followed; the torrent then holds
/// each layer at its path below the folder all of them share, so after `get` the same relative
/// names resolve inside the torrent's folder. An absolute name (it resolves only on the machine
/// that made the chain) or a protocol or `json:` name is refused with the rebase that fixes it.
public enum QCOW2Chain {
    public static let maxDepth = 64

    /// The chain's files: the folder they share, and each one's path components below it, base first.
    public struct Layers: Equatable, Sendable {
        public let folder: String
        public let files: [[String]]
    }

    /// The chain below `top` (a file path); one file for an image without a backing file (or a file
    /// that is not qcow2).
    public static func layers(top: String) throws(CreationError) -> Layers {
        let name = top.split(separator: "/").last.map(String.init) ?? top
        let folder = top.contains("/") ? String(top[..<top.lastIndex(of: "/")!]) : "."
        guard let real = realpath(folder.isEmpty ? "/" : folder, nil) else { throw .notFound(top) }
        defer { free(real) }
        let start = String(cString: real).split(separator: "/").map(String.init) + [name]
        var chain = [start]
        var seen: Set<[String]> = [start]
        while let below = try backingFile(of: "/" + chain[chain.count - 1].joined(separator: "/")) {
            let image = chain[chain.count - 1].last!
            guard !below.hasPrefix("/") else {
                throw .invalidFileList(
                    "\(image) is backed by '\(below)', an absolute path that resolves only on this machine: rebase it onto a name relative to it (qemu-img rebase -u -b RELATIVE-PATH) to share the chain")
            }
            guard !below.isEmpty, !below.contains(":"), !below.contains("\\") else {
                throw .invalidFileList(
                    "\(image) is backed by '\(below)', not a file: rebase it onto a file name (qemu-img rebase -u -b NAME) to share the chain")
            }
            let path = normalized(Array(chain[chain.count - 1].dropLast()), below)
            guard seen.insert(path).inserted, chain.count < maxDepth else {
                throw .invalidFileList("the backing chain of \(name) loops or is deeper than \(maxDepth) images")
            }
            chain.append(path)
        }
        // The folder every layer lies below: the longest prefix their folders share.
        var shared = Array(chain[0].dropLast())
        for path in chain.dropFirst() {
            let folder = path.dropLast()
            shared = Array(zip(shared, folder).prefix { $0 == $1 }.map(\.0))
        }
        return Layers(folder: "/" + shared.joined(separator: "/"), files: chain.reversed().map { Array($0.dropFirst(shared.count)) })
    }

    /// `relative` resolved from the folder `components` (absolute, without links), as QEMU joins a
    /// backing name to its image's folder: `.` and empty parts vanish, `..` goes up (not above `/`).
    static func normalized(_ components: [String], _ relative: String) -> [String] {
        var path = components
        for part in relative.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": if !path.isEmpty { path.removeLast() }
            default: path.append(String(part))
            }
        }
        return path
    }

    /// The backing file name a qcow2 image records, or nil (none, or not a qcow2 image).
    static func backingFile(of path: String) throws(CreationError) -> String? {
        // Links are followed here (reading a header changes nothing, and the top image may be a link
        // the user named); the chain's files are then scanned by TorrentSource, which refuses links.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .notFound(path) }
        defer { close(descriptor) }
        func read(_ range: Range<UInt64>) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: Int(range.upperBound - range.lowerBound))
            var done = 0
            while done < bytes.count {
                let count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + done, $0.count - done, off_t(range.lowerBound) + off_t(done)) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                done += count
            }
            return Array(bytes[0..<done])
        }
        let header: QCOW2Header
        do {
            header = try QCOW2Header(parsing: read(0..<UInt64(QCOW2Header.minimumLength)))
        } catch .notQCOW2 {
            return nil
        } catch {
            throw .invalidFileList("\(path): \(error)")
        }
        guard let range = header.backingFileName else { return nil }
        let name = read(range)
        guard name.count == range.count, !name.contains(0) else {
            throw .invalidFileList("\(path): its backing file name is cut short or holds a NUL byte")
        }
        return String(decoding: name, as: UTF8.self)
    }
}
