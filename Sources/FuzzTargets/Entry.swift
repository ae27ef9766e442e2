// libFuzzer entry points for every fuzz target (docs/fuzzing.md). Built only by `tools/fuzz`, which sets
// VMSWARM_FUZZ for the manifest and links with `-sanitize=fuzzer,address`; libFuzzer supplies `main`.
#if VMSWARM_FUZZ
    import Glibc

    /// One fuzz target: a name for `tools/fuzz` and a function that takes one input. A target reports a
    /// broken invariant with `fuzzCheck`, which aborts so that libFuzzer keeps the input.
    struct FuzzTarget: Sendable {
        let name: String
        let summary: String
        let run: @Sendable ([UInt8]) -> Void
    }

    let fuzzTargets: [FuzzTarget] = [
        FuzzTarget(name: "bencode", summary: "bencode decoding, strict and lenient, with re-encoding", run: fuzzBencode),
        FuzzTarget(name: "metainfo", summary: ".torrent parsing and the piece layout it yields", run: fuzzMetainfo),
        FuzzTarget(name: "sealed-torrent", summary: "sealed .torrent parsing (parameters, recipients, signature)", run: fuzzSealedTorrent),
        FuzzTarget(name: "key-file", summary: "key file text for each kind of key", run: fuzzKeyFile),
        FuzzTarget(name: "extensions", summary: "BEP 10 extension handshake and BEP 11 PEX payloads", run: fuzzExtensions),
        FuzzTarget(name: "peer-wire", summary: "handshake, framer split anywhere, and a PeerSession fed the messages", run: fuzzPeerWire),
        FuzzTarget(name: "engine", summary: "a SwarmEngine for a small torrent driven by peers, messages, ticks and hashes", run: fuzzEngine),
        FuzzTarget(name: "tracker-request", summary: "TrackerService request routing (announce, scrape, stats) without sockets", run: fuzzTrackerRequest),
        FuzzTarget(name: "tracker-http", summary: "HTTP/1.x framing of a connection's bytes, split anywhere, and the answers", run: fuzzTrackerHTTP),
        FuzzTarget(name: "tracker-answer", summary: "announce and scrape answer decoding (the client side)", run: fuzzTrackerAnswer),
        FuzzTarget(name: "udp-tracker", summary: "BEP 15 requests through a UDPTrackerResponder, and answers on the client side", run: fuzzUDPTracker),
        FuzzTarget(name: "multicast-packet", summary: "booster packet decoding and validation, with re-encoding", run: fuzzMulticastPacket),
        FuzzTarget(name: "multicast", summary: "a MulticastSender and MulticastReceiver on a lossy group, with a forger", run: fuzzMulticast),
        FuzzTarget(name: "metadata", summary: "magnet links, ut_metadata messages, and a BEP 9 fetch fed hostile peers", run: fuzzMetadata),
        FuzzTarget(name: "nbd", summary: "an NBD server session fed a client's bytes, whole and split, answering reads", run: fuzzNBD),
        FuzzTarget(name: "layers", summary: "qcow2 headers (backing chains) and the content store's index text", run: fuzzLayers),
        FuzzTarget(name: "http-redirect", summary: "a redirect's Location resolved against a web seed's or tracker's URL", run: fuzzHTTPRedirect),
        FuzzTarget(name: "moved-data", summary: "old data scanned with rolling checksums for pieces that moved in it", run: fuzzMovedData),
    ]

    nonisolated(unsafe) private var selected: FuzzTarget?

    /// Writes to standard error (the C `stderr` is a global Swift 6 will not touch).
    func fuzzLog(_ text: String) {
        var text = text
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    /// Stops the run with a message when an invariant does not hold; libFuzzer saves the input.
    func fuzzCheck(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        if !condition {
            fuzzLog("fuzz invariant broken at \(file):\(line): \(message())\n")
            abort()
        }
    }

    @_cdecl("LLVMFuzzerInitialize")
    func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
        let name = getenv("VMSWARM_FUZZ_TARGET").map { String(cString: $0) } ?? ""
        if name == "write-seeds", let directory = getenv("VMSWARM_FUZZ_SEEDS").map({ String(cString: $0) }) {
            do {
                try writeSeeds(to: directory)
                exit(0)
            } catch {
                fuzzLog("writing seeds failed: \(error)\n")
                exit(1)
            }
        }
        if name == "list" {
            for target in fuzzTargets { print("\(target.name)\t\(target.summary)") }
            exit(0)
        }
        guard let target = fuzzTargets.first(where: { $0.name == name }) else {
            fuzzLog("set VMSWARM_FUZZ_TARGET to one of: \(fuzzTargets.map(\.name).joined(separator: " "))\n")
            exit(2)
        }
        selected = target
        return 0
    }

    @_cdecl("LLVMFuzzerTestOneInput")
    func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
        selected?.run(input)
        return 0
    }

    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    /// SwiftPM links an executable with `main` aliased to `<target>_main`, which then wins over
    /// libFuzzer's own `main`: so this is the entry point, and it hands over to libFuzzer's driver
    /// (which calls `LLVMFuzzerInitialize` and then runs the inputs).
    @_cdecl("FuzzTargets_main")
    func fuzzTargetsMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var count = argc
        var arguments = argv
        return LLVMFuzzerRunDriver(&count, &arguments, fuzzTestOneInput)
    }

    /// Reads structured choices from a fuzz input; past the end every read is zero, so any input is
    /// a complete program.
    struct FuzzReader {
        let bytes: [UInt8]
        private(set) var position = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var isAtEnd: Bool { position >= bytes.count }
        var remaining: Int { max(0, bytes.count - position) }

        mutating func byte() -> UInt8 {
            guard position < bytes.count else { return 0 }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }
        mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }
        mutating func bool() -> Bool { byte() & 1 == 1 }

        mutating func take(_ count: Int) -> [UInt8] {
            let end = min(bytes.count, position + max(0, count))
            defer { position = max(position, end) }
            return position < end ? Array(bytes[position..<end]) : []
        }

        mutating func rest() -> [UInt8] { take(remaining) }
    }
#endif
