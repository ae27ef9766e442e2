/// A block of IP addresses written as CIDR (`10.2.0.0/16`, `fd00::/8`): a site's networks, whose
/// peers are near and whose nodes dial only each other.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The first address, with every bit past the prefix cleared: 4 bytes (IPv4) or 16 (IPv6).
    public let base: [UInt8]
    public let prefixLength: Int

    /// Parses `ADDRESS/PREFIX` or a lone address (a network of one). Host bits past the prefix
    /// are refused, as `ip route` does, so `10.2.3.4/16` is not silently taken for `10.2.0.0/16`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = PeerAddress(host: String(parts[0]), port: 0) else { return nil }
        let bits = address.ip.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...bits).contains(value), parts[1].allSatisfy(\.isASCII) else { return nil }
            prefix = value
        }
        guard Self.masked(address.ip, prefix) == address.ip else { return nil }
        base = address.ip
        prefixLength = prefix
    }

    /// Whether `ip` (4 or 16 bytes, network order) lies in this network. An IPv4-mapped IPv6
    /// address counts as its IPv4 address.
    /// Allocates nothing: the engine asks it of every peer for every block it serves in a rack.
    public func contains(_ ip: [UInt8]) -> Bool {
        let mapped = ip.count == 16 && ip[0..<10].allSatisfy { $0 == 0 } && ip[10] == 0xFF && ip[11] == 0xFF
        let start = mapped ? 12 : 0
        guard ip.count - start == base.count else { return false }
        var bits = prefixLength
        for index in base.indices where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            guard ip[start + index] & mask == base[index] else { return false }
            bits -= 8
        }
        return true
    }

    public var description: String { "\(PeerAddress(ip: base, port: 0)?.host ?? "?")/\(prefixLength)" }

    private static func masked(_ ip: [UInt8], _ prefix: Int) -> [UInt8] {
        ip.indices.map { index in
            let kept = min(8, max(0, prefix - 8 * index))
            return kept == 8 ? ip[index] : ip[index] & ~(0xFF >> UInt8(kept))
        }
    }
}
