import Bencode
import Foundation
import Metainfo
import TestSupport
import Testing

@Suite struct MagnetLinkTests {
    let hex = "366afd0de5edda59aa92f0eba8f1bf0f80dacbdd"
    var hash: InfoHash { InfoHash(hex: hex)! }

    @Test func readsHashNameTrackersWebSeedsAndPeers() throws {
        let link = try MagnetLink(parsing: "magnet:?xt=urn:btih:\(hex.uppercased())&dn=Ubuntu+24.04%20image"
            + "&tr=http%3A%2F%2Ft1.example%3A6969%2Fannounce&tr=udp://t2.example:80&tr=http%3A%2F%2Ft1.example%3A6969%2Fannounce"
            + "&ws=http%3A%2F%2Fmirror.example%2Fimg&x.pe=10.0.0.2:6881&x.pe=%5B::1%5D:51413&x.pe=seed.example:7000&so=0-3&unknown")
        #expect(link.infoHash == hash)
        #expect(link.name == "Ubuntu 24.04 image")
        // Repeats are kept once; order is the link's.
        #expect(link.trackers == ["http://t1.example:6969/announce", "udp://t2.example:80"])
        #expect(link.webSeeds == ["http://mirror.example/img"])
        #expect(link.peers == [.init(host: "10.0.0.2", port: 6881), .init(host: "::1", port: 51413), .init(host: "seed.example", port: 7000)])
    }

    @Test func readsBase32Hashes() throws {
        let base32 = Base32.encode(hash.bytes)
        #expect(base32.count == 32)
        #expect(try MagnetLink(parsing: "magnet:?xt=urn:btih:\(base32)").infoHash == hash)
        #expect(try MagnetLink(parsing: "magnet:?xt=urn:btih:\(base32.lowercased())").infoHash == hash)
    }

    @Test func roundTripsWithTheTorrentsOwnMagnet() throws {
        let url = fixturesURL.appendingPathComponent("torrents/image-bundle.mktorrent.torrent")
        var metainfo = try Metainfo(parsing: Data(contentsOf: url))
        metainfo.webSeeds = ["http://mirror.example/a b+c"]
        let link = try MagnetLink(parsing: metainfo.magnetURI)
        #expect(link == metainfo.magnetLink)
        #expect(link.name == "image-bundle")
        #expect(link.trackers == ["http://tracker.example:6969/announce"])
        #expect(link.webSeeds == ["http://mirror.example/a b+c"])
        var withPeers = link
        withPeers.peers = [.init(host: "127.0.0.1", port: 1), .init(host: "fe80::1", port: 2)]
        #expect(try MagnetLink(parsing: withPeers.uri) == withPeers)
    }

    @Test func refusesWhatIsNotAUsableLink() {
        func refusal(_ text: String) -> MagnetError? {
            do { _ = try MagnetLink(parsing: text); return nil } catch { return error }
        }
        #expect(refusal("http://example/x.torrent") == .notMagnet)
        #expect(refusal("magnet:xt=urn:btih:\(hex)") == .notMagnet)
        #expect(refusal("magnet:?dn=x") == .missingInfoHash)
        #expect(refusal("magnet:?xt=urn:btmh:1220abcd") == .unsupportedTopic("urn:btmh:1220abcd"))
        #expect(refusal("magnet:?xt=urn:btih:abc") == .invalidInfoHash("abc", offset: 11))
        #expect(refusal("magnet:?xt=urn:btih:\(String(repeating: "g", count: 40))") != nil)
        #expect(refusal("magnet:?xt=urn:btih:\(hex)&xt=urn:btih:\(String(repeating: "0", count: 40))")
            == .conflictingInfoHashes([hex, String(repeating: "0", count: 40)]))
        #expect(refusal("magnet:?xt=urn:btih:\(hex)&dn=a%2") == .badPercentEncoding(field: "dn", offset: 65))
        #expect(refusal("magnet:?xt=urn:btih:\(hex)&dn=a%zz") == .badPercentEncoding(field: "dn", offset: 65))
        #expect(refusal("magnet:?xt=urn:btih:\(hex)&dn=%FF%FE") == .invalidUTF8(field: "dn", offset: 64))
        #expect(refusal("magnet:?xt=urn:btih:\(hex)&dn=a%0Ab") == .controlCharacter(field: "dn", offset: 64))
        for peer in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", ":80", "[::1:80", "a b:80", "::1:80", "h:-1"] {
            #expect(refusal("magnet:?xt=urn:btih:\(hex)&x.pe=\(peer)") == .invalidPeer(peer, offset: 66), "\(peer)")
        }
    }

    @Test func boundsWhatAStrangersLinkHolds() {
        func refusal(_ text: String) -> MagnetError? {
            do { _ = try MagnetLink(parsing: text); return nil } catch { return error }
        }
        let base = "magnet:?xt=urn:btih:\(hex)"
        let long = base + "&dn=" + String(repeating: "a", count: MagnetLink.maxLength)
        #expect(refusal(long) == .tooLong(length: long.utf8.count, limit: MagnetLink.maxLength))
        #expect(refusal(base + String(repeating: "&x=1", count: MagnetLink.maxParameters)) == .tooManyParameters(count: MagnetLink.maxParameters + 1, limit: MagnetLink.maxParameters))
        let trackers = (0...MagnetLink.maxTrackers).map { "&tr=http://t\($0).example/a" }.joined()
        #expect(refusal(base + trackers) == .tooMany(field: "tr", limit: MagnetLink.maxTrackers))
        let peers = (0...MagnetLink.maxPeers).map { "&x.pe=10.0.0.1:\($0 + 1)" }.joined()
        #expect(refusal(base + peers) == .tooMany(field: "x.pe", limit: MagnetLink.maxPeers))
        // Percent-encoding triples the text: the decoded length is what is capped.
        let bigName = base + "&dn=" + String(repeating: "%41", count: MagnetLink.maxValueLength + 1)
        #expect(refusal(bigName) == .valueTooLong(field: "dn", limit: MagnetLink.maxValueLength, offset: 64))
        #expect(refusal(base + "&dn=" + String(repeating: "%41", count: MagnetLink.maxValueLength)) == nil)
    }

    @Test func fetchedInfoMakesTheTorrentOnlyIfItHashesToTheLink() throws {
        let url = fixturesURL.appendingPathComponent("torrents/image-bundle.mktorrent.torrent")
        let original = try Metainfo(parsing: Data(contentsOf: url))
        let link = try MagnetLink(parsing: original.magnetURI + "&tr=udp%3A%2F%2Fsecond.example%3A80")
        let made = try Metainfo(infoBytes: original.infoBytes, from: link)
        #expect(made.infoHash == original.infoHash)
        #expect(made.infoBytes == original.infoBytes)
        #expect(made.info.name == original.info.name)
        #expect(made.announceTiers == [["http://tracker.example:6969/announce"], ["udp://second.example:80"]])
        var forged = original.infoBytes
        forged[forged.count / 2] ^= 1
        #expect(throws: MetainfoError.self) { try Metainfo(infoBytes: forged, from: link) }
    }
}
