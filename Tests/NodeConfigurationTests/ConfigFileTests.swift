import Testing

@testable import NodeConfiguration

@Suite struct ConfigFileTests {
    let sample = """
        # a compute node in rack A
        trackers:
          - http://tracker.site:6969/announce
          - udp://tracker.site:6969/announce
        cache: images
        listen: 0.0.0.0:6881
        metrics: 127.0.0.1:9300
        log-level: info
        limits:
          up: 50M
          peers: 120
        keys:
          identity: site.key
          trust: [/etc/vmswarm/publisher.pub]
        booster:
          group: 239.255.42.1:7000
          carousel: yes
        tracker:
          listen: 0.0.0.0:6969
          cap-loopback: false
        """

    @Test func settingsBecomeEachCommandsOptions() {
        let file = ConfigFile(path: "/etc/vmswarm/vmswarm.yaml", text: sample)
        #expect(file.problems.isEmpty, "\(file.problems)")
        #expect(file.arguments(for: "create", given: []) == [
            "--tracker", "http://tracker.site:6969/announce", "--tracker", "udp://tracker.site:6969/announce",
        ])
        // Relative paths are the file's folder's; flags become the option when true.
        #expect(file.arguments(for: "get", given: []) == [
            "--output", "/etc/vmswarm/images", "--cache", "/etc/vmswarm/images", "--listen", "0.0.0.0:6881", "--metrics-listen", "127.0.0.1:9300", "--log-level", "info",
            "--max-up", "50M", "--max-peers", "120", "--identity", "/etc/vmswarm/site.key", "--trust", "/etc/vmswarm/publisher.pub",
            "--multicast", "239.255.42.1:7000",
        ])
        #expect(file.arguments(for: "seed", given: []).suffix(3) == ["--multicast", "239.255.42.1:7000", "--carousel"])
        #expect(file.arguments(for: "tracker", given: []) == ["--log-level", "info", "--listen", "0.0.0.0:6969"])
        #expect(file.settings.first { $0.key.name == "limits.up" }?.location == ConfigLocation(line: 10, column: 3))
    }

    /// A list option given on the command line replaces the file's list (single values need
    /// nothing: the command line's come later, and the last one wins).
    @Test func aListGivenOnTheCommandLineReplacesTheFilesList() {
        let file = ConfigFile(path: "node.yaml", text: sample)
        #expect(!file.arguments(for: "create", given: ["-t", "http://other/announce", "disk.img"]).contains("--tracker"))
        #expect(!file.arguments(for: "create", given: ["--tracker=http://other/announce"]).contains("--tracker"))
        #expect(file.arguments(for: "create", given: ["--", "-t"]).contains("--tracker"))
        #expect(file.arguments(for: "get", given: ["--trust", "mine.pub"]).contains("--trust") == false)
        #expect(file.arguments(for: "get", given: ["--max-up", "1M"]).contains("--max-up"))
    }

    @Test func everyProblemIsReportedWithItsLineAndColumn() {
        let text = """
            limts:
              up: 5M
            listen: [a, b]
            booster:
              carousel: maybe
            trackers:
              - ok
              - [nested]
            cache: ""
            tracker: 6969
            """
        let file = ConfigFile(path: "node.yaml", text: text)
        let lines = file.problems.map(\.description)
        #expect(lines.contains("node.yaml:1:1: limts: is not a setting vmswarm knows (did you mean 'limits'?)"), "\(lines)")
        #expect(lines.contains("node.yaml:3:9: listen: is one value, not a list or a section"), "\(lines)")
        #expect(lines.contains("node.yaml:5:13: booster.carousel: is true or false (got 'maybe')"), "\(lines)")
        #expect(lines.contains("node.yaml:8:5: trackers: holds values, not lists or sections"), "\(lines)")
        #expect(lines.contains("node.yaml:9:8: cache: is empty"), "\(lines)")
        #expect(lines.contains("node.yaml:10:10: tracker: is a section: write its settings indented below it"), "\(lines)")
        #expect(file.problems.count == 6)
        let twice = ConfigFile(path: "node.yaml", text: "limits:\n  up: 1M\nlog-level: info\nlog-level: debug\n")
        #expect(twice.problems.map(\.description) == ["node.yaml:3:1: set twice in one section: log-level"])
    }

    /// `site.name` is the site's name as the node's rack; with `rack` also set, one would win
    /// unseen, so the file is refused with both places named.
    @Test func theSitesNameIsTheRackAndTwoSettingsForOneOptionClash() {
        let site = ConfigFile(path: "node.yaml", text: "site:\n  name: zurich-a\n  trackers: [http://10.0.0.2:6969/announce]\n")
        #expect(site.problems.isEmpty, "\(site.problems)")
        #expect(site.arguments(for: "get", given: []) == ["--rack", "zurich-a", "--site-tracker", "http://10.0.0.2:6969/announce"])
        #expect(site.arguments(for: "pool", given: []) == ["--site-tracker", "http://10.0.0.2:6969/announce"])
        let both = ConfigFile(path: "node.yaml", text: "rack: r1\nlog-level: info\nsite:\n  name: zurich-a\n")
        #expect(both.problems.map(\.description) == [
            "node.yaml:4:3: site.name: sets --rack of seed, as 'rack' on line 1 does; give one of them",
        ])
    }

    @Test func hostileFilesAreRefusedNotTrappedOn() {
        let syntax = ConfigFile(path: "f", text: "limits:\n  up: [1, 2\n")
        #expect(syntax.problems.count == 1)
        #expect(syntax.problems.first?.message.hasPrefix("not valid YAML") == true)
        #expect(syntax.problems.first?.location != nil)
        // Nesting deeper than libyaml's limit, and deeper than any setting.
        let deep = ConfigFile(path: "f", text: "peers: " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000))
        #expect(deep.problems.count == 1 && deep.settings.isEmpty)
        #expect(ConfigFile(path: "f", text: String(repeating: "#", count: ConfigFile.maxSize + 1)).problems.count == 1)
        #expect(ConfigFile(path: "f", text: "peers: [" + Array(repeating: "a:1", count: 300).joined(separator: ", ") + "]").problems.count == 1)
        #expect(ConfigFile(path: "f", text: "listen: \"a\\u0007b\"").problems.count == 1)
        // Anchors and aliases cannot grow what is read: a list holds values only.
        let laughs = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\npeers: [*b, *b, *b]\n"
        #expect(ConfigFile(path: "f", text: laughs).settings.isEmpty)
        #expect(ConfigFile(path: "f", text: "- a\n- b\n").problems.first?.message.contains("mapping") == true)
        #expect(ConfigFile(path: "f", text: "").problems.isEmpty)
    }

    @Test func missingKeyFilesAreNamed() {
        let file = ConfigFile(path: "/etc/vmswarm/vmswarm.yaml", text: "keys:\n  identity: site.key\n  trust: [a.pub, /x/b.pub]\n")
        let missing = file.missingPaths(for: "seed") { $0 == "/etc/vmswarm/a.pub" }
        #expect(missing.map(\.description) == [
            "/etc/vmswarm/vmswarm.yaml:2:3: keys.identity: /etc/vmswarm/site.key does not exist or cannot be read",
            "/etc/vmswarm/vmswarm.yaml:3:3: keys.trust: /x/b.pub does not exist or cannot be read",
        ])
        #expect(file.missingPaths(for: "create") { _ in false }.isEmpty)
    }

    @Test func theFileIsFoundByFlagThenEnvironmentThenDefault() {
        let none: (String) -> Bool = { _ in false }
        #expect(ConfigSource.locate(arguments: ["--config", "a.yaml", "x"], environment: ["VMSWARM_CONFIG": "b"], exists: none) == .file("a.yaml", explicit: true))
        #expect(ConfigSource.locate(arguments: ["--config=a.yaml"], environment: [:], exists: none) == .file("a.yaml", explicit: true))
        #expect(ConfigSource.locate(arguments: ["--config", "none"], environment: ["VMSWARM_CONFIG": "b"], exists: { _ in true }) == ConfigSource.none)
        #expect(ConfigSource.locate(arguments: ["--", "--config", "a"], environment: ["VMSWARM_CONFIG": "b"], exists: none) == .file("b", explicit: true))
        #expect(ConfigSource.locate(arguments: [], environment: [:], exists: { $0 == ConfigSource.defaultPath }) == .file(ConfigSource.defaultPath, explicit: false))
        #expect(ConfigSource.locate(arguments: [], environment: [:], exists: none) == ConfigSource.none)
    }

    @Test func everySettingStandsForAnOptionOfAKnownCommand() {
        for key in ConfigSchema.keys {
            #expect(!key.targets.isEmpty, "\(key.name)")
            for target in key.targets {
                #expect(ConfigSchema.commands.contains(target.command), "\(key.name): \(target.command)")
                #expect(target.option.hasPrefix("--"), "\(key.name)")
            }
        }
        #expect(Set(ConfigSchema.keys.map(\.name)).count == ConfigSchema.keys.count)
        #expect(ConfigSchema.suggestion(for: "tracker.intervall") == "tracker.interval")
        #expect(ConfigSchema.suggestion(for: "zzzzzzzz") == nil)
    }
}
