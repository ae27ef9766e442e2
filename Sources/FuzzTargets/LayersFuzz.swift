// Layered images (docs/reuse.md): the qcow2 header parser that follows backing chains, and the
// content store's index, which a node reads back from its disk and must never trust.
#if VMSWARM_FUZZ
    import Storage
    import TorrentCreation

    /// A parsed qcow2 header names a backing file inside the first cluster and at most 1,023 bytes
    /// long; a parsed index re-encodes to text that parses to the same index, within its bounds.
    func fuzzLayers(_ input: [UInt8]) {
        if let header = try? QCOW2Header(parsing: input) {
            fuzzCheck((2...3).contains(header.version) && (9...21).contains(header.clusterBits), "header \(header)")
            if let name = header.backingFileName {
                fuzzCheck(name.count >= 1 && name.count <= 1023, "backing name of \(name.count) bytes")
                fuzzCheck(name.lowerBound >= 72 && name.upperBound <= UInt64(1) << UInt64(header.clusterBits), "backing name at \(name)")
            }
        }
        let index = ContentIndex(parsing: input)
        fuzzCheck(index.files.count <= ContentIndex.maxFiles && index.pieceCount <= ContentIndex.maxPieces, "index over its bounds")
        for places in index.pieces.values {
            for place in places {
                guard let file = index.files[place.file] else {
                    fuzzCheck(false, "a piece names file \(place.file), which the index does not hold")
                    return
                }
                fuzzCheck(place.offset >= 0 && place.offset + Int64(place.length) <= file.length && place.length <= place.pieceLength,
                    "piece place \(place) outside its file of \(file.length) bytes")
            }
        }
        fuzzCheck(ContentIndex(parsing: index.encoded()) == index, "the index did not survive its own text form")
    }
#endif
