// The NBD server session fed a client's bytes (docs/fuzzing.md).
#if VMSWARM_FUZZ
    import NBD
    import NIOCore

    /// Input: one byte that chooses how the rest is split into reads (and how many reads are answered
    /// between them), then the client's bytes. Two sessions get the same bytes, one whole and one
    /// split; they must agree. Every read asked for lies inside the export and within the block and
    /// in-flight caps; nothing comes out of a closed session.
    func fuzzNBD(_ input: [UInt8]) {
        guard let pattern = input.first else { return }
        let bytes = ByteBuffer(bytes: input.dropFirst())
        let export = NBDServerSession.Export(name: "image.img", size: 3 << 20 | 123, description: "fuzz")

        var whole = NBDServerSession(export: export)
        let wholeEvents = whole.receive(bytes)

        var split = NBDServerSession(export: export)
        var splitEvents: [NBDServerSession.Event] = []
        var rest = bytes
        var step = Int(pattern % 17) + 1
        while rest.readableBytes > 0 {
            let chunk = rest.readSlice(length: min(step, rest.readableBytes))!
            splitEvents += split.receive(chunk)
            step = step * 5 % 97 + 1
        }
        fuzzCheck(flatten(wholeEvents) == flatten(splitEvents), "split input gave other events")
        fuzzCheck(whole.isClosed == split.isClosed, "split input closed differently")

        // Answer reads one at a time (as many as the pattern says), checking each read and the caps.
        var session = whole
        var pending = wholeEvents.compactMap(readOf)
        var answered = 0
        var closed = session.isClosed
        while let read = pending.first, answered < Int(pattern) {
            pending.removeFirst()
            fuzzCheck(read.length > 0 && read.length <= Int(export.maximumBlock), "read of \(read.length) bytes")
            fuzzCheck(read.offset >= 0 && read.offset + Int64(read.length) <= export.size, "read outside the export")
            fuzzCheck(session.outstandingReads <= NBDServerSession.maximumOutstandingReads, "too many reads in flight")
            fuzzCheck(session.outstandingBytes <= NBDServerSession.maximumOutstandingBytes + Int(export.maximumBlock), "too many bytes in flight")
            let more = session.readAnswered(length: read.length)
            if closed { fuzzCheck(more.isEmpty, "events from a closed session") }
            closed = session.isClosed
            pending += more.compactMap(readOf)
            answered += 1
        }
        if session.isClosed { fuzzCheck(session.receive(bytes).isEmpty, "a closed session answered") }
    }

    private func readOf(_ event: NBDServerSession.Event) -> (offset: Int64, length: Int)? {
        if case .read(_, let offset, let length) = event { return (offset, length) }
        return nil
    }

    /// Events with consecutive sends joined, since a split input may split what is sent.
    private func flatten(_ events: [NBDServerSession.Event]) -> [NBDServerSession.Event] {
        var out: [NBDServerSession.Event] = []
        for event in events {
            if case .send(var bytes) = event, case .send(var last)? = out.last {
                last.writeBuffer(&bytes)
                out[out.count - 1] = .send(last)
            } else {
                out.append(event)
            }
        }
        return out
    }
#endif
