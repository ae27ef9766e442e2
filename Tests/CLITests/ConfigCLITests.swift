import Foundation
import NodeConfiguration
import TestSupport
import Testing

@testable import VMSwarmCLI

/// A node configured by file (issue 21, point 1): settings are defaults for options, the command
/// line wins, and `vmswarm config check` says what is wrong and where.
@Suite struct ConfigCLITests {
    func inspect(_ torrent: String) throws -> [String: Any] {
        let result = try runProcess(vmswarmBinary, ["inspect", "--json", torrent])
        try #require(result.status == 0, "\(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    @Test func aFileConfiguresCreateAndTheCommandLineWins() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Data(repeating: 7, count: 3 << 20).write(to: URL(fileURLWithPath: folder.file("disk.img")))
        try """
            trackers: [http://a.site:6969/announce, udp://b.site:6969/announce]
            create:
              piece-size: 1M
              private: true
            """.write(toFile: folder.file("node.yaml"), atomically: true, encoding: .utf8)

        let configured = try runProcess(vmswarmBinary, ["create", folder.file("disk.img"), "--config", folder.file("node.yaml"), "-o", folder.file("a.torrent")])
        try #require(configured.status == 0, "\(configured.stderr)")
        let a = try inspect(folder.file("a.torrent"))
        #expect(a["tracker_tiers"] as? [[String]] == [["http://a.site:6969/announce"], ["udp://b.site:6969/announce"]], "\(a)")
        #expect(a["piece_length"] as? Int == 1 << 20, "\(a)")
        #expect(a["private"] as? Bool == true, "\(a)")

        let overridden = try runProcess(vmswarmBinary, [
            "create", folder.file("disk.img"), "--config", folder.file("node.yaml"), "-o", folder.file("b.torrent"),
            "-t", "http://c.site/announce", "--piece-size", "256K",
        ])
        try #require(overridden.status == 0, "\(overridden.stderr)")
        let b = try inspect(folder.file("b.torrent"))
        #expect(b["tracker_tiers"] as? [[String]] == [["http://c.site/announce"]], "\(b)")
        #expect(b["piece_length"] as? Int == 256 << 10, "\(b)")

        let ignored = try runProcess(vmswarmBinary, ["create", folder.file("disk.img"), "--config", "none", "-o", folder.file("c.torrent")])
        try #require(ignored.status == 0, "\(ignored.stderr)")
        #expect(try inspect(folder.file("c.torrent"))["tracker_tiers"] as? [[String]] ?? [] == [])
    }

    @Test func configCheckSaysWhatIsWrongAndWhere() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let bad = folder.file("bad.yaml")
        try """
            limits:
              up: 5X
            keys:
              identity: site.key
            tracker:
              interval: five
            booster:
              group: 10.0.0.1:7000
            lisen: 0.0.0.0:6881
            """.write(toFile: bad, atomically: true, encoding: .utf8)
        let checked = try runProcess(vmswarmBinary, ["config", "check", bad])
        #expect(checked.status == 1)
        let lines = checked.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("\(bad):9:1: lisen: is not a setting vmswarm knows (did you mean 'listen'?)"), "\(lines)")
        #expect(lines.contains("\(bad):2:3: limits.up: --max-up must be a rate such as 800K or 50M (got '5X'). (seed, get)"), "\(lines)")
        #expect(lines.contains("\(bad):4:3: keys.identity: \(folder.path)/site.key does not exist or cannot be read (seed, get)"), "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(bad):6:3: tracker.interval: ") && $0.contains("five") && $0.hasSuffix("(tracker)") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(bad):8:3: booster.group: --multicast must be an IPv4 multicast") }, "\(lines)")
        #expect(lines.last == "\(bad): 5 problems")

        // The command a broken file configures does not start: it says where the file is wrong.
        let started = try runProcess(vmswarmBinary, ["tracker", "--config", bad, "--listen", "127.0.0.1:0"])
        #expect(started.status != 0)
        #expect(started.stderr.contains("\(bad):6:3: tracker.interval:"), "\(started.stderr)")

        let good = folder.file("good.yaml")
        try "log-level: info\nlimits:\n  up: 50M\ntracker:\n  interval: 900\n".write(toFile: good, atomically: true, encoding: .utf8)
        let fine = try runProcess(vmswarmBinary, ["config", "check", good])
        #expect(fine.status == 0, "\(fine.stdout)")
        #expect(fine.stdout.contains("\(good): ok, 3 settings"), "\(fine.stdout)")
        #expect(fine.stdout.contains("vmswarm get --log-level info --max-up 50M …"), "\(fine.stdout)")
        #expect(fine.stdout.contains("vmswarm tracker --log-level info --interval 900 …"), "\(fine.stdout)")
    }

    /// SIGHUP applies the file's rate limits anew (issue 21, point 2): a seeder limited to 64 KiB/s,
    /// which would take 8 minutes over this 32 MiB image, has its limit lifted by a changed file and
    /// the download completes in seconds.
    @Test func sighupAppliesTheFilesRateLimitsAnew() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let (image, torrent, sha) = try SwarmInteropTests().makeImage(folder)
        let settings = folder.file("node.yaml")
        try "limits:\n  up: 64K\n".write(toFile: settings, atomically: true, encoding: .utf8)
        let seedPort = freePort()
        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "\(seedPort)", "--config", settings],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        try #require(eventually(20) { seeder.output.contains("seeding image.img on port") }, "\(seeder.output)")
        let leecher = try BackgroundProcess(vmswarmBinary, [
            "get", torrent, "--output", folder.file("out"), "--peer", "127.0.0.1:\(seedPort)", "--port", "\(freePort())", "--config", "none",
        ], logTo: folder.file("get.log"))
        defer { leecher.stop() }
        Thread.sleep(forTimeInterval: 3)
        #expect(!leecher.wait(seconds: 0.1), "the limited download cannot be over yet")

        // A file that became wrong changes nothing and says so.
        try "limits:\n  up: lots\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(seeder.process.processIdentifier, SIGHUP)
        #expect(eventually(10) { seeder.output.contains("SIGHUP: \(settings):2:3: limits.up: --max-up must be a rate") }, "\(seeder.output)")
        #expect(!leecher.wait(seconds: 2))

        try "log-level: warning\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(seeder.process.processIdentifier, SIGHUP)
        #expect(eventually(10) { seeder.output.contains("SIGHUP: rate limits from \(settings): up none, down none") }, "\(seeder.output)")
        #expect(leecher.wait(seconds: 60) && leecher.process.terminationStatus == 0, "\(leecher.output.suffix(400))")
        #expect(try sha256(folder.file("out/image.img")) == sha)
    }

    /// The table of settings and the commands' options cannot drift apart: a file setting every key
    /// to a good value is accepted by every command's own parser.
    @Test func everySettingIsAnOptionItsCommandsAccept() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        for name in ["site.key", "content.key", "publisher.pub", "allow", "leaf.pem", "leaf.key", "site-ca.pem"] { FileManager.default.createFile(atPath: folder.file(name), contents: Data()) }
        let good: [String: String] = [
            "trackers": "[http://t/announce]", "web-seeds": "[http://w/disk.img]", "cache": "images", "listen": "0.0.0.0:6881",
            "bind": "10.0.0.2", "peers": "[10.0.0.3:6881]", "metrics": "127.0.0.1:9300", "log-level": "info", "lan-discovery": "true",
            "limits.up": "50M", "limits.down": "80M", "limits.peers": "100", "limits.upload-slots": "16", "keys.identity": "site.key", "keys.content": "content.key",
            "keys.trust": "[publisher.pub]", "keys.ca-files": "[site-ca.pem]", "booster.group": "239.255.42.1:7000", "booster.interface": "eth0", "booster.rate": "95mbit",
            "booster.ttl": "1", "booster.carousel": "true", "booster.min-receivers": "4", "get.seed-after": "10m",
            "get.serve": "[nbd://127.0.0.1:10809]", "get.web-seed-fallback": "true", "create.piece-size": "4M", "create.private": "true", "tracker.listen": "0.0.0.0:6969",
            "tracker.udp-listen": "0.0.0.0:6969", "tracker.allow": "allow", "tracker.tls-cert": "leaf.pem", "tracker.tls-key": "leaf.key", "tracker.interval": "900", "tracker.min-interval": "60",
            "tracker.max-torrents": "1000", "tracker.max-peers": "5000", "tracker.max-peers-per-ip": "16", "tracker.cap-loopback": "true",
            "tracker.threads": "2", "method": "tree", "tracker.tree-fan-out": "2", "rack": "r7", "tracker.rack-prefix": "20",
            "site.name": "zurich-a", "site.trackers": "[http://10.0.0.1:6969/announce]", "site.networks": "[10.0.0.0/24]", "pool.site-tracker-listen": "10.0.0.2:6969",
            "pool.site-address": "10.0.0.2", "pool.peers": "[10.0.0.3]", "pool.cache-budget": "500G", "pool.watch": "incoming", "pool.cache": "pool-cache", "pool.admin-listen": "127.0.0.1:9400",
        ]
        #expect(Set(good.keys) == Set(ConfigSchema.keys.map(\.name)), "every setting needs a good value here")
        try FileManager.default.createDirectory(atPath: folder.file("incoming"), withIntermediateDirectories: true)
        // `rack` and `site.name` are one option, so a file sets one of them (checked in ConfigFileTests).
        for left in ["rack", "site.name"] {
            var text = ""
            for section in [nil, "limits", "keys", "booster", "get", "create", "tracker", "site", "pool"] as [String?] {
                let prefix = section.map { $0 + "." } ?? ""
                let entries = good.filter { $0.key != left && (section == nil ? !$0.key.contains(".") : $0.key.hasPrefix(prefix)) }.sorted { $0.key < $1.key }
                if let section { text += "\(section):\n" }
                for (key, value) in entries { text += (section == nil ? "" : "  ") + "\(key.dropFirst(prefix.count)): \(value)\n" }
            }
            let file = ConfigFile(path: folder.file("node.yaml"), text: text)
            #expect(file.problems.isEmpty, "\(file.problems)")
            #expect(file.settings.count == ConfigSchema.keys.count - 1)
            for command in ConfigSchema.commands {
                #expect(NodeConfig.problems(in: file, for: command).isEmpty, "\(command): \(NodeConfig.problems(in: file, for: command))")
            }
        }
    }
}
