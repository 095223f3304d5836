/// Where an example came from: a file and a 1-based line number.
public struct SourceLocation: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The file's path as it was given to the loader.
    public let file: String
    /// 1-based line number inside ``file``.
    public let line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    /// `file:line`, the form editors and compilers use.
    public var description: String { "\(file):\(line)" }
}

/// An error in a data set, a data fetch or a data-related argument. The message names the file and
/// line (and field) for anything a user's data file can cause.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What kind of failure this is; cases may grow.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// A line that is not a JSON object.
        public static let invalidJSON = Code(name: "invalid JSON")
        /// A required field is absent (or `null`).
        public static let missingField = Code(name: "missing field")
        /// A field holds a value of the wrong JSON type.
        public static let wrongType = Code(name: "wrong type")
        /// A label outside the task's classes.
        public static let unknownLabel = Code(name: "unknown label")
        /// A file with no examples, or a field that must not be empty.
        public static let empty = Code(name: "empty")
        /// A file that cannot be read.
        public static let unreadableFile = Code(name: "unreadable file")
        /// An example whose parts that cannot be truncated do not fit the model's length.
        public static let tooLong = Code(name: "too long")
        /// Data files that are not in the cache yet (`silo data fetch`).
        public static let notFetched = Code(name: "not fetched")
        /// A downloaded or extracted file does not have the expected SHA-256.
        public static let checksumMismatch = Code(name: "checksum mismatch")
        /// pip, unzip or python3 failed or is missing.
        public static let fetchFailed = Code(name: "fetch failed")
        /// An argument outside its valid range (clients, alpha, batch size) given by a user.
        public static let invalidArgument = Code(name: "invalid argument")
        public var description: String { name }
    }

    public let code: Code
    /// The full message, starting with `file:line:` where there is one.
    public let message: String
    /// The file and line at fault, when the error comes from a data file.
    public let location: SourceLocation?

    public init(_ code: Code, _ message: String, at location: SourceLocation? = nil) {
        self.code = code
        self.location = location
        self.message = location.map { "\($0): \(message)" } ?? message
    }

    public var description: String { "\(code): \(message)" }
}
