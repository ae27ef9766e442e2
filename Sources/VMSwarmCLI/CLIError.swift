import Foundation

/// A failure the user must act on, printed as one line.
struct CLIError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }

    /// One line for any error: a CLIError as it is, Foundation's errors by their localized text,
    /// vmswarm's typed errors by their description; prefixed with `context` if given.
    init(_ error: any Error, context: String?) {
        if let error = error as? CLIError {
            self = error
            return
        }
        let message = error is CocoaError ? error.localizedDescription : String(describing: error)
        self.init(context.map { "\($0): \(message)" } ?? message)
    }

    @discardableResult
    static func wrap<T>(_ context: String? = nil, _ body: () throws -> T) throws(CLIError) -> T {
        do {
            return try body()
        } catch {
            throw CLIError(error, context: context)
        }
    }

    static func wrapAsync<T>(_ context: String? = nil, _ body: () async throws -> T) async throws(CLIError) -> T {
        do {
            return try await body()
        } catch {
            throw CLIError(error, context: context)
        }
    }
}

enum JSONLine {
    static func encode(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
