// The tracker's request handling without sockets: a fresh TrackerService (small caps, a clock the
// input moves) answers a sequence of requests, one per input line, from a few client addresses.
#if VMSWARM_FUZZ
    import Logging
    import Metainfo
    import Synchronization
    import Tracker
    import TrackerProtocol

    private let fuzzTime = Mutex(0.0)
    private let fuzzLogger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

    func fuzzTrackerRequest(_ input: [UInt8]) {
        var configuration = TrackerConfiguration()
        configuration.maxPeersPerTorrent = 16
        configuration.maxTorrents = 8
        configuration.peerTimeout = 30
        configuration.acceptIPParameter = input.first.map { $0 & 0x80 != 0 } ?? false
        fuzzTime.withLock { $0 = 0 }
        let service = TrackerService(configuration: configuration, logger: fuzzLogger,
            clock: { fuzzTime.withLock { $0 } }, seed: 3)
        let remotes: [PeerAddress?] = [
            PeerAddress(ip: [127, 0, 0, 1], port: 40000), PeerAddress(ip: [127, 0, 0, 2], port: 40001),
            PeerAddress(ip: [UInt8](repeating: 0, count: 15) + [1], port: 40002), nil,
        ]
        for line in input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).prefix(64) {
            guard let control = line.first else { continue }
            let uri = String(decoding: line.dropFirst(), as: UTF8.self)
            let method = control & 0x40 != 0 ? "POST" : (control & 0x20 != 0 ? "HEAD" : "GET")
            fuzzTime.withLock { $0 += Double(control & 0x0F) * 4 }
            if control & 0x10 != 0 { service.expire() }
            var treeRequest: AnnounceRequest?
            var namedRack: String?
            if let mark = uri.firstIndex(of: "?"), let request = try? AnnounceRequest(query: uri[uri.index(after: mark)...]) {
                // What a client writes, the tracker reads back the same.
                fuzzCheck((try? AnnounceRequest(query: request.query)) == request, "announce query does not survive re-encoding")
                if request.tree && request.event != .stopped { treeRequest = request }
                namedRack = request.rack
            }
            let response = service.respond(method: method, uri: uri, remote: remotes[Int(control >> 2) & 3])
            fuzzCheck([200, 404, 405].contains(response.status), "status \(response.status) for \(uri.debugDescription)")
            guard response.status == 200 else { continue }
            if uri.hasPrefix("/announce") {
                do {
                    let answer = try AnnounceResponse(decoding: response.body)
                    fuzzCheck(answer.peers.count <= configuration.maxNumWant, "\(answer.peers.count) peers in one answer")
                    fuzzCheck(Set(answer.peers).count == answer.peers.count, "a peer twice in one answer")
                    // A node that names its rack is counted in it (the answer names it when racks are several).
                    if let namedRack, uri.hasPrefix("/announce?"), let rack = answer.rack {
                        fuzzCheck(rack == namedRack, "node of rack \(namedRack) told it is in \(rack)")
                    }
                    // A tree node is given at most one parent (fan-out is per child slot), never itself.
                    if let treeRequest, uri.hasPrefix("/announce?"), let parents = answer.treeParents {
                        fuzzCheck(parents.count <= 1 && !parents.contains { $0.peerID == treeRequest.peerID },
                            "tree answer \(parents) for \(treeRequest.peerID)")
                    }
                } catch {
                    guard case .failure = error else {
                        fuzzCheck(false, "the tracker's announce answer does not decode: \(error)")
                        return
                    }
                }
            } else if uri.hasPrefix("/scrape") {
                do {
                    let answer = try ScrapeResponse(decoding: response.body)
                    fuzzCheck(answer.files.count <= ScrapeRequest.maxHashes, "\(answer.files.count) torrents in one scrape")
                } catch {
                    guard case .failure = error else {
                        fuzzCheck(false, "the tracker's scrape answer does not decode: \(error)")
                        return
                    }
                }
            }
        }
        let snapshot = service.snapshot()
        fuzzCheck(snapshot.torrents <= configuration.maxTorrents, "\(snapshot.torrents) torrents stored")
        fuzzCheck(snapshot.seeders + snapshot.leechers <= snapshot.torrents * configuration.maxPeersPerTorrent,
            "\(snapshot.seeders + snapshot.leechers) peers in \(snapshot.torrents) torrents")
    }
#endif
