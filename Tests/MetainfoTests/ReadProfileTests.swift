import Bencode
import Metainfo
import Testing

/// Boot profiles (issue 20): the reads a VM made, as text (get --record-reads, tools/nbd-replay)
/// and in a torrent (create --boot-profile), refused with a located error when wrong.
@Suite struct ReadProfileTests {
    @Test func textIsReadWithCommentsAndContinuingReadsJoined() throws {
        let profile = try ReadProfile(text: "# a boot\n0 4096\n4096 4096\n\n1048576 512   # the kernel\r\n  0 4096\n")
        #expect(profile.reads == [0..<8192, 1_048_576..<1_049_088, 0..<4096])
        #expect(try ReadProfile(text: profile.text) == profile)
    }

    @Test(arguments: [
        ("0 4096\nx 1\n", 2), ("0\n", 1), ("1 2 3\n", 1), ("-1 10\n", 1), ("5 0\n", 1),
        ("9223372036854775807 1\n", 1), ("1 99999999999999999999\n", 1),
    ])
    func badLinesAreRefusedByNumber(text: String, line: Int) {
        #expect {
            try ReadProfile(text: text)
        } throws: { error in
            guard case .badLine(let number, _) = error as? ReadProfileError else { return false }
            return number == line
        }
    }

    @Test func atMostSoManyReads() throws {
        let many = (0...ReadProfile.maximumReads).map { "\($0 * 2) 1\n" }.joined()
        #expect(throws: ReadProfileError.tooManyReads(limit: ReadProfile.maximumReads)) { try ReadProfile(text: many) }
        // Reads that continue each other count once.
        let joined = (0...ReadProfile.maximumReads).map { "\($0) 1\n" }.joined()
        #expect(try ReadProfile(text: joined).reads == [0..<Int64(ReadProfile.maximumReads + 1)])
    }

    /// A torrent carries it outside `info`: adding it keeps the info-hash and every other field.
    @Test func aTorrentCarriesItWithItsInfoHashUnchanged() throws {
        let plain = HostileTorrentTests.torrent(info: HostileTorrentTests.validSingle, outer: ["signatures": .dictionary([Array("x".utf8): 1])])
        let profile = try ReadProfile(text: "16384 100\n0 10\n")
        let carried = try Metainfo.settingBootProfile(profile, inTorrent: plain)
        let before = try Metainfo(parsing: plain), after = try Metainfo(parsing: carried)
        #expect(after.infoHash == before.infoHash)
        #expect(after.bootProfile == profile && before.bootProfile == nil)
        #expect(try BencodeDecoder().decode(carried)["signatures"] != nil)
        #expect(try Metainfo(parsing: after.encoded()).bootProfile == profile)
        // Set again, it replaces the earlier one.
        let again = try Metainfo.settingBootProfile(try ReadProfile(text: "1 1\n"), inTorrent: carried)
        #expect(try Metainfo(parsing: again).bootProfile?.reads == [1..<2])
    }

    @Test(arguments: [
        BencodeValue.integer(3), .list([1]), .list([1, 0]), .list([-1, 5]), .list([.integer(.max), 2]), .list([1, "x"]),
    ])
    func aHostileProfileInATorrentIsRefused(value: BencodeValue) {
        let bytes = HostileTorrentTests.torrent(info: HostileTorrentTests.validSingle, outer: ["vmswarm-boot-profile": value])
        #expect {
            try Metainfo(parsing: bytes)
        } throws: { error in
            "\(error)".contains("vmswarm-boot-profile")
        }
    }
}
