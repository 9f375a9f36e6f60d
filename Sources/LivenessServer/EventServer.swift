import FramePipeline
import Foundation
import LivenessEngine
import Logging
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import Synchronization
import CPeerCredentials

/// Who may connect, and what they may do: the peer's uid/gid (SO_PEERCRED) must be on a list.
/// Observers may subscribe and ask for status and snapshots; controllers may also change state
/// (`reset`). Root and the daemon's own user are controllers.
public struct AccessPolicy: Sendable, Equatable {
    public enum Role: String, Sendable {
        case observer
        case controller
    }

    /// Observers (and, through the controller lists, controllers).
    public var allowedUIDs: Set<UInt32> = []
    public var allowedGIDs: Set<UInt32> = []
    public var controllerUIDs: Set<UInt32> = []
    public var controllerGIDs: Set<UInt32> = []
    /// Socket file mode (e.g. 0o660) and group, applied after binding.
    public var socketMode: UInt32 = 0o660
    public var socketGroup: String?

    public init() {}

    /// The peer's role, or nil when it may not connect at all. Group rules match the peer's primary group
    /// (what SO_PEERCRED carries) and its supplementary groups (`groups(uid:gid:)`: SO_PEERCRED has none,
    /// so a member of the socket's group by `usermod -aG` was refused).
    public func role(uid: UInt32, gid: UInt32) -> Role? {
        if uid == 0 || uid == getuid() || self.controllerUIDs.contains(uid) { return .controller }
        let groups = self.controllerGIDs.isEmpty && self.allowedGIDs.isEmpty ? [gid] : Self.groups(uid: uid, gid: gid)
        if !self.controllerGIDs.isDisjoint(with: groups) { return .controller }
        return self.allowedUIDs.contains(uid) || !self.allowedGIDs.isDisjoint(with: groups) ? .observer : nil
    }

    public func allows(uid: UInt32, gid: UInt32) -> Bool { self.role(uid: uid, gid: gid) != nil }

    /// Why a peer is refused, naming the rules it did not meet.
    public func refusal(uid: UInt32, gid: UInt32) -> String {
        let groups = Self.groups(uid: uid, gid: gid).sorted().map(String.init).joined(separator: ", ")
        return "access denied for uid \(uid) (groups \(groups)): neither its uid nor one of its groups is in "
            + "access.allow_uids/allow_gids or controller_uids/controller_gids, and it is not root or the daemon's user"
    }

    /// `gid` and every supplementary group of the user `uid` (the group database, as `id` shows them);
    /// just `gid` when the uid has no passwd entry.
    public static func groups(uid: UInt32, gid: UInt32) -> [UInt32] {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name
        else {
            return [gid]
        }
        var count: Int32 = 64
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            let wanted = count
            if getgrouplist(name, gid, &groups, &count) >= 0 { return Array(groups.prefix(Int(count))) }
            // Too small: `count` now holds the number needed.
            if count <= wanted || count > 65_536 { return [gid] }
        }
    }

}

/// The Unix-socket event server (SwiftNIO): newline-delimited JSON (docs/PROTOCOL.md).
///
/// Publishing never waits for a client: each client has a bounded queue (writes not yet taken by
/// the kernel); a client that lets it fill is sent one `bye` line with the reason and closed,
/// and nobody else notices.
public final class EventServer: Sendable {
    // Per-client state lives in each ClientHandler, on its channel's event loop.

    public struct Configuration: Sendable {
        public var path: String
        /// A listening socket handed over by systemd (socket activation) instead of `path`.
        public var inheritedDescriptor: CInt?
        /// Messages a client may have queued before it is disconnected as too slow.
        public var clientQueueLimit = 256
        /// Connections open at once (admitted or not); more get one error line and are closed.
        public var maxClients = 64
        /// How long a connection may stay open without sending a request.
        public var idleTimeout = TimeAmount.seconds(30)
        public var access = AccessPolicy()

        public init(path: String) { self.path = path }
    }

    /// What the server asks the daemon for.
    public struct Hooks: Sendable {
        public var status: @Sendable () -> EventProtocol.StatusMessage
        /// A client subscribed (every time one does).
        public var subscribed: @Sendable () -> Void
        public var reset: @Sendable ([String]?) -> Void
        /// Starts a verification transaction (id, source or nil for the only one, timeout in seconds or nil
        /// for the default); returns the pipeline's token, or throws the reason it cannot start.
        public var verify: @Sendable (_ id: String, _ source: String?, _ timeoutSeconds: Double?) throws -> UInt64

        public init(
            status: @escaping @Sendable () -> EventProtocol.StatusMessage, subscribed: @escaping @Sendable () -> Void,
            reset: @escaping @Sendable ([String]?) -> Void,
            verify: @escaping @Sendable (_ id: String, _ source: String?, _ timeoutSeconds: Double?) throws -> UInt64 =
                {
                    _, _, _ in throw ServerError("this server runs no verification transactions")
                }
        ) {
            self.status = status
            self.subscribed = subscribed
            self.reset = reset
            self.verify = verify
        }
    }

    public let configuration: Configuration
    private let hooks: Hooks
    private let logger: Logger
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    /// The server's event loop, shared with the metrics endpoint.
    var eventLoopGroup: any EventLoopGroup { self.group }

    private let channel = NIOLockedValueBox<Channel?>(nil)
    private let clients = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<ClientHandler>]>([:])
    /// Who asked for each open transaction (by the pipeline's token): they get its one `verify` answer.
    private let requesters = NIOLockedValueBox<[UInt64: NIOLoopBound<ClientHandler>]>([:])
    /// Transaction ids the daemon made for requests without an `id`.
    private let transactionNames = Synchronization.Atomic<UInt64>(0)
    private let latest = NIOLockedValueBox<[String: EventProtocol.SourceSnapshot]>([:])
    private let eventCounter = Synchronization.Atomic<UInt64>(0)
    /// Open connections, counted from accept to close, refused ones included.
    private let connections = Synchronization.Atomic<Int>(0)
    /// `maxClients`, lowered at start when the descriptor limit is lower.
    private let clientLimit: Synchronization.Atomic<Int>
    private let access: NIOLockedValueBox<AccessPolicy>
    private let threshold: NIOLockedValueBox<Double>
    /// Encodes and fans out published events, in order (see `publish`).
    private let publishing = DispatchQueue(label: "livenessd.events")
    /// The publishing queue's encoder (a lock nobody contends: only that queue takes it).
    private let publishingEncoder = Mutex(SafeJSON())

    public init(configuration: Configuration, threshold: Double, hooks: Hooks, logger: Logger) {
        self.configuration = configuration
        self.hooks = hooks
        self.logger = logger
        self.access = NIOLockedValueBox(configuration.access)
        self.clientLimit = Synchronization.Atomic(configuration.maxClients)
        self.threshold = NIOLockedValueBox(threshold)
    }

    /// Binds (or adopts the inherited socket). A socket file left by a dead daemon is replaced;
    /// one a running daemon still listens on is an error.
    public func start() throws {
        self.fitClientLimitToDescriptors()
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 64)
            // A small kernel send buffer (Linux doubles it: 64 KiB, ~150 events): a client that stops
            // reading shows up in our own bounded queue within seconds instead of hiding in the kernel.
            .childChannelOption(.socketOption(.so_sndbuf), value: 32_768)
            // Nothing is read from a peer before its credentials are checked: a refused peer can make
            // us buffer nothing (ClientHandler turns reading on once it is admitted).
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ClientHandler(server: self)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        if let descriptor = self.configuration.inheritedDescriptor {
            let bound = try bootstrap.withBoundSocket(descriptor).wait()
            self.channel.withLockedValue { $0 = bound }
            self.logger.info("listening on the socket systemd passed", metadata: ["socket.fd": "\(descriptor)"])
            return
        }
        let path = self.configuration.path
        var existing = stat()
        if lstat(path, &existing) == 0 {
            // Only a socket file is ours to replace: anything else at the path (a directory, a file, a
            // link) was put there by someone else and is never deleted.
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw ServerError(
                    "\(path) exists and is not a socket (\(Self.fileKind(existing.st_mode))); livenessd replaces only "
                        + "a stale socket file: choose another --socket path (or socket.path) or move it away")
            }
            if Self.someoneListens(at: path) {
                throw ServerError(
                    "\(path) is in use by a running livenessd (or another program); stop it or choose --socket")
            }
            if unlink(path) != 0 && errno != ENOENT {
                throw ServerError("cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
            }
        }
        do {
            let bound = try bootstrap.bind(unixDomainSocketPath: path).wait()
            self.channel.withLockedValue { $0 = bound }
        } catch {
            throw ServerError("cannot listen on \(path): \(error) (does its directory exist and is it writable?)")
        }
        let policy = self.access.withLockedValue { $0 }
        chmod(path, mode_t(policy.socketMode))
        if let name = policy.socketGroup {
            guard let entry = getgrnam(name) else { throw ServerError("socket group '\(name)' does not exist") }
            if chown(path, uid_t.max, entry.pointee.gr_gid) != 0 {
                throw ServerError("cannot give \(path) to group \(name): \(String(cString: strerror(errno)))")
            }
        }
        self.logger.info("listening", metadata: ["socket.path": "\(path)"])
    }

    /// Descriptors kept for everything but clients: the listener, model files, sources, logging.
    static let reservedDescriptors = 32

    /// When descriptors run out, accept() fails with EMFILE while the listener stays readable, and
    /// NIO 2.x retries at once (its AcceptBackoffHandler cannot help: the failed accept leaves the
    /// read pending) — the daemon spun at 151 % CPU. So the soft descriptor limit is raised to the
    /// hard one, and the client limit is kept below it: connections past the limit are closed at once.
    private func fitClientLimitToDescriptors() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, 1 << 20)
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let available = max(1, Int(clamping: limit.rlim_cur) - Self.reservedDescriptors)
        if self.clientLimit.load(ordering: .relaxed) > available {
            self.logger.warning(
                "socket.max_clients lowered to fit the descriptor limit",
                metadata: [
                    "socket.max_clients": "\(available)", "descriptors.limit": "\(limit.rlim_cur)",
                ])
            self.clientLimit.store(available, ordering: .relaxed)
        }
    }

    static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFREG: "a regular file"
        case S_IFLNK: "a symbolic link"
        case S_IFIFO: "a FIFO"
        default: "a special file"
        }
    }

    /// True when connecting to the socket file succeeds.
    static func someoneListens(at path: String) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return withUnixSocketAddress(path) { connect(descriptor, $0, $1) == 0 } ?? false
    }

    /// Says goodbye to every client, closes them and the listener.
    public func shutdown(reason: String) {
        // Events published before this call reach the clients' loops before their bye does.
        self.flushPublished()
        let handlers = self.clients.withLockedValue { Array($0.values) }
        let closed = handlers.map { bound in
            bound.eventLoop.flatSubmit { bound.value.close(reason: reason) }
        }
        _ = try? EventLoopFuture.andAllComplete(closed, on: self.group.next()).wait()
        try? self.channel.withLockedValue({ $0 })?.close().wait()
        if self.configuration.inheritedDescriptor == nil { unlink(self.configuration.path) }
        try? self.group.syncShutdownGracefully()
    }

    public var clientCount: Int { self.clients.withLockedValue { $0.count } }

    /// A new policy applies to open connections too: a client it no longer allows is told so and closed.
    public func updateAccess(_ policy: AccessPolicy) {
        self.access.withLockedValue { $0 = policy }
        for bound in self.clients.withLockedValue({ Array($0.values) }) {
            bound.eventLoop.execute { bound.value.recheck(policy) }
        }
    }
    public func updateThreshold(_ value: Double) { self.threshold.withLockedValue { $0 = value } }
    public var accessPolicy: AccessPolicy { self.access.withLockedValue { $0 } }

    // MARK: - Publishing

    /// Hands the event to the publishing queue and returns at once: encoding and fan-out never run on
    /// the caller's thread (the pipeline's inference queue, which every camera shares).
    public func publish(_ event: PipelineEvent) {
        if case .source(_, .frame) = event { return }
        let now = Date().timeIntervalSince1970
        self.publishing.async { self.encodeAndDeliver(event, time: now) }
    }

    /// Waits until every event published so far has been handed to the clients' event loops.
    public func flushPublished() { self.publishing.sync {} }

    /// Publishing queue only (tests on an `EmbeddedChannel` call it on theirs): numbers the event, encodes it once, and queues it to every client.
    func encodeAndDeliver(_ event: PipelineEvent, time now: Double) {
        let number = self.eventCounter.add(1, ordering: .relaxed).newValue
        let line: String
        let source: String
        var isChange = false
        switch event {
        case .decision(let decided):
            source = decided.sourceID
            isChange = decided.decision.changed
            let snapshot = EventProtocol.snapshot(of: decided)
            self.latest.withLockedValue { $0[source] = snapshot }
            let message = EventProtocol.DecisionMessage(
                event: number, source: source, seq: decided.sequence, pts: decided.presentationTimeSeconds,
                state: decided.decision.state.rawValue, changed: decided.decision.changed,
                smoothed: decided.decision.smoothedScore, raw: decided.decision.rawScore,
                scores: decided.decision.rawScore == nil ? nil : decided.scores.finite,
                window: decided.decision.windowCount, threshold: self.threshold.withLockedValue { $0 },
                box: decided.box.map(EventProtocol.Box.init), faces: decided.faceCount,
                reason: decided.decision.reason,
                latencyMs: Double(decided.decidedTimeNanoseconds &- decided.captureTimeNanoseconds) / 1e6,
                time: now)
            line = self.publishingEncoder.withLock { EventProtocol.line(message, encoder: &$0) }
        case .source(let id, let sourceEvent):
            source = id
            isChange = true
            let (kind, reason): (String, String?)
            switch sourceEvent {
            case .disconnected(let why): (kind, reason) = ("disconnected", why)
            case .reconnected: (kind, reason) = ("reconnected", nil)
            case .waiting(let why): (kind, reason) = ("waiting", why)
            case .skipped(let count, let why): (kind, reason) = ("skipped", "\(count) skipped so far: \(why)")
            case .ended(let end): (kind, reason) = ("ended", "\(end)")
            case .frame: return
            }
            let message = EventProtocol.SourceMessage(event: number, source: id, kind: kind, reason: reason, time: now)
            line = self.publishingEncoder.withLock { EventProtocol.line(message, encoder: &$0) }
        case .transaction(let transaction):
            source = transaction.sourceID
            isChange = true
            let message = EventProtocol.TransactionMessage(transaction, number: number, asReply: false, time: now)
            line = self.publishingEncoder.withLock { EventProtocol.line(message, encoder: &$0) }
            if case .ended = transaction.phase,
                let requester = self.requesters.withLockedValue({ $0.removeValue(forKey: transaction.token) })
            {
                let answer = EventProtocol.TransactionMessage(transaction, number: nil, asReply: true, time: now)
                let reply = ByteBuffer(
                    string: self.publishingEncoder.withLock { EventProtocol.line(answer, encoder: &$0) })
                requester.eventLoop.execute { requester.value.answer(reply) }
            }
        }
        let buffer = ByteBuffer(string: line)
        let change = isChange
        for bound in self.clients.withLockedValue({ Array($0.values) }) {
            bound.eventLoop.execute { bound.value.deliver(buffer, source: source, isChange: change) }
        }
    }

    public func snapshot() -> [String: EventProtocol.SourceSnapshot] { self.latest.withLockedValue { $0 } }

    // MARK: - Client bookkeeping (client event loops)

    fileprivate func register(_ handler: ClientHandler, on loop: EventLoop) {
        self.clients.withLockedValue { $0[ObjectIdentifier(handler)] = NIOLoopBound(handler, eventLoop: loop) }
    }

    /// Counts a new connection; false (and not counted) when `maxClients` are already open.
    fileprivate func openConnection() -> Bool {
        let limit = self.clientLimit.load(ordering: .relaxed)
        var current = self.connections.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = self.connections.compareExchange(
                expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    fileprivate func closeConnection() { self.connections.subtract(1, ordering: .relaxed) }

    public var connectionCount: Int { self.connections.load(ordering: .relaxed) }

    fileprivate func unregister(_ handler: ClientHandler) {
        _ = self.clients.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(handler)) }
    }

    /// A controller's `verify`: starts the transaction and remembers who asked; nil when it started (the
    /// answer comes later), else the error line.
    fileprivate func verify(
        _ request: EventProtocol.Request, from handler: ClientHandler, on loop: EventLoop, encoder: inout SafeJSON
    ) -> String? {
        func refuse(_ reason: String) -> String {
            EventProtocol.line(
                EventProtocol.ReplyMessage(type: "error", id: request.id, op: "verify", error: reason),
                encoder: &encoder)
        }
        var timeout: Double?
        if let milliseconds = request.timeoutMs {
            guard milliseconds.isFinite, milliseconds >= 100 else {
                return refuse("timeout_ms must be a number of milliseconds, at least 100, got \(milliseconds)")
            }
            timeout = milliseconds / 1000
        }
        let id = request.id ?? "t\(self.transactionNames.add(1, ordering: .relaxed).newValue)"
        let bound = NIOLoopBound(handler, eventLoop: loop)
        do {
            // Under the lock: the transaction's end (publishing queue) waits until its requester is known.
            try self.requesters.withLockedValue { requesters in
                let token = try self.hooks.verify(id, request.source, timeout)
                requesters[token] = bound
            }
        } catch {
            return refuse("\(error)")
        }
        return nil
    }

    fileprivate func handle(_ request: EventProtocol.Request, encoder: inout SafeJSON) -> String? {
        switch request.op {
        case "status":
            var status = self.hooks.status()
            status.id = request.id
            return EventProtocol.line(status, encoder: &encoder)
        case "snapshot":
            var sources = self.snapshot()
            if let wanted = request.sources { sources = sources.filter { wanted.contains($0.key) } }
            return EventProtocol.line(
                EventProtocol.SnapshotMessage(id: request.id, sources: sources), encoder: &encoder)
        case "reset":
            self.hooks.reset(request.sources)
            return EventProtocol.line(
                EventProtocol.ReplyMessage(type: "ok", id: request.id, op: "reset"), encoder: &encoder)
        default:
            return nil
        }
    }

    fileprivate func clientSubscribed() { self.hooks.subscribed() }

    fileprivate var logLabel: Logger { self.logger }
    fileprivate var queueLimit: Int { self.configuration.clientQueueLimit }
    fileprivate var maxClients: Int { self.clientLimit.load(ordering: .relaxed) }
    fileprivate var idleTimeout: TimeAmount { self.configuration.idleTimeout }
}

/// What getsockopt(SO_PEERCRED) fills: the kernel's `struct ucred`, its layout checked by the C shim.
typealias PeerCredentials = livenessd_peer_credentials

/// One connected client, on its channel's event loop.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private unowned let server: EventServer
    private var context: ChannelHandlerContext?
    private var received = ByteBuffer()
    private var subscribed = false
    private var changesOnly = false
    private var sourceFilter: Set<String>?
    private var queued = 0
    private var closing = false
    private var heartbeat: RepeatedTask?
    private var admitted = false
    /// Whether this connection holds one of the server's `maxClients` places.
    private var counted = false
    private var idle: Scheduled<Void>?
    private var credentials: PeerCredentials?
    /// What the admitted peer may do (set at admission, updated on reload).
    private var role = AccessPolicy.Role.observer
    /// This connection's own encoder for its replies and heartbeats.
    private var encoder = SafeJSON()
    private let decoder = JSONDecoder()

    /// Where the peer's credentials come from: the kernel (SO_PEERCRED) on a real socket; tests on an
    /// `EmbeddedChannel` hand in their own.
    private let peerCredentials: (Channel) -> EventLoopFuture<PeerCredentials>

    init(
        server: EventServer,
        peerCredentials: @escaping (Channel) -> EventLoopFuture<PeerCredentials> = socketPeerCredentials
    ) {
        self.server = server
        self.peerCredentials = peerCredentials
    }

    /// SO_PEERCRED: the connecting process's pid, uid and gid, from the kernel.
    static func socketPeerCredentials(_ channel: Channel) -> EventLoopFuture<PeerCredentials> {
        guard let provider = channel as? SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(ServerError("not a socket"))
        }
        return provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(livenessd_so_peercred()))
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// The context holds this handler and this handler its context: dropping our side here (and when
    /// the channel goes inactive) is what lets both be freed after every connection.
    func handlerRemoved(context: ChannelHandlerContext) { self.release() }

    private func release() {
        self.heartbeat?.cancel()
        self.heartbeat = nil
        self.idle?.cancel()
        self.idle = nil
        if self.counted {
            self.counted = false
            self.server.closeConnection()
        }
        self.server.unregister(self)
        self.context = nil
        self.received = ByteBuffer()
    }

    func channelActive(context: ChannelHandlerContext) {
        guard self.server.openConnection() else {
            // Closed as soon as the line is written: waiting would hold the descriptor the limit protects.
            self.refuse(
                "too many clients: \(self.server.maxClients) connections are open (socket.max_clients); "
                    + "close one or try again later",
                linger: false)
            return
        }
        self.counted = true
        // A connection that never asks for anything would hold its place forever.
        let idleBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timeout = self.server.idleTimeout
        let seconds = Double(timeout.nanoseconds) / 1e9
        self.idle = context.eventLoop.scheduleTask(in: timeout) {
            idleBound.value.close(reason: "no request within \(seconds) s (socket.idle_timeout_seconds)")
        }
        let future = self.peerCredentials(context.channel)
        let loop = context.eventLoop
        future.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let credentials):
                self.credentials = credentials
                if let role = self.server.accessPolicy.role(uid: credentials.uid, gid: credentials.gid) {
                    self.role = role
                    self.admitted = true
                    self.server.register(self, on: loop)
                    self.context?.channel.setOption(.autoRead, value: true).whenFailure { _ in }
                } else {
                    self.server.logLabel.notice(
                        "refused a client",
                        metadata: ["peer.uid": "\(credentials.uid)", "peer.pid": "\(credentials.pid)"])
                    self.refuse(self.server.accessPolicy.refusal(uid: credentials.uid, gid: credentials.gid))
                }
            case .failure(let error):
                self.refuse("cannot read peer credentials: \(error)")
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.release()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Nothing is kept from a peer that is not admitted or is being closed.
        guard self.admitted, !self.closing else { return }
        var chunk = self.unwrapInboundIn(data)
        self.received.writeBuffer(&chunk)
        while !self.closing, let newline = self.received.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - self.received.readerIndex
            guard length <= Self.lineLimit else { break }
            let line = self.received.readString(length: length) ?? ""
            self.received.moveReaderIndex(forwardBy: 1)
            self.handle(line: line)
        }
        if self.received.readableBytes > Self.lineLimit {
            // Stop reading at once: the rest of the line is never buffered.
            self.received = ByteBuffer()
            context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
            self.close(reason: "request line longer than 64 KiB; send one JSON request per line", waitForPeer: false)
            return
        }
        self.received.discardReadBytes()
    }

    /// The longest request line (bytes, without the newline) a client may send.
    static let lineLimit = 65_536

    private func handle(line: String) {
        guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        self.idle?.cancel()
        self.idle = nil
        guard let request = try? self.decoder.decode(EventProtocol.Request.self, from: Data(line.utf8)) else {
            self.send(
                self.line(EventProtocol.ReplyMessage(type: "error", error: "not a JSON request: \(line.prefix(80))")))
            return
        }
        if request.op == "subscribe" {
            guard let milliseconds = EventProtocol.heartbeatMilliseconds(request.heartbeatSeconds) else {
                let range = EventProtocol.heartbeatRange
                self.send(
                    self.line(
                        EventProtocol.ReplyMessage(
                            type: "error", id: request.id, op: request.op,
                            error: "heartbeat_seconds must be a number from \(range.lowerBound) to "
                                + "\(Int(range.upperBound)), got \(request.heartbeatSeconds.map { "\($0)" } ?? "none")")
                    ))
                return
            }
            self.subscribed = true
            self.changesOnly = request.mode == "changes"
            self.sourceFilter = request.sources.map(Set.init)
            self.heartbeat?.cancel()
            if self.changesOnly, let context = self.context {
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                self.heartbeat = context.eventLoop.scheduleRepeatedTask(
                    initialDelay: .milliseconds(milliseconds), delay: .milliseconds(milliseconds)
                ) { _ in bound.value.sendHeartbeat() }
            }
            self.send(self.line(EventProtocol.ReplyMessage(type: "ok", id: request.id, op: "subscribe")))
            self.server.clientSubscribed()
            return
        }
        if request.op == "reset" || request.op == "verify", self.role != .controller {
            // M9: an observer resetting every 100 ms kept every source undecided (verify resets too).
            let uid = self.credentials.map { "\($0.uid)" } ?? "?"
            self.send(
                self.line(
                    EventProtocol.ReplyMessage(
                        type: "error", id: request.id, op: request.op,
                        error: "\(request.op) needs the controller role: uid \(uid) is an observer "
                            + "(access.controller_uids or controller_gids in the config)")))
            return
        }
        if request.op == "verify" {
            guard let context = self.context else { return }
            if let error = self.server.verify(request, from: self, on: context.eventLoop, encoder: &self.encoder) {
                self.send(error)
            }
            return
        }
        if let reply = self.server.handle(request, encoder: &self.encoder) {
            self.send(reply)
        } else {
            self.send(
                self.line(
                    EventProtocol.ReplyMessage(
                        type: "error", id: request.id, op: request.op,
                        error: "unknown op '\(request.op)'; use subscribe, status, snapshot, reset or verify")))
        }
    }

    /// After a reload: a client the new policy no longer allows is told why and closed.
    func recheck(_ policy: AccessPolicy) {
        guard self.admitted, !self.closing, let credentials = self.credentials else { return }
        if let role = policy.role(uid: credentials.uid, gid: credentials.gid) {
            self.role = role
            return
        }
        self.server.logLabel.notice(
            "access withdrawn from a connected client",
            metadata: ["peer.uid": "\(credentials.uid)", "peer.pid": "\(credentials.pid)"])
        self.close(
            reason: "access withdrawn: uid \(credentials.uid) is no longer in the allow-list (configuration reloaded)")
    }

    private func sendHeartbeat() {
        var sources = self.server.snapshot()
        if let filter = self.sourceFilter { sources = sources.filter { filter.contains($0.key) } }
        self.send(self.line(EventProtocol.HeartbeatMessage(time: Date().timeIntervalSince1970, sources: sources)))
    }

    /// A published event, if this client wants it.
    func deliver(_ buffer: ByteBuffer, source: String, isChange: Bool) {
        guard self.subscribed, !self.closing else { return }
        if let filter = self.sourceFilter, !filter.contains(source) { return }
        if self.changesOnly && !isChange { return }
        self.write(buffer)
    }

    /// The answer to this client's `verify`, whether or not it subscribed.
    func answer(_ buffer: ByteBuffer) {
        guard !self.closing else { return }
        self.write(buffer)
    }

    private func line<Message: Encodable>(_ message: Message) -> String {
        EventProtocol.line(message, encoder: &self.encoder)
    }

    private func send(_ line: String) { self.write(ByteBuffer(string: line)) }

    private func write(_ buffer: ByteBuffer) {
        guard let context = self.context, !self.closing else { return }
        if self.queued >= self.server.queueLimit {
            self.close(reason: "client too slow: \(self.queued) messages waiting to be read")
            return
        }
        self.queued += 1
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { [self] _ in self.queued -= 1 }
        context.writeAndFlush(self.wrapOutboundOut(buffer), promise: promise)
    }

    /// One error line and end of our output, then the connection is closed when the peer hangs up or
    /// 200 ms later. Whatever the peer sends meanwhile is read and dropped, never kept: closing with
    /// its request still unread would reset the connection under the line (ECONNRESET).
    /// `linger: false` closes as soon as the line is written (the peer still reads it first).
    private func refuse(_ reason: String, linger: Bool = true) {
        guard let context = self.context else { return }
        self.closing = true
        let line = self.line(EventProtocol.ReplyMessage(type: "error", error: reason))
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: line))).whenComplete { _ in
            channel.close(mode: linger ? .output : .all, promise: nil)
        }
        guard linger else { return }
        channel.setOption(.autoRead, value: true).whenFailure { _ in }
        context.eventLoop.scheduleTask(in: .milliseconds(200)) { channel.close(promise: nil) }
    }

    /// `waitForPeer: false` closes as soon as the bye is written instead of up to 200 ms later.
    @discardableResult
    func close(reason: String, waitForPeer: Bool = true) -> EventLoopFuture<Void> {
        guard let context = self.context else { return self.server.clientsLoopFuture() }
        if self.closing { return context.eventLoop.makeSucceededVoidFuture() }
        self.closing = true
        self.heartbeat?.cancel()
        self.server.logLabel.info("closing a client", metadata: ["client.reason": "\(reason)"])
        let line = self.line(EventProtocol.ReplyMessage(type: "bye", error: reason))
        let promise = context.eventLoop.makePromise(of: Void.self)
        let channel = context.channel
        let written = context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: line)))
        if !waitForPeer { written.whenComplete { _ in channel.close(promise: nil) } }
        // A stuck client will never take the bye; do not wait for it more than a moment.
        context.eventLoop.scheduleTask(in: .milliseconds(200)) { channel.close(promise: nil) }
        context.channel.closeFuture.cascade(to: promise)
        return promise.futureResult
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

extension EventServer {
    fileprivate func clientsLoopFuture() -> EventLoopFuture<Void> { self.group.next().makeSucceededVoidFuture() }
}
