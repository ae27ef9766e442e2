import Bencode
import Foundation
import Metainfo
import TestSupport
import Testing

@Suite struct FixtureTorrentTests {
    @Test func fixturesArePresent() {
        #expect(FixtureTorrent.all.count >= 16)
        #expect(Set(FixtureTorrent.all.map(\.maker)) == ["mktorrent", "transmission", "libtorrent", "ctorrent"])
    }

    @Test(arguments: FixtureTorrent.all)
    func readsEveryToolsTorrentWithItsInfoHash(_ fixture: FixtureTorrent) throws {
        let bytes = try [UInt8](Data(contentsOf: fixture.url))
        let metainfo = try Metainfo(parsing: bytes)
        #expect(metainfo.infoHash.hex == fixture.infoHash, "as reported by \(fixture.reportedBy)")
        #expect(metainfo.info.name == fixture.name)
        #expect(metainfo.info.pieceLength == fixture.pieceLength)
        #expect(metainfo.info.isPrivate == fixture.isPrivate)
        if let tracker = fixture.tracker { #expect(metainfo.trackers == [tracker]) }
        // Re-encoding keeps the info bytes, hence the hash, whatever happens to the outer fields.
        var edited = metainfo
        edited.announceTiers = [["http://other.example/announce"], ["udp://x.example:1"]]
        edited.comment = "edited"
        let reread = try Metainfo(parsing: edited.encoded(), mode: .strict)
        #expect(reread.infoHash == metainfo.infoHash)
        #expect(reread.announceTiers == edited.announceTiers)
        #expect(reread.comment == "edited")
    }

    @Test func payloadSizesMatchTheTorrents() throws {
        let single = try Metainfo(parsing: Data(contentsOf: fixturesURL.appendingPathComponent("torrents/vm-small.mktorrent.torrent")))
        #expect(single.info.totalLength == 300_003)
        #expect(single.info.pieceCount == 5)
        #expect(!single.info.isMultiFile)
        let bundle = try Metainfo(parsing: Data(contentsOf: fixturesURL.appendingPathComponent("torrents/image-bundle.mktorrent.torrent")))
        #expect(bundle.info.isMultiFile)
        #expect(bundle.info.files.map { $0.path.joined(separator: "/") } == [
            "B-layer.bin", "a-layer.bin", "config/nested/seed.iso", "config/vm.xml", "disk.qcow2", "ünïcode-notes.txt",
        ])
    }

    @Test func readsHybridTorrentsWithPaddingFiles() throws {
        let url = fixturesURL.appendingPathComponent("torrents/image-bundle.libtorrent-hybrid.torrent")
        let metainfo = try Metainfo(parsing: Data(contentsOf: url))
        let padding = metainfo.info.files.filter(\.isPadding)
        #expect(!padding.isEmpty)
        #expect(padding.allSatisfy { $0.path.first == ".pad" })
        let real = metainfo.info.files.filter { !$0.isPadding }.map(\.length).reduce(0, +)
        #expect(real == 16_384 + 5 + 33_333 + 1_234 + 150_001 + 100)
        // Padding aligns every real file after the first to a piece boundary.
        var offset: Int64 = 0
        for file in metainfo.info.files {
            if !file.isPadding { #expect(offset % Int64(metainfo.info.pieceLength) == 0) }
            offset += file.length
        }
    }

    @Test func truncationAtEveryOffsetIsACleanError() throws {
        for name in ["vm-small.transmission.torrent", "image-bundle.libtorrent-hybrid.torrent"] {
            let bytes = try [UInt8](Data(contentsOf: fixturesURL.appendingPathComponent("torrents/\(name)")))
            for cut in 0..<bytes.count {
                do {
                    _ = try Metainfo(parsing: bytes[0..<cut])
                    Issue.record("a torrent cut at byte \(cut) of \(bytes.count) was accepted")
                } catch {
                    guard case .malformed(let cause) = error else {
                        Issue.record("unexpected \(error) at cut \(cut)")
                        continue
                    }
                    #expect(cause.offset <= cut)
                }
            }
        }
    }

    @Test func magnetCarriesHashNameAndTrackers() throws {
        let url = fixturesURL.appendingPathComponent("torrents/image-bundle.mktorrent.torrent")
        let metainfo = try Metainfo(parsing: Data(contentsOf: url))
        #expect(metainfo.magnetURI == "magnet:?xt=urn:btih:366afd0de5edda59aa92f0eba8f1bf0f80dacbdd&dn=image-bundle"
            + "&tr=http%3A%2F%2Ftracker.example%3A6969%2Fannounce")
    }
}
