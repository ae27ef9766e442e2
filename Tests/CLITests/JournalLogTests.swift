import Foundation
import Logging
import TestSupport
import Testing

@testable import VMSwarmCLI

/// Logs under systemd (issue 21, point 2): journald reads the priority from each line.
@Suite struct JournalLogTests {
    @Test func linesCarryTheirSyslogPriorityAndStayOneEntry() {
        #expect(JournalLogHandler.line(level: .warning, label: "vmswarm.seed", message: "dropping peer", metadata: ["reason": "bad hash", "peer": "10.0.0.2"])
            == "<4>vmswarm.seed: dropping peer peer=10.0.0.2 reason=bad hash\n")
        #expect(JournalLogHandler.line(level: .error, label: "t", message: "two\nlines", metadata: [:]) == "<3>t: two lines\n")
        #expect([Logger.Level.trace, .debug, .info, .notice, .warning, .error, .critical].map(JournalLogHandler.priority) == [7, 7, 6, 5, 4, 3, 2])
    }

    /// Only the stream systemd named is the journal: a child that inherited JOURNAL_STREAM and
    /// writes into a pipe gets plain lines.
    @Test func theJournalIsRecognisedByDeviceAndInode() throws {
        var info = stat()
        try #require(fstat(STDERR_FILENO, &info) == 0)
        #expect(JournalLogHandler.standardErrorIsJournal(["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"]))
        #expect(!JournalLogHandler.standardErrorIsJournal(["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino &+ 1)"]))
        #expect(!JournalLogHandler.standardErrorIsJournal(["JOURNAL_STREAM": "garbage"]))
        #expect(!JournalLogHandler.standardErrorIsJournal([:]))
    }
}
