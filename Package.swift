// swift-tools-version:6.1
// vmswarm: a BitTorrent-compatible swarm node for distributing VM images.
import PackageDescription

let package = Package(
    name: "vmswarm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vmswarm", targets: ["vmswarm"]),
        .executable(name: "vmswarm-sim", targets: ["VMSwarmSim"]),
        .library(name: "Bencode", targets: ["Bencode"]),
        .library(name: "Metainfo", targets: ["Metainfo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // Pure bencode codec: bytes in, values (with byte spans) out, and back.
        .target(name: "Bencode"),
        // Torrent metainfo as types; the one owner of piece/file arithmetic.
        .target(name: "Metainfo", dependencies: [
            "Bencode",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Positional I/O over a torrent's file layout: hashing, verified piece writes, resume.
        .target(name: "Storage", dependencies: [
            "Metainfo",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Building torrents from files: directory walk, parallel piece hashing.
        .target(name: "TorrentCreation", dependencies: [
            "Bencode", "Metainfo", "Storage",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Sealed images: AES-256-GCM per piece, key wrapping for sites, publisher signatures, key files.
        .target(name: "Sealing", dependencies: [
            "Bencode", "Metainfo", "Storage",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The BitTorrent peer wire protocol (BEP 3, 6, 10, 11) as a pure codec and per-connection rules.
        .target(name: "PeerWire", dependencies: [
            "Metainfo", "Bencode",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // The swarm engine's sans-I/O core: piece picking, requests, choking, verification, bans.
        .target(name: "Swarm", dependencies: [
            "Metainfo", "PeerWire",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // The multicast LAN booster as pure types: packet codec, paced sender and receiver state machines.
        .target(name: "Multicast", dependencies: [
            "Metainfo",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Drives the engine over sockets on one SwiftNIO event loop; hashing and disk on a thread pool.
        .target(name: "SwarmRuntime", dependencies: [
            "Swarm", "PeerWire", "Storage", "Metainfo", "TrackerProtocol", "TrackerClient", "Multicast", "LocalDiscovery",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Tracker HTTP protocol as pure types: announce/scrape queries and answers, both directions.
        // Pure: where each node sits in a swarm's distribution tree (chains, k-ary trees, repair).
        .target(name: "Topology"),
        .target(name: "TrackerProtocol", dependencies: ["Bencode", "Metainfo"]),
        // The tracker: pure swarm bookkeeping (TrackerState), its HTTP request framer, its own
        // epoll listener for plain HTTP (Linux) and its SwiftNIO front for HTTPS.
        .target(name: "Tracker", dependencies: [
            "TrackerProtocol", "Metainfo", "Bencode", "Units", "Topology", "CEpoll",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // The announce/scrape client the swarm uses: BEP 12 tiers, back-off, a small HTTP GET.
        .target(name: "TrackerClient", dependencies: [
            "TrackerProtocol", "Metainfo",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A read-only NBD server: the pure protocol session and a thin SwiftNIO front over a data source.
        .target(name: "NBD", dependencies: [
            "ServerSocket",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // GET and HEAD of one resource with byte ranges (RFC 9110): a pure Range parser and a SwiftNIO front.
        .target(name: "HTTPRanges", dependencies: [
            "ServerSocket",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The only place that parses flags and prints to a terminal.
        // A TCP listening socket on an event loop of its own: the edge of metrics, NBD and HTTP serving.
        .target(name: "ServerSocket", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Sizes, rates and durations as people read and write them (binary units), for the CLI and pages.
        .target(name: "Units"),
        // BEP 14 Local Service Discovery messages (pure): announces of a torrent to the LAN group.
        .target(name: "LocalDiscovery", dependencies: ["Metainfo"]),
        // A node's configuration file (YAML): settings with where they were written, the options
        // each stands for in each command, and the command lines that come of them.
        .target(name: "NodeConfiguration", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "VMSwarmCLI", dependencies: [
            "NodeConfiguration", "Units", "ServerSocket", "Bencode", "Metainfo", "Storage", "TorrentCreation", "Sealing", "Multicast", "Tracker", "TrackerProtocol", "TrackerClient", "SwarmRuntime", "NBD", "HTTPRanges",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // The third driver of the engine: the real SwarmEngine, codec and TrackerState over a
        // flow-level network model in virtual time, for swarms one machine cannot host (docs/simulation.md).
        .target(name: "Simulation", dependencies: [
            "Swarm", "PeerWire", "Metainfo", "Tracker", "TrackerProtocol", "Multicast",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "VMSwarmSim", dependencies: [
            "Simulation", "Swarm", "Units", "Metainfo", "Multicast", "TorrentCreation",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // glibc's mallopt, to keep piece-sized buffers in the heap (see Sources/vmswarm/main.swift).
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // Linux's epoll, eventfd and accept4, for the tracker's own listener.
        .systemLibrary(name: "CEpoll", path: "Sources/CEpoll"),
        .executableTarget(name: "vmswarm", dependencies: ["VMSwarmCLI", "CMalloc"]),

        // Fixture lookup, deterministic randomness, temporary folders, process running.
        .target(name: "TestSupport", dependencies: ["Metainfo"], path: "Tests/TestSupport"),
        .testTarget(name: "BencodeTests", dependencies: ["Bencode", "TestSupport"]),
        .testTarget(name: "MetainfoTests", dependencies: ["Metainfo", "Bencode", "TestSupport"]),
        .testTarget(name: "TorrentCreationTests", dependencies: [
            "TorrentCreation", "Metainfo", "Storage", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "SealingTests", dependencies: [
            "Sealing", "Metainfo", "Bencode", "Storage", "TorrentCreation", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "SwarmTests", dependencies: [
            "Swarm", "SwarmRuntime", "Metainfo", "PeerWire", "Storage", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "MulticastTests", dependencies: ["Multicast", "Metainfo", "TestSupport"]),
        .testTarget(name: "StorageTests", dependencies: [
            "Storage", "Metainfo", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "PeerWireTests", dependencies: [
            "PeerWire", "Metainfo", "Bencode", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "HTTPRangesTests", dependencies: ["HTTPRanges"]),
        .testTarget(name: "TopologyTests", dependencies: ["Topology"]),
        .testTarget(name: "SimulationTests", dependencies: ["Simulation", "Swarm", "Metainfo"]),
        .testTarget(name: "NodeConfigurationTests", dependencies: ["NodeConfiguration"]),
        .testTarget(name: "LocalDiscoveryTests", dependencies: ["LocalDiscovery", "Metainfo"]),
        .testTarget(name: "NBDTests", dependencies: [
            "NBD", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TrackerProtocolTests", dependencies: ["TrackerProtocol", "Metainfo", "Bencode", "TestSupport"]),
        .testTarget(name: "TrackerTests", dependencies: [
            "Tracker", "TrackerProtocol", "TrackerClient", "Metainfo", "Bencode", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Runs the built `vmswarm` binary and real BitTorrent tools; kept apart so unit tests stay fast.
        .testTarget(name: "CLITests", dependencies: [
            "vmswarm", "VMSwarmCLI", "NodeConfiguration", "Metainfo", "Bencode", "Tracker", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// Coverage-guided fuzz targets (docs/fuzzing.md). Only `tools/fuzz` sets VMSWARM_FUZZ, and it builds into
// its own scratch path (.build-fuzz) with `-sanitize=fuzzer,address`; an ordinary `swift build` or
// `swift test` never sees this target, so it costs them nothing and needs no libFuzzer to link.
if Context.environment["VMSWARM_FUZZ"] != nil {
    package.products.append(.executable(name: "vmswarm-fuzz", targets: ["FuzzTargets"]))
    package.targets.append(.executableTarget(
        name: "FuzzTargets",
        dependencies: [
            "Bencode", "Metainfo", "Sealing", "PeerWire", "Swarm", "Multicast", "TrackerProtocol", "Tracker", "TrackerClient", "NBD", "Storage",
            "TorrentCreation",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: [.define("VMSWARM_FUZZ"), .unsafeFlags(["-parse-as-library"])]
    ))
}
