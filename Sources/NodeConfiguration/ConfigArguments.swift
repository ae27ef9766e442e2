/// Which configuration file a command reads: `--config FILE` on its command line, else the
/// `VMSWARM_CONFIG` environment variable, else `/etc/vmswarm/vmswarm.yaml` when it exists.
/// `--config none` (or `VMSWARM_CONFIG=none`) reads none.
public enum ConfigSource: Sendable, Equatable {
    case none
    /// `explicit`: named by the user, so a file that cannot be read is an error, not a silent default.
    case file(String, explicit: Bool)

    public static let defaultPath = "/etc/vmswarm/vmswarm.yaml"
    public static let environmentVariable = "VMSWARM_CONFIG"

    /// `arguments`: the command's own (after its name).
    public static func locate(arguments: [String], environment: [String: String], exists: (String) -> Bool) -> ConfigSource {
        var named: String?
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            if argument == "--" { break }
            if argument == "--config", index + 1 < arguments.endIndex {
                named = arguments[index + 1]
                index += 2
                continue
            }
            if argument.hasPrefix("--config=") { named = String(argument.dropFirst("--config=".count)) }
            index += 1
        }
        if let named { return named == "none" ? .none : .file(named, explicit: true) }
        if let path = environment[environmentVariable] { return path == "none" || path.isEmpty ? .none : .file(path, explicit: true) }
        return exists(defaultPath) ? .file(defaultPath, explicit: false) : .none
    }
}

extension ConfigFile {
    /// The arguments `setting` stands for in `command` (none if it does not apply there).
    public func arguments(of setting: ConfigSetting, for command: String) -> [String] {
        setting.key.targets(for: command).flatMap { target -> [String] in
            switch setting.key.kind {
            case .flag:
                return setting.values == ["true"] ? [target.option] : []
            case .value, .list:
                return setting.values.flatMap { [target.option, resolved($0, setting.key)] }
            }
        }
    }

    /// The file's arguments for `command`, to go before the user's own `given` ones. A single-value
    /// option given twice keeps the last value, so the user's wins by coming later; a list option
    /// the user gives replaces the file's list rather than adding to it.
    public func arguments(for command: String, given: [String]) -> [String] {
        settings(for: command).flatMap { setting -> [String] in
            let targets = setting.key.targets(for: command)
            if setting.key.kind == .list, targets.contains(where: { Self.gives($0, in: given) }) { return [] }
            return arguments(of: setting, for: command)
        }
    }

    /// Paths named by `command`'s settings that must exist and do not.
    public func missingPaths(for command: String, exists: (String) -> Bool) -> [ConfigProblem] {
        settings(for: command).flatMap { setting -> [ConfigProblem] in
            guard setting.key.paths == .existing else { return [] }
            return setting.values.map { resolved($0, setting.key) }.filter { !exists($0) }.map {
                ConfigProblem(file: path, location: setting.location, key: setting.key.name, message: "\($0) does not exist or cannot be read")
            }
        }
    }

    /// A relative path is taken from the configuration file's folder.
    func resolved(_ value: String, _ key: ConfigKey) -> String {
        guard key.paths != .none, !value.hasPrefix("/"), let slash = path.lastIndex(of: "/") else { return value }
        return String(path[...slash]) + value
    }

    static func gives(_ target: ConfigKey.Target, in given: [String]) -> Bool {
        let spellings = [target.option] + target.aliases
        for argument in given {
            if argument == "--" { return false }
            if spellings.contains(where: { argument == $0 || argument.hasPrefix($0 + "=") }) { return true }
        }
        return false
    }
}
