// BEP 15 both ways, without sockets. The input is a sequence of datagrams (a control byte and a
// length byte each): the tracker's side reads them through a UDPTrackerResponder in front of a fresh
// TrackerService (with, when the control byte says so, the source's real connection id written in,
// so announces and scrapes get past the id check); the client's side reads each as a tracker answer.
#if VMSWARM_FUZZ
    import Logging
    import Metainfo
    import Synchronization
    import Tracker
    import TrackerProtocol

    private let udpFuzzTime = Mutex(0.0)
    private let udpFuzzLogger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    private let udpFuzzIDs = UDPConnectionIDs(secret: [UInt8](repeating: 0x42, count: 32))

    func fuzzUDPTracker(_ input: [UInt8]) {
        var configuration = TrackerConfiguration()
        configuration.maxPeersPerTorrent = 16
        configuration.maxTorrents = 8
        configuration.peerTimeout = 30
        configuration.acceptIPParameter = input.first.map { $0 & 0x80 != 0 } ?? false
        udpFuzzTime.withLock { $0 = 1000 }
        let service = TrackerService(configuration: configuration, logger: udpFuzzLogger,
            clock: { udpFuzzTime.withLock { $0 } }, seed: 5)
        let responder = UDPTrackerResponder(service: service, ids: udpFuzzIDs)
        let sources = [
            PeerAddress(ip: [10, 0, 0, 1], port: 40000)!, PeerAddress(ip: [127, 0, 0, 1], port: 40001)!,
            PeerAddress(ip: [0xFD] + [UInt8](repeating: 0, count: 14) + [1], port: 40002)!,
            PeerAddress(ip: [0xFD] + [UInt8](repeating: 0, count: 14) + [2], port: 40003)!,
        ]
        var reader = FuzzReader(input)
        var count = 0
        while !reader.isAtEnd && count < 64 {
            count += 1
            let control = reader.byte()
            let length = Int(reader.byte()) * (control & 0x40 != 0 ? 8 : 1)
            var datagram = reader.take(length)
            let source = sources[Int(control & 3)]
            udpFuzzTime.withLock { $0 += Double(control >> 2 & 0x0F) * 20 }
            if control & 0x10 != 0 { service.expire() }

            // The client's side: any datagram as a tracker's answer.
            checkAnswerDecoding(datagram, ipv6: control & 0x20 != 0)

            // The tracker's side.
            let authenticated = control & 0x80 != 0 && datagram.count >= 16
            if authenticated {
                let id = udpFuzzIDs.id(for: source, now: udpFuzzTime.withLock { $0 })
                datagram.replaceSubrange(0..<8, with: (0..<8).reversed().map { UInt8(truncatingIfNeeded: id >> (UInt64($0) * 8)) })
            }
            checkRequestRoundTrip(datagram)
            guard let answer = responder.answer(datagram, from: source) else {
                fuzzCheck(datagram.count < 16, "a \(datagram.count)-byte datagram got no answer")
                continue
            }
            let decoded: UDPTrackerResponse
            do {
                decoded = try UDPTrackerResponse(decoding: answer, ipv6: !source.isIPv4)
            } catch {
                fuzzCheck(false, "the tracker's answer does not decode: \(error)")
                return
            }
            fuzzCheck(decoded.transactionID == UDPTrackerRequest.transactionID(of: datagram), "answer to another transaction")
            fuzzCheck(answer.count <= UDPTracker.unfragmentedPayload, "a \(answer.count)-byte answer")
            // Without a valid connection id, nothing larger than the datagram goes back (no amplification).
            if !authenticated { fuzzCheck(answer.count <= max(16, datagram.count), "\(answer.count) bytes answer \(datagram.count)") }
        }
        let snapshot = service.snapshot()
        fuzzCheck(snapshot.torrents <= configuration.maxTorrents, "\(snapshot.torrents) torrents stored")
        fuzzCheck(snapshot.seeders + snapshot.leechers <= snapshot.torrents * configuration.maxPeersPerTorrent,
            "\(snapshot.seeders + snapshot.leechers) peers in \(snapshot.torrents) torrents")
    }

    /// A request that decodes is written back as the same bytes (the fixed part; BEP 41 options
    /// after an announce are dropped), and reads back as the same request.
    private func checkRequestRoundTrip(_ datagram: [UInt8]) {
        guard let request = try? UDPTrackerRequest(decoding: datagram) else { return }
        let encoded = request.encoded()
        fuzzCheck((try? UDPTrackerRequest(decoding: encoded)) == request, "request does not survive re-encoding")
        switch request {
        case .connect: fuzzCheck(encoded == Array(datagram.prefix(16)), "connect re-encoded differently")
        case .announce: fuzzCheck(encoded == Array(datagram.prefix(98)), "announce re-encoded differently")
        case .scrape(_, _, let hashes):
            fuzzCheck(encoded == datagram, "scrape re-encoded differently")
            fuzzCheck(hashes.count <= UDPTracker.maxScrapeHashes, "\(hashes.count) hashes in one scrape")
        }
    }

    /// An answer that decodes is bounded, and (but for an error's text, already made printable)
    /// re-encodes to one that decodes the same.
    private func checkAnswerDecoding(_ datagram: [UInt8], ipv6: Bool) {
        guard let answer = try? UDPTrackerResponse(decoding: datagram, ipv6: ipv6) else { return }
        switch answer {
        case .announce(_, let interval, _, _, let peers):
            fuzzCheck(interval <= AnnounceResponse.maxInterval, "interval \(interval)")
            fuzzCheck(peers.count <= AnnounceResponse.maxPeers, "\(peers.count) peers")
            // Over IPv6 an IPv4-mapped entry (::ffff:a.b.c.d) is read as the IPv4 peer it is.
            fuzzCheck(peers.allSatisfy { (ipv6 || $0.isIPv4) && $0.port != 0 }, "a peer of the wrong family or port 0")
        case .error(_, let message):
            fuzzCheck(!message.unicodeScalars.contains { $0.value < 0x20 }, "control character in an error message")
            return
        case .connect, .scrape:
            break
        }
        // The encoder writes the peers of the answer's family only (BEP 15 has no other way to
        // tell them apart), so mapped IPv4 peers of an IPv6 answer are left out when it is written.
        var written = answer
        if case .announce(let transaction, let interval, let leechers, let seeders, let peers) = answer, ipv6 {
            written = .announce(transactionID: transaction, interval: interval, leechers: leechers, seeders: seeders, peers: peers.filter { !$0.isIPv4 })
        }
        fuzzCheck((try? UDPTrackerResponse(decoding: answer.encoded(ipv6: ipv6), ipv6: ipv6)) == written, "answer does not survive re-encoding")
    }
#endif
