import Metainfo
import TestSupport
import Testing

/// BEP 19 web seeds, the pure half: which URL and which bytes of it hold each piece (issue 21,
/// point 5), and the checks on a URL that comes from a torrent or the command line.
@Suite struct WebSeedMapTests {
    static func info(name: String, files: [FileEntry], multi: Bool, pieceLength: Int) throws -> TorrentInfo {
        let layout = try PieceLayout(pieceLength: pieceLength, fileLengths: files.map(\.length))
        return try TorrentInfo(name: name, files: files, isMultiFile: multi, privacy: .unspecified, pieceLength: pieceLength,
            pieceHashes: [UInt8](repeating: 0, count: 20 * layout.pieceCount))
    }

    @Test func singleFileURLIsTheFileUnlessItEndsInASlash() throws {
        let info = try Self.info(name: "disk image.qcow2", files: [FileEntry(path: ["disk image.qcow2"], length: 100)], multi: false, pieceLength: 32)
        let direct = try WebSeedMap(url: "http://origin.example:8080/images/v1.qcow2", info: info)
        #expect(direct.url.connectHost == "origin.example" && direct.url.port == 8080 && direct.url.hostHeader == "origin.example:8080")
        #expect(direct.requests(for: PieceIndex(0)) == [
            WebSeedRequest(fileIndex: 0, target: "/images/v1.qcow2", range: 0..<32, pieceOffset: 0, fileLength: 100),
        ])
        // The last piece is short: its range ends with the file.
        #expect(direct.requests(for: PieceIndex(3)).map(\.range) == [96..<100])
        #expect(direct.requests(for: PieceIndex(3)).map(\.rangeHeader) == ["bytes=96-99"])
        // A folder URL gets the name, percent-encoded.
        let folder = try WebSeedMap(url: "http://[::1]/images/", info: info)
        #expect(folder.url.connectHost == "::1" && folder.url.port == 80 && folder.url.hostHeader == "[::1]")
        #expect(folder.targets == ["/images/disk%20image.qcow2"])
        // A signed object-store URL keeps its query.
        let signed = try WebSeedMap(url: "http://store/b/k?X-Sig=ab%2Fc&e=1#frag", info: info)
        #expect(signed.targets == ["/b/k?X-Sig=ab%2Fc&e=1"])
        #expect(try WebSeedMap(url: "http://host", info: info).targets == ["/"])
    }

    @Test func multiFilePiecesAreOneRequestPerFileSegmentAndPaddingIsNeverFetched() throws {
        let files = [
            FileEntry(path: ["a.bin"], length: 10),
            FileEntry(path: ["empty"], length: 0),
            FileEntry(path: [".pad", "6"], length: 6, attributes: .padding),
            FileEntry(path: ["sub dir", "ü+%.img"], length: 20),
        ]
        let info = try Self.info(name: "set/1", files: files, multi: true, pieceLength: 12)
        for base in ["http://h/root", "http://h/root/"] {
            let map = try WebSeedMap(url: base, info: info)
            #expect(map.targets == ["/root/set%2F1/a.bin", "/root/set%2F1/empty", nil, "/root/set%2F1/sub%20dir/%C3%BC%2B%25.img"])
        }
        let map = try WebSeedMap(url: "http://h/root", info: info)
        // Piece 0 (bytes 0..<12): all of a.bin, then 2 bytes of padding (no request, left zero).
        #expect(map.requests(for: PieceIndex(0)) == [
            WebSeedRequest(fileIndex: 0, target: "/root/set%2F1/a.bin", range: 0..<10, pieceOffset: 0, fileLength: 10),
        ])
        // Piece 1 (12..<24): 4 bytes of padding, then the first 8 bytes of the image at offset 4.
        #expect(map.requests(for: PieceIndex(1)) == [
            WebSeedRequest(fileIndex: 3, target: "/root/set%2F1/sub%20dir/%C3%BC%2B%25.img", range: 0..<8, pieceOffset: 4, fileLength: 20),
        ])
        #expect(map.requests(for: PieceIndex(2)).map(\.range) == [8..<20])
        // A folder URL with a query has nowhere to put the paths.
        #expect(throws: WebSeedError.self) { try WebSeedMap(url: "http://h/root?sig=1", info: info) }
    }

    /// Every byte of every piece of random layouts is covered once, by the right file offset,
    /// except padding bytes, which no request covers.
    @Test func requestsCoverEachPieceExactlyOnceOverRandomLayouts() throws {
        var rng = SplitMix64(seed: 19)
        for round in 0..<200 {
            let count = Int.random(in: 1...6, using: &rng)
            let files = (0..<count).map { index in
                FileEntry(path: ["f\(index)"], length: Int64.random(in: 0...50, using: &rng), attributes: Bool.random(using: &rng) && index > 0 ? .padding : [])
            }
            guard files.contains(where: { $0.length > 0 }) else { continue }
            let info = try Self.info(name: "t\(round)", files: files, multi: true, pieceLength: Int.random(in: 1...23, using: &rng))
            let map = try WebSeedMap(url: "http://h/", info: info)
            for piece in info.layout.pieces {
                var covered = [Int](repeating: 0, count: info.layout.length(of: piece))
                for request in map.requests(for: piece) {
                    #expect(!files[request.fileIndex].isPadding && request.length > 0)
                    #expect(request.target == "/t\(round)/f\(request.fileIndex)")
                    // The request's first byte is the file's byte at the piece's offset.
                    let absolute = info.layout.offset(of: piece) + Int64(request.pieceOffset)
                    #expect(absolute == info.layout.fileOffsets[request.fileIndex] + request.range.lowerBound)
                    #expect(request.range.upperBound <= request.fileLength)
                    for k in request.pieceOffset..<(request.pieceOffset + request.length) { covered[k] += 1 }
                }
                for (k, times) in covered.enumerated() {
                    let absolute = info.layout.offset(of: piece) + Int64(k)
                    let file = (0..<count).last { info.layout.fileOffsets[$0] <= absolute && absolute < info.layout.fileOffsets[$0 + 1] }!
                    #expect(times == (files[file].isPadding ? 0 : 1), "piece \(piece) byte \(k)")
                }
            }
        }
    }

    /// A URL is anyone's text: what would split the request line, point elsewhere than a host, or
    /// need another protocol is refused with what is wrong, never sent. https:// is TLS on 443.
    @Test func hostileAndUnsupportedURLsAreRefused() {
        func problem(_ url: String) -> WebSeedError? {
            do { _ = try WebSeedURL(url); return nil } catch { return error }
        }
        let secure = try? WebSeedURL("https://origin/image")
        #expect(secure?.isTLS == true && secure?.port == 443 && secure?.hostHeader == "origin")
        #expect((try? WebSeedURL("https://origin:8443/image"))?.hostHeader == "origin:8443")
        #expect((try? WebSeedURL("http://origin/image"))?.isTLS == false)
        #expect(problem("ftp://origin/image") == .unsupportedScheme("ftp://origin/image", scheme: "ftp"))
        #expect(problem("ftp://origin/image")!.description.contains("ftp:// is not supported (http:// or https://)"))
        for bad in ["http://h/a b", "http://h/a\r\nX-Injected: 1", "http://h/\u{7f}", "http://h/ü", "http:/h/x", "http://", "http://:80/x",
                    "http://h:0/x", "http://h:65536/x", "http://h:8o/x", "http://u:p@h/x", "http://[::1/x", "//h/x", "h/x", "",
                    "http://h/" + String(repeating: "a", count: 5000)]
        {
            guard case .invalidURL(_, let why)? = problem(bad) else {
                Issue.record("accepted or misread: \(bad.prefix(40))")
                continue
            }
            #expect(!why.isEmpty)
        }
        // An error line stays one line and short, whatever the URL holds.
        let shown = WebSeedError.invalidURL("http://h/\n" + String(repeating: "x", count: 1000), problem: "p").description
        #expect(!shown.contains("\n") && shown.count < 300)
    }
}
