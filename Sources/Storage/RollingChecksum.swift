#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import Dispatch
import Metainfo
import Synchronization

/// rsync's weak checksum of a window of bytes (Tridgell's thesis, 1999): two 16-bit sums, `a` of the
/// bytes and `b` of the bytes weighted by their distance from the window's end. Sliding the window
/// one byte costs a few additions, so every offset of a file can be tried for data that moved by
/// any number of bytes; a match is only a hint, confirmed by the piece's SHA-1.
public struct RollingChecksum: Sendable, Equatable {
    public let window: Int
    private var a: UInt32
    private var b: UInt32

    /// The checksum of `bytes`, which are the whole window.
    public init(_ bytes: UnsafeRawBufferPointer) {
        window = bytes.count
        var a: UInt32 = 0
        var b: UInt32 = 0
        for byte in bytes {
            a &+= UInt32(byte)
            b &+= a
        }
        self.a = a & 0xffff
        self.b = b & 0xffff
    }

    public init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { RollingChecksum($0) }
    }

    public var value: UInt32 { a | b << 16 }

    /// Slides the window one byte: `out` leaves at its start, `in` enters at its end.
    @inline(__always)
    public mutating func roll(out: UInt8, in new: UInt8) {
        a = (a &- UInt32(out) &+ UInt32(new)) & 0xffff
        b = (b &- UInt32(truncatingIfNeeded: window) &* UInt32(out) &+ a) & 0xffff
    }
}

/// Finds the pieces of a new image in the bytes of an old one wherever they now lie (data that
/// moved, not only data left at its offset): every offset of the old bytes is tried with the
/// rolling checksum against the weak checksums the torrent publishes, and a hit becomes a match
/// only when the window's SHA-1 is the piece's. Pure: bytes in, offsets out.
///
/// Only pieces of the full piece length are looked for (the last piece of a file is shorter and
/// is found at its offset, if anywhere). The strong checks are bounded, so data crafted to hit
/// the weak sums everywhere costs at most `strongCheckLimit` hashes, never a hang.
public struct MovedPieceFinder: Sendable {
    public let pieceLength: Int
    /// Weak checksum → the wanted pieces that have it (identical pieces share one).
    private let wanted: [UInt32: [PieceIndex]]
    /// One bit per value of the low 16 bits of a wanted weak sum: most offsets are turned away
    /// by one load, before any dictionary lookup.
    private let filter: [UInt64]
    private let hashOf: @Sendable (PieceIndex) -> [UInt8]
    public let strongCheckLimit: Int

    public struct Result: Sendable, Equatable {
        /// Where each found piece lies in the bytes scanned.
        public var offsets: [PieceIndex: Int] = [:]
        /// Weak hits whose SHA-1 was not the piece's.
        public var falseHits = 0
        /// The strong checks ran out (`strongCheckLimit`) before the scan ended.
        public var gaveUp = false

        public init() {}
    }

    /// `weak`: the torrent's weak checksum of each piece; `wanted`: the pieces to look for;
    /// `hash`: a piece's SHA-1 from the torrent.
    public init(pieceLength: Int, weak: [UInt32], wanted: some Sequence<PieceIndex>, hash: @escaping @Sendable (PieceIndex) -> [UInt8],
        strongCheckLimit: Int? = nil) {
        self.pieceLength = pieceLength
        var table: [UInt32: [PieceIndex]] = [:]
        var filter = [UInt64](repeating: 0, count: 1 << 10)
        for piece in wanted where Int(piece.value) < weak.count {
            let sum = weak[Int(piece.value)]
            table[sum, default: []].append(piece)
            filter[Int(sum & 0xffff) >> 6] |= 1 << (UInt64(sum) & 63)
        }
        self.wanted = table
        self.filter = filter
        self.hashOf = hash
        self.strongCheckLimit = strongCheckLimit ?? (4 * table.count + 64)
    }

    public var isEmpty: Bool { wanted.isEmpty }

    /// Scans `bytes` (an old file) for every wanted piece.
    public func scan(_ bytes: UnsafeRawBufferPointer) -> Result {
        var consumed = 0
        return scan(sizeHint: bytes.count) { target in
            let count = min(target.count, bytes.count - consumed)
            if count > 0 { target.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[consumed..<(consumed + count)])) }
            consumed += count
            return count
        }
    }

    /// Scans what `read` gives, front to back (it fills the buffer it is handed as far as it can
    /// and returns the count; 0 at the end, or on an error, which ends the scan). Holds a few
    /// pieces in memory whatever the size of the data. Unlike rsync, the scan does not jump past
    /// a match: the sources of two pieces may overlap in the old data (data that was duplicated),
    /// and a found checksum is not checked again anyway.
    /// `sizeHint`: the data's size, if known, so that small data gets a small buffer.
    public func scan(sizeHint: Int? = nil, read: (UnsafeMutableRawBufferPointer) -> Int) -> Result {
        var result = Result()
        let window = pieceLength
        guard !wanted.isEmpty, window > 0 else { return result }
        let capacity = max(4 * window, min(8 << 20, sizeHint ?? 8 << 20))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
        defer { buffer.deallocate() }
        let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var end = 0  // bytes held, from buffer start
        var start = 0  // the window is base[start ..< start + window]
        var offset = 0  // the data's offset of base[0]
        var finished = false
        /// Makes `count` bytes from `start` available; false at the end of the data.
        func have(_ count: Int) -> Bool {
            while start + count > end {
                if finished { return false }
                if start > 0 && start + count > capacity {
                    memmove(base, base + start, end - start)
                    end -= start
                    offset += start
                    start = 0
                }
                let got = read(UnsafeMutableRawBufferPointer(rebasing: buffer[end..<capacity]))
                if got <= 0 { finished = true } else { end += got }
            }
            return true
        }
        guard have(window) else { return result }
        var remaining = Set(wanted.keys)
        var checks = 0
        var sum = RollingChecksum(UnsafeRawBufferPointer(start: base + start, count: window))
        filter.withUnsafeBufferPointer { filter in
            while true {
                // The hot loop, on locals: roll while the filter turns every offset away and the
                // buffer holds the next byte.
                var position = start
                var rolling = sum
                let stop = end - window
                while position < stop {
                    let value = rolling.value
                    if filter[Int(value & 0xffff) >> 6] & (1 << (UInt64(value) & 63)) != 0 { break }
                    rolling.roll(out: base[position], in: base[position + window])
                    position += 1
                }
                start = position
                sum = rolling
                let value = sum.value
                if filter[Int(value & 0xffff) >> 6] & (1 << (UInt64(value) & 63)) != 0, remaining.contains(value), let pieces = wanted[value] {
                    if checks >= strongCheckLimit {
                        result.gaveUp = true
                        return
                    }
                    checks += 1
                    let digest = Array(Insecure.SHA1.hash(data: UnsafeRawBufferPointer(start: base + start, count: window)))
                    let matching = pieces.filter { result.offsets[$0] == nil && hashOf($0) == digest }
                    if matching.isEmpty {
                        result.falseHits += 1
                    } else {
                        for piece in matching { result.offsets[piece] = offset + start }
                        if pieces.allSatisfy({ result.offsets[$0] != nil }) { remaining.remove(value) }
                        if remaining.isEmpty { return }
                    }
                }
                guard have(window + 1) else { return }
                sum.roll(out: base[start], in: base[start + window])
                start += 1
            }
        }
        return result
    }

    /// Scans a local file with positional reads, split into `parts` ranges scanned side by side
    /// (each overlapping the next by a window, so no offset is missed): nil when it cannot be
    /// opened (or is not a regular file); a read error ends a range's scan with what it found.
    public func scan(file path: String, parts: Int = 1) -> Result? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { return nil }
        let size = Int64(status.st_size)
        // Ranges of at least 16 windows: below that the overlap is most of the work.
        let count = Int(max(1, min(Int64(parts), size / Int64(16 * max(1, pieceLength)))))
        let starts = (0...count).map { size * Int64($0) / Int64(count) }
        let results = Mutex([Result](repeating: Result(), count: count))
        DispatchQueue.concurrentPerform(iterations: count) { part in
            let first = starts[part]
            let end = min(size, starts[part + 1] + Int64(pieceLength) - 1)
            var position = first
            var found = scan(sizeHint: Int(end - first)) { target in
                while true {
                    let count = pread(descriptor, target.baseAddress, min(target.count, Int(end - position)), off_t(position))
                    if count < 0 && errno == EINTR { continue }
                    if count > 0 { position += Int64(count) }
                    return max(0, count)
                }
            }
            found.offsets = found.offsets.mapValues { $0 + Int(first) }
            results.withLock { $0[part] = found }
        }
        return results.withLock { parts in
            parts.reduce(into: Result()) { total, part in
                total.offsets.merge(part.offsets) { min($0, $1) }
                total.falseHits += part.falseHits
                total.gaveUp = total.gaveUp || part.gaveUp
            }
        }
    }
}
