import Foundation
import Metainfo

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

/// The tests' name for the project's seeded generator.
public typealias SplitMix64 = SeededRandom

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

/// A program running in the background for the length of a test; output goes to files in `folder`.
public final class BackgroundProcess: @unchecked Sendable {
    public let process = Process()
    public let outputPath: String

    public init(_ executable: String, _ arguments: [String], in directory: String? = nil, logTo outputPath: String) throws {
        self.outputPath = outputPath
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardInput = FileHandle.nullDevice
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Waits up to `seconds` for the process to exit by itself; true if it did.
    public func wait(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        return !process.isRunning
    }

    public func stop() {
        if process.isRunning { process.terminate() }
        if !wait(seconds: 5) { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// Polls `condition` every 0.2 s for up to `seconds`.
public func eventually(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    repeat {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.2)
    } while Date() < deadline
    return try condition()
}

/// A TCP port that was free a moment ago, for programs that need one on their command line.
///
/// Chosen below Linux's ephemeral range (32768-60999): a port the kernel hands out to connections
/// being made is free again the moment it is checked, and the next outgoing connection of any
/// process (a test's attackers dial hundreds) can take it before the program binds it. That race
/// made a seeder fail with "address already in use" in CI.
public func freePort() -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20_000..<32_000)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = INADDR_ANY
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if bound == 0 { return port }
    }
    preconditionFailure("no free TCP port between 20000 and 32000")
}

/// SHA-256 of a file, through the system's sha256sum.
public func sha256(_ path: String) throws -> String {
    let result = try runProcess("/usr/bin/sha256sum", [path])
    return String(result.stdout.prefix(64))
}

/// A network namespace of the test's own, with one 10.x address on its loopback interface: real
/// clients that refuse 127.0.0.0/8 peers (Transmission does) can meet there, and no packet leaves it.
/// Needs root; deleted by `remove()`.
public final class TestNamespace: Sendable {
    public let name: String
    public let address: String

    public init(address: String = "10.77.0.1") throws {
        name = "vmswarm-test-\(UInt32.random(in: 0...UInt32.max))"
        self.address = address
        for command in [["netns", "add", name], ["-n", name, "link", "set", "lo", "up"], ["-n", name, "addr", "add", "\(address)/32", "dev", "lo"]] {
            let result = try runProcess("/usr/sbin/ip", command)
            guard result.status == 0 else {
                _ = try? runProcess("/usr/sbin/ip", ["netns", "del", name])
                throw NamespaceError(description: "ip \(command.joined(separator: " ")) failed (root needed): \(result.stderr)")
            }
        }
    }

    public struct NamespaceError: Error, CustomStringConvertible { public let description: String }

    /// `executable arguments` run inside the namespace (through `ip netns exec`).
    public func command(_ executable: String, _ arguments: [String]) -> (String, [String]) {
        ("/usr/sbin/ip", ["netns", "exec", name, executable] + arguments)
    }

    public func remove() {
        _ = try? runProcess("/usr/sbin/ip", ["netns", "pids", name]).stdout.split(separator: "\n").forEach {
            if let pid = Int32($0) { kill(pid, SIGKILL) }
        }
        _ = try? runProcess("/usr/sbin/ip", ["netns", "del", name])
    }
}
