/// Why an evaluation could not go on (unreadable dataset or manifest, unwritable output), in one
/// line a user can act on. The CLI prints it after `livenessd eval:` and exits with status 2.
public struct EvalError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
