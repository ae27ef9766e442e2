import TestSupport
import Testing

@testable import Bencode

private func decode(_ text: String, _ mode: BencodeDecoder.Mode = .strict) throws(BencodeError) -> BencodeValue {
    try BencodeDecoder(mode: mode).decodeValue(Array(text.utf8))
}

private func reason(_ text: String, _ mode: BencodeDecoder.Mode = .strict) -> BencodeError? {
    do {
        _ = try decode(text, mode)
        return nil
    } catch {
        return error
    }
}

@Suite struct DecodingTests {
    @Test func scalarsAndContainers() throws {
        #expect(try decode("i42e") == 42)
        #expect(try decode("i-7e") == -7)
        #expect(try decode("i0e") == 0)
        #expect(try decode("4:spam") == .bytes(Array("spam".utf8)))
        #expect(try decode("0:") == .bytes([]))
        #expect(try decode("l4:spami1ee") == ["spam", 1])
        #expect(try decode("d3:cow3:moo4:spam4:eggse") == .dictionary([Array("cow".utf8): "moo", Array("spam".utf8): "eggs"]))
        #expect(try decode("i9223372036854775807e") == .integer(.max))
        #expect(try decode("i-9223372036854775808e") == .integer(.min))
    }

    @Test func byteStringsStayBytes() throws {
        let input: [UInt8] = Array("3:".utf8) + [0xFF, 0x00, 0xC3]
        #expect(try BencodeDecoder().decodeValue(input) == .bytes([0xFF, 0x00, 0xC3]))
    }

    @Test func reportsExactByteRanges() throws {
        let text = "d4:infod4:name1:xe3:zzzi1ee"
        let node = try BencodeDecoder().decode(Array(text.utf8))
        let info = try #require(node["info"])
        #expect(info.range == 7..<18)
        #expect(Array(text.utf8)[info.range] == ArraySlice("d4:name1:xe".utf8))
        #expect(node["zzz"]?.range == 23..<26)
        #expect(node.range == 0..<27)
        #expect(node.entries?.map(\.keyOffset) == [1, 18])
    }

    @Test func strictRejectsNonCanonicalInput() {
        #expect(reason("i03e") == BencodeError(offset: 1, reason: .leadingZero))
        #expect(reason("i-0e") == BencodeError(offset: 1, reason: .negativeZero))
        #expect(reason("i-03e") == BencodeError(offset: 1, reason: .leadingZero))
        #expect(reason("04:spam") == BencodeError(offset: 0, reason: .leadingZero))
        #expect(reason("d1:b1:x1:a1:ye") == BencodeError(offset: 7, reason: .unsortedKey("a")))
        #expect(reason("d1:a1:x1:a1:ye") == BencodeError(offset: 7, reason: .duplicateKey("a")))
        // "B" (0x42) sorts before "a" (0x61): raw bytes, not case-insensitive order.
        #expect(reason("d1:B1:x1:a1:ye") == nil)
    }

    @Test func lenientAcceptsWhatRealTorrentsContain() throws {
        #expect(try decode("i03e", .lenient) == 3)
        #expect(try decode("i-0e", .lenient) == 0)
        #expect(try decode("04:spam", .lenient) == "spam")
        #expect(try decode("d1:b1:x1:a1:ye", .lenient) == .dictionary([[0x61]: "y", [0x62]: "x"]))
        // With a repeated key the first occurrence wins, in the value and in lookups.
        let node = try BencodeDecoder(mode: .lenient).decode(Array("d1:a1:x1:a1:ye".utf8))
        #expect(node["a"]?.bytes == Array("x".utf8))
        #expect(node.value == .dictionary([[0x61]: "x"]))
    }

    @Test func malformedInputNamesOffsetAndExpectation() {
        #expect(reason("") == BencodeError(offset: 0, reason: .unexpectedEnd(expected: "a value ('i', 'l', 'd' or a digit)")))
        #expect(reason("ie") == BencodeError(offset: 1, reason: .unexpectedByte(UInt8(ascii: "e"), expected: "a digit")))
        #expect(reason("i-e") == BencodeError(offset: 2, reason: .unexpectedByte(UInt8(ascii: "e"), expected: "a digit")))
        #expect(reason("i12") == BencodeError(offset: 3, reason: .unexpectedEnd(expected: "a digit or 'e'")))
        #expect(reason("i1x2e")?.offset == 2)
        #expect(reason("5:abc") == BencodeError(offset: 5, reason: .unexpectedEnd(expected: "5 bytes of string data")))
        #expect(reason("-5:abc") == BencodeError(offset: 0, reason: .unexpectedByte(UInt8(ascii: "-"), expected: "a value ('i', 'l', 'd' or a digit)")))
        #expect(reason("di1e1:ae")?.reason == .unexpectedByte(UInt8(ascii: "i"), expected: "a dictionary key (byte string) or 'e'"))
        #expect(reason("i1ei2e") == BencodeError(offset: 3, reason: .trailingData(count: 3)))
        #expect(reason("le\n") == BencodeError(offset: 2, reason: .trailingData(count: 1)))
        #expect(reason("l") == BencodeError(offset: 1, reason: .unexpectedEnd(expected: "a list item or 'e'")))
        #expect(reason("x")?.description == "invalid bencode at byte 0: unexpected 'x', expected a value ('i', 'l', 'd' or a digit)")
    }

    @Test func integersBeyond64BitsAreRefused() {
        #expect(reason("i9223372036854775808e") == BencodeError(offset: 1, reason: .integerOverflow))
        #expect(reason("i-9223372036854775809e") == BencodeError(offset: 1, reason: .integerOverflow))
        #expect(reason("i99999999999999999999999999999e")?.reason == .integerOverflow)
    }

    @Test func hugeStringLengthsAreRefusedBeforeAllocating() {
        let limit = BencodeDecoder.Limits().maxStringLength
        #expect(reason("9223372036854775808:x") == BencodeError(offset: 0, reason: .stringTooLong(limit: limit)))
        #expect(reason("9223372036854775807:x") == BencodeError(offset: 0, reason: .stringTooLong(limit: limit)))
        #expect(reason("99999999999999999999999999:x")?.reason == .stringTooLong(limit: limit))
        #expect(reason("67108865:x") == BencodeError(offset: 0, reason: .stringTooLong(limit: limit)))
    }

    @Test func deepNestingIsCutOffAtTheLimit() {
        let depth = 100_000
        let lists = String(repeating: "l", count: depth) + String(repeating: "e", count: depth)
        #expect(reason(lists) == BencodeError(offset: 64, reason: .nestingTooDeep(limit: 64)))
        let dicts = String(repeating: "d1:a", count: depth) + "i0e" + String(repeating: "e", count: depth)
        #expect(reason(dicts)?.reason == .nestingTooDeep(limit: 64))
        // Exactly at the limit is fine.
        #expect(reason(String(repeating: "l", count: 64) + String(repeating: "e", count: 64)) == nil)
    }

    @Test func valueCountAndInputSizeAreBounded() {
        let limits = BencodeDecoder.Limits(maxInputSize: 100, maxValues: 10)
        let decoder = BencodeDecoder(limits: limits)
        let many = "l" + String(repeating: "i1e", count: 20) + "e"
        #expect(throws: BencodeError(offset: 28, reason: .tooManyValues(limit: 10))) { try decoder.decode(Array(many.utf8)) }
        let big = [UInt8](repeating: UInt8(ascii: "l"), count: 101)
        #expect(throws: BencodeError(offset: 0, reason: .inputTooLarge(size: 101, limit: 100))) { try decoder.decode(big) }
    }
}

@Suite struct EncodingTests {
    @Test func encodesCanonically() {
        let value: BencodeValue = .dictionary([
            Array("spam".utf8): ["a", 1, -3],
            Array("cow".utf8): "moo",
            [0x42]: 0,
        ])
        #expect(String(decoding: value.encoded(), as: UTF8.self) == "d1:Bi0e3:cow3:moo4:spaml1:ai1ei-3eee")
    }

    @Test func preencodedDictionaryKeepsValueBytes() {
        let bytes = Bencode.encodeDictionary(preencoded: [
            (Array("z".utf8), Array("i1e".utf8)), (Array("info".utf8), Array("d1:b1:x1:a1:ye".utf8)),
        ])
        #expect(String(decoding: bytes, as: UTF8.self) == "d4:infod1:b1:x1:a1:ye1:zi1ee")
    }

    static func randomValue(depth: Int, _ rng: inout SplitMix64) -> BencodeValue {
        let kind = Int.random(in: 0..<(depth > 3 ? 2 : 4), using: &rng)
        switch kind {
        case 0:
            let extremes: [Int64] = [.min, .max, 0, -1, 1]
            return .integer(Bool.random(using: &rng) ? extremes.randomElement(using: &rng)! : Int64.random(in: -1_000_000...1_000_000, using: &rng))
        case 1:
            return .bytes((0..<Int.random(in: 0..<40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        case 2:
            return .list((0..<Int.random(in: 0..<6, using: &rng)).map { _ in randomValue(depth: depth + 1, &rng) })
        default:
            var dictionary: [[UInt8]: BencodeValue] = [:]
            for _ in 0..<Int.random(in: 0..<6, using: &rng) {
                let key = (0..<Int.random(in: 0..<8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                dictionary[key] = randomValue(depth: depth + 1, &rng)
            }
            return .dictionary(dictionary)
        }
    }

    @Test func randomValuesRoundTrip() throws {
        var rng = SplitMix64(seed: 0x5EED)
        for _ in 0..<2_000 {
            let value = Self.randomValue(depth: 0, &rng)
            let encoded = value.encoded()
            let decoded = try BencodeDecoder(mode: .strict).decode(encoded)
            #expect(decoded.value == value)
            #expect(decoded.range == 0..<encoded.count)
            // Canonical input re-encodes to the identical bytes.
            #expect(decoded.value.encoded() == encoded)
        }
    }

    @Test func everyPrefixOfAValueIsRejected() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<200 {
            let encoded = Self.randomValue(depth: 0, &rng).encoded()
            for cut in 0..<encoded.count {
                #expect(throws: BencodeError.self) { try BencodeDecoder(mode: .lenient).decode(encoded[0..<cut]) }
            }
        }
    }
}
