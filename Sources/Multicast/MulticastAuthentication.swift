import Crypto
import Metainfo

/// Authentication of the booster's control packets for sealed images (docs/multicast.md,
/// "Authenticated sessions").
///
/// Anyone on a LAN can put datagrams on a group, and a plain session has nothing to tell the
/// publisher's sender from another host. A sealed image has: its content key, which only the
/// publisher and the sites it wrapped the key for hold. The key here is derived from it with
/// HKDF-SHA256 (salt: the session, so two images never share a key even in a test that reuses a
/// content key; info: a label naming the purpose, so it is never the key GCM seals pieces with).
/// A control packet (announce, plan, NACK, done) is authenticated by setting bit 15 of its flags
/// and appending the first 16 bytes of HMAC-SHA256 over the whole datagram (flag set, tag not yet
/// appended). Control packets are the ones that steer a receiver (where the pass is, what it
/// plans, that it ended) and the sender (what to repair), so a key holder follows only the
/// publisher's sender and the sender counts repair votes only from key holders.
///
/// Data packets carry no tag: a data packet fills a 1500-byte frame exactly, and a tag would
/// cost every datagram 16 bytes of payload. They are taken only from a sender instance whose
/// authenticated announces a key holder accepted, and every piece they form is checked against
/// the torrent's SHA-1 and its GCM tag before it is stored; a forged block can therefore spoil
/// a piece (which is then fetched over BitTorrent and counted, never blamed on a peer), not
/// change what is stored.
public struct MulticastAuthentication: Sendable {
    /// Bytes of HMAC-SHA256 kept: 128 bits, so a forger's chance per datagram is 2^-128.
    public static let tagLength = 16
    /// Bit 15 of a control packet's flags: a tag follows the packet.
    public static let flag: UInt16 = 0x8000
    static let label = Array("vmswarm multicast packet authentication v1".utf8)

    private let key: SymmetricKey

    /// The key for one session, from the image's 32-byte content key.
    public init(contentKey: [UInt8], session: MulticastSession) {
        let salt = (0..<8).map { UInt8(truncatingIfNeeded: session.value >> (56 - 8 * $0)) }
        key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: contentKey), salt: salt, info: Self.label, outputByteCount: 32)
    }

    /// Whether a datagram is a control packet that says a tag follows (it may still be forged).
    public static func isTagged(_ datagram: [UInt8]) -> Bool {
        datagram.count >= MulticastPacket.headerLength + tagLength && !MulticastPacket.isData(datagram)
            && datagram[6] & 0x80 != 0
    }

    /// The control datagram with the flag set and its tag appended. Data datagrams are returned
    /// as they are.
    public func seal(_ datagram: [UInt8]) -> [UInt8] {
        guard datagram.count >= MulticastPacket.headerLength, !MulticastPacket.isData(datagram) else { return datagram }
        var out = datagram
        out[6] |= 0x80
        out += tag(of: out)
        return out
    }

    /// The control datagram as the codec reads it (flag cleared, tag removed) if its tag is right;
    /// nil if it has no tag or a wrong one.
    public func open(_ datagram: [UInt8]) -> [UInt8]? {
        guard Self.isTagged(datagram) else { return nil }
        let body = Array(datagram.dropLast(Self.tagLength))
        let expected = tag(of: body)
        // Constant time: every byte is compared whatever the first difference.
        var difference: UInt8 = 0
        for (a, b) in zip(expected, datagram.suffix(Self.tagLength)) { difference |= a ^ b }
        guard difference == 0 else { return nil }
        return Self.clearFlag(body)
    }

    /// For a node without the key (a relay of a sealed image): the datagram with any tag removed
    /// unchecked, so that it can still take part in the session the way it would in a plain one.
    public static func strip(_ datagram: [UInt8]) -> [UInt8] {
        guard isTagged(datagram) else { return datagram }
        return clearFlag(Array(datagram.dropLast(tagLength)))
    }

    private static func clearFlag(_ datagram: [UInt8]) -> [UInt8] {
        var out = datagram
        out[6] &= 0x7F
        return out
    }

    private func tag(of bytes: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: key)).prefix(Self.tagLength).map { $0 }
    }
}
