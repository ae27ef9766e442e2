/// The settings a node's configuration file may hold, and the command-line option each one stands
/// for in each command. A setting is only ever a default for an option: the command's own parser
/// checks its value (one path of validation for flags and file alike), and an option given on the
/// command line wins.
public struct ConfigKey: Sendable, Equatable {
    /// How a setting is written.
    public enum Kind: Sendable, Equatable {
        /// One value: `limits.up: 50M`.
        case value
        /// A value or a list of them: `trackers: [http://a/announce, http://b/announce]`. Each
        /// becomes one repetition of the option; given on the command line, the option replaces the
        /// whole list.
        case list
        /// `true` or `false`: true adds the option (a flag), false leaves it out.
        case flag
    }

    /// Whether values are paths. Relative ones are taken from the file's folder, as a file
    /// installed in /etc/vmswarm/ naming `site.key` means /etc/vmswarm/site.key.
    public enum Paths: Sendable, Equatable {
        case none
        /// Paths that must exist (key files, an allowlist): `config check` says when one does not.
        case existing
        /// A folder that may be made later (the cache).
        case any
    }

    /// An option of one command that this setting stands for.
    public struct Target: Sendable, Equatable {
        public let command: String
        /// The long form, `--max-up`.
        public let option: String
        /// Other spellings that count as giving the option on the command line (`-t`).
        public let aliases: [String]

        public init(_ command: String, _ option: String, aliases: [String] = []) {
            self.command = command
            self.option = option
            self.aliases = aliases
        }
    }

    /// Dotted name: `limits.up` is `up:` inside `limits:`.
    public let name: String
    public let kind: Kind
    public let paths: Paths
    public let help: String
    public let targets: [Target]
    /// Settings whose options only go together with this one's (a certificate and its key): a
    /// setting is checked with these beside it.
    public let companions: [String]

    public init(_ name: String, _ kind: Kind, paths: Paths = .none, _ help: String, _ targets: [Target], companions: [String] = []) {
        self.name = name
        self.kind = kind
        self.paths = paths
        self.help = help
        self.targets = targets
        self.companions = companions
    }

    /// The options this setting stands for in `command`, usually one (`cache` is two for `get`:
    /// `--output` and `--cache`, so a node keeps its images and the index of their pieces in one folder).
    public func targets(for command: String) -> [Target] { targets.filter { $0.command == command } }
}

public enum ConfigSchema {
    /// The commands a file can configure.
    public static let commands = ["create", "seed", "get", "pool", "tracker"]

    private static func nodes(_ option: String) -> [ConfigKey.Target] { [.init("seed", option), .init("get", option)] }
    /// Settings a pool node shares with `seed` and `get`.
    private static func allNodes(_ option: String) -> [ConfigKey.Target] { nodes(option) + [.init("pool", option)] }

    public static let keys: [ConfigKey] = [
        ConfigKey("trackers", .list, "announce URLs `create` writes into new torrents (one tier each)",
            [.init("create", "--tracker", aliases: ["-t"])]),
        ConfigKey("web-seeds", .list, "HTTP URLs `create` writes as web seeds (BEP 19)", [.init("create", "--web-seed")]),
        ConfigKey("cache", .value, paths: .any, "the node's image folder: `get` downloads into it and takes the pieces it can from what it holds (docs/reuse.md)",
            [.init("get", "--output", aliases: ["-o"]), .init("get", "--cache"), .init("seed", "--cache")]),
        ConfigKey("listen", .value, "address and port for incoming peers (HOST:PORT)", allNodes("--listen")),
        ConfigKey("bind", .value, "local address for peer connections on multi-homed hosts", allNodes("--bind")),
        ConfigKey("peers", .list, "peers to connect to besides the tracker's (HOST:PORT)", nodes("--peer")),
        ConfigKey("metrics", .value, "serve Prometheus metrics at http://HOST:PORT/metrics", allNodes("--metrics-listen")),
        ConfigKey("site.trackers", .list, "this site's trackers, announced to instead of the torrent's (a pool node: its siblings'; docs/pool.md)",
            allNodes("--site-tracker")),
        ConfigKey("site.name", .value, "the site this node is in, announced as its rack when the site is the unit that shares an uplink (the same option as `rack`; give one)",
            nodes("--rack")),
        ConfigKey("site.networks", .list, "this site's networks (CIDR): a node connects only inside them; a pool node's site side (docs/pool.md)",
            allNodes("--site-network")),
        ConfigKey("pool.site-tracker-listen", .value, "the site tracker a pool node runs (HOST:PORT in the site)", [.init("pool", "--site-tracker-listen")]),
        ConfigKey("pool.site-address", .value, "a pool node's address in the site", [.init("pool", "--site-address")]),
        ConfigKey("pool.peers", .list, "the site addresses of the site's other pool nodes", [.init("pool", "--pool-peer")]),
        ConfigKey("pool.cache-budget", .value, "most bytes of images a pool node keeps, such as 500G", [.init("pool", "--cache-budget")]),
        ConfigKey("pool.watch", .value, paths: .existing, "a folder whose .torrent files a pool node relays", [.init("pool", "--watch")]),
        ConfigKey("pool.cache", .value, paths: .any, "a pool node's cache folder", [.init("pool", "--output", aliases: ["-o"])]),
        ConfigKey("pool.admin-listen", .value, "a pool node's admin endpoint (HOST:PORT): its page, metrics, and POST /images to relay a torrent",
            [.init("pool", "--admin-listen")]),
        ConfigKey("method", .value, "how pieces travel: mesh, tree, multicast or auto (docs/tree.md)", nodes("--method")),
        ConfigKey("rack", .value, "the rack or site this node is in, for rack-aware peer lists and trees (docs/racks.md)", nodes("--rack")),
        ConfigKey("lan-discovery", .flag, "find peers on the LAN without a tracker (BEP 14; never for private torrents)", nodes("--lan-discovery")),
        ConfigKey("log-level", .value, "trace, debug, info, notice, warning, error or critical",
            allNodes("--log-level") + [.init("tracker", "--log-level")]),
        ConfigKey("limits.up", .value, "upload limit in bytes per second, such as 50M (a pool node: the WAN's)", allNodes("--max-up")),
        ConfigKey("limits.down", .value, "download limit in bytes per second, such as 50M (a pool node: the WAN's)", allNodes("--max-down")),
        ConfigKey("limits.peers", .value, "most peer connections at once", allNodes("--max-peers")),
        ConfigKey("limits.upload-slots", .value, "peers uploaded to at once, plus one optimistic unchoke", allNodes("--upload-slots")),
        ConfigKey("keys.identity", .value, paths: .existing, "this node's or site's X25519 key, to open sealed images wrapped for it", nodes("--identity")),
        ConfigKey("keys.content", .value, paths: .existing, "a sealed image's content key file", nodes("--key")),
        ConfigKey("keys.trust", .list, paths: .existing, "publisher keys (.pub) a sealed torrent must be signed by", nodes("--trust")),
        ConfigKey("keys.ca-files", .list, paths: .existing, "private CA certificates (PEM) trusted for https:// trackers, torrent URLs and web seeds",
            allNodes("--ca-file")),
        ConfigKey("booster.group", .value, "multicast booster group, GROUP:PORT", nodes("--multicast")),
        ConfigKey("booster.interface", .value, "network interface for the booster", nodes("--interface")),
        ConfigKey("booster.rate", .value, "booster sending rate, IP and UDP included, such as 95mbit", [.init("seed", "--rate")]),
        ConfigKey("booster.ttl", .value, "multicast TTL", [.init("seed", "--ttl")]),
        ConfigKey("booster.carousel", .flag, "keep cycling through the pieces for late joiners", [.init("seed", "--carousel")]),
        ConfigKey("booster.min-receivers", .value, "receivers to wait for before the first pass", [.init("seed", "--min-receivers")]),
        ConfigKey("get.seed-after", .value, "how long `get` seeds after it completes", [.init("get", "--seed-after")]),
        ConfigKey("get.web-seed-fallback", .flag, "web seeds only for what no peer has, after 5 s (an origin serving a fleet)",
            [.init("get", "--web-seed-fallback")]),
        ConfigKey("get.serve", .list, "serve images while they download (nbd://HOST:PORT or http://HOST:PORT)", [.init("get", "--serve")]),
        ConfigKey("create.piece-size", .value, "piece size of new torrents: auto, or a power of two such as 4M", [.init("create", "--piece-size")]),
        ConfigKey("create.private", .flag, "mark new torrents private (BEP 27)", [.init("create", "--private")]),
        ConfigKey("tracker.listen", .value, "the tracker's HTTP address and port", [.init("tracker", "--listen")]),
        ConfigKey("tracker.udp-listen", .value, "also serve BEP 15 on this address and port", [.init("tracker", "--udp-listen")]),
        ConfigKey("tracker.allow", .value, paths: .existing, "serve only these torrents: a file of hex info-hashes or a folder of .torrent files",
            [.init("tracker", "--allow")]),
        ConfigKey("tracker.tls-cert", .value, paths: .existing, "serve HTTPS with this certificate chain (PEM)", [.init("tracker", "--tls-cert")],
            companions: ["tracker.tls-key"]),
        ConfigKey("tracker.tls-key", .value, paths: .existing, "the private key (PEM) of tracker.tls-cert", [.init("tracker", "--tls-key")],
            companions: ["tracker.tls-cert"]),
        ConfigKey("tracker.interval", .value, "seconds between announces clients are told", [.init("tracker", "--interval")]),
        ConfigKey("tracker.min-interval", .value, "seconds a client waits at least between announces", [.init("tracker", "--min-interval")]),
        ConfigKey("tracker.max-torrents", .value, "most torrents tracked at once", [.init("tracker", "--max-torrents")]),
        ConfigKey("tracker.max-peers", .value, "most peers stored per torrent", [.init("tracker", "--max-peers")]),
        ConfigKey("tracker.max-peers-per-ip", .value, "most peers per torrent from one IPv4 address or IPv6 /64",
            [.init("tracker", "--max-peers-per-ip")]),
        ConfigKey("tracker.cap-loopback", .flag, "apply the per-address cap to loopback too", [.init("tracker", "--cap-loopback")]),
        ConfigKey("tracker.tree-fan-out", .value, "children per node in tree-mode swarms", [.init("tracker", "--tree-fan-out")]),
        ConfigKey("tracker.rack-prefix", .value, "IPv4 subnet bits that make a rack for nodes that name none (0: one rack)",
            [.init("tracker", "--rack-prefix")]),
        ConfigKey("tracker.threads", .value, "the tracker's event-loop threads", [.init("tracker", "--threads")]),
    ]

    public static func key(named name: String) -> ConfigKey? { keys.first { $0.name == name } }

    /// Section names (`limits`, `tracker`, …): what may hold settings inside it.
    static let sections = Set(keys.compactMap { $0.name.split(separator: ".").count == 2 ? String($0.name.split(separator: ".")[0]) : nil })

    /// The known name nearest to `name` (a typo's likely meaning), if one is close.
    public static func suggestion(for name: String) -> String? {
        let candidates = keys.map(\.name) + sections.sorted()
        let scored = candidates.map { ($0, editDistance(Array(name), Array($0))) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, name.count / 4) else { return nil }
        return best
    }

    private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        guard !a.isEmpty else { return b.count }
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1]
            for (j, y) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}
