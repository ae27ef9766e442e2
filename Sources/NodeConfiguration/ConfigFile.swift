import Yams

/// Where in a configuration file something was written.
public struct ConfigLocation: Sendable, Equatable {
    /// From 1.
    public let line: Int
    /// From 1, in Unicode scalars.
    public let column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
}

/// Something wrong in a configuration file, and where: printed as `FILE:LINE:COLUMN: KEY: message`,
/// the form editors and compilers use, so an operator can jump to it.
public struct ConfigProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let location: ConfigLocation?
    /// The setting it is about, when it is about one.
    public let key: String?
    public let message: String

    public init(file: String, location: ConfigLocation?, key: String?, message: String) {
        self.file = file
        self.location = location
        self.key = key
        self.message = message
    }

    public var description: String {
        let place = location.map { "\(file):\($0.line):\($0.column)" } ?? file
        return "\(place): " + (key.map { "\($0): " } ?? "") + message
    }
}

/// One setting as written in the file.
public struct ConfigSetting: Sendable, Equatable {
    public let key: ConfigKey
    /// One value, or a list's values in order; a flag's is `true` or `false`.
    public let values: [String]
    public let location: ConfigLocation

    public init(key: ConfigKey, values: [String], location: ConfigLocation) {
        self.key = key
        self.values = values
        self.location = location
    }
}

/// A node's configuration file, read: the settings it holds and what is wrong in it. Reading never
/// stops at the first problem, so `vmswarm config check` can list them all.
public struct ConfigFile: Sendable {
    /// Far more than any real file; a bigger one is refused before it is parsed.
    public static let maxSize = 1 << 20
    /// Items in one list setting.
    public static let maxListItems = 256
    /// Characters in one value.
    public static let maxValueLength = 4096

    public let path: String
    public let settings: [ConfigSetting]
    public let problems: [ConfigProblem]

    public init(path: String, text: String) {
        self.path = path
        var reader = Reader(path: path)
        reader.read(text)
        settings = reader.settings
        problems = reader.problems + Self.overlaps(in: reader.settings, path: path)
    }

    /// Two settings that stand for one option of a command (`rack` and `site.name`): one would
    /// silently win, so the file says which two clash and where.
    static func overlaps(in settings: [ConfigSetting], path: String) -> [ConfigProblem] {
        var first: [String: ConfigSetting] = [:]
        var problems: [ConfigProblem] = []
        for setting in settings {
            var reported = false
            for target in setting.key.targets {
                let option = "\(target.command) \(target.option)"
                if let earlier = first[option], earlier.key.name != setting.key.name {
                    if !reported {
                        problems.append(ConfigProblem(file: path, location: setting.location, key: setting.key.name,
                            message: "sets \(target.option) of \(target.command), as '\(earlier.key.name)' on line \(earlier.location.line) does; give one of them"))
                    }
                    reported = true
                } else if first[option] == nil {
                    first[option] = setting
                }
            }
        }
        return problems
    }

    /// The settings that stand for options of `command`.
    public func settings(for command: String) -> [ConfigSetting] {
        settings.filter { !$0.key.targets(for: command).isEmpty }
    }

    private struct Reader {
        let path: String
        var settings: [ConfigSetting] = []
        var problems: [ConfigProblem] = []

        init(path: String) { self.path = path }

        mutating func problem(_ node: Node?, _ key: String?, _ message: String) {
            problems.append(ConfigProblem(file: path, location: node.flatMap(Self.location), key: key, message: message))
        }

        static func location(_ node: Node) -> ConfigLocation? {
            node.mark.map { ConfigLocation(line: $0.line, column: $0.column) }
        }

        mutating func read(_ text: String) {
            guard text.utf8.count <= ConfigFile.maxSize else {
                problem(nil, nil, "is \(text.utf8.count) bytes; a configuration file is at most \(ConfigFile.maxSize)")
                return
            }
            let root: Node?
            do {
                root = try Yams.compose(yaml: text)
            } catch let error as YamlError {
                problems.append(Self.problem(error, path: path))
                return
            } catch {
                problem(nil, nil, "cannot be read as YAML: \(error)")
                return
            }
            guard let root else { return }  // empty: no settings
            guard case .mapping(let top) = root else {
                problem(root, nil, "a configuration file is a mapping of settings (`key: value` lines)")
                return
            }
            readMapping(top, prefix: nil)
        }

        mutating func readMapping(_ mapping: Node.Mapping, prefix: String?) {
            // Yams refuses a mapping with a key set twice, before any of it is read.
            for (keyNode, value) in mapping {
                guard case .scalar(let scalar) = keyNode else {
                    problem(keyNode, prefix, "a setting's name is plain text")
                    continue
                }
                let name = prefix.map { "\($0).\(scalar.string)" } ?? scalar.string
                if let key = ConfigSchema.key(named: name) {
                    read(value, as: key, at: keyNode)
                } else if prefix == nil, ConfigSchema.sections.contains(name) {
                    guard case .mapping(let inner) = value else {
                        problem(value, name, "is a section: write its settings indented below it")
                        continue
                    }
                    readMapping(inner, prefix: name)
                } else {
                    let hint = ConfigSchema.suggestion(for: name).map { " (did you mean '\($0)'?)" } ?? ""
                    problem(keyNode, name, "is not a setting vmswarm knows\(hint)")
                }
            }
        }

        mutating func read(_ node: Node, as key: ConfigKey, at keyNode: Node) {
            let location = Self.location(keyNode) ?? ConfigLocation(line: 0, column: 0)
            switch (key.kind, node) {
            case (.list, .sequence(let sequence)):
                guard sequence.count <= ConfigFile.maxListItems else {
                    problem(node, key.name, "has \(sequence.count) items; at most \(ConfigFile.maxListItems)")
                    return
                }
                var values: [String] = []
                for item in sequence {
                    guard let value = text(item, key) else { return }
                    values.append(value)
                }
                settings.append(ConfigSetting(key: key, values: values, location: location))
            case (.flag, .scalar(let scalar)):
                switch scalar.string.lowercased() {
                case "true", "yes", "on": settings.append(ConfigSetting(key: key, values: ["true"], location: location))
                case "false", "no", "off": settings.append(ConfigSetting(key: key, values: ["false"], location: location))
                default: problem(node, key.name, "is true or false (got '\(scalar.string)')")
                }
            case (.flag, _):
                problem(node, key.name, "is true or false")
            case (_, .scalar):
                guard let value = text(node, key) else { return }
                settings.append(ConfigSetting(key: key, values: [value], location: location))
            case (_, _):
                problem(node, key.name, key.kind == .list ? "is a value or a list of values" : "is one value, not a list or a section")
            }
        }

        /// A scalar's text, if it is a usable value.
        mutating func text(_ node: Node, _ key: ConfigKey) -> String? {
            guard case .scalar(let scalar) = node else {
                problem(node, key.name, "holds values, not lists or sections")
                return nil
            }
            let value = scalar.string
            guard !value.isEmpty else {
                problem(node, key.name, "is empty")
                return nil
            }
            guard value.count <= ConfigFile.maxValueLength, !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                problem(node, key.name, "is longer than \(ConfigFile.maxValueLength) characters or holds control characters")
                return nil
            }
            return value
        }

        /// A YAML syntax error, where libyaml found it.
        static func problem(_ error: YamlError, path: String) -> ConfigProblem {
            switch error {
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
                .composer(let context, let problem, let mark, _):
                let why = context.map { "\(problem) \($0.text)" } ?? problem
                return ConfigProblem(file: path, location: ConfigLocation(line: mark.line, column: mark.column), key: nil, message: "not valid YAML: \(why)")
            case .duplicatedKeysInMapping(let duplicates, let context):
                return ConfigProblem(file: path, location: ConfigLocation(line: context.mark.line, column: context.mark.column), key: nil,
                    message: "set twice in one section: \(duplicates.joined(separator: ", "))")
            default:
                return ConfigProblem(file: path, location: nil, key: nil, message: "not valid YAML: \(error)")
            }
        }
    }
}
