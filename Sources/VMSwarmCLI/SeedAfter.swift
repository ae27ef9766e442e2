/// What `get` does once the image is complete (`--seed-after`): exit, or keep serving the swarm
/// until a time has passed, a share ratio is reached, the swarm is done, or forever.
enum SeedAfter: Equatable, Sendable, CustomStringConvertible {
    case none
    case forever
    /// Until no peer we know of still lacks pieces.
    case done
    case seconds(Double)
    /// Until we have uploaded this many times the image's size.
    case ratio(Double)

    /// How long the swarm must look finished before `done` believes it: peers that are about to
    /// connect, or a tracker answer on its way, get this long to show up.
    static let doneGrace: Double = 10

    static let help = """
        After the download: 'none' (exit), 'forever', 'done' (until no peer in the swarm lacks pieces), \
        a time such as 90, 90s, 10m or 2h, or a share ratio such as 2x (uploaded twice the image).
        """

    init?(_ text: String) {
        let text = text.lowercased()
        switch text {
        case "none", "0": self = .none
        case "forever": self = .forever
        case "done": self = .done
        default:
            let multipliers: [Character: Double] = ["s": 1, "m": 60, "h": 3600]
            if text.hasSuffix("x"), let ratio = Double(text.dropLast()), ratio.isFinite, ratio > 0 {
                self = .ratio(ratio)
            } else if let unit = text.last.flatMap({ multipliers[$0] }), let value = Double(text.dropLast()), value.isFinite, value >= 0 {
                self = .seconds(value * unit)
            } else if let value = Double(text), value.isFinite, value >= 0 {
                self = .seconds(value)
            } else {
                return nil
            }
        }
    }

    var description: String {
        switch self {
        case .none: "none"
        case .forever: "forever"
        case .done: "done"
        case .seconds(let seconds): "\(seconds)s"
        case .ratio(let ratio): "\(ratio)x"
        }
    }

    /// Whether seeding may stop. `swarmDoneFor` is how long the swarm has looked finished.
    func isSatisfied(seedingFor elapsed: Double, uploaded: Int64, imageLength: Int64, swarmDoneFor: Double) -> Bool {
        switch self {
        case .none: true
        case .forever: false
        case .done: swarmDoneFor >= Self.doneGrace
        case .seconds(let seconds): elapsed >= seconds
        case .ratio(let ratio): Double(uploaded) >= ratio * Double(max(imageLength, 1))
        }
    }
}
