import Foundation
import Metainfo
import Sealing
import TestSupport
import Testing

@Suite struct KeyFileTests {
    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }

    func write(_ text: String, to path: String, mode: Int = 0o600) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
    }

    @Test func keyPairsRoundTripWithTheRightModes() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let site = SiteKeyPair.generate()
        try site.write(to: folder.file("site.key"))
        try site.publicKey.write(to: folder.file("site.pub"))
        let publisher = PublisherKeyPair.generate()
        try publisher.write(to: folder.file("publisher.key"))
        try publisher.publicKey.write(to: folder.file("publisher.pub"))
        let content = ContentKey.random()
        try content.write(to: folder.file("content.key"))

        #expect(try mode(folder.file("site.key")) == 0o600)
        #expect(try mode(folder.file("publisher.key")) == 0o600)
        #expect(try mode(folder.file("content.key")) == 0o600)
        #expect(try mode(folder.file("site.pub")) & 0o077 != 0o077)  // 0644 less the umask

        #expect(try SiteKeyPair(readingFile: folder.file("site.key")).publicKey == site.publicKey)
        #expect(try SitePublicKey(readingFile: folder.file("site.pub")) == site.publicKey)
        #expect(try PublisherKeyPair(readingFile: folder.file("publisher.key")).publicKey == publisher.publicKey)
        #expect(try PublisherPublicKey(readingFile: folder.file("publisher.pub")) == publisher.publicKey)
        #expect(try ContentKey(readingFile: folder.file("content.key")) == content)

        let text = try String(contentsOfFile: folder.file("site.pub"), encoding: .utf8)
        #expect(text.hasPrefix("vmswarm-x25519-public ") && text.hasSuffix("\n") && text.count == 22 + 44 + 1)
    }

    @Test func existingFilesAreNeverReplaced() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try write("keep me", to: folder.file("site.key"))
        #expect(
            throws: SealingError.keyFile(
                path: folder.file("site.key"), problem: "already exists; refusing to replace a key")
        ) {
            try SiteKeyPair.generate().write(to: folder.file("site.key"))
        }
        #expect(try String(contentsOfFile: folder.file("site.key"), encoding: .utf8) == "keep me")
    }

    @Test func secretsReadableByOthersAreRefused() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let path = folder.file("site.key")
        try SiteKeyPair.generate().write(to: path)
        for mode in [0o644, 0o640, 0o604, 0o660] {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            let error = #expect(throws: SealingError.self) { try SiteKeyPair(readingFile: path) }
            #expect(error?.description.contains("chmod 600") == true)
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o400], ofItemAtPath: path)
        _ = try SiteKeyPair(readingFile: path)
        // Public keys may be world-readable.
        let publicPath = folder.file("site.pub")
        try SiteKeyPair.generate().publicKey.write(to: publicPath)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: publicPath)
        _ = try SitePublicKey(readingFile: publicPath)
    }

    /// Points of small order give every party the all-zero secret; wrapping for one would publish the key.
    @Test func smallOrderPublicKeysAreRefused() throws {
        let zero = [UInt8](repeating: 0, count: 32)
        let one = [1] + [UInt8](repeating: 0, count: 31)
        // Order 8 (from the list in RFC 7748's reference tests).
        let order8 = HexCoding.decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")!
        for bytes in [zero, one, order8] { #expect(SitePublicKey(bytes: bytes) == nil) }
        #expect(SitePublicKey(bytes: SiteKeyPair.generate().publicKey.bytes) != nil)

        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try write("vmswarm-x25519-public " + Data(zero).base64EncodedString(), to: folder.file("bad.pub"))
        #expect(
            throws: SealingError.keyFile(
                path: folder.file("bad.pub"), problem: "holds a point of small order, not a usable X25519 public key")
        ) { try SitePublicKey(readingFile: folder.file("bad.pub")) }
    }

    @Test func contentKeysInHex() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let hex = String(repeating: "0123456789abcdef", count: 4)
        try write(hex + "\n", to: folder.file("k"))
        #expect(
            try ContentKey(readingFile: folder.file("k")).bytes
                == Array(repeating: [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef], count: 4).flatMap { $0 })
        try write(String(hex.dropLast()), to: folder.file("short"))
        #expect(throws: SealingError.self) { try ContentKey(readingFile: folder.file("short")) }
    }

    @Test func hostileKeyFilesAreRefusedWithAReason() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let valid = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        let cases: [(String, String)] = [
            ("", "is not a vmswarm key file"),
            ("\n\n", "is not a vmswarm key file"),
            ("vmswarm-x25519-private", "is not a vmswarm key file"),
            (
                "vmswarm-x25519-public \(valid)",
                "holds an X25519 public key (a site's or node's), not an X25519 private key"
            ),
            (
                "vmswarm-ed25519-private \(valid)",
                "holds an Ed25519 private key (a publisher's), not an X25519 private key"
            ),
            ("ssh-ed25519 \(valid)", "is not a vmswarm key file"),
            ("vmswarm-x25519-private  \(valid)", "is not a vmswarm key file"),
            ("vmswarm-x25519-private \(valid)\nvmswarm-x25519-private \(valid)", "is not a vmswarm key file"),
            ("vmswarm-x25519-private AAEC!!", "holds invalid Base64"),
            ("vmswarm-x25519-private AAECAwQFBgcICQoLDA0ODw==", "holds 16 key bytes, not 32"),
            ("vmswarm-x25519-private " + String(repeating: "A", count: 2000), "too large for a key file"),
        ]
        for (index, (content, problem)) in cases.enumerated() {
            let path = folder.file("k\(index)")
            try write(content, to: path)
            let error = #expect(throws: SealingError.self, "\(content.prefix(40))") {
                try SiteKeyPair(readingFile: path)
            }
            #expect(error?.description.contains(problem) == true, "\(content.prefix(40)): \(String(describing: error))")
        }
        try Data([0xff, 0xfe, 0x00, 0x80]).write(to: URL(fileURLWithPath: folder.file("binary")))
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: folder.file("binary"))
        #expect(throws: SealingError.keyFile(path: folder.file("binary"), problem: "is not text")) {
            try SiteKeyPair(readingFile: folder.file("binary"))
        }
        #expect(throws: SealingError.keyFile(path: folder.path, problem: "is not a regular file")) {
            try SitePublicKey(readingFile: folder.path)
        }
        #expect(throws: SealingError.self) { try SitePublicKey(readingFile: folder.file("missing")) }
        #expect(mkfifo(folder.file("fifo"), 0o600) == 0)
        #expect(throws: SealingError.keyFile(path: folder.file("fifo"), problem: "is not a regular file")) {
            try SiteKeyPair(readingFile: folder.file("fifo"))
        }
        // Trailing whitespace and CRLF are tolerated.
        try write("vmswarm-x25519-private \(valid)\r\n", to: folder.file("crlf"))
        _ = try SiteKeyPair(readingFile: folder.file("crlf"))
    }
}
