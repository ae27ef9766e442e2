/// Decodes bencode (BEP 3) from bytes, with limits that make hostile input cheap to reject.
///
/// Strict mode (the default) accepts only canonical encodings: no leading zeros, no `-0`, dictionary
/// keys sorted by raw bytes and unique. Lenient mode accepts those deviations, which real-world
/// torrents sometimes contain; since the info-hash is taken over the original bytes, reading such a
/// torrent leniently still yields the hash its maker computed. Both modes reject truncated input,
/// trailing bytes, and anything past the limits.
public struct BencodeDecoder: Sendable {
    public enum Mode: Sendable {
        case strict
        case lenient
    }

    /// Bounds on what a single document may demand. The defaults fit any torrent of a 64 GiB image
    /// with small pieces while keeping a hostile document's cost to a few hundred MiB at worst.
    public struct Limits: Sendable {
        public var maxInputSize: Int
        public var maxDepth: Int
        public var maxStringLength: Int
        public var maxValues: Int

        public init(
            maxInputSize: Int = 128 << 20,
            maxDepth: Int = 64,
            maxStringLength: Int = 64 << 20,
            maxValues: Int = 2_000_000
        ) {
            self.maxInputSize = maxInputSize
            self.maxDepth = maxDepth
            self.maxStringLength = maxStringLength
            self.maxValues = maxValues
        }
    }

    public var mode: Mode
    public var limits: Limits

    public init(mode: Mode = .strict, limits: Limits = Limits()) {
        self.mode = mode
        self.limits = limits
    }

    /// Decodes exactly one value that spans all of `input`.
    public func decode(_ input: some Collection<UInt8>) throws(BencodeError) -> BencodeNode {
        let bytes = Array(input)
        guard bytes.count <= limits.maxInputSize else {
            throw BencodeError(offset: 0, reason: .inputTooLarge(size: bytes.count, limit: limits.maxInputSize))
        }
        var parser = Parser(bytes: bytes, strict: mode == .strict, limits: limits)
        let node = try parser.parseValue(depth: 0)
        if parser.position != bytes.count {
            throw BencodeError(offset: parser.position, reason: .trailingData(count: bytes.count - parser.position))
        }
        return node
    }

    /// Decodes and drops the byte ranges.
    public func decodeValue(_ input: some Collection<UInt8>) throws(BencodeError) -> BencodeValue {
        try decode(input).value
    }
}

private struct Parser {
    let bytes: [UInt8]
    let strict: Bool
    let limits: BencodeDecoder.Limits
    var position = 0
    var valueCount = 0

    init(bytes: [UInt8], strict: Bool, limits: BencodeDecoder.Limits) {
        self.bytes = bytes
        self.strict = strict
        self.limits = limits
    }

    private static let digit0 = UInt8(ascii: "0")
    private static let digit9 = UInt8(ascii: "9")
    private static let end = UInt8(ascii: "e")

    private func fail(_ reason: BencodeError.Reason, at offset: Int? = nil) -> BencodeError {
        BencodeError(offset: offset ?? position, reason: reason)
    }

    private func peek(expecting expected: String) throws(BencodeError) -> UInt8 {
        guard position < bytes.count else { throw fail(.unexpectedEnd(expected: expected)) }
        return bytes[position]
    }

    mutating func parseValue(depth: Int) throws(BencodeError) -> BencodeNode {
        valueCount += 1
        guard valueCount <= limits.maxValues else { throw fail(.tooManyValues(limit: limits.maxValues)) }
        let start = position
        let byte = try peek(expecting: "a value ('i', 'l', 'd' or a digit)")
        switch byte {
        case UInt8(ascii: "i"):
            position += 1
            let value = try parseInteger(terminator: Self.end, what: "integer")
            return BencodeNode(range: start..<position, content: .integer(value))
        case UInt8(ascii: "l"):
            guard depth < limits.maxDepth else { throw fail(.nestingTooDeep(limit: limits.maxDepth)) }
            position += 1
            var items: [BencodeNode] = []
            while try peek(expecting: "a list item or 'e'") != Self.end {
                items.append(try parseValue(depth: depth + 1))
            }
            position += 1
            return BencodeNode(range: start..<position, content: .list(items))
        case UInt8(ascii: "d"):
            guard depth < limits.maxDepth else { throw fail(.nestingTooDeep(limit: limits.maxDepth)) }
            position += 1
            return try parseDictionary(start: start, depth: depth)
        case Self.digit0...Self.digit9:
            let value = try parseString()
            return BencodeNode(range: start..<position, content: .bytes(value))
        default:
            throw fail(.unexpectedByte(byte, expected: "a value ('i', 'l', 'd' or a digit)"))
        }
    }

    private mutating func parseDictionary(start: Int, depth: Int) throws(BencodeError) -> BencodeNode {
        var entries: [BencodeEntry] = []
        var previousKey: [UInt8]? = nil
        while true {
            let keyStart = position
            let byte = try peek(expecting: "a dictionary key or 'e'")
            if byte == Self.end { break }
            guard byte >= Self.digit0 && byte <= Self.digit9 else {
                throw fail(.unexpectedByte(byte, expected: "a dictionary key (byte string) or 'e'"))
            }
            valueCount += 1
            guard valueCount <= limits.maxValues else { throw fail(.tooManyValues(limit: limits.maxValues)) }
            let key = try parseString()
            if strict, let previous = previousKey {
                let text = String(decoding: key, as: UTF8.self)
                if key == previous { throw fail(.duplicateKey(text), at: keyStart) }
                if !previous.lexicographicallyPrecedes(key) { throw fail(.unsortedKey(text), at: keyStart) }
            }
            let value = try parseValue(depth: depth + 1)
            entries.append(BencodeEntry(key: key, keyOffset: keyStart, value: value))
            previousKey = key
        }
        position += 1
        return BencodeNode(range: start..<position, content: .dictionary(entries))
    }

    /// Reads `<length>:<bytes>` at the current position.
    private mutating func parseString() throws(BencodeError) -> [UInt8] {
        let lengthStart = position
        let colon = UInt8(ascii: ":")
        var length = 0
        var digits = 0
        while true {
            let byte = try peek(expecting: "a string length digit or ':'")
            if byte == colon { break }
            guard byte >= Self.digit0 && byte <= Self.digit9 else {
                throw fail(.unexpectedByte(byte, expected: "a string length digit or ':'"))
            }
            let (times10, overflow1) = length.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(byte - Self.digit0))
            if overflow1 || overflow2 || sum > limits.maxStringLength {
                throw fail(.stringTooLong(limit: limits.maxStringLength), at: lengthStart)
            }
            length = sum
            digits += 1
            position += 1
        }
        if strict && digits > 1 && bytes[lengthStart] == Self.digit0 {
            throw fail(.leadingZero, at: lengthStart)
        }
        position += 1  // the colon
        guard bytes.count - position >= length else {
            throw fail(.unexpectedEnd(expected: "\(length) bytes of string data"), at: bytes.count)
        }
        let value = Array(bytes[position..<(position + length)])
        position += length
        return value
    }

    /// Reads `[-]<digits>` up to `terminator`, which it consumes.
    private mutating func parseInteger(terminator: UInt8, what: String) throws(BencodeError) -> Int64 {
        let numberStart = position
        var negative = false
        if try peek(expecting: "a digit or '-'") == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        let digitsStart = position
        var value: Int64 = 0
        while true {
            let byte = try peek(expecting: digitsStart == position ? "a digit" : "a digit or 'e'")
            if byte == terminator && position > digitsStart { break }
            guard byte >= Self.digit0 && byte <= Self.digit9 else {
                throw fail(.unexpectedByte(byte, expected: digitsStart == position ? "a digit" : "a digit or 'e'"))
            }
            // Accumulate towards the sign so that Int64.min is representable.
            let digit = Int64(byte - Self.digit0)
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) =
                negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
            if overflow1 || overflow2 { throw fail(.integerOverflow, at: numberStart) }
            value = next
            position += 1
        }
        if strict {
            if position - digitsStart > 1 && bytes[digitsStart] == Self.digit0 {
                throw fail(.leadingZero, at: numberStart)
            }
            if negative && value == 0 { throw fail(.negativeZero, at: numberStart) }
        }
        position += 1  // the terminator
        return value
    }
}
