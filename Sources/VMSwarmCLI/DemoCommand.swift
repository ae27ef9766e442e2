import ArgumentParser
import Foundation
import Metainfo
import TorrentCreation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Make a sample VM image, its torrent, and show it: vmswarm end to end on this machine.",
        discussion: """
            Writes a generated image (random data with zero-filled stretches, like a real disk) into a \
            temporary folder, makes its torrent with progress shown, reads the torrent back and checks \
            that its info-hash and piece hashes match the image. Nothing leaves this machine.
            """)

    @Option(help: "Size of the sample image, such as 64M or 1G.")
    var size: String = "128M"

    @Option(help: "Folder for the image and torrent (default: a new temporary folder, removed afterwards).")
    var dir: String?

    func validate() throws {
        guard let bytes = Format.parseSize(size), bytes <= 64 << 30 else {
            throw ValidationError("--size must be a size such as 64M or 1G, at most 64G (got '\(size)').")
        }
        _ = bytes
    }

    func run() throws {
        let bytes = Int64(Format.parseSize(size) ?? 0)
        let folder = dir ?? NSTemporaryDirectory() + "vmswarm-demo-\(getpid())"
        try CLIError.wrap("cannot create \(folder)") {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        defer { if dir == nil { try? FileManager.default.removeItem(atPath: folder) } }

        let image = folder + "/sample-vm.img"
        print("1/3 writing a \(Format.bytes(bytes)) sample image to \(image)")
        try SampleImage.write(to: image, length: bytes)

        print("2/3 making its torrent (piece size auto, every core)")
        let torrent = folder + "/sample-vm.img.torrent"
        var options = TorrentCreator.Options(threads: ProcessInfo.processInfo.activeProcessorCount)
        options.announceTiers = [["http://127.0.0.1:6969/announce"]]
        options.createdBy = "vmswarm \(VMSwarm.version)"
        let creator = TorrentCreator(options: options)
        let progress = ProgressReporter(label: "hashing", total: bytes, style: .choose(json: false))
        let started = Date()
        let metainfo = try CLIError.wrap { try creator.create(image) { progress.update(done: $0) } }
        progress.finish()
        let seconds = Date().timeIntervalSince(started)
        try CLIError.wrap("cannot write \(torrent)") { try Data(metainfo.encoded()).write(to: URL(fileURLWithPath: torrent)) }
        print("    hashed \(Format.bytes(bytes)) in \(String(format: "%.2f", seconds)) s "
            + "(\(Format.rate(seconds > 0 ? Double(bytes) / seconds : 0)))")

        print("3/3 reading the torrent back")
        let reread = try CLIError.wrap { try Metainfo(parsing: try InspectCommand.readTorrent(torrent), mode: .strict) }
        guard reread.infoHash == metainfo.infoHash, reread.info.pieceHashes == metainfo.info.pieceHashes else {
            throw CLIError("the torrent read back differs from the one written")
        }
        print(TorrentReport(reread, file: torrent).summary)
        print("ok: torrent written, read back strictly, info-hash \(reread.infoHash.hex)")
        if dir == nil { print("(temporary folder removed; pass --dir to keep the image and torrent)") }
    }
}

/// A reproducible stand-in for a VM disk: pseudo-random data with zero-filled stretches.
enum SampleImage {
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
