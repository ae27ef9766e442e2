// swift-tools-version:6.1
// vmswarm: a BitTorrent-compatible swarm node for distributing VM images.
import PackageDescription

let package = Package(
    name: "vmswarm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vmswarm", targets: ["vmswarm"]),
        .library(name: "Bencode", targets: ["Bencode"]),
        .library(name: "Metainfo", targets: ["Metainfo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // Pure bencode codec: bytes in, values (with byte spans) out, and back.
        .target(name: "Bencode"),
        // Torrent metainfo as types; the one owner of piece/file arithmetic.
        .target(name: "Metainfo", dependencies: [
            "Bencode",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Positional I/O over a torrent's file layout.
        .target(name: "Storage", dependencies: ["Metainfo"]),
        // Building torrents from files: directory walk, parallel piece hashing.
        .target(name: "TorrentCreation", dependencies: [
            "Metainfo", "Storage",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The only place that parses flags and prints to a terminal.
        .target(name: "VMSwarmCLI", dependencies: [
            "Bencode", "Metainfo", "Storage", "TorrentCreation",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "vmswarm", dependencies: ["VMSwarmCLI"]),

        // Fixture lookup, deterministic randomness, temporary folders, process running.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "BencodeTests", dependencies: ["Bencode", "TestSupport"]),
        .testTarget(name: "MetainfoTests", dependencies: ["Metainfo", "Bencode", "TestSupport"]),
        .testTarget(name: "TorrentCreationTests", dependencies: [
            "TorrentCreation", "Metainfo", "Storage", "TestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Runs the built `vmswarm` binary and real BitTorrent tools; kept apart so unit tests stay fast.
        .testTarget(name: "CLITests", dependencies: ["vmswarm", "Metainfo", "Bencode", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
