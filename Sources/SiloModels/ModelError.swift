/// An error loading or building a model: a missing or mis-shaped tensor, an unknown architecture.
public struct ModelError: Error, CustomStringConvertible, Equatable, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let missingTensor = Code(name: "missing tensor")
        public static let wrongShape = Code(name: "wrong shape")
        public static let unknownArchitecture = Code(name: "unknown architecture")
        public static let invalidConfiguration = Code(name: "invalid configuration")
        public static let missingFile = Code(name: "missing file")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    public static func missingTensor(_ key: String, expected: [Int], file: String? = nil) -> ModelError {
        ModelError(.missingTensor, "\(file.map { "\($0): " } ?? "")tensor '\(key)' (expected shape \(expected)) is missing")
    }

    public static func wrongShape(_ key: String, expected: [Int], actual: [Int], file: String? = nil) -> ModelError {
        ModelError(.wrongShape, "\(file.map { "\($0): " } ?? "")tensor '\(key)' has shape \(actual), expected \(expected)")
    }
}
