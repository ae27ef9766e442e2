import Foundation
import Synchronization
import Units

/// Shows the progress of long work: a redrawn bar on a terminal, a plain line every few seconds
/// when the output is piped, or JSON lines for schedulers. Safe to update from any thread; it
/// throttles itself, so callers may report as often as they like.
final class ProgressReporter: Sendable {
    enum Style: Sendable {
        case terminal
        case plain
        case json
        case silent

        /// `--json` wins; otherwise a terminal on standard error gets the bar.
        static func choose(json: Bool) -> Style {
            if json { return .json }
            return isatty(STDERR_FILENO) == 1 ? .terminal : .plain
        }
    }

    /// How the work ended, for the last line: only work that reached its goal is "done".
    enum Ending: Sendable {
        case done
        case failed
        case stopped
    }

    /// What the rate on the line measures. `.average` (bytes done over time elapsed) suits work
    /// that runs to an end, as hashing; a swarm node passes what it measures now, and a seeder its
    /// upload rate: its `done` stays at the whole image, so an average would decay towards 0 while
    /// it uploads at full speed, and say nothing about uploading.
    enum Rate: Sendable, Equatable {
        case average
        case down(Double)
        case up(Double)
    }

    private struct State {
        var done: Int64 = 0
        var lastDraw: Double = 0
        var finished = false
        var note = ""
        var rate = Rate.average
        var counters: [String: Int64] = [:]
    }

    private let label: String
    private let total: Int64
    private let style: Style
    private let start = Date()
    private let state = Mutex(State())

    init(label: String, total: Int64, style: Style) {
        self.label = label
        self.total = total
        self.style = style
    }

    /// `note` (peers, upload…) is shown after the rate; `counters` are JSON fields for machines.
    func update(done: Int64, rate: Rate? = nil, note: String? = nil, counters: [String: Int64] = [:]) {
        let interval: Double =
            switch style {
            case .terminal: 0.1
            case .plain: 2
            case .json: 1
            case .silent: .infinity
            }
        let line: String? = state.withLock { state in
            state.done = max(state.done, done)
            if let note { state.note = note }
            if let rate { state.rate = rate }
            state.counters.merge(counters) { $1 }
            let now = Date().timeIntervalSince(start)
            guard !state.finished, now - state.lastDraw >= interval else { return nil }
            state.lastDraw = now
            return render(done: state.done, elapsed: now, ending: nil, rate: state.rate, note: state.note, counters: state.counters)
        }
        if let line { emit(line) }
    }

    /// A line about something that happened once (what `--method auto` chose): the text on a
    /// terminal or in plain output, `json` as one JSON object with --json. On a terminal it goes
    /// above the progress bar, which the next update draws again.
    func note(_ text: String, json: [String: String]) {
        switch style {
        case .json:
            let data = (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])) ?? Data()
            emit(String(decoding: data, as: UTF8.self) + "\n")
        case .terminal:
            emit("\r\u{1B}[K" + text + "\n")
        case .plain:
            emit(text + "\n")
        case .silent:
            break
        }
    }

    /// The last line; `done` defaults to the whole (work that stopped early passes what it reached).
    /// A failed or stopped run says so ("failed after 0:03"), never "done".
    func finish(done: Int64? = nil, ending: Ending = .done) {
        let line: String? = state.withLock { state in
            guard !state.finished else { return nil }
            state.finished = true
            return render(done: done ?? total, elapsed: Date().timeIntervalSince(start), ending: ending, rate: state.rate,
                note: state.note, counters: state.counters)
        }
        if let line { emit(line) }
    }

    /// One line of output: pure (the tests call it), `emit` writes it. `ending` is nil until the last.
    func render(done: Int64, elapsed: Double, ending: Ending?, rate measured: Rate, note: String, counters: [String: Int64]) -> String {
        let final = ending != nil
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let rate: Double
        let rateText: String
        switch measured {
        case .average:
            rate = elapsed > 0 ? Double(done) / elapsed : 0
            rateText = Format.rate(rate)
        case .down(let current):
            rate = current
            rateText = Format.rate(current)
        case .up(let current):
            rate = current
            rateText = "up " + Format.rate(current)
        }
        // An ETA only for work that moves towards `total`: uploading never finishes the image.
        let eta: Double? =
            if case .up = measured { nil } else { rate > 0 ? Double(total - done) / rate : .infinity }
        let tail: String =
            switch ending {
            case nil: eta.map { "ETA \(Format.duration($0))" } ?? ""
            case .done: "done in \(Format.duration(elapsed))"
            case .failed: "failed after \(Format.duration(elapsed))"
            case .stopped: "stopped after \(Format.duration(elapsed))"
            }
        let noteText = note.isEmpty || tail.isEmpty ? note : note + "  "
        let event: String =
            switch ending {
            case nil: "progress"
            case .done: "done"
            case .failed: "failed"
            case .stopped: "stopped"
            }
        switch style {
        case .json:
            var fields: [String: Any] = [
                "event": event, "task": label, "bytes": done, "total": total,
                "percent": (fraction * 1000).rounded() / 10, "rate_bytes_per_s": Int(rate),
                "elapsed_s": (elapsed * 100).rounded() / 100, "note": note,
            ]
            fields.merge(counters.mapValues { $0 as Any }) { $1 }
            let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data()
            return String(decoding: data, as: UTF8.self) + "\n"
        case .terminal:
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            return String(
                format: "\r\u{1B}[K%@ [%@] %5.1f%%  %@ of %@  %@  %@%@%@", label, bar, fraction * 100,
                Format.bytes(done), Format.bytes(total), rateText, noteText, tail, final ? "\n" : "")
        case .plain:
            return String(
                format: "%@: %5.1f%%  %@ of %@  %@  %@%@\n", label, fraction * 100, Format.bytes(done),
                Format.bytes(total), rateText, noteText, tail)
        case .silent:
            return ""
        }
    }

    private func emit(_ line: String) {
        guard !line.isEmpty else { return }
        let handle = style == .json ? FileHandle.standardOutput : FileHandle.standardError
        handle.write(Data(line.utf8))
    }
}
