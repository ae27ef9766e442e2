// Inputs a hostile party controls around fetching and reuse: an HTTP redirect's Location (a web seed,
// a torrent URL or a tracker answers it), and old data scanned for pieces that moved in it.
#if VMSWARM_FUZZ
    import Crypto
    import Metainfo
    import Storage
    import TrackerClient

    /// A Location is resolved against one of a few bases, or refused with an error; what it
    /// resolves to is an http(s) URL without control characters, never from https down to http,
    /// and resolves to itself again (an absolute URL).
    func fuzzHTTPRedirect(_ input: [UInt8]) {
        let bases = ["http://seed.example:8080/images/disk.img", "https://objects.example/bucket/disk.img?sig=1", "http://[::1]:9/a/"]
        guard let first = input.first else { return }
        // The base by the first byte, the rest is the Location (lossy UTF-8, as a header is read).
        guard let base = try? WebSeedURL(bases[Int(first) % bases.count]) else {
            fuzzCheck(false, "a base did not parse")
            return
        }
        let location = String(decoding: input.dropFirst(), as: UTF8.self)
        guard let next = try? HTTPRedirect.resolve(location, from: base) else { return }
        // Schemes are case-insensitive (RFC 3986 3.1): "hTtps://" is https.
        let scheme = next.text.prefix(8).lowercased()
        fuzzCheck(scheme.hasPrefix("http://") || scheme.hasPrefix("https://"), "resolved to \(next.text)")
        fuzzCheck(next.isTLS == scheme.hasPrefix("https://"), "\(next.text) is TLS: \(next.isTLS)")
        fuzzCheck(!(base.isTLS && !next.isTLS), "https went down to http: \(next.text)")
        fuzzCheck(!next.text.utf8.contains { $0 < 0x20 || $0 == 0x7f }, "a control character in \(next.text)")
        fuzzCheck(next.text.utf8.count <= WebSeedURL.maxLength, "\(next.text.utf8.count) bytes")
        fuzzCheck((1...65_535).contains(next.port), "port \(next.port)")
        if let again = try? HTTPRedirect.resolve(next.text, from: base) {
            fuzzCheck(again == next, "\(next.text) resolved again to \(again.text)")
        }
    }

    /// Old data scanned for the pieces of a small "new image" cut from the input itself: every
    /// offset reported holds bytes whose SHA-1 is the piece's, each piece is reported once, and
    /// a piece whose bytes occur in the data is found (unless the strong checks ran out).
    func fuzzMovedData(_ input: [UInt8]) {
        guard input.count >= 4 else { return }
        let pieceLength = 16 + Int(input[0] % 48)
        let data = Array(input.dropFirst())
        // Pieces: windows of the data at offsets the input's bytes choose, and one of fresh bytes.
        var pieces: [[UInt8]] = []
        for step in 0..<3 where data.count >= pieceLength {
            let at = Int(data[step % data.count]) * 7 % (data.count - pieceLength + 1)
            pieces.append(Array(data[at..<(at + pieceLength)]))
        }
        pieces.append((0..<pieceLength).map { UInt8(truncatingIfNeeded: $0 &* 151 &+ 7) })
        let hashes = pieces.map { Array(Insecure.SHA1.hash(data: $0)) }
        let finder = MovedPieceFinder(pieceLength: pieceLength, weak: pieces.map { RollingChecksum($0).value },
            wanted: pieces.indices.map { PieceIndex($0) }, hash: { hashes[Int($0.value)] })
        let found = data.withUnsafeBytes { finder.scan($0) }
        for (piece, offset) in found.offsets {
            fuzzCheck(offset >= 0 && offset + pieceLength <= data.count, "piece \(piece) at \(offset) outside \(data.count) bytes")
            fuzzCheck(Array(Insecure.SHA1.hash(data: data[offset..<(offset + pieceLength)])) == hashes[Int(piece.value)],
                "piece \(piece) at \(offset) does not hash right")
        }
        if !found.gaveUp {
            for (index, piece) in pieces.enumerated() where found.offsets[PieceIndex(index)] == nil {
                let occurs = data.count >= pieceLength && (0...(data.count - pieceLength)).contains { Array(data[$0..<($0 + pieceLength)]) == piece }
                fuzzCheck(!occurs, "piece \(index) occurs in the data and was not found")
            }
        }
    }
#endif
