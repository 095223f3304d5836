/// An error from the tensor engine: a shape mismatch, a bad file, a bad argument.
///
/// Every error says what went wrong and where: the operation, the shapes involved, the file and the
/// byte offset. Cases may grow, so this is a struct with a ``Code`` rather than an enum.
public struct TensorError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What kind of problem this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let shapeMismatch = Code(name: "shape mismatch")
        public static let invalidArgument = Code(name: "invalid argument")
        public static let corruptFile = Code(name: "corrupt file")
        public static let unsupportedType = Code(name: "unsupported type")
        public static let io = Code(name: "i/o error")
        public static let notFound = Code(name: "not found")
        public static let nonFinite = Code(name: "non-finite value")
        public var description: String { name }
    }

    public let code: Code
    /// A full sentence for the user: what, where and, when known, how to fix it.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    /// A shape mismatch in `op` between the shapes it was given.
    public static func shapeMismatch(_ op: String, _ shapes: [Int]..., detail: String = "") -> TensorError {
        let listed = shapes.map { "\($0)" }.joined(separator: " and ")
        return TensorError(.shapeMismatch, "\(op): incompatible shapes \(listed)\(detail.isEmpty ? "" : " (\(detail))")")
    }
}
