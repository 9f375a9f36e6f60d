/// Passes on every Nth frame of a source (and all its other news): `eval --every N`. A dropped
/// frame's buffer goes back to its pool as soon as the frame is released.
public final class EveryNthFrame: FrameSource, Sendable {
    public let inner: FrameSource
    public let every: UInt64
    public var id: String { self.inner.id }
    public var kind: SourceKind { self.inner.kind }

    public init(_ inner: FrameSource, every: Int) {
        self.inner = inner
        self.every = UInt64(max(1, every))
    }

    public func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws {
        let every = self.every
        try self.inner.start { event in
            if case .frame(let frame) = event, frame.sequence % every != 0 { return }
            handler(event)
        }
    }

    public func stop() { self.inner.stop() }
}
