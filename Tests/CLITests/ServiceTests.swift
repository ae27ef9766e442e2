import Foundation
import NodeConfiguration
import TestSupport
import Testing

/// vmswarm as a service (issue 21, point 2): the units in docs/systemd are valid for systemd, the
/// example settings file passes `config check`, and tools/install puts them in place without
/// overwriting an operator's settings.
@Suite struct ServiceTests {
    static let repository = fixturesURL.deletingLastPathComponent().path
    static let units = ["vmswarm-tracker.service", "vmswarm-seed@.service", "vmswarm-fetch@.service", "vmswarm-pool.service"]

    /// The fetch unit is `Type=notify`: `get` tells systemd it is ready (sd_notify's `READY=1`) the
    /// moment its image is complete, verified and renamed, while it goes on seeding, so a VM unit
    /// ordered after the fetch boots then, not once the whole site's swarm is done. SIGHUP on the
    /// seeding `get` applies the settings file's rate limits anew, as `systemctl reload` does.
    @Test func aFetchIsReadyWhenItsImageIsCompleteAndReloadsWhileItSeeds() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let seedPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(seedPort)", "--config", "none"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")

        // systemd's side: a datagram socket named by NOTIFY_SOCKET.
        let socketPath = folder.file("notify")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            for (index, byte) in socketPath.utf8.enumerated() { bytes[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0, "bind \(socketPath): \(errno)")
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        let settings = folder.file("node.yaml")
        try "limits:\n  down: 50M\n".write(toFile: settings, atomically: true, encoding: .utf8)
        let fetch = try BackgroundProcess("/usr/bin/env", [
            "NOTIFY_SOCKET=\(socketPath)", vmswarmBinary, "get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(seedPort)",
            "--port", "\(freePort())", "--seed-after", "forever", "--config", settings,
        ], logTo: folder.file("get.log"))
        defer { fetch.stop() }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        try #require(count > 0, "no notification within 60 s: \(fetch.output.suffix(600))")
        let message = String(decoding: buffer[..<count], as: UTF8.self)
        #expect(message.hasPrefix("READY=1\n") && message.contains("STATUS=image.img complete and verified"), "\(message)")
        // Ready means the image is there, whole, under its final name, and get still seeds.
        #expect(try sha256(folder.file("out/image.img")) == sha)
        #expect(fetch.process.isRunning, "\(fetch.output.suffix(400))")

        try "limits:\n  down: 20M\n  up: 10M\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(fetch.process.processIdentifier, SIGHUP)
        #expect(eventually(10) { fetch.output.contains("SIGHUP: rate limits from \(settings): up 10.00 MiB/s, down 20.00 MiB/s") }, "\(fetch.output.suffix(600))")
        #expect(fetch.process.isRunning)
    }

    @Test func theUnitsPassSystemdAnalyzeVerify() throws {
        let analyze = try #require(which("systemd-analyze"), "systemd-analyze (systemd) is needed")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        // The units name /usr/local/bin/vmswarm, which verify requires to exist: here, the binary under test.
        for unit in Self.units {
            let text = try String(contentsOfFile: "\(Self.repository)/docs/systemd/\(unit)", encoding: .utf8)
            try text.replacingOccurrences(of: "/usr/local/bin/vmswarm", with: vmswarmBinary)
                .write(toFile: folder.file(unit), atomically: true, encoding: .utf8)
        }
        let result = try runProcess(analyze, ["verify", "--man=no", "./vmswarm-tracker.service", "./vmswarm-seed@disk.service", "./vmswarm-fetch@disk.service", "./vmswarm-pool.service"],
            in: folder.path)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.isEmpty, "systemd found something to say: \(result.stderr)")
    }

    @Test func theExampleSettingsPassConfigCheck() throws {
        let result = try runProcess(vmswarmBinary, ["config", "check", "\(Self.repository)/docs/vmswarm.example.yaml"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("vmswarm tracker --log-level notice --listen 0.0.0.0:6969 --udp-listen 0.0.0.0:6969"), "\(result.stdout)")
    }

    /// docs/configuration.md lists every setting there is.
    @Test func theConfigurationDocumentListsEverySetting() throws {
        let text = try String(contentsOfFile: "\(Self.repository)/docs/configuration.md", encoding: .utf8)
        for key in ConfigSchema.keys { #expect(text.contains("| `\(key.name)` |"), "docs/configuration.md lacks \(key.name)") }
    }

    @Test func toolsInstallPlacesBinarySettingsAndUnitsAndKeepsExistingSettings() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let root = folder.file("root")
        try FileManager.default.createDirectory(atPath: root + "/etc/vmswarm", withIntermediateDirectories: true)
        try "log-level: error\n".write(toFile: root + "/etc/vmswarm/vmswarm.yaml", atomically: true, encoding: .utf8)
        let result = try runProcess("\(Self.repository)/tools/install", ["--root", root, "--prefix", "/opt/vm", "--binary", vmswarmBinary])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(FileManager.default.isExecutableFile(atPath: root + "/opt/vm/bin/vmswarm"))
        #expect(try String(contentsOfFile: root + "/etc/vmswarm/vmswarm.yaml", encoding: .utf8) == "log-level: error\n")
        for unit in Self.units {
            let text = try String(contentsOfFile: root + "/etc/systemd/system/" + unit, encoding: .utf8)
            #expect(text.contains("ExecStart=/opt/vm/bin/vmswarm "), "\(unit)")
        }
        let fresh = folder.file("fresh")
        #expect(try runProcess("\(Self.repository)/tools/install", ["--root", fresh, "--binary", vmswarmBinary]).status == 0)
        #expect(FileManager.default.contents(atPath: fresh + "/etc/vmswarm/vmswarm.yaml")
            == FileManager.default.contents(atPath: "\(Self.repository)/docs/vmswarm.example.yaml"))
    }
}
