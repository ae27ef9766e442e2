/// The `--piece-size auto` rule.
///
/// Pieces are the unit of verification, of `have` announcements and of the swarm's diversity. Too
/// many and every peer spends its time on bitfields and `have` messages; too few and the swarm has
/// little to trade early on, and a failed hash throws away a lot of data. The rule aims at about
/// 2,048 pieces: the smallest power of two that keeps the count at or below 2,048, but never below
/// 256 KiB (small images stay cheap to announce) nor above 16 MiB (the most common clients accept,
/// and what one peer holds per piece in flight). Every image of 512 MiB to 32 GiB so gets exactly
/// 2,048 pieces (256 KiB for 512 MiB, 2 MiB for 4 GiB, 16 MiB for 32 GiB); 64 GiB gets 4,096
/// pieces of 16 MiB.
public enum PieceSizeRule {
    public static let minimum = 256 << 10
    public static let maximum = 16 << 20
    public static let targetPieceCount: Int64 = 2048

    public static func pieceLength(forTotalLength total: Int64) -> Int {
        var length = minimum
        // ceil(total / length) by division: `total + length - 1` overflows for a (sparse) file near
        // Int64.max bytes.
        while length < maximum && total / Int64(length) + (total % Int64(length) == 0 ? 0 : 1) > targetPieceCount {
            length <<= 1
        }
        return length
    }
}
