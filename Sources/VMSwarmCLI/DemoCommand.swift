import ArgumentParser
import Crypto
import Foundation
import Logging
import Metainfo
import Storage
import SwarmRuntime
import TorrentCreation
import Tracker
import Units

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "A whole swarm on this machine: tracker, seeder and leechers on loopback.",
        discussion: """
            Writes a generated image (random data with zero-filled stretches, like a real disk) into a \
            temporary folder, makes its torrent, starts a tracker and a seeder, then several leechers \
            that find each other through the tracker and trade pieces, with progress shown. At the end \
            every leecher's copy is compared with the original. Nothing leaves this machine.
            """)

    @Option(help: "Size of the sample image, such as 64M or 1G.")
    var size: String = "128M"

    @Option(help: "Number of leechers.")
    var leechers: Int = 3

    @Option(help: "Folder for the image, torrent and copies (default: a new temporary folder, removed afterwards).")
    var dir: String?

    func validate() throws {
        guard let bytes = Format.parseSize(size), bytes <= 64 << 30 else {
            throw ValidationError("--size must be a size such as 64M or 1G, at most 64G (got '\(size)').")
        }
        _ = bytes
        guard (1...20).contains(leechers) else { throw ValidationError("--leechers must be from 1 to 20.") }
    }

    func run() async throws {
        let bytes = Int64(Format.parseSize(size) ?? 0)
        let folder = dir ?? NSTemporaryDirectory() + "vmswarm-demo-\(getpid())"
        try CLIError.wrap("cannot create \(folder)") {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        defer { if dir == nil { try? FileManager.default.removeItem(atPath: folder) } }
        var logger = Logger(label: "vmswarm.demo")
        logger.logLevel = .error

        let image = folder + "/sample-vm.img"
        print("1/4 writing a \(Format.bytes(bytes)) sample image to \(image)")
        try SampleImage.write(to: image, length: bytes)

        print("2/4 starting a tracker on loopback and making the torrent")
        let tracker = try await CLIError.wrapAsync("cannot start the tracker") {
            try await TrackerServer.start(host: "127.0.0.1", port: 0, configuration: TrackerConfiguration(), logger: logger)
        }
        var options = TorrentCreator.Options(threads: ProcessInfo.processInfo.activeProcessorCount)
        options.announceTiers = [["http://127.0.0.1:\(tracker.port)/announce"]]
        options.createdBy = "vmswarm \(VMSwarm.version)"
        let metainfo = try CLIError.wrap { try TorrentCreator(options: options).create(image) }
        try CLIError.wrap("cannot write the torrent") {
            try Data(metainfo.encoded()).write(to: URL(fileURLWithPath: folder + "/sample-vm.img.torrent"))
        }
        print("    \(metainfo.info.pieceCount) pieces of \(Format.bytes(Int64(metainfo.info.pieceLength))), info-hash \(metainfo.infoHash.hex)")

        print("3/4 one seeder and \(leechers) leechers; they find each other through the tracker")
        var peerOptions = SwarmRuntime.Options()
        peerOptions.listenHost = "127.0.0.1"
        peerOptions.port = 0
        let seedStore = try CLIError.wrap { try PieceStore.seed(metainfo.info, data: image) }
        let seeder = try await CLIError.wrapAsync("cannot start the seeder") {
            try await SwarmRuntime.start(metainfo: metainfo, store: seedStore,
                have: Bitfield(pieceCount: metainfo.info.pieceCount, all: true), options: peerOptions, logger: logger)
        }
        var nodes: [SwarmRuntime] = []
        var paths: [String] = []
        for index in 1...leechers {
            let target = folder + "/leecher-\(index)"
            let store = try CLIError.wrap { try PieceStore.download(metainfo.info, into: target) }
            paths.append(store.finalPath)
            nodes.append(try await CLIError.wrapAsync("cannot start leecher \(index)") {
                try await SwarmRuntime.start(metainfo: metainfo, store: store,
                    have: Bitfield(pieceCount: metainfo.info.pieceCount), options: peerOptions, logger: logger)
            })
        }
        let started = Date()
        let progress = ProgressReporter(label: "swarm", total: bytes * Int64(leechers), style: .choose(json: false))
        var reached: Int64 = 0
        while true {
            var done: Int64 = 0
            var complete = 0
            for node in nodes {
                let status = await node.status()
                done += status.bytesHave
                if status.complete { complete += 1 }
            }
            let seederStatus = await seeder.status()
            reached = done
            progress.update(done: done, note: "\(complete)/\(leechers) complete, seeder sent \(Format.bytes(seederStatus.uploaded))")
            if complete == leechers || Date().timeIntervalSince(started) > 600 { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        progress.finish(done: reached)
        for node in nodes { try? await node.waitForCompletion() }
        let seederSent = await seeder.status().uploaded
        let seconds = Date().timeIntervalSince(started)
        for node in nodes { await node.shutdown() }
        await seeder.shutdown()
        await tracker.shutdown()

        print("4/4 comparing every copy with the original")
        let original = try CLIError.wrap { try SampleImage.sha256(of: image) }
        var failures = 0
        for path in paths {
            let copy = (try? SampleImage.sha256(of: path)) ?? "missing"
            print("    \(copy == original ? "ok  " : "FAIL") \(path)  sha256 \(copy.prefix(16))…")
            if copy != original { failures += 1 }
        }
        guard failures == 0 else { throw CLIError("\(failures) of \(leechers) copies differ from the original") }
        let total = Double(bytes) * Double(leechers)
        print(String(format: "ok: %d leechers got %@ each in %.1f s (%@ in all); the seeder sent %.2fx the image, the rest came from the leechers",
            leechers, Format.bytes(bytes), seconds, Format.rate(total / max(seconds, 0.001)), Double(seederSent) / Double(max(bytes, 1))))
        if dir == nil { print("(temporary folder removed; pass --dir to keep the image, torrent and copies)") }
    }
}

/// A reproducible stand-in for a VM disk: pseudo-random data with zero-filled stretches.
enum SampleImage {
    static func sha256(of path: String) throws -> String {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func write(to path: String, length: Int64) throws(CLIError) {
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let handle = FileHandle(forWritingAtPath: path)
        else { throw CLIError("cannot create \(path)") }
        defer { try? handle.close() }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let chunk = 1 << 20
        var buffer = [UInt64](repeating: 0, count: chunk / 8)
        var written: Int64 = 0
        var chunkIndex = 0
        while written < length {
            let zeroChunk = chunkIndex % 4 == 3  // a quarter of the disk is empty, as on real images
            for index in buffer.indices {
                if zeroChunk {
                    buffer[index] = 0
                } else {
                    state ^= state << 13
                    state ^= state >> 7
                    state ^= state << 17
                    buffer[index] = state
                }
            }
            let count = Int(min(Int64(chunk), length - written))
            let data = buffer.withUnsafeBytes { Data($0.prefix(count)) }
            try CLIError.wrap("cannot write \(path)") { try handle.write(contentsOf: data) }
            written += Int64(count)
            chunkIndex += 1
        }
    }
}
