import Foundation

/// Where the repository's `Fixtures/` folder is, found from this file's own path.
public let fixturesURL: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// One row of `Fixtures/torrents/expected.tsv`: a torrent a real tool made, and the info-hash it reported.
public struct FixtureTorrent: Sendable, CustomStringConvertible {
    public let file: String
    public let infoHash: String
    public let reportedBy: String
    public let name: String
    public let pieceLength: Int
    public let isPrivate: Bool
    public let tracker: String?

    public var url: URL { fixturesURL.appendingPathComponent("torrents/\(file)") }
    public var description: String { file }

    /// The tool that made it: the file name's second part (`vm-small.mktorrent-private.torrent`).
    public var maker: String {
        let parts = file.split(separator: ".")
        return String(parts[parts.count - 2].split(separator: "-")[0])
    }

    public static let all: [FixtureTorrent] = {
        let url = fixturesURL.appendingPathComponent("torrents/expected.tsv")
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return FixtureTorrent(
                file: f[0], infoHash: f[1], reportedBy: f[2], name: f[3], pieceLength: Int(f[4]) ?? 0,
                isPrivate: f[5] == "1", tracker: f[6] == "-" ? nil : f[6])
        }
    }()
}

/// A deterministic random generator, so that a failing property test reproduces.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A fresh temporary folder, removed by `cleanUp()`.
public struct TemporaryFolder: Sendable {
    public let path: String
    public init() throws {
        path = NSTemporaryDirectory() + "vmswarm-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    public func cleanUp() { try? FileManager.default.removeItem(atPath: path) }
    public func file(_ name: String) -> String { path + "/" + name }
}

/// The result of running a program to completion.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs `executable` with `arguments` and waits for it. Output is collected through files, so a
/// chatty program can never block on a full pipe.
public func runProcess(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> ProcessResult {
    let folder = try TemporaryFolder()
    defer { folder.cleanUp() }
    _ = FileManager.default.createFile(atPath: folder.file("out"), contents: nil)
    _ = FileManager.default.createFile(atPath: folder.file("err"), contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: folder.file("out")))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: folder.file("err")))
    try process.run()
    process.waitUntilExit()
    return ProcessResult(
        status: process.terminationStatus,
        stdout: try String(contentsOfFile: folder.file("out"), encoding: .utf8),
        stderr: try String(contentsOfFile: folder.file("err"), encoding: .utf8))
}

/// The full path of a program on PATH, or nil.
public func which(_ program: String) -> String? {
    if program.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
    for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(folder)/\(program)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// The `vmswarm` binary built beside the running test bundle.
public let vmswarmBinary: String = {
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var folder = URL(fileURLWithPath: me).deletingLastPathComponent()
    // On Linux the test runner is `.build/<config>/<Package>PackageTests.xctest`, beside the products.
    if folder.lastPathComponent.hasSuffix(".xctest") { folder = folder.deletingLastPathComponent() }
    return folder.appendingPathComponent("vmswarm").path
}()
