import Foundation
import Logging

/// Log lines for journald. Under systemd, standard error is the journal's stream, and systemd says
/// so in `JOURNAL_STREAM` (the stream's device and inode). Each line then starts with its syslog
/// priority as `<N>`, which journald takes off and keeps as the entry's priority (so
/// `journalctl -p warning` and colouring work), and carries no timestamp or level word of its own,
/// since the journal has both.
struct JournalLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let line = Self.line(level: event.level, label: label, message: "\(event.message)", metadata: metadata.merging(event.metadata ?? [:]) { $1 })
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// syslog priorities (RFC 5424): swift-log has no `alert` or `emergency`, and both `trace` and
    /// `debug` are debug.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// One entry: `<4>vmswarm.seed: dropping peer reason=… peer=…`. A message spanning lines is
    /// kept on one (journald would make each line an entry of its own).
    static func line(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let text = ([message] + fields).joined(separator: " ").replacingOccurrences(of: "\n", with: " ")
        return "<\(priority(level))>\(label): \(text)\n"
    }

    /// True when standard error is the stream `JOURNAL_STREAM` names ("DEVICE:INODE"); a child that
    /// inherited the variable but writes elsewhere (a pipe, a file) gets plain lines.
    static func standardErrorIsJournal(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}
