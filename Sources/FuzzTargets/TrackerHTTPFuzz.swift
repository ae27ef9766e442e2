// The tracker's plain-HTTP framing without sockets: a connection's bytes, cut where the input says,
// through a TrackerHTTPFramer, and every request it yields answered by a TrackerService, as the
// listener does (Sources/Tracker/TrackerHTTPListener.swift).
#if VMSWARM_FUZZ
    import Logging
    import Metainfo
    import Tracker
    import TrackerProtocol

    private let httpFuzzLogger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Input: a control byte (the first read's size, the URI limit), then the bytes a client sends.
    /// Reads are cut at the input's own bytes' values, so the fuzzer chooses the splits too.
    func fuzzTrackerHTTP(_ input: [UInt8]) {
        guard let control = input.first else { return }
        let maxURILength = [16, 64, 256, 8192][Int(control & 3)]
        var framer = TrackerHTTPFramer(maxURILength: maxURILength)
        let service = TrackerService(configuration: TrackerConfiguration(), logger: httpFuzzLogger, seed: 5)
        let bound = maxURILength + 32 + TrackerHTTPFramer.maxHeaderBytes
        var rest = input.dropFirst()
        var cut = Int(control >> 2) + 1
        var failures = 0
        var closed = false
        while !rest.isEmpty && !closed {
            let chunk = Array(rest.prefix(cut))
            rest = rest.dropFirst(chunk.count)
            cut = Int(chunk.last ?? 1) % 97 + 1
            framer.append(chunk)
            while let event = framer.next() {
                fuzzCheck(failures == 0, "an event after a failure")
                switch event {
                case .failure(let status):
                    fuzzCheck(status == 400 || status == 414, "failure status \(status)")
                    failures += 1
                    var out: [UInt8] = []
                    service.answerUnreadable(status: status, into: &out)
                    fuzzCheck(out.starts(with: Array("HTTP/1.1 \(status) ".utf8)), "unreadable answer \(out.prefix(40))")
                    closed = true
                case .request(let request):
                    fuzzCheck(!request.method.isEmpty && !request.uri.isEmpty, "empty method or target")
                    fuzzCheck(!request.uri.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }), "white space in a target")
                    // What the framer read, written back as a request, reads the same.
                    var again = TrackerHTTPFramer(maxURILength: Int.max / 4)
                    again.append(Array("\(request.method) \(request.uri) HTTP/1.\(request.http10 ? 0 : 1)\r\n\(request.keepAlive == request.http10 ? (request.http10 ? "Connection: keep-alive\r\n" : "Connection: close\r\n") : "")\r\n".utf8))
                    fuzzCheck(again.next() == .request(request), "\(request) does not read back the same")
                    var out: [UInt8] = []
                    let keepAlive = service.answer(request, remote: PeerAddress(ip: [10, 0, 0, 1], port: 1), maxURILength: maxURILength, into: &out)
                    fuzzCheck(out.starts(with: Array((request.http10 ? "HTTP/1.0 " : "HTTP/1.1 ").utf8)), "answer \(out.prefix(40))")
                    fuzzCheck(!keepAlive || request.keepAlive, "kept open against the client's close")
                    if !keepAlive { closed = true }
                }
                if closed { break }
            }
            fuzzCheck(framer.buffered <= bound, "\(framer.buffered) bytes held")
        }
    }
#endif
