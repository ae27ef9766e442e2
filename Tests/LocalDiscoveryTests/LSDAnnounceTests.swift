import Metainfo
import Testing

@testable import LocalDiscovery

@Suite struct LSDAnnounceTests {
    let hash = InfoHash(hex: "0123456789abcdef0123456789abcdef01234567")!

    /// What libtorrent sends (src/lsd.cpp), byte for byte but for the cookie.
    @Test func anAnnounceIsBEP14sMessage() throws {
        let announce = LSDAnnounce(port: 6881, infoHashes: [hash], cookie: "5a1b2c3d")
        #expect(String(decoding: announce.encoded(), as: UTF8.self) == """
            BT-SEARCH * HTTP/1.1\r
            Host: 239.192.152.143:6771\r
            Port: 6881\r
            Infohash: 0123456789abcdef0123456789abcdef01234567\r
            cookie: 5a1b2c3d\r
            \r
            \r

            """)
        #expect(try LSDAnnounce(decoding: announce.encoded()) == announce)
    }

    @Test func headersAreReadAsClientsWriteThem() throws {
        let upper = "BT-SEARCH * HTTP/1.1\nHOST: 239.192.152.143:6771\nPORT:  51413 \ninfohash: 0123456789ABCDEF0123456789ABCDEF01234567\nInfohash: 0123456789abcdef0123456789abcdef01234567\nX-Other: 1\n\n"
        let read = try LSDAnnounce(decoding: Array(upper.utf8))
        #expect(read == LSDAnnounce(port: 51413, infoHashes: [hash], cookie: nil), "one hash, read case-insensitively, without duplicates")
    }

    @Test func hostileDatagramsAreTypedRefusals() {
        func decode(_ text: String) -> LSDError? {
            do { _ = try LSDAnnounce(decoding: Array(text.utf8)); return nil } catch { return error }
        }
        let start = "BT-SEARCH * HTTP/1.1\r\n"
        let hashLine = "Infohash: \(hash.hex)\r\n"
        #expect(decode("M-SEARCH * HTTP/1.1\r\n\r\n") == .notBTSearch)
        #expect(decode(start + hashLine + "\r\n") == .missingPort)
        #expect(decode(start + "Port: 0\r\n" + hashLine) == .badPort("0"))
        #expect(decode(start + "Port: 70000\r\n" + hashLine) == .badPort("70000"))
        #expect(decode(start + "Port: 1\r\nInfohash: 12zz\r\n") == .badInfoHash("12zz"))
        #expect(decode(start + "Port: 1\r\n\r\n") == .noInfoHash)
        #expect(decode(start + String(repeating: "a: b\r\n", count: 40)) == .tooManyLines(42))
        #expect(decode(String(repeating: "x", count: 1401)) == .tooLong(1401))
        #expect((try? LSDAnnounce(decoding: [0x42, 0xFF])) == nil)
        // Headers after the blank line are not headers.
        #expect(decode(start + hashLine + "\r\nPort: 5\r\n") == .missingPort)
        // A cookie that is too long or not a token is dropped, not trusted.
        #expect((try? LSDAnnounce(decoding: Array((start + "Port: 1\r\n" + hashLine + "cookie: " + String(repeating: "c", count: 65) + "\r\n").utf8)))?.cookie == nil)
    }

    @Test func eachAddressIsActedOnOnceAMinuteWithinABoundedMemory() {
        var filter = LSDPeerFilter()
        let peer = PeerAddress(host: "10.0.0.2", port: 6881)!
        var admitted = [0.0, 59, 61].map { filter.admit(peer, now: $0) }
        #expect(admitted == [true, false, true])
        for n in 0..<(LSDPeerFilter.capacity - 1) { _ = filter.admit(PeerAddress(ip: [10, 1, UInt8(n >> 8), UInt8(n & 0xFF)], port: 1)!, now: 100) }
        let late = PeerAddress(host: "10.9.9.9", port: 1)!
        admitted = [101.0, 200].map { filter.admit(late, now: $0) }
        // Full: a flood from new addresses is not remembered, until the old ones are a minute old.
        #expect(admitted == [false, true])
    }
}
