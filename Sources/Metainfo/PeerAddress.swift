/// A peer's IP address and port, as trackers hand them out (BEP 23 compact: 6 bytes for IPv4,
/// BEP 7: 18 bytes for IPv6).
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 bytes (IPv6), network order.
    public let ip: [UInt8]
    public let port: UInt16

    public init?(ip: [UInt8], port: UInt16) {
        guard ip.count == 4 || ip.count == 16 else { return nil }
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 peer.
        if ip.count == 16 && ip[0..<10].allSatisfy({ $0 == 0 }) && ip[10] == 0xFF && ip[11] == 0xFF {
            self.ip = Array(ip[12..<16])
        } else {
            self.ip = ip
        }
        self.port = port
    }

    public var isIPv4: Bool { ip.count == 4 }

    /// Parses an IPv4 dotted quad or an IPv6 literal (no brackets, no zone).
    public init?(host: String, port: UInt16) {
        if let v4 = Self.parseIPv4(host) {
            self.init(ip: v4, port: port)
        } else if let v6 = Self.parseIPv6(host) {
            self.init(ip: v6, port: port)
        } else {
            return nil
        }
    }

    public var host: String {
        if isIPv4 { return ip.map(String.init).joined(separator: ".") }
        var groups: [String] = []
        for index in stride(from: 0, to: 16, by: 2) {
            groups.append(String(UInt16(ip[index]) << 8 | UInt16(ip[index + 1]), radix: 16))
        }
        return groups.joined(separator: ":")
    }

    public var description: String { isIPv4 ? "\(host):\(port)" : "[\(host)]:\(port)" }

    /// The subnet of `prefix` bits that holds this address, named like `10.77.2.0/24`: the rack a
    /// node is counted in when it names none. The prefix is clamped to the address's width.
    ///
    /// The tracker names the rack of every announce this way, so IPv4 names are written straight
    /// into one small buffer (at most 18 bytes) instead of through arrays and joined strings.
    public static func subnetName(_ ip: [UInt8], prefix: Int) -> String {
        let bits = max(0, min(prefix, ip.count * 8))
        if ip.count == 4 {
            let address = UInt32(ip[0]) << 24 | UInt32(ip[1]) << 16 | UInt32(ip[2]) << 8 | UInt32(ip[3])
            let network = bits == 0 ? 0 : address & ~UInt32(0) << (32 - bits)
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 18) { buffer in
                var count = 0
                func decimal(_ value: UInt32) {
                    if value >= 100 { buffer[count] = UInt8(ascii: "0") + UInt8(value / 100); count += 1 }
                    if value >= 10 { buffer[count] = UInt8(ascii: "0") + UInt8(value / 10 % 10); count += 1 }
                    buffer[count] = UInt8(ascii: "0") + UInt8(value % 10)
                    count += 1
                }
                for shift in stride(from: UInt32(24), through: 0, by: -8) {
                    decimal(network >> shift & 0xFF)
                    buffer[count] = shift == 0 ? UInt8(ascii: "/") : UInt8(ascii: ".")
                    count += 1
                }
                decimal(UInt32(bits))
                return String(decoding: UnsafeBufferPointer(rebasing: buffer[..<count]), as: UTF8.self)
            }
        }
        let masked = ip.enumerated().map { index, byte -> UInt8 in
            let kept = bits - index * 8
            return kept >= 8 ? byte : kept <= 0 ? 0 : byte & ~(0xFF >> kept)
        }
        let network = PeerAddress(ip: masked, port: 0).map(\.host) ?? ""
        return "\(network)/\(bits)"
    }

    /// The compact form: address bytes then the port, big-endian.
    public var compact: [UInt8] { ip + [UInt8(port >> 8), UInt8(port & 0xFF)] }

    /// Reads a compact peer list (6 bytes a peer for IPv4, 18 for IPv6), at most `limit` peers,
    /// skipping port 0. Nil when the length is not a multiple of the width.
    public static func compactList(_ bytes: [UInt8], ipv6: Bool, limit: Int) -> [PeerAddress]? {
        let width = ipv6 ? 18 : 6
        guard bytes.count % width == 0 else { return nil }
        // Counted in entries, not bytes: `limit * width` could overflow for a caller's huge limit.
        let count = min(bytes.count / width, max(0, limit))
        return stride(from: 0, to: count * width, by: width).compactMap { offset in
            let port = UInt16(bytes[offset + width - 2]) << 8 | UInt16(bytes[offset + width - 1])
            return port == 0 ? nil : PeerAddress(ip: Array(bytes[offset..<(offset + width - 2)]), port: port)
        }
    }

    static func parseIPv4(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let value = UInt8(part),
                part.count == 1 || part.first != "0"
            else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        guard text.contains(":"), text.utf8.count <= 45 else { return nil }
        var text = Substring(text)
        var tail4: [UInt8] = []
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = parseIPv4(String(text[text.index(after: lastColon)...])) else { return nil }
            tail4 = v4
            text = text[...lastColon]
            if text.hasSuffix(":") && !text.hasSuffix("::") { text = text.dropLast() }
        }
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(group.count), let value = UInt16(group, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        let tail = halves.count == 2 ? groups(halves[1]) : []
        guard let tail else { return nil }
        let wanted = tail4.isEmpty ? 8 : 6
        let present = head.count + tail.count
        if halves.count == 1 {
            guard present == wanted else { return nil }
        } else {
            guard present < wanted else { return nil }
        }
        let all = head + [UInt16](repeating: 0, count: wanted - present) + tail
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } + tail4
    }
}
