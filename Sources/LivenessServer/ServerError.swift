/// Why the event server could not start, in words for the operator: what is wrong and what to do.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
