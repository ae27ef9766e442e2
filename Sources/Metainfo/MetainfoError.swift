import Bencode

/// Why a .torrent file was refused: which field, what was wrong with it, and at which byte offset of
/// the file, so a corrupt torrent yields one line a person can act on.
public enum MetainfoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file is not valid bencode.
    case malformed(BencodeError)
    case missingField(String, dictionaryOffset: Int)
    case wrongType(field: String, expected: String, found: String, offset: Int)
    case invalidValue(field: String, problem: String, offset: Int)
    /// A name or path component that could escape or confuse the target folder: empty, `.`, `..`,
    /// or containing `/`, `\` or NUL.
    case unsafePath(field: String, component: String, offset: Int)
    case invalidUTF8(field: String, offset: Int)
    case unsupported(String, offset: Int)
    /// Two files of a multi-file torrent that would land on the same place on disk: the same path
    /// twice, or a file where another file needs a folder (`a` and `a/b`). `field` is the later
    /// file's path, `earlierField` the one it collides with.
    case conflictingPath(field: String, path: String, earlierField: String, offset: Int)

    public var offset: Int {
        switch self {
        case .malformed(let error): error.offset
        case .missingField(_, let offset), .wrongType(_, _, _, let offset), .invalidValue(_, _, let offset),
            .unsafePath(_, _, let offset), .invalidUTF8(_, let offset), .unsupported(_, let offset),
            .conflictingPath(_, _, _, let offset):
            offset
        }
    }

    public var description: String {
        switch self {
        case .malformed(let error):
            return error.description
        case .missingField(let field, let offset):
            return "invalid torrent at byte \(offset): required field '\(field)' is missing"
        case .wrongType(let field, let expected, let found, let offset):
            return "invalid torrent at byte \(offset): '\(field)' should be \(expected) but is \(found)"
        case .invalidValue(let field, let problem, let offset):
            return "invalid torrent at byte \(offset): '\(field)' \(problem)"
        case .unsafePath(let field, let component, let offset):
            let shown = component.unicodeScalars.map { $0.value < 0x20 ? "\\u{\(String($0.value, radix: 16))}" : String($0) }
                .joined()
            return "unsafe torrent at byte \(offset): '\(field)' has the path component \"\(shown)\", "
                + "which could write outside the download folder"
        case .invalidUTF8(let field, let offset):
            return "invalid torrent at byte \(offset): '\(field)' is not valid UTF-8"
        case .unsupported(let what, let offset):
            return "unsupported torrent at byte \(offset): \(what)"
        case .conflictingPath(let field, let path, let earlierField, let offset):
            return "invalid torrent at byte \(offset): '\(field)' (\"\(path)\") collides with '\(earlierField)': "
                + "two files would share one place in the download folder"
        }
    }
}
