import NIOCore
import Testing

@testable import NBD

/// The NBD session without sockets: what a client sends, byte for byte, and what comes back.
@Suite struct NBDServerSessionTests {
    static let export = NBDServerSession.Export(name: "image.img", size: 1 << 20, description: "a test image")

    /// A client's bytes, written big-endian as the protocol wants.
    struct Client {
        var bytes = ByteBuffer()
        mutating func flags(_ flags: UInt32 = 3) { bytes.writeInteger(flags) }
        mutating func option(_ option: UInt32, _ data: ByteBuffer = ByteBuffer()) {
            bytes.writeInteger(NBDMagic.option)
            bytes.writeInteger(option)
            bytes.writeInteger(UInt32(data.readableBytes))
            var data = data
            bytes.writeBuffer(&data)
        }
        mutating func go(_ name: String = "", requests: [UInt16] = [], option: NBDOption = .go) {
            var data = ByteBuffer()
            data.writeInteger(UInt32(name.utf8.count))
            data.writeString(name)
            data.writeInteger(UInt16(requests.count))
            for request in requests { data.writeInteger(request) }
            self.option(option.rawValue, data)
        }
        mutating func request(_ command: NBDCommand, handle: UInt64, offset: UInt64, length: UInt32) {
            bytes.writeInteger(NBDMagic.request)
            bytes.writeInteger(UInt16(0))
            bytes.writeInteger(command.rawValue)
            bytes.writeInteger(handle)
            bytes.writeInteger(offset)
            bytes.writeInteger(length)
        }
    }

    /// Every `send` event's bytes, joined.
    static func sent(_ events: [NBDServerSession.Event]) -> ByteBuffer {
        var all = ByteBuffer()
        for case .send(var bytes) in events { all.writeBuffer(&bytes) }
        return all
    }

    /// Option replies: (option, type, data) each.
    static func optionReplies(_ buffer: ByteBuffer) throws -> [(option: UInt32, type: UInt32, data: ByteBuffer)] {
        var buffer = buffer
        var replies: [(UInt32, UInt32, ByteBuffer)] = []
        while buffer.readableBytes > 0 {
            #expect(buffer.readInteger(as: UInt64.self) == NBDMagic.optionReply)
            guard let option = buffer.readInteger(as: UInt32.self), let type = buffer.readInteger(as: UInt32.self),
                let length = buffer.readInteger(as: UInt32.self), let data = buffer.readSlice(length: Int(length))
            else {
                Issue.record("a truncated option reply")
                break
            }
            replies.append((option, type, data))
        }
        return replies
    }

    func negotiated() -> NBDServerSession {
        var session = NBDServerSession(export: Self.export)
        var client = Client()
        client.flags()
        client.go()
        _ = session.receive(client.bytes)
        return session
    }

    @Test func greetingIsFixedNewstyleWithoutZeroes() {
        var greeting = NBDServerSession.greeting()
        #expect(greeting.readInteger(as: UInt64.self) == 0x4e42_444d_4147_4943)  // NBDMAGIC
        #expect(greeting.readInteger(as: UInt64.self) == 0x4948_4156_454f_5054)  // IHAVEOPT
        #expect(greeting.readInteger(as: UInt16.self) == 3)
        #expect(greeting.readableBytes == 0)
    }

    /// GO answers the export's size and flags, its block sizes, its name when asked, then ACK, and
    /// enters transmission.
    @Test func goDescribesTheExportAndStartsTransmission() throws {
        var session = NBDServerSession(export: Self.export)
        var client = Client()
        client.flags()
        client.go("image.img", requests: [NBDInfo.name.rawValue, NBDInfo.description.rawValue])
        let events = session.receive(client.bytes)
        #expect(events.last == .started)
        let replies = try Self.optionReplies(Self.sent(events))
        #expect(replies.map(\.type) == [NBDReply.info, NBDReply.info, NBDReply.info, NBDReply.info, NBDReply.ack])
        #expect(replies.allSatisfy { $0.option == NBDOption.go.rawValue })
        var info = replies[0].data
        #expect(info.readInteger(as: UInt16.self) == NBDInfo.export.rawValue)
        #expect(info.readInteger(as: UInt64.self) == 1 << 20)
        let flags = info.readInteger(as: UInt16.self) ?? 0
        #expect(flags & NBDTransmissionFlag.readOnly != 0 && flags & NBDTransmissionFlag.hasFlags != 0)
        var sizes = replies[1].data
        #expect(sizes.readInteger(as: UInt16.self) == NBDInfo.blockSize.rawValue)
        #expect([sizes.readInteger(as: UInt32.self), sizes.readInteger(as: UInt32.self), sizes.readInteger(as: UInt32.self)] == [1, 4096, 32 << 20])
        var name = replies[2].data
        #expect(name.readInteger(as: UInt16.self) == NBDInfo.name.rawValue)
        #expect(name.readString(length: name.readableBytes) == "image.img")
    }

    @Test func unknownExportsAndUnsupportedOptionsGetErrorRepliesAndNegotiationGoesOn() throws {
        var session = NBDServerSession(export: Self.export)
        var client = Client()
        client.flags()
        client.go("other")
        client.option(NBDOption.structuredReply.rawValue)
        client.option(NBDOption.startTLS.rawValue)
        client.option(999)
        client.go(option: .info)
        client.option(NBDOption.list.rawValue)
        let events = session.receive(client.bytes)
        #expect(!events.contains(.started))
        let replies = try Self.optionReplies(Self.sent(events))
        #expect(replies.map(\.type) == [
            NBDReply.errorUnknown, NBDReply.errorUnsupported, NBDReply.errorPolicy, NBDReply.errorUnsupported,
            NBDReply.info, NBDReply.info, NBDReply.ack, NBDReply.server, NBDReply.ack,
        ])
        var listed = replies[7].data
        #expect(listed.readInteger(as: UInt32.self) == 9)
        #expect(listed.readString(length: 9) == "image.img")
    }

    /// The old way in: EXPORT_NAME answers size and flags, with 124 zero bytes unless the client
    /// said NO_ZEROES.
    @Test func exportNameEntersTransmission() {
        for (flags, length) in [(UInt32(1), 8 + 2 + 124), (UInt32(3), 8 + 2)] {
            var session = NBDServerSession(export: Self.export)
            var client = Client()
            client.flags(flags)
            client.option(NBDOption.exportName.rawValue, ByteBuffer(string: "image.img"))
            let events = session.receive(client.bytes)
            var answer = Self.sent(events)
            #expect(answer.readableBytes == length)
            #expect(answer.readInteger(as: UInt64.self) == 1 << 20)
            #expect(events.last == .started)
        }
    }

    /// Bytes split anywhere give the same events as one buffer.
    @Test func bytesArrivingOneAtATimeGiveTheSameEvents() {
        var client = Client()
        client.flags()
        client.go()
        client.request(.read, handle: 7, offset: 4096, length: 512)
        client.request(.flush, handle: 8, offset: 0, length: 0)
        var whole = NBDServerSession(export: Self.export)
        let expected = whole.receive(client.bytes)
        var split = NBDServerSession(export: Self.export)
        var events: [NBDServerSession.Event] = []
        var bytes = client.bytes
        while let byte = bytes.readSlice(length: 1) { events += split.receive(byte) }
        #expect(Self.sent(events) == Self.sent(expected))
        #expect(events.filter { if case .send = $0 { false } else { true } } == expected.filter { if case .send = $0 { false } else { true } })
        #expect(expected.contains(.read(handle: 7, offset: 4096, length: 512)))
    }

    @Test func readsOutsideTheExportAndWritesAreRefusedWithTheirErrno() {
        var session = negotiated()
        var client = Client()
        client.request(.read, handle: 1, offset: (1 << 20) - 10, length: 20)  // past the end
        client.request(.read, handle: 2, offset: UInt64.max - 5, length: 10)  // would overflow
        client.request(.read, handle: 3, offset: 0, length: 0)
        client.request(.read, handle: 4, offset: 0, length: 64 << 20)  // over the maximum block
        client.request(.write, handle: 5, offset: 0, length: 5)
        client.bytes.writeString("hello")  // the write's payload: skipped
        client.request(.trim, handle: 6, offset: 0, length: 4096)
        client.request(.blockStatus, handle: 7, offset: 0, length: 4096)
        client.request(.read, handle: 8, offset: 0, length: 4096)
        let events = session.receive(client.bytes)
        var replies = Self.sent(events)
        var errors: [UInt64: UInt32] = [:]
        while replies.readableBytes >= 16 {
            #expect(replies.readInteger(as: UInt32.self) == NBDMagic.simpleReply)
            let error = replies.readInteger(as: UInt32.self)!
            errors[replies.readInteger(as: UInt64.self)!] = error
        }
        #expect(errors == [1: 22, 2: 22, 3: 22, 4: 22, 5: 1, 6: 1, 7: 22])
        #expect(events.contains(.read(handle: 8, offset: 0, length: 4096)))
        #expect(!session.isClosed)
    }

    /// A write's payload is skipped as it arrives, across reads, and never held.
    @Test func aLargeWritePayloadIsSkippedNotBuffered() {
        var session = negotiated()
        var client = Client()
        client.request(.write, handle: 1, offset: 0, length: 1 << 20)
        _ = session.receive(client.bytes)
        for _ in 0..<15 { #expect(session.receive(ByteBuffer(repeating: 0xAB, count: 64 << 10)).isEmpty) }
        var tail = ByteBuffer(repeating: 0xAB, count: 64 << 10)
        var next = Client()
        next.request(.read, handle: 2, offset: 0, length: 1)
        tail.writeBuffer(&next.bytes)
        #expect(session.receive(tail) == [.read(handle: 2, offset: 0, length: 1)])
    }

    /// At most 64 reads (or 64 MiB) in flight: further requests wait until reads are answered, and
    /// the runtime stops reading the socket meanwhile.
    @Test func readsInFlightAreCapped() {
        var session = negotiated()
        var client = Client()
        for handle in 0..<100 { client.request(.read, handle: UInt64(handle), offset: 0, length: 4096) }
        let first = session.receive(client.bytes)
        #expect(first.count == NBDServerSession.maximumOutstandingReads)
        #expect(!session.wantsInput)
        #expect(session.readAnswered(length: 4096) == [.read(handle: 64, offset: 0, length: 4096)])
        #expect(!session.wantsInput)

        var big = negotiated()
        var large = Client()
        for handle in 0..<4 { large.request(.read, handle: UInt64(handle), offset: 0, length: 1 << 20) }
        #expect(big.receive(large.bytes).count == 4)  // 4 MiB: under the byte cap
        #expect(big.wantsInput)
    }

    @Test func hostileNegotiationIsClosedNotBuffered() throws {
        let cases: [(String, (inout Client) -> Void)] = [
            ("not fixed newstyle", { $0.flags(0) }),
            ("unknown client flags", { $0.flags(1 | 1 << 7) }),
            ("bad option magic", { $0.flags(); $0.bytes.writeInteger(UInt64(0x1234)); $0.bytes.writeInteger(UInt64(0)) }),
            ("huge option", { $0.flags(); $0.bytes.writeInteger(NBDMagic.option); $0.bytes.writeInteger(UInt32(7)); $0.bytes.writeInteger(UInt32.max) }),
            ("unknown export by name", { $0.flags(); $0.option(NBDOption.exportName.rawValue, ByteBuffer(string: "nope")) }),
            ("too many options", { client in client.flags(); for _ in 0...NBDServerSession.maximumOptions { client.option(999) } }),
        ]
        for (name, write) in cases {
            var session = NBDServerSession(export: Self.export)
            var client = Client()
            write(&client)
            let events = session.receive(client.bytes)
            #expect(session.isClosed, "\(name)")
            #expect(events.contains { if case .close = $0 { true } else { false } }, "\(name)")
            #expect(session.receive(ByteBuffer(repeating: 1, count: 100)).isEmpty, "\(name)")
        }
        // A GO whose lengths do not add up is an error reply, not a close.
        var session = NBDServerSession(export: Self.export)
        var client = Client()
        client.flags()
        var data = ByteBuffer()
        data.writeInteger(UInt32(100))  // a name longer than the option
        client.option(NBDOption.go.rawValue, data)
        let answer = session.receive(client.bytes)
        #expect(try Self.optionReplies(Self.sent(answer)).map(\.type) == [NBDReply.errorInvalid])
        #expect(!session.isClosed)
    }

    @Test func disconnectAndAbortClose() throws {
        var session = negotiated()
        var client = Client()
        client.request(.disconnect, handle: 1, offset: 0, length: 0)
        #expect(session.receive(client.bytes) == [.close("the client disconnected")])

        var aborting = NBDServerSession(export: Self.export)
        var abort = Client()
        abort.flags()
        abort.option(NBDOption.abort.rawValue)
        let events = aborting.receive(abort.bytes)
        #expect(try Self.optionReplies(Self.sent(events)).map(\.type) == [NBDReply.ack])
        #expect(aborting.isClosed)
    }
}
