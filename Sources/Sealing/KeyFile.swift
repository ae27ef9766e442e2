import Foundation
import Metainfo

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The kinds of key file (docs/encryption.md, "Key files"): one line `LABEL BASE64` of 32 bytes.
enum KeyFileKind: CaseIterable, Sendable {
    case sitePrivate, sitePublic, publisherPrivate, publisherPublic, contentKey

    var label: String {
        switch self {
        case .sitePrivate: "vmswarm-x25519-private"
        case .sitePublic: "vmswarm-x25519-public"
        case .publisherPrivate: "vmswarm-ed25519-private"
        case .publisherPublic: "vmswarm-ed25519-public"
        case .contentKey: "vmswarm-content-key"
        }
    }

    /// Secret files are written 0600 and refused when the group or others can access them.
    var isSecret: Bool { self == .sitePrivate || self == .publisherPrivate || self == .contentKey }

    var name: String {
        switch self {
        case .sitePrivate: "an X25519 private key (a site's or node's identity)"
        case .sitePublic: "an X25519 public key (a site's or node's)"
        case .publisherPrivate: "an Ed25519 private key (a publisher's)"
        case .publisherPublic: "an Ed25519 public key (a publisher's)"
        case .contentKey: "a shared content key"
        }
    }
}

/// Reading and writing key files, hardened against hostile or careless files: size-capped,
/// permission-checked for secrets, one exact line.
enum KeyFile {
    /// Far more than a key line needs; a bound on what a hostile path (a device, a huge file) costs.
    static let maxSize = 1024
    static let keyLength = 32

    /// The 32 key bytes of the file at `path`, which must hold a key of `kind`.
    static func load(_ path: String, expecting kind: KeyFileKind) throws(SealingError) -> [UInt8] {
        func fail(_ problem: String) -> SealingError { .keyFile(path: path, problem: problem) }
        // O_NONBLOCK: a FIFO would otherwise block here until a writer came; it is refused below.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard descriptor >= 0 else { throw .storage(.open(path: path, errno: errno)) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw .storage(.read(path: path, offset: 0, errno: errno)) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw fail("is not a regular file") }
        guard info.st_size <= maxSize else { throw fail("is \(info.st_size) bytes, too large for a key file") }
        let mode = info.st_mode & 0o777
        if kind.isSecret && mode & 0o077 != 0 {
            throw fail(
                "holds a secret key but the group or others can access it (mode \(String(mode, radix: 8))); "
                    + "run: chmod 600 \(path)")
        }
        var bytes = [UInt8](repeating: 0, count: maxSize + 1)
        var count = 0
        while count < bytes.count {
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + count, $0.count - count) }
            if got < 0 {
                if errno == EINTR { continue }
                throw .storage(.read(path: path, offset: Int64(count), errno: errno))
            }
            if got == 0 { break }
            count += got
        }
        guard count <= maxSize else { throw fail("is larger than \(maxSize) bytes, too large for a key file") }
        return try decode(Array(bytes[0..<count]), expecting: kind, path: path)
    }

    /// Parses the text of a key file.
    static func decode(_ content: [UInt8], expecting kind: KeyFileKind, path: String) throws(SealingError) -> [UInt8] {
        func fail(_ problem: String) -> SealingError { .keyFile(path: path, problem: problem) }
        guard let text = String(validating: content, as: UTF8.self) else { throw fail("is not text") }
        let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if kind == .contentKey, line.utf8.count == 2 * keyLength, let key = HexCoding.decode(line) {
            return key
        }
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2, !line.contains("\n") else {
            throw fail("is not a vmswarm key file (expected one line '\(kind.label) BASE64')")
        }
        let label = String(parts[0])
        guard label == kind.label else {
            if let other = KeyFileKind.allCases.first(where: { $0.label == label }) {
                throw fail("holds \(other.name), not \(kind.name)")
            }
            throw fail("is not a vmswarm key file (expected one line '\(kind.label) BASE64')")
        }
        guard let key = Data(base64Encoded: String(parts[1])) else { throw fail("holds invalid Base64") }
        guard key.count == keyLength else { throw fail("holds \(key.count) key bytes, not \(keyLength)") }
        return Array(key)
    }

    static func encode(_ key: [UInt8], kind: KeyFileKind) -> [UInt8] {
        Array("\(kind.label) \(Data(key).base64EncodedString())\n".utf8)
    }

    /// Writes a new key file: 0600 for secrets, 0644 (less any umask) otherwise. Never replaces an
    /// existing file (a key that is overwritten is lost for good); the file is removed if writing fails.
    static func save(_ key: [UInt8], kind: KeyFileKind, to path: String) throws(SealingError) {
        let mode: mode_t = kind.isSecret ? 0o600 : 0o644
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard descriptor >= 0 else {
            if errno == EEXIST { throw .keyFile(path: path, problem: "already exists; refusing to replace a key") }
            throw .storage(.open(path: path, errno: errno))
        }
        let content = encode(key, kind: kind)
        var written = 0
        var failure: Int32 = 0
        while written < content.count {
            let count = content.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if count < 0 {
                if errno == EINTR { continue }
                failure = errno
                break
            }
            written += count
        }
        if failure == 0 && fsync(descriptor) != 0 { failure = errno }
        close(descriptor)
        if failure != 0 {
            unlink(path)
            throw .storage(.write(path: path, offset: Int64(written), errno: failure))
        }
    }
}
