import Dispatch

/// Runs `count` copies of a body on the system's worker threads and waits for all of them.
enum DispatchQueueRunner {
    static func run(_ count: Int, _ body: @Sendable (Int) -> Void) {
        DispatchQueue.concurrentPerform(iterations: count, execute: body)
    }
}
