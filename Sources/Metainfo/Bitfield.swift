/// A set of pieces (ours, or what a peer has): one bit per piece, the high bit of the first byte
/// is piece 0, as the `bitfield` message carries it (BEP 3).
public struct Bitfield: Hashable, Sendable {
    public let pieceCount: Int
    public private(set) var bytes: [UInt8]
    public private(set) var count: Int

    public init(pieceCount: Int, all: Bool = false) {
        precondition(pieceCount >= 0)
        self.pieceCount = pieceCount
        bytes = [UInt8](repeating: all ? 0xFF : 0, count: (pieceCount + 7) / 8)
        count = all ? pieceCount : 0
        if all, pieceCount % 8 != 0 { bytes[bytes.count - 1] = 0xFF << (8 - pieceCount % 8) }
    }

    public enum Problem: Error, Equatable, Sendable {
        case wrongSize(expected: Int, got: Int)
        case spareBitsSet
    }

    /// Reads a bitfield message's payload: exactly `ceil(pieceCount / 8)` bytes, spare bits clear.
    public init(bytes: [UInt8], pieceCount: Int) throws(Problem) {
        let expected = (pieceCount + 7) / 8
        guard bytes.count == expected else { throw .wrongSize(expected: expected, got: bytes.count) }
        if pieceCount % 8 != 0, let last = bytes.last, last & (0xFF >> (pieceCount % 8)) != 0 {
            throw .spareBitsSet
        }
        self.pieceCount = pieceCount
        self.bytes = bytes
        count = bytes.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    public subscript(piece: PieceIndex) -> Bool {
        precondition(piece.value >= 0 && piece.value < pieceCount, "\(piece) outside \(pieceCount) pieces")
        return bytes[piece.value >> 3] & (0x80 >> UInt8(piece.value & 7)) != 0
    }

    /// Marks a piece as present; returns false if it already was.
    @discardableResult
    public mutating func insert(_ piece: PieceIndex) -> Bool {
        precondition(piece.value >= 0 && piece.value < pieceCount, "\(piece) outside \(pieceCount) pieces")
        let mask: UInt8 = 0x80 >> UInt8(piece.value & 7)
        guard bytes[piece.value >> 3] & mask == 0 else { return false }
        bytes[piece.value >> 3] |= mask
        count += 1
        return true
    }

    @discardableResult
    public mutating func remove(_ piece: PieceIndex) -> Bool {
        precondition(piece.value >= 0 && piece.value < pieceCount, "\(piece) outside \(pieceCount) pieces")
        let mask: UInt8 = 0x80 >> UInt8(piece.value & 7)
        guard bytes[piece.value >> 3] & mask != 0 else { return false }
        bytes[piece.value >> 3] &= ~mask
        count -= 1
        return true
    }

    /// Removes every piece of `other` (a bitfield of the same torrent).
    public mutating func subtract(_ other: Bitfield) {
        combine(other) { $0 & ~$1 }
    }

    /// Keeps only the pieces `other` (a bitfield of the same torrent) also holds.
    public mutating func formIntersection(_ other: Bitfield) {
        combine(other) { $0 & $1 }
    }

    /// Adds every piece of `other` (a bitfield of the same torrent).
    public mutating func formUnion(_ other: Bitfield) {
        combine(other) { $0 | $1 }
    }

    /// Whether this holds a piece that `other` (a bitfield of the same torrent) lacks.
    public func hasPieces(notIn other: Bitfield) -> Bool {
        precondition(other.pieceCount == pieceCount, "bitfields of different torrents")
        return bytes.withUnsafeBytes { ours in
            other.bytes.withUnsafeBytes { theirs in
                let words = ours.count / 8
                for word in 0..<words {
                    let offset = word * 8
                    if ours.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                        & ~theirs.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != 0 { return true }
                }
                for index in words * 8..<ours.count where ours[index] & ~theirs[index] != 0 { return true }
                return false
            }
        }
    }

    /// Sets each byte to `operation(ours, theirs)`, eight at a time (the engine runs these on every
    /// piece a peer announces, over bitfields of thousands of pieces), and recounts.
    private mutating func combine(_ other: Bitfield, _ operation: (UInt64, UInt64) -> UInt64) {
        precondition(other.pieceCount == pieceCount, "bitfields of different torrents")
        var total = 0
        bytes.withUnsafeMutableBytes { ours in
            other.bytes.withUnsafeBytes { theirs in
                let words = ours.count / 8
                for word in 0..<words {
                    let offset = word * 8
                    let value = operation(ours.loadUnaligned(fromByteOffset: offset, as: UInt64.self),
                                          theirs.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                    ours.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
                    total += value.nonzeroBitCount
                }
                for index in words * 8..<ours.count {
                    let value = UInt8(truncatingIfNeeded: operation(UInt64(ours[index]), UInt64(theirs[index])))
                    ours[index] = value
                    total += value.nonzeroBitCount
                }
            }
        }
        count = total
    }

    /// Calls `body` with each piece held, ascending; skips empty bytes whole.
    public func forEachPiece(_ body: (PieceIndex) throws -> Void) rethrows {
        for index in bytes.indices where bytes[index] != 0 {
            var byte = bytes[index]
            while byte != 0 {
                let bit = byte.leadingZeroBitCount
                try body(PieceIndex(index * 8 + bit))
                byte &= ~(0x80 >> UInt8(bit))
            }
        }
    }

    public var isComplete: Bool { count == pieceCount }
    public var isEmpty: Bool { count == 0 }
}
