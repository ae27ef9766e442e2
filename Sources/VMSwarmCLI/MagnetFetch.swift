import Foundation
import Logging
import Metainfo
import Sealing
import SwarmRuntime
import TrackerClient

/// `get magnet:?…`: the info dictionary is fetched from peers (BEP 9) before anything else, and
/// the download then goes on exactly as with the .torrent it makes.
///
/// The .torrent is written beside the download (NAME.torrent in the output folder, unless a file of
/// that name is there) so the node can `seed` it later without the link.
func fetchMagnet(_ magnet: MagnetLink, into output: String, peer: PeerOptions, trust: HTTPTrust?, logger: Logger) async throws(CLIError) -> (bytes: [UInt8], metainfo: Metainfo) {
    var options = MetadataFetcher.Options()
    // A site's node asks its site's trackers and dials only inside its networks, before the
    // download as during it (docs/pool.md).
    options.trackers = peer.siteTrackers.isEmpty ? magnet.trackers : peer.siteTrackers
    options.peerNetworks = peer.siteNetworks.isEmpty ? nil : peer.siteNetworkValues
    options.peers = magnet.peers.map { ($0.host, Int($0.port)) } + peer.runtimeOptions().peers
    options.bindAddress = peer.bind
    options.trust = trust
    options.announcePort = UInt16(clamping: peer.listen.flatMap(HostPort.init)?.port ?? peer.port)
    if !peer.json {
        let name = magnet.name.map { " (\($0))" } ?? ""
        FileHandle.standardError.write(Data("fetching the info dictionary of \(magnet.infoHash.hex)\(name) from peers\n".utf8))
    }
    let infoBytes: [UInt8]
    do {
        infoBytes = try await MetadataFetcher.fetch(magnet, options: options, logger: logger)
    } catch {
        throw CLIError("magnet \(magnet.infoHash.hex): \(error)")
    }
    let metainfo = try CLIError.wrap("magnet \(magnet.infoHash.hex)") { try Metainfo(infoBytes: infoBytes, from: magnet) }
    // A sealed image's recipients (the wrapped keys) and the publisher's signature sit outside the
    // info dictionary, so a magnet link cannot carry them: nothing could open or authenticate it.
    guard !SealedTorrent.isSealed(metainfo) else {
        throw CLIError("magnet \(magnet.infoHash.hex) is a sealed image: its recipients and signature are not in the info dictionary a magnet link fetches; get it with its .torrent file")
    }
    let bytes = metainfo.encoded()
    try CLIError.wrap("cannot create \(output)") { try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true) }
    let path = (output as NSString).appendingPathComponent("\(metainfo.info.name).torrent")
    if !FileManager.default.fileExists(atPath: path) {
        try CLIError.wrap("cannot write \(path)") { try Data(bytes).write(to: URL(fileURLWithPath: path)) }
        if !peer.json { FileHandle.standardError.write(Data("wrote \(path)\n".utf8)) }
    }
    return (bytes, metainfo)
}
