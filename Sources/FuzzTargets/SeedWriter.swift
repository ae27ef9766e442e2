// Seeds that are easiest to make with the project's own encoders: booster packets and a sealed
// torrent with a recipient and a signature. `VMSWARM_FUZZ_TARGET=write-seeds VMSWARM_FUZZ_SEEDS=DIR`
// writes them under DIR/TARGET/ (tools/fuzz seeds does this into Fixtures/fuzz).
#if VMSWARM_FUZZ
    import Foundation
    import Metainfo
    import Multicast
    import Sealing

    func writeSeeds(to directory: String) throws {
        func write(_ target: String, _ name: String, _ bytes: [UInt8]) throws {
            let folder = URL(fileURLWithPath: directory).appendingPathComponent(target)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(bytes).write(to: folder.appendingPathComponent(name))
        }
        let layout = fuzzLayout(1)
        let announce = MulticastPacket.Announce(pieceCount: layout.pieceCount, pieceLength: layout.pieceLength,
            totalLength: layout.totalLength, rate: 100_000_000, pass: 1, phase: .sending, cursor: 1, receivers: 2,
            suppressAfter: 3, nackWindowMilliseconds: 200, carousel: false, senderComplete: true)
        let block = MulticastPacket.DataBlock(piece: PieceIndex(1), offset: MulticastPacket.blockLength, length: MulticastPacket.blockLength,
            sequence: 7, pass: 1, repair: true)
        let nack = MulticastPacket.Nack(target: 0x0102_0304, pass: 1, lossPermille: 50, missingPieces: 2, entries: [
            MulticastPacket.NackEntry(piece: PieceIndex(0), firstBlock: 2, blockCount: 9, bitmap: [0xA5, 0x80]),
            MulticastPacket.NackEntry.rest(of: PieceIndex(1)),
        ])
        let packets: [(String, MulticastPacket.Body)] = [
            ("announce", .announce(announce)),
            ("plan", .plan(MulticastPacket.Plan(pass: 1, firstPiece: 0, bitCount: layout.pieceCount, bitmap: [0xC0]))),
            ("data", .data(block, payload: [UInt8](repeating: 0x5A, count: block.length))),
            ("nack", .nack(nack)),
            ("done", .done(.init(pass: 1))),
        ]
        for (name, body) in packets {
            try write("multicast-packet", "fz-\(name)", MulticastPacket(session: fuzzSession, instance: 0x0A0B_0C0D, body: body).encode())
        }

        // A sealed torrent of a small image (the ciphertext's hashes do not matter to the parser).
        guard let key = ContentKey(bytes: [UInt8](repeating: 5, count: 32)) else { return }
        let parameters = try SealingParameters(plainLength: 40_000, pieceLength: 16 << 10, key: key, salt: [UInt8](repeating: 1, count: 32))
        let info = try TorrentInfo(name: "sealed.img", files: [FileEntry(path: ["sealed.img"], length: parameters.sealedLength)],
            isMultiFile: false, privacy: .unspecified, pieceLength: parameters.pieceLength,
            pieceHashes: [UInt8](repeating: 3, count: 20 * parameters.pieceCount))
        var sealed = try SealedTorrent(metainfo: Metainfo(info: info, extraInfoFields: parameters.infoFields,
            announceTiers: [["http://127.0.0.1:6969/announce"]]))
        try write("sealed-torrent", "fz-plain-sealed.torrent", sealed.encoded())
        try sealed.addRecipient(SiteKeyPair(privateKeyBytes: [UInt8](repeating: 7, count: 32))!.publicKey, key: key)
        sealed.sign(with: PublisherKeyPair(privateKeyBytes: [UInt8](repeating: 9, count: 32))!)
        try write("sealed-torrent", "fz-recipient-signed.torrent", sealed.encoded())
    }
#endif
