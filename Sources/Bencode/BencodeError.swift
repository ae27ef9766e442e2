/// Why a byte sequence is not acceptable bencode, and at which byte offset the decoder noticed.
public struct BencodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        /// The input ended where more was required.
        case unexpectedEnd(expected: String)
        /// A byte that cannot start or continue the value being read.
        case unexpectedByte(UInt8, expected: String)
        /// `i03e` or `03:abc` (strict mode only).
        case leadingZero
        /// `i-0e` (strict mode only).
        case negativeZero
        /// An integer outside the signed 64-bit range.
        case integerOverflow
        /// A string length beyond the configured limit (or beyond any integer).
        case stringTooLong(limit: Int)
        /// Lists or dictionaries nested deeper than the limit.
        case nestingTooDeep(limit: Int)
        /// More values in the document than the limit.
        case tooManyValues(limit: Int)
        /// The whole input is larger than the limit.
        case inputTooLarge(size: Int, limit: Int)
        /// A dictionary key that does not sort after its predecessor (strict mode only).
        case unsortedKey(String)
        /// A dictionary key that appeared before in the same dictionary (strict mode only).
        case duplicateKey(String)
        /// Bytes after the end of the top-level value.
        case trailingData(count: Int)
    }

    /// Byte offset in the input where the problem was found.
    public let offset: Int
    public let reason: Reason

    public init(offset: Int, reason: Reason) {
        self.offset = offset
        self.reason = reason
    }

    public var description: String {
        "invalid bencode at byte \(offset): \(reasonText)"
    }

    private var reasonText: String {
        switch reason {
        case .unexpectedEnd(let expected):
            return "input ends, expected \(expected)"
        case .unexpectedByte(let byte, let expected):
            return "unexpected \(Self.describe(byte)), expected \(expected)"
        case .leadingZero:
            return "number has a leading zero"
        case .negativeZero:
            return "integer is negative zero"
        case .integerOverflow:
            return "integer does not fit in 64 bits"
        case .stringTooLong(let limit):
            return "string length exceeds the limit of \(limit) bytes"
        case .nestingTooDeep(let limit):
            return "lists/dictionaries nested deeper than \(limit)"
        case .tooManyValues(let limit):
            return "more than \(limit) values"
        case .inputTooLarge(let size, let limit):
            return "input of \(size) bytes exceeds the limit of \(limit) bytes"
        case .unsortedKey(let key):
            return "dictionary key \"\(key)\" is out of order"
        case .duplicateKey(let key):
            return "dictionary key \"\(key)\" is repeated"
        case .trailingData(let count):
            return "\(count) unexpected byte(s) after the end of the value"
        }
    }

    private static func describe(_ byte: UInt8) -> String {
        if byte >= 0x21 && byte < 0x7F {
            return "'\(Character(Unicode.Scalar(byte)))'"
        }
        let hex = String(byte, radix: 16, uppercase: true)
        return "byte 0x" + (hex.count == 1 ? "0" + hex : hex)
    }
}
