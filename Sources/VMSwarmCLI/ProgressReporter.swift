import Foundation
import Synchronization

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

    private struct State {
        var done: Int64 = 0
        var lastDraw: Double = 0
        var finished = false
        var note = ""
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
    func update(done: Int64, note: String? = nil, counters: [String: Int64] = [:]) {
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
            state.counters.merge(counters) { $1 }
            let now = Date().timeIntervalSince(start)
            guard !state.finished, now - state.lastDraw >= interval else { return nil }
            state.lastDraw = now
            return render(done: state.done, elapsed: now, final: false, note: state.note, counters: state.counters)
        }
        if let line { emit(line) }
    }

    /// The last line; `done` defaults to the whole (work that stopped early passes what it reached).
    func finish(done: Int64? = nil) {
        let line: String? = state.withLock { state in
            guard !state.finished else { return nil }
            state.finished = true
            return render(done: done ?? total, elapsed: Date().timeIntervalSince(start), final: true, note: state.note, counters: state.counters)
        }
        if let line { emit(line) }
    }

    private func render(done: Int64, elapsed: Double, final: Bool, note: String, counters: [String: Int64]) -> String {
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : .infinity
        switch style {
        case .json:
            var fields: [String: Any] = [
                "event": final ? "done" : "progress", "task": label, "bytes": done, "total": total,
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
            let tail = final ? "in \(Format.duration(elapsed))\n" : "ETA \(Format.duration(eta))"
            return String(
                format: "\r\u{1B}[K%@ [%@] %5.1f%%  %@ of %@  %@  %@%@", label, bar, fraction * 100,
                Format.bytes(done), Format.bytes(total), Format.rate(rate), note.isEmpty ? "" : note + "  ", tail)
        case .plain:
            return String(
                format: "%@: %5.1f%%  %@ of %@  %@  %@%@\n", label, fraction * 100, Format.bytes(done),
                Format.bytes(total), Format.rate(rate), note.isEmpty ? "" : note + "  ",
                final ? "done in \(Format.duration(elapsed))" : "ETA \(Format.duration(eta))")
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
