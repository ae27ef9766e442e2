import Foundation
import NodeConfiguration
import TestSupport
import Testing

/// vmswarm as a service (issue 21, point 2): the units in docs/systemd are valid for systemd, the
/// example settings file passes `config check`, and tools/install puts them in place without
/// overwriting an operator's settings.
@Suite struct ServiceTests {
    static let repository = fixturesURL.deletingLastPathComponent().path
    static let units = ["vmswarm-tracker.service", "vmswarm-seed@.service", "vmswarm-fetch@.service"]

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
        let result = try runProcess(analyze, ["verify", "--man=no", "./vmswarm-tracker.service", "./vmswarm-seed@disk.service", "./vmswarm-fetch@disk.service"],
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
