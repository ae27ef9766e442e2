/// A set of block numbers within one piece (0 ..< count), one bit each: which blocks a receiver
/// heard, or which a NACK names. 4 MiB pieces have 2,996 blocks, so this is 375 bytes, not a Set.
public struct BlockSet: Hashable, Sendable {
    public let count: Int
    private var words: [UInt64]
    public private(set) var memberCount = 0

    public init(count: Int, all: Bool = false) {
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
        if all { for block in 0..<count { insert(block) } }
    }

    public func contains(_ block: Int) -> Bool {
        block >= 0 && block < count && words[block >> 6] & (1 << UInt64(block & 63)) != 0
    }

    /// Adds a block; returns false if it was there already.
    @discardableResult
    public mutating func insert(_ block: Int) -> Bool {
        precondition(block >= 0 && block < count, "block \(block) outside 0..<\(count)")
        let mask: UInt64 = 1 << UInt64(block & 63)
        guard words[block >> 6] & mask == 0 else { return false }
        words[block >> 6] |= mask
        memberCount += 1
        return true
    }

    /// Adds the blocks a NACK entry names (in a piece of `count` blocks), a word at a time: a
    /// flood of NACKs naming whole pieces costs a few operations per entry, not one per block.
    public mutating func insert(_ entry: MulticastPacket.NackEntry) {
        if entry.blockCount == 0 {
            insert(range: entry.firstBlock..<count)
            return
        }
        for (index, byte) in entry.bitmap.enumerated() where byte != 0 {
            for bit in 0..<8 where byte & (0x80 >> UInt8(bit)) != 0 {
                let block = entry.firstBlock + index * 8 + bit
                if block < count { insert(block) }
            }
        }
    }

    /// Adds every block of `range` (clamped to the set).
    public mutating func insert(range: Range<Int>) {
        let range = range.clamped(to: 0..<count)
        guard !range.isEmpty else { return }
        var block = range.lowerBound
        while block < range.upperBound {
            let word = block >> 6
            let first = block & 63
            let last = min(64, first + (range.upperBound - block))
            let mask: UInt64 = last - first == 64 ? ~0 : ((1 << UInt64(last - first)) - 1) << UInt64(first)
            memberCount += (mask & ~words[word]).nonzeroBitCount
            words[word] |= mask
            block += last - first
        }
    }

    public var isFull: Bool { memberCount == count }
    public var isEmpty: Bool { memberCount == 0 }

    /// The members, ascending.
    public var members: [Int] {
        var result: [Int] = []
        result.reserveCapacity(memberCount)
        for (index, word) in words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                result.append(index * 64 + bits.trailingZeroBitCount)
                bits &= bits - 1
            }
        }
        return result
    }

    /// The blocks not in the set, ascending.
    public var complement: [Int] { (0..<count).filter { !contains($0) } }

    public func isSubset(of other: BlockSet) -> Bool {
        guard count == other.count else { return false }
        return zip(words, other.words).allSatisfy { $0 & ~$1 == 0 }
    }
}
