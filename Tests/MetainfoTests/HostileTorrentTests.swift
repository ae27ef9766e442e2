import Bencode
import Foundation
import Metainfo
import TestSupport
import Testing

/// Torrents built field by field, each wrong in one way; every one must give a clear, located error.
@Suite struct HostileTorrentTests {
    static func key(_ text: String) -> [UInt8] { Array(text.utf8) }

    static func torrent(info: [String: BencodeValue], outer: [String: BencodeValue] = [:]) -> [UInt8] {
        var root: [[UInt8]: BencodeValue] = [key("info"): .dictionary(Dictionary(uniqueKeysWithValues: info.map { (key($0), $1) }))]
        for (name, value) in outer { root[key(name)] = value }
        return BencodeValue.dictionary(root).encoded()
    }

    static let validSingle: [String: BencodeValue] = [
        "name": "disk.img", "piece length": 16384, "length": 20000, "pieces": .bytes([UInt8](repeating: 7, count: 40)),
    ]

    static func multi(_ files: [BencodeValue], pieces: Int = 1) -> [String: BencodeValue] {
        ["name": "bundle", "piece length": 16384, "files": .list(files), "pieces": .bytes([UInt8](repeating: 1, count: 20 * pieces))]
    }

    static func file(_ path: [BencodeValue], _ length: Int64) -> BencodeValue {
        .dictionary([key("path"): .list(path), key("length"): .integer(length)])
    }

    func error(_ bytes: [UInt8]) -> MetainfoError? {
        do {
            _ = try Metainfo(parsing: bytes)
            return nil
        } catch {
            return error
        }
    }

    @Test func validBaselineParses() throws {
        let metainfo = try Metainfo(parsing: Self.torrent(info: Self.validSingle))
        #expect(metainfo.info.pieceCount == 2)
        #expect(metainfo.info.layout.length(of: PieceIndex(1)) == 20000 - 16384)
    }

    @Test func piecesNotAMultipleOf20() {
        var info = Self.validSingle
        info["pieces"] = .bytes([UInt8](repeating: 0, count: 41))
        let failure = error(Self.torrent(info: info))
        guard case .invalidValue(let field, _, let offset) = failure else {
            Issue.record("got \(String(describing: failure))")
            return
        }
        #expect(field == "info.pieces")
        #expect(offset > 0)
        #expect(failure!.description.contains("not a multiple of 20"))
    }

    @Test func pieceCountMustMatchLength() {
        var info = Self.validSingle
        info["pieces"] = .bytes([UInt8](repeating: 0, count: 60))
        #expect(error(Self.torrent(info: info))?.description.contains("holds 3 piece hashes but the files need 2") == true)
    }

    @Test func fileLengthsOverflowingInt64() {
        let info = Self.multi([Self.file(["a"], .max), Self.file(["b"], .max)])
        let failure = error(Self.torrent(info: info))
        guard case .invalidValue(let field, let problem, _) = failure else {
            Issue.record("got \(String(describing: failure))")
            return
        }
        #expect(field == "info.files[1].length")
        #expect(problem.contains("overflow"))
    }

    @Test func negativeLengths() {
        var info = Self.validSingle
        info["length"] = -1
        #expect(error(Self.torrent(info: info))?.description.contains("'info.length' is negative") == true)
        let multi = Self.multi([Self.file(["a"], -5)])
        #expect(error(Self.torrent(info: multi))?.description.contains("'info.files[0].length' is negative") == true)
    }

    @Test(arguments: ["..", ".", "", "a/b", "/etc", "a\\b", "x\0y"])
    func pathComponentsThatEscapeAreRefused(_ component: String) {
        let multi = Self.multi([Self.file(["ok", .string(component)], 10)])
        guard case .unsafePath(let field, let shown, _) = error(Self.torrent(info: multi)) else {
            Issue.record("'\(component)' was not refused as a path component")
            return
        }
        #expect(field == "info.files[0].path[1]")
        #expect(shown == component)
        var single = Self.validSingle
        single["name"] = .string(component)
        guard case .unsafePath(let nameField, _, _) = error(Self.torrent(info: single)) else {
            Issue.record("'\(component)' was not refused as a name")
            return
        }
        #expect(nameField == "info.name")
    }

    @Test func nonUTF8NamesAreRefusedUnlessAUTF8VariantExists() throws {
        var info = Self.validSingle
        info["name"] = .bytes([0x64, 0xFF, 0xFE, 0x2E, 0x69])
        #expect(error(Self.torrent(info: info)) == .invalidUTF8(field: "info.name", offset: error(Self.torrent(info: info))?.offset ?? -1))
        info["name.utf-8"] = "disk.img"
        #expect(try Metainfo(parsing: Self.torrent(info: info)).info.name == "disk.img")
        let multi = Self.multi([Self.file([.bytes([0xC3, 0x28])], 10)])
        #expect(error(Self.torrent(info: multi))?.description.contains("'info.files[0].path[0]' is not valid UTF-8") == true)
    }

    @Test func wrongTypesAndMissingFields() {
        #expect(error(BencodeValue.list([]).encoded())?.description == "invalid torrent at byte 0: 'torrent' should be a dictionary but is list")
        #expect(error(BencodeValue.dictionary([:]).encoded()) == .missingField("info", dictionaryOffset: 0))
        var info = Self.validSingle
        info["piece length"] = "big"
        #expect(error(Self.torrent(info: info))?.description.contains("'info.piece length' should be an integer but is byte string") == true)
        info = Self.validSingle
        info.removeValue(forKey: "length")
        #expect(error(Self.torrent(info: info))?.description.contains("required field 'info.length' is missing") == true)
        info = Self.validSingle
        info["files"] = .list([])
        #expect(error(Self.torrent(info: info))?.description.contains("both 'length' and 'files'") == true)
        #expect(error(Self.torrent(info: Self.multi([], pieces: 0)))?.description.contains("'info.files' is empty") == true)
        #expect(error(Self.torrent(info: Self.multi([Self.file([], 1)])))?.description.contains("'info.files[0].path' is empty") == true)
    }

    @Test(arguments: [Int64(0), -16384, Int64(PieceLayout.maxPieceLength) + 1, .max])
    func pieceLengthOutOfRange(_ length: Int64) {
        var info = Self.validSingle
        info["piece length"] = .integer(length)
        #expect(error(Self.torrent(info: info))?.description.contains("'info.piece length' is \(length), outside") == true)
    }

    /// Issue 15: these used to kill the process with an arithmetic-overflow trap in `PieceLayout.init`
    /// (`total + pieceLength - 1`) or in the hash-count check (`pieceCount * 20`).
    static let hugeLengths: [(Int64, Int64)] = [
        (.max, 16384), (.max - 1, Int64(PieceLayout.maxPieceLength)), (1_000_000_000_000_000_000, 1),
        (Int64(PieceLayout.maxPieceCount) + 1, 1),
    ]

    @Test(arguments: hugeLengths)
    func hugeLengthsAreRefusedNotTrapped(_ length: Int64, _ pieceLength: Int64) {
        var info = Self.validSingle
        info["length"] = .integer(length)
        info["piece length"] = .integer(pieceLength)
        let bytes = Self.torrent(info: info)
        let failure = error(bytes)
        guard case .invalidValue(let field, let problem, let offset) = failure else {
            Issue.record("got \(String(describing: failure))")
            return
        }
        #expect(field == "info.length")
        #expect(problem.contains("more than \(PieceLayout.maxPieceCount)"))
        // The offset is that of the integer: `i<length>e`.
        #expect(Array(bytes[offset..<(offset + 1 + String(length).count)]) == Array("i\(length)".utf8))
    }

    @Test func hugeMultiFileTotalsAreRefusedNotTrapped() {
        var info = Self.multi([Self.file(["a"], .max / 2), Self.file(["b"], .max / 2), Self.file(["c"], 1)])
        info["piece length"] = 16384
        guard case .invalidValue(let field, let problem, _) = error(Self.torrent(info: info)) else {
            Issue.record("not refused")
            return
        }
        #expect(field == "info.files")
        #expect(problem.contains("pieces, more than"))
    }

    /// Every integer of every real fixture torrent, replaced in turn by each extreme value: the parse
    /// may accept or refuse, but never trap (on the old code `length` = Int64.max trapped), and a
    /// refusal names a byte inside the file.
    @Test func extremeIntegersInRealTorrentsNeverTrap() throws {
        func integerRanges(_ node: BencodeNode) -> [Range<Int>] {
            switch node.content {
            case .integer: [node.range]
            case .bytes: []
            case .list(let items): items.flatMap(integerRanges)
            case .dictionary(let entries): entries.flatMap { integerRanges($0.value) }
            }
        }
        let extremes: [Int64] = [.max, .min, .max - 1, 0, -1, 1 << 31, 1 << 32, 1_000_000_000_000_000_000]
        var parses = 0
        for fixture in FixtureTorrent.all {
            let bytes = try [UInt8](Data(contentsOf: fixture.url))
            let ranges = integerRanges(try BencodeDecoder(mode: .lenient).decode(bytes))
            #expect(!ranges.isEmpty)
            for range in ranges {
                for value in extremes {
                    let mutated = Array(bytes[..<range.lowerBound]) + Array("i\(value)e".utf8) + Array(bytes[range.upperBound...])
                    do {
                        _ = try Metainfo(parsing: mutated)
                    } catch {
                        #expect(error.offset >= 0 && error.offset < mutated.count, "\(fixture): \(error)")
                    }
                    parses += 1
                }
            }
        }
        #expect(parses > 500)
    }

    @Test func pieceCountAtTheLimitIsAccepted() throws {
        let layout = try PieceLayout(pieceLength: 1, fileLengths: [Int64(PieceLayout.maxPieceCount)])
        #expect(layout.pieceCount == PieceLayout.maxPieceCount)
        #expect(throws: PieceLayout.Problem.tooManyPieces(count: Int64(PieceLayout.maxPieceCount) + 1, limit: PieceLayout.maxPieceCount)) {
            try PieceLayout(pieceLength: 1, fileLengths: [Int64(PieceLayout.maxPieceCount), 1])
        }
        // The largest total a layout can hold: every offset and length computed from it fits.
        let largest = try PieceLayout(
            pieceLength: PieceLayout.maxPieceLength, fileLengths: [Int64(PieceLayout.maxPieceCount) * Int64(PieceLayout.maxPieceLength)])
        let last = PieceIndex(largest.pieceCount - 1)
        #expect(largest.byteRange(of: last).upperBound == largest.totalLength)
        #expect(largest.pieces(ofFile: 0) == 0..<PieceLayout.maxPieceCount)
    }

    /// Issue 15: two files on one place in the download folder were accepted (and the later one
    /// overwrote, or failed to create, the earlier).
    static let conflicts: [([[String]], Int, Int)] = [
        ([["a"], ["a"]], 1, 0),
        ([["dir", "x"], ["other"], ["dir", "x"]], 2, 0),
        ([["a"], ["a", "b"]], 1, 0),  // a file where a folder is needed
        ([["a", "b", "c"], ["a", "b"]], 1, 0),  // a folder where a file is needed
        ([["x"], ["e\u{301}"], ["\u{E9}"]], 2, 1),  // one name in two Unicode spellings
    ]

    @Test(arguments: conflicts)
    func conflictingPathsAreRefused(_ paths: [[String]], _ later: Int, _ earlier: Int) {
        let files = paths.map { Self.file($0.map(BencodeValue.string), 10) }
        let bytes = Self.torrent(info: Self.multi(files))
        guard case .conflictingPath(let field, let path, let earlierField, let offset) = error(bytes) else {
            Issue.record("\(paths) not refused: \(String(describing: error(bytes)))")
            return
        }
        #expect(field == "info.files[\(later)].path")
        #expect(path == paths[later].joined(separator: "/"))
        #expect(earlierField == "info.files[\(earlier)].path")
        #expect(bytes[offset] == UInt8(ascii: "l"))  // the path list
        #expect(error(bytes)!.description.contains("collides with 'info.files[\(earlier)].path'"))
    }

    @Test func similarButDistinctPathsAndPaddingFilesAreAccepted() throws {
        let padding: BencodeValue = .dictionary([
            Self.key("path"): [".pad", "100"], Self.key("length"): 100, Self.key("attr"): "p",
        ])
        let files = [Self.file(["a", "b"], 10), Self.file(["a", "c"], 10), Self.file(["A"], 10), Self.file(["ab"], 10),
            padding, Self.file(["b"], 10), padding]
        var info = Self.multi(files)
        info["piece length"] = .integer(1 << 20)
        let metainfo = try Metainfo(parsing: Self.torrent(info: info))
        #expect(metainfo.info.files.count == 7)
    }

    @Test func v2OnlyTorrentsAreNamedAsSuch() {
        let info: [String: BencodeValue] = ["name": "x", "piece length": 16384, "meta version": 2, "file tree": .dictionary([:])]
        guard case .unsupported(let what, _) = error(Self.torrent(info: info)) else {
            Issue.record("v2-only torrent not reported as unsupported")
            return
        }
        #expect(what.contains("v2-only"))
    }

    @Test func outerFieldsAreReadLeniently() throws {
        let bytes = Self.torrent(info: Self.validSingle, outer: [
            "announce": "http://a/announce",
            "announce-list": [["http://a/announce", "http://b/announce"], [], ["udp://c:80"]],
            "url-list": "http://seed/disk.img",
            "comment": .bytes([0x68, 0x69, 0xFF]),
            "creation date": 1_700_000_000,
        ])
        let metainfo = try Metainfo(parsing: bytes)
        #expect(metainfo.announceTiers == [["http://a/announce", "http://b/announce"], ["udp://c:80"]])
        #expect(metainfo.webSeeds == ["http://seed/disk.img"])
        #expect(metainfo.comment == "hi\u{FFFD}")
        #expect(metainfo.creationDate == 1_700_000_000)
    }

    @Test func privateFlagIsThreeWay() throws {
        var info = Self.validSingle
        #expect(try Metainfo(parsing: Self.torrent(info: info)).info.privacy == .unspecified)
        info["private"] = 0
        #expect(try Metainfo(parsing: Self.torrent(info: info)).info.privacy == .explicitlyPublic)
        info["private"] = 1
        let metainfo = try Metainfo(parsing: Self.torrent(info: info))
        #expect(metainfo.info.isPrivate)
        // Writing the parsed info back yields the same bytes, hence the same hash.
        #expect(metainfo.info.encoded() == metainfo.infoBytes)
    }

    @Test func infoHashForms() throws {
        let hash = try #require(InfoHash(hex: "0123456789ABCDEFfedcba98765432100011eeff"))
        #expect(hash.hex == "0123456789abcdeffedcba98765432100011eeff")
        #expect(hash.percentEncoded == "%01%23Eg%89%AB%CD%EF%FE%DC%BA%98vT2%10%00%11%EE%FF")
        #expect(InfoHash(hex: "0123") == nil)
        #expect(InfoHash(hex: String(repeating: "g", count: 40)) == nil)
        #expect(InfoHash(bytes: [UInt8](repeating: 0, count: 19)) == nil)
    }
}
