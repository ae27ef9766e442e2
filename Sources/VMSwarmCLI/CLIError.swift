import Foundation

/// A failure the user must act on, printed as one line.
struct CLIError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }

    /// Runs `body`, turning any error into a one-line message (prefixed with `context` if given).
    static func wrap<T>(_ context: String? = nil, _ body: () throws -> T) throws(CLIError) -> T {
        do {
            return try body()
        } catch let error as CLIError {
            throw error
        } catch {
            let message: String
            message = error is CocoaError ? error.localizedDescription : String(describing: error)
            throw CLIError(context.map { "\($0): \(message)" } ?? message)
        }
    }
}

extension CLIError {
    static func wrapAsync<T>(_ context: String? = nil, _ body: () async throws -> T) async throws(CLIError) -> T {
        do {
            return try await body()
        } catch {
            throw CLIError((context.map { "\($0): " } ?? "") + (error is CocoaError ? error.localizedDescription : String(describing: error)))
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
