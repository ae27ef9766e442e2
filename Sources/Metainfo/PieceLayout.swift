/// A block of a piece, as `request`, `cancel` and `reject` name it.
public struct BlockRequest: Hashable, Sendable, CustomStringConvertible {
    public let piece: PieceIndex
    /// Offset of the block within its piece.
    public let begin: Int
    public let length: Int

    public init(piece: PieceIndex, begin: Int, length: Int) {
        self.piece = piece
        self.begin = begin
        self.length = length
    }

    public var description: String { "\(piece) [\(begin)+\(length)]" }
}

/// All of a torrent's geometry in one place: how the concatenated file data divides into pieces and
/// blocks, and which file regions a byte range of that data covers (BEP 3: files in the order the
/// torrent lists them, pieces running across file boundaries).
///
/// Nothing else in vmswarm computes `index * pieceLength` or walks file offsets on its own; it asks
/// this type, which validates its inputs once, so later arithmetic cannot overflow.
public struct PieceLayout: Hashable, Sendable {
    /// The largest piece length accepted: a piece is held in memory while it is assembled and hashed,
    /// so this bounds what a torrent can make a peer allocate.
    public static let maxPieceLength = 256 << 20
    /// The unit of a `request` message, as every client uses it.
    public static let blockLength = 16 << 10

    public let pieceLength: Int
    public let totalLength: Int64
    public let pieceCount: Int
    /// Length of each file, in torrent order (padding files included).
    public let fileLengths: [Int64]
    /// Offset of each file's first byte in the concatenated data; one more entry than files, ending
    /// with `totalLength`.
    public let fileOffsets: [Int64]

    public enum Problem: Error, Equatable, Sendable {
        case pieceLengthOutOfRange(Int)
        case negativeFileLength(fileIndex: Int)
        case totalLengthOverflow(fileIndex: Int)
    }

    public init(pieceLength: Int, fileLengths: [Int64]) throws(Problem) {
        guard pieceLength > 0 && pieceLength <= Self.maxPieceLength else {
            throw .pieceLengthOutOfRange(pieceLength)
        }
        var offsets: [Int64] = [0]
        offsets.reserveCapacity(fileLengths.count + 1)
        var total: Int64 = 0
        for (index, length) in fileLengths.enumerated() {
            guard length >= 0 else { throw .negativeFileLength(fileIndex: index) }
            let (sum, overflow) = total.addingReportingOverflow(length)
            guard !overflow else { throw .totalLengthOverflow(fileIndex: index) }
            total = sum
            offsets.append(total)
        }
        self.pieceLength = pieceLength
        self.totalLength = total
        self.fileLengths = fileLengths
        self.fileOffsets = offsets
        // Rounded up without `total + pieceLength - 1`, which overflows for a total near Int64.max
        // (found by the metainfo fuzz target).
        let (whole, rest) = total.quotientAndRemainder(dividingBy: Int64(pieceLength))
        self.pieceCount = Int(whole) + (rest == 0 ? 0 : 1)
    }

    public var pieces: some Sequence<PieceIndex> { (0..<pieceCount).lazy.map(PieceIndex.init) }

    public func contains(_ piece: PieceIndex) -> Bool { piece.value >= 0 && piece.value < pieceCount }

    /// Offset of the piece's first byte in the concatenated data.
    public func offset(of piece: PieceIndex) -> Int64 {
        precondition(contains(piece), "\(piece) outside a torrent of \(pieceCount) pieces")
        return Int64(piece.value) * Int64(pieceLength)
    }

    /// The piece's length: `pieceLength`, except for a shorter last piece.
    public func length(of piece: PieceIndex) -> Int {
        let start = offset(of: piece)
        return Int(min(Int64(pieceLength), totalLength - start))
    }

    public func byteRange(of piece: PieceIndex) -> Range<Int64> {
        let start = offset(of: piece)
        return start..<(start + Int64(length(of: piece)))
    }

    /// Number of 16 KiB blocks (the last one possibly shorter) in the piece.
    public func blockCount(of piece: PieceIndex) -> Int {
        (length(of: piece) + Self.blockLength - 1) / Self.blockLength
    }

    /// The largest block a peer may ask for; every client asks for 16 KiB, and libtorrent and
    /// Transmission refuse more than 128 KiB.
    public static let maxRequestLength = 128 << 10

    /// The 16 KiB requests that cover a piece, in order.
    public func blocks(of piece: PieceIndex) -> [BlockRequest] {
        let length = length(of: piece)
        return stride(from: 0, to: length, by: Self.blockLength).map {
            BlockRequest(piece: piece, begin: $0, length: min(Self.blockLength, length - $0))
        }
    }

    /// Whether `request` lies inside its piece, is non-empty and not longer than `maxRequestLength`.
    public func isValid(_ request: BlockRequest) -> Bool {
        guard contains(request.piece), request.begin >= 0, request.length > 0,
            request.length <= Self.maxRequestLength
        else { return false }
        let (end, overflow) = request.begin.addingReportingOverflow(request.length)
        return !overflow && end <= length(of: request.piece)
    }

    /// A region of one file.
    public struct FileSegment: Hashable, Sendable {
        public let fileIndex: Int
        public let offsetInFile: Int64
        public let length: Int

        public init(fileIndex: Int, offsetInFile: Int64, length: Int) {
            self.fileIndex = fileIndex
            self.offsetInFile = offsetInFile
            self.length = length
        }
    }

    /// The file regions that together hold `range` of the concatenated data, in order. Files of
    /// length zero hold nothing and never appear.
    public func segments(of range: Range<Int64>) -> [FileSegment] {
        precondition(range.lowerBound >= 0 && range.upperBound <= totalLength, "range outside the torrent")
        guard !range.isEmpty else { return [] }
        var result: [FileSegment] = []
        var file = fileIndex(containing: range.lowerBound)
        var position = range.lowerBound
        while position < range.upperBound {
            let fileEnd = fileOffsets[file + 1]
            let end = min(fileEnd, range.upperBound)
            if end > position {
                result.append(FileSegment(
                    fileIndex: file, offsetInFile: position - fileOffsets[file], length: Int(end - position)))
                position = end
            }
            file += 1
        }
        return result
    }

    public func segments(of piece: PieceIndex) -> [FileSegment] { segments(of: byteRange(of: piece)) }

    /// The pieces that hold any byte of the file (none for an empty file).
    public func pieces(ofFile fileIndex: Int) -> Range<Int> {
        let start = fileOffsets[fileIndex]
        let end = fileOffsets[fileIndex + 1]
        guard end > start else { return 0..<0 }
        let first = Int(start / Int64(pieceLength))
        let last = Int((end - 1) / Int64(pieceLength))
        return first..<(last + 1)
    }

    /// The last file whose start is at or before `offset`: with empty files sharing that start,
    /// the one after them, which holds the byte.
    private func fileIndex(containing offset: Int64) -> Int {
        var low = 0
        var high = fileLengths.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if fileOffsets[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }
}
