import Foundation

/// Human-readable sizes, rates and durations, binary units as the rest of the tool uses.
public enum Format {
    public static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.2f %@", value, units[unit])
    }

    public static func rate(_ bytesPerSecond: Double) -> String {
        bytes(Int64(bytesPerSecond.isFinite ? bytesPerSecond : 0)) + "/s"
    }

    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite && seconds >= 0 else { return "--:--" }
        let total = Int(seconds.rounded())
        let (hours, minutes, secs) = (total / 3600, total / 60 % 60, total % 60)
        return hours > 0
            ? String(format: "%d:%02d:%02d", hours, minutes, secs) : String(format: "%d:%02d", minutes, secs)
    }

    /// Parses `auto`-free sizes such as `262144`, `256K`, `256KiB`, `4M`, `1G` (binary multiples).
    public static func parseSize(_ text: String) -> Int? {
        let lowered = text.lowercased().replacingOccurrences(of: "ib", with: "").replacingOccurrences(of: "b", with: "")
        let multipliers: [Character: Int] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
        if let last = lowered.last, let multiplier = multipliers[last] {
            guard let number = Int(lowered.dropLast()), number > 0, number <= Int.max / multiplier else { return nil }
            return number * multiplier
        }
        return Int(lowered).flatMap { $0 > 0 ? $0 : nil }
    }

    /// Parses a link rate in bits per second, as tc writes it: `95mbit`, `1gbit`, `500kbit` (decimal
    /// multiples), or a plain number of bits per second.
    public static func parseBitRate(_ text: String) -> Int? {
        let lowered = text.lowercased()
        let multipliers: [(String, Double)] = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1)]
        for (suffix, multiplier) in multipliers where lowered.hasSuffix(suffix) {
            guard let number = Double(lowered.dropLast(suffix.count)), number > 0, number * multiplier <= 1e12 else { return nil }
            return Int(number * multiplier)
        }
        return Int(lowered).flatMap { $0 > 0 && $0 <= 1_000_000_000_000 ? $0 : nil }
    }
}
