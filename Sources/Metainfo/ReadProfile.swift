import Bencode

/// The reads a reader of the image made, in the order it made them: a VM's boot profile
/// (VMTorrent). `get --record-reads` writes one; `get --prefetch` and a torrent that carries one
/// (`create --boot-profile`) turn it into the order pieces are fetched in, so what a VM reads first
/// arrives first. Offsets are in the image as readers see it (the plaintext of a sealed image).
///
/// The text form is what `tools/nbd-replay` replays: one read per line, "OFFSET LENGTH" in
/// decimal, `#` starting a comment. A torrent carries it under `vmswarm-boot-profile`, outside
/// `info` (a hint: it changes no info-hash, and a forged one changes only the order of fetching),
/// as a flat list of integers, offset and length by turn.
public struct ReadProfile: Equatable, Sendable {
    public private(set) var reads: [Range<Int64>]

    /// The most reads one profile may hold, after joining reads that continue each other: a boot
    /// reads a few hundred MiB at most, in far fewer runs than this.
    public static let maximumReads = 1 << 16

    public init() { reads = [] }

    /// `reads`, with each read that starts where the one before it ended joined to it. Throws when
    /// more than `maximumReads` remain.
    public init(reads: some Sequence<Range<Int64>>) throws(ReadProfileError) {
        self.reads = []
        for read in reads where !read.isEmpty { try append(read) }
    }

    /// Adds one read (joined to the last when it continues it); empty reads are ignored.
    public mutating func append(_ read: Range<Int64>) throws(ReadProfileError) {
        guard !read.isEmpty else { return }
        if let last = reads.last, last.upperBound == read.lowerBound {
            reads[reads.count - 1] = last.lowerBound..<read.upperBound
            return
        }
        guard reads.count < Self.maximumReads else { throw .tooManyReads(limit: Self.maximumReads) }
        reads.append(read)
    }

    /// Reads the text form; every bad line is refused with its number.
    public init(text: some StringProtocol) throws(ReadProfileError) {
        self.reads = []
        var number = 0
        // By Character.isNewline: "\r\n" is one Character, which a split on "\n" would not cut.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            number += 1
            let content = line.prefix { $0 != "#" }.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if content.isEmpty { continue }
            guard content.count == 2, let offset = Int64(content[0]), let length = Int64(content[1]) else {
                throw .badLine(number, "expected OFFSET LENGTH in decimal")
            }
            try append(Self.read(offset: offset, length: length, where: .badLine(number, "offset \(offset), length \(length)")))
        }
    }

    /// The text form, one read per line.
    public var text: String {
        reads.map { "\($0.lowerBound) \($0.count)\n" }.joined()
    }

    /// The form a torrent carries.
    public var bencoded: BencodeValue {
        .list(reads.flatMap { [BencodeValue.integer($0.lowerBound), .integer(Int64($0.count))] })
    }

    /// A read of `length` bytes at `offset`, refused with `problem` when negative, empty or past Int64.
    static func read(offset: Int64, length: Int64, where problem: ReadProfileError) throws(ReadProfileError) -> Range<Int64> {
        guard offset >= 0, length > 0, length <= Int64.max - offset else { throw problem }
        return offset..<(offset + length)
    }
}

public enum ReadProfileError: Error, Equatable, Sendable, CustomStringConvertible {
    case badLine(Int, String)
    case tooManyReads(limit: Int)

    public var description: String {
        switch self {
        case .badLine(let line, let why): "line \(line): \(why)"
        case .tooManyReads(let limit): "more than \(limit) reads (after joining reads that continue each other)"
        }
    }
}

extension FieldReader {
    /// `vmswarm-boot-profile`: offset and length by turn, each read checked like the text form's.
    func readProfile(_ node: BencodeNode) throws(MetainfoError) -> ReadProfile {
        let field = Metainfo.bootProfileKey
        let items = try list(node, field)
        guard items.count % 2 == 0, items.count / 2 <= ReadProfile.maximumReads else {
            throw .invalidValue(field: field, problem: "must be offset and length pairs, at most \(ReadProfile.maximumReads)", offset: node.range.lowerBound)
        }
        var profile = ReadProfile()
        for pair in stride(from: 0, to: items.count, by: 2) {
            let offset = try integer(items[pair], "\(field)[\(pair)]")
            let length = try integer(items[pair + 1], "\(field)[\(pair + 1)]")
            let problem = MetainfoError.invalidValue(field: "\(field)[\(pair)]", problem: "a read must be non-empty and inside Int64", offset: items[pair].range.lowerBound)
            do {
                try profile.append(ReadProfile.read(offset: offset, length: length, where: .badLine(pair, "")))
            } catch {
                throw problem
            }
        }
        return profile
    }
}

extension Metainfo {
    static let bootProfileKey = "vmswarm-boot-profile"

    /// The torrent file `bytes` with `profile` as its boot profile, every other field (the info
    /// dictionary, signatures, wrapped keys) kept byte for byte.
    public static func settingBootProfile(_ profile: ReadProfile, inTorrent bytes: [UInt8]) throws(MetainfoError) -> [UInt8] {
        let root: BencodeNode
        do { root = try BencodeDecoder(mode: .lenient).decode(bytes) } catch { throw .malformed(error) }
        guard let entries = root.entries else { throw .wrongType(field: "torrent", expected: "a dictionary", found: "another value", offset: 0) }
        let key = Array(bootProfileKey.utf8)
        var parts = entries.filter { $0.key != key }.map { (key: $0.key, encoded: Array(bytes[$0.value.range])) }
        parts.append((key, profile.bencoded.encoded()))
        return Bencode.encodeDictionary(preencoded: parts)
    }
}
