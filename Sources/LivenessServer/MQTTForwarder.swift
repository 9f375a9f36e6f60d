import CMosquitto
import FramePipeline
import Foundation
import LivenessEngine
import Logging
import NIOConcurrencyHelpers
import Synchronization

/// Forwards the daemon's events to the site's MQTT broker with Eclipse Mosquitto's client library
/// (libmosquitto; the protocol, TLS, keep-alive and the last will are its work, not ours).
///
/// Topics, under `topic_prefix` (default `livenessd/<hostname>`):
/// * `available`: `online`, retained; the broker publishes the last will `offline` when the daemon dies, and the
///   daemon publishes `offline` itself when it stops.
/// * `<camera>/state`: the camera's current state (`live`, `spoof`, `deciding`, `no_face`, `unusable`,
///   `waiting`, `disconnected`, `ended`) as JSON, retained, on every change.
/// * `<camera>/transaction`: each verification transaction's start and outcome (JSON as on the socket).
/// * `stats`: every `stats_interval_seconds`: per camera fps, frames, drops, latency; the forwarder's queue.
/// * Home Assistant discovery (`homeassistant: true`): `<discovery_prefix>/binary_sensor/<node>/<camera>/config`.
///
/// It never blocks the pipeline: `observe` (on the inference queue) only records the event under a lock. A
/// publisher thread encodes and hands messages to libmosquitto; a network thread runs libmosquitto's loop and
/// reconnects with backoff (1 s doubling to 30 s). Messages wait in a bounded queue while the broker is away;
/// beyond `queue_limit` the oldest are dropped and counted. A camera's state is not queued but kept (the
/// newest per camera) and published again on every connection, so it is never lost, only coalesced.
public final class MQTTForwarder: Sendable {
    public struct Settings: Sendable {
        public var host: String
        public var port: Int
        public var caFile: String?
        public var certFile: String?
        public var keyFile: String?
        public var username: String?
        public var password: String?
        public var clientID: String
        public var topicPrefix: String
        public var qos: Int32
        public var keepaliveSeconds: Int32
        public var queueLimit: Int
        public var statsIntervalSeconds: Double
        public var homeAssistant: Bool
        public var discoveryPrefix: String
        /// Reported in the discovery's device.
        public var version: String

        /// The settings `mqtt:` describes (its password file read now), with `hostname` in the defaults.
        public init(_ mqtt: Configuration.MQTT, hostname: String, version: String) throws {
            self.host = mqtt.host ?? "localhost"
            self.port = mqtt.port ?? (mqtt.caFile == nil ? 1883 : 8883)
            self.caFile = mqtt.caFile
            self.certFile = mqtt.certFile
            self.keyFile = mqtt.keyFile
            self.username = mqtt.username
            if let file = mqtt.passwordFile {
                do {
                    let text = try String(contentsOfFile: file, encoding: .utf8)
                    self.password = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
                } catch {
                    throw ServerError("cannot read mqtt.password_file \(file): \(error.localizedDescription)")
                }
            }
            let node = MQTTForwarder.topicLevel(hostname)
            self.clientID = mqtt.clientID ?? "livenessd-\(node)"
            self.topicPrefix = mqtt.topicPrefix ?? "livenessd/\(node)"
            self.qos = Int32(mqtt.qos ?? 1)
            self.keepaliveSeconds = Int32(mqtt.keepaliveSeconds ?? 30)
            self.queueLimit = mqtt.queueLimit ?? 1000
            self.statsIntervalSeconds = mqtt.statsIntervalSeconds ?? 60
            self.homeAssistant = mqtt.homeassistant ?? false
            self.discoveryPrefix = mqtt.discoveryPrefix ?? "homeassistant"
            self.version = version
        }
    }

    /// The forwarder's own figures (in `stats` and in the Prometheus metrics).
    public struct Counters: Codable, Equatable, Sendable {
        public var connected = false
        /// Messages waiting for the broker now.
        public var queued = 0
        /// Messages the broker took (QoS 1/2: acknowledged; QoS 0: written).
        public var published = 0
        /// Messages dropped because the queue was full while the broker was away.
        public var dropped = 0
        /// Successful connections so far (the first one included).
        public var connections = 0

        enum CodingKeys: String, CodingKey { case connected, queued, published, dropped, connections }
    }

    /// What waits in the queue: a transaction's phase, or a stats message (made when its time came).
    enum Pending: Sendable {
        case transaction(TransactionEvent, time: Double)
        case stats(time: Double)
    }

    /// A camera's state as the retained `state` topic carries it.
    struct CameraState: Encodable, Sendable {
        var source: String
        var state: String
        var smoothed: Double?
        var scores: OpinionScores?
        var seq: UInt64?
        var reason: String?
        var time: Double
    }

    struct State {
        var pending: [Pending] = []
        var states: [String: CameraState] = [:]
        var dirty: Set<String> = []
        var counters = Counters()
        /// Set by the connect callback: `available`, discovery and every state go out again.
        var announce = false
        var stopping = false
        /// mid of the final `offline` message, once sent.
        var offlineMid: Int32?
        /// Messages acknowledged since stopping began (the final `offline`'s may come before its mid is known).
        var acknowledgedWhileStopping: Set<Int32> = []
        /// The broker's last refusal, logged once until it changes.
        var lastRefusal: Int32 = 0
        /// True when `stop` gave up on the network thread: the client must then not be destroyed.
        var abandoned = false
    }

    let settings: Settings
    let logger: Logger
    let handle: MosquittoHandle
    let state = NIOLockedValueBox(State())
    /// Wakes the publisher thread (an event was recorded, or stopping).
    let wake = DispatchSemaphore(value: 0)
    /// Interrupts the network thread's backoff sleep when stopping.
    let stopSignal = DispatchSemaphore(value: 0)
    /// Signalled when the final `offline` was acknowledged.
    let offlineAcknowledged = DispatchSemaphore(value: 0)
    let threadsDone = DispatchGroup()
    let status: @Sendable () -> EventProtocol.StatusMessage

    /// libmosquitto's process-wide set-up (not thread-safe: once, before the first client).
    private static let libraryInitialised: Bool = {
        mosquitto_lib_init()
        return true
    }()

    /// A client for `settings`; nothing connects before `start`. `status` gives the `stats` messages' figures.
    public init(
        settings: Settings, logger: Logger, status: @escaping @Sendable () -> EventProtocol.StatusMessage
    )
        throws
    {
        _ = Self.libraryInitialised
        self.settings = settings
        self.logger = logger
        self.status = status
        guard let client = mosquitto_new(settings.clientID, true, nil) else {
            throw ServerError("cannot make an MQTT client (libmosquitto: \(String(cString: strerror(errno))))")
        }
        self.handle = MosquittoHandle(client: client)
        mosquitto_user_data_set(client, Unmanaged.passUnretained(self).toOpaque())
        // Publishing happens on the publisher thread while the network thread runs the loop: libmosquitto
        // then locks its queues and wakes its loop itself.
        mosquitto_threaded_set(client, true)
        var rc = MOSQ_ERR_SUCCESS.rawValue
        if let username = settings.username {
            rc = mosquitto_username_pw_set(client, username, settings.password)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw Self.failure("set the MQTT username", rc) }
        }
        if let caFile = settings.caFile {
            rc = mosquitto_tls_set(client, caFile, nil, settings.certFile, settings.keyFile, nil)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw Self.failure("set up MQTT TLS with \(caFile)", rc) }
        }
        let offline = Array("offline".utf8)
        rc = mosquitto_will_set(
            client, self.availabilityTopic, Int32(offline.count), offline, settings.qos, true)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw Self.failure("set the MQTT last will", rc) }
        mosquitto_connect_callback_set(client) { _, object, code in
            guard let object else { return }
            Unmanaged<MQTTForwarder>.fromOpaque(object).takeUnretainedValue().connected(code: code)
        }
        mosquitto_disconnect_callback_set(client) { _, object, code in
            guard let object else { return }
            Unmanaged<MQTTForwarder>.fromOpaque(object).takeUnretainedValue().disconnected(code: code)
        }
        mosquitto_publish_callback_set(client) { _, object, mid in
            guard let object else { return }
            Unmanaged<MQTTForwarder>.fromOpaque(object).takeUnretainedValue().acknowledged(mid: mid)
        }
    }

    deinit {
        if !self.state.withLockedValue({ $0.abandoned }) { mosquitto_destroy(self.handle.client) }
    }

    static func failure(_ what: String, _ code: Int32) -> ServerError {
        ServerError("cannot \(what): \(String(cString: mosquitto_strerror(code)))")
    }

    var availabilityTopic: String { self.settings.topicPrefix + "/available" }

    /// One topic level made of `text`: no `/`, `+`, `#` (a source's path becomes its file or device name).
    static func topicLevel(_ text: String) -> String {
        let base = text.contains("/") ? (text as NSString).lastPathComponent : text
        let cleaned = String(base.map { "/+#\0".contains($0) || $0.isWhitespace ? "_" : $0 })
        return cleaned.isEmpty ? "_" : cleaned
    }

    /// An id Home Assistant accepts (`[a-zA-Z0-9_-]`).
    static func objectID(_ text: String) -> String {
        String(text.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") ? $0 : "_" })
    }

    // MARK: - Recording (the pipeline's thread: a lock, no encoding, no I/O)

    public func observe(_ event: PipelineEvent) {
        let now = Date().timeIntervalSince1970
        switch event {
        case .decision(let decided):
            guard decided.decision.changed else { return }
            let entry = CameraState(
                source: decided.sourceID, state: decided.decision.state.rawValue,
                smoothed: decided.decision.smoothedScore.flatMap { $0.isFinite ? $0 : nil },
                scores: decided.decision.rawScore == nil ? nil : decided.scores.finite, seq: decided.sequence,
                reason: decided.decision.reason, time: now)
            self.record(entry)
        case .source(let id, let sourceEvent):
            let kind: String
            var reason: String?
            switch sourceEvent {
            case .frame, .skipped: return
            case .waiting(let why): (kind, reason) = ("waiting", why)
            case .disconnected(let why): (kind, reason) = ("disconnected", why)
            case .reconnected: kind = "deciding"
            case .ended(let end): (kind, reason) = ("ended", "\(end)")
            }
            self.record(CameraState(source: id, state: kind, reason: reason, time: now))
        case .transaction(let transaction):
            self.enqueue(.transaction(transaction, time: now))
        }
    }

    private func record(_ entry: CameraState) {
        self.state.withLockedValue {
            $0.states[entry.source] = entry
            $0.dirty.insert(entry.source)
        }
        self.wake.signal()
    }

    /// Queues `item`; when the queue is full the oldest message goes (counted).
    func enqueue(_ item: Pending) {
        self.state.withLockedValue { state in
            state.pending.append(item)
            let excess = state.pending.count - self.settings.queueLimit
            if excess > 0 {
                state.pending.removeFirst(excess)
                state.counters.dropped += excess
            }
        }
        self.wake.signal()
    }

    public var counters: Counters {
        self.state.withLockedValue { state in
            var counters = state.counters
            counters.queued = state.pending.count
            return counters
        }
    }

    // MARK: - Running

    /// Starts the network and publisher threads. A broker that is down is not an error: the network thread
    /// keeps trying, and messages wait (bounded) meanwhile.
    public func start() {
        self.logger.info(
            "MQTT: publishing to the broker",
            metadata: [
                "mqtt.broker":
                    "\(self.settings.caFile == nil ? "mqtt" : "mqtts")://\(self.settings.host):\(self.settings.port)",
                "mqtt.client_id": "\(self.settings.clientID)", "mqtt.prefix": "\(self.settings.topicPrefix)",
            ])
        self.threadsDone.enter()
        let network = Thread { [self] in
            self.runNetwork()
            self.threadsDone.leave()
        }
        network.name = "livenessd-mqtt-net"
        network.start()
        self.threadsDone.enter()
        let publisher = Thread { [self] in
            self.runPublisher()
            self.threadsDone.leave()
        }
        publisher.name = "livenessd-mqtt-pub"
        publisher.start()
    }

    /// Publishes what is queued and `offline` (waiting up to `timeoutSeconds` for the broker), disconnects,
    /// and joins both threads.
    public func stop(timeoutSeconds: Double = 2) {
        let first = self.state.withLockedValue { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first else { return }
        self.wake.signal()
        // The publisher drains the queue and sends `offline` before it returns; then the network thread may go.
        _ = self.offlineAcknowledged.wait(timeout: .now() + timeoutSeconds)
        mosquitto_disconnect(self.handle.client)
        self.stopSignal.signal()
        // A connect to a host that never answers may hold the network thread for the TCP timeout: not the
        // daemon's exit. The client is then left to the process's end (deinit does not destroy it).
        if self.threadsDone.wait(timeout: .now() + timeoutSeconds + 1) == .timedOut {
            self.logger.warning("MQTT: the connection attempt did not end in time; leaving it")
            self.state.withLockedValue { $0.abandoned = true }
        }
    }

    /// The network thread: connect, run libmosquitto's loop, reconnect with backoff after any failure.
    private func runNetwork() {
        let client = self.handle.client
        var delay = 1.0
        var lastComplaint = ""
        while !self.state.withLockedValue({ $0.stopping }) {
            // mosquitto_connect (not _reconnect) every time: it also resolves the host name again.
            let code = mosquitto_connect(
                client, self.settings.host, Int32(self.settings.port), self.settings.keepaliveSeconds)
            if code == MOSQ_ERR_SUCCESS.rawValue {
                var loop = MOSQ_ERR_SUCCESS.rawValue
                while loop == MOSQ_ERR_SUCCESS.rawValue {
                    loop = mosquitto_loop(client, 1000, 1)
                    if self.state.withLockedValue({ $0.counters.connected }) {
                        delay = 1
                        lastComplaint = ""
                    }
                }
                self.state.withLockedValue { $0.counters.connected = false }
                if self.state.withLockedValue({ $0.stopping }) { break }
                let why = Self.reason(loop)
                if why != lastComplaint {
                    self.logger.warning("MQTT: connection to the broker lost (\(why)); reconnecting")
                    lastComplaint = why
                }
            } else {
                let why = Self.reason(code)
                if why != lastComplaint {
                    self.logger.warning(
                        """
                        MQTT: cannot reach the broker \(self.settings.host):\(self.settings.port) (\(why)); \
                        retrying with backoff up to 30 s, events wait in the queue meanwhile
                        """)
                    lastComplaint = why
                }
            }
            if self.stopSignal.wait(timeout: .now() + delay) == .success { break }
            delay = min(delay * 2, 30)
        }
    }

    static func reason(_ code: Int32) -> String {
        code == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(code))
    }

    /// The publisher thread: on each wake, announce after a (re)connect, publish changed states, queued
    /// messages and stats when due.
    private func runPublisher() {
        let interval = self.settings.statsIntervalSeconds
        var nextStats = interval > 0 ? Date().addingTimeInterval(interval) : Date.distantFuture
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        while true {
            let wait = nextStats.timeIntervalSinceNow
            _ = self.wake.wait(timeout: .now() + max(0, min(wait, 3600)))
            if Date() >= nextStats {
                self.enqueue(.stats(time: Date().timeIntervalSince1970))
                nextStats = nextStats.addingTimeInterval(interval)
                if nextStats < Date() { nextStats = Date().addingTimeInterval(interval) }
            }
            let (connected, announce, states, pending, stopping) = self.state.withLockedValue {
                state -> (Bool, Bool, [CameraState], [Pending], Bool) in
                guard state.counters.connected else { return (false, false, [], [], state.stopping) }
                let announce = state.announce
                state.announce = false
                let names = announce ? Set(state.states.keys) : state.dirty
                state.dirty = []
                let pending = state.pending
                state.pending = []
                return (true, announce, names.sorted().compactMap { state.states[$0] }, pending, state.stopping)
            }
            if connected {
                if announce { self.announce(encoder: encoder) }
                for entry in states {
                    self.publish(
                        topic: "\(self.settings.topicPrefix)/\(Self.topicLevel(entry.source))/state",
                        payload: Self.encode(entry, encoder), retain: true)
                }
                var unsent: [Pending] = []
                for (index, item) in pending.enumerated() {
                    if !self.publish(item, encoder: encoder) {
                        unsent = Array(pending[index...])
                        break
                    }
                }
                if !unsent.isEmpty {
                    // The connection went while publishing: back to the front of the queue, still bounded.
                    self.state.withLockedValue { state in
                        state.pending = unsent + state.pending
                        let excess = state.pending.count - self.settings.queueLimit
                        if excess > 0 {
                            state.pending.removeFirst(excess)
                            state.counters.dropped += excess
                        }
                    }
                }
            }
            if stopping {
                if connected {
                    let offline = Array("offline".utf8)
                    var mid: Int32 = 0
                    let code = mosquitto_publish(
                        self.handle.client, &mid, self.availabilityTopic, Int32(offline.count), offline,
                        max(1, self.settings.qos), true)
                    if code == MOSQ_ERR_SUCCESS.rawValue {
                        let done = self.state.withLockedValue { state -> Bool in
                            state.offlineMid = mid
                            return state.acknowledgedWhileStopping.contains(mid)
                        }
                        if done { self.offlineAcknowledged.signal() }
                    } else {
                        self.offlineAcknowledged.signal()
                    }
                } else {
                    self.offlineAcknowledged.signal()
                }
                return
            }
        }
    }

    /// After every connection: `online`, the discovery configs, and (by the caller) every camera's state.
    private func announce(encoder: JSONEncoder) {
        self.publish(topic: self.availabilityTopic, payload: Array("online".utf8), retain: true)
        guard self.settings.homeAssistant else { return }
        let node = Self.objectID(self.settings.clientID)
        let sources = self.state.withLockedValue { Array($0.states.keys) } + self.status().sources.keys
        for source in Set(sources).sorted() {
            let level = Self.topicLevel(source)
            let config = DiscoveryConfig(
                name: "\(level) live person", uniqueID: "\(node)_\(Self.objectID(level))",
                stateTopic: "\(self.settings.topicPrefix)/\(level)/state",
                valueTemplate: "{{ 'ON' if value_json.state == 'live' else 'OFF' }}",
                jsonAttributesTopic: "\(self.settings.topicPrefix)/\(level)/state",
                availabilityTopic: self.availabilityTopic,
                device: .init(
                    identifiers: [node], name: "livenessd \(self.settings.clientID)", model: "livenessd",
                    manufacturer: "livenessd", swVersion: self.settings.version))
            self.publish(
                topic: "\(self.settings.discoveryPrefix)/binary_sensor/\(node)/\(Self.objectID(level))/config",
                payload: Self.encode(config, encoder), retain: true)
        }
    }

    private func publish(_ item: Pending, encoder: JSONEncoder) -> Bool {
        switch item {
        case .transaction(let transaction, let time):
            let message = EventProtocol.TransactionMessage(transaction, number: nil, asReply: false, time: time)
            return self.publish(
                topic: "\(self.settings.topicPrefix)/\(Self.topicLevel(transaction.sourceID))/transaction",
                payload: Self.encode(message, encoder), retain: false)
        case .stats(let time):
            let status = self.status()
            let stats = StatsMessage(
                time: time, uptimeSeconds: status.uptimeSeconds, threshold: status.threshold, sources: status.sources,
                mqtt: self.counters)
            return self.publish(
                topic: "\(self.settings.topicPrefix)/stats", payload: Self.encode(stats, encoder), retain: false)
        }
    }

    @discardableResult
    private func publish(topic: String, payload: [UInt8], retain: Bool) -> Bool {
        let code = payload.withUnsafeBytes {
            mosquitto_publish(
                self.handle.client, nil, topic, Int32($0.count), $0.baseAddress, self.settings.qos, retain)
        }
        if code != MOSQ_ERR_SUCCESS.rawValue {
            if code == MOSQ_ERR_NO_CONN.rawValue {
                self.state.withLockedValue { $0.counters.connected = false }
            } else {
                self.logger.warning("MQTT: cannot publish to \(topic): \(String(cString: mosquitto_strerror(code)))")
            }
            return false
        }
        return true
    }

    static func encode<Value: Encodable>(_ value: Value, _ encoder: JSONEncoder) -> [UInt8] {
        Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    // MARK: - libmosquitto's callbacks (the network thread)

    private func connected(code: Int32) {
        guard code == 0 else {
            let repeated = self.state.withLockedValue { state -> Bool in
                defer { state.lastRefusal = code }
                return state.lastRefusal == code
            }
            if repeated { return }
            self.logger.error(
                """
                MQTT: the broker refused the connection: \(String(cString: mosquitto_connack_string(code))) \
                (check mqtt.username, mqtt.password_file and the broker's ACL)
                """)
            return
        }
        let count = self.state.withLockedValue { state -> Int in
            state.lastRefusal = 0
            state.counters.connected = true
            state.counters.connections += 1
            state.announce = true
            return state.counters.connections
        }
        self.logger.info(
            count == 1 ? "MQTT: connected to the broker" : "MQTT: connected to the broker again",
            metadata: ["mqtt.connections": "\(count)"])
        self.wake.signal()
    }

    private func disconnected(code: Int32) {
        self.state.withLockedValue { $0.counters.connected = false }
    }

    private func acknowledged(mid: Int32) {
        let final = self.state.withLockedValue { state -> Bool in
            state.counters.published += 1
            if state.stopping { state.acknowledgedWhileStopping.insert(mid) }
            return state.offlineMid == mid
        }
        if final { self.offlineAcknowledged.signal() }
    }
}

/// libmosquitto's client. `@unchecked Sendable`: with `mosquitto_threaded_set(true)` the library locks its
/// own state for `mosquitto_publish` from any thread while one thread runs `mosquitto_loop`; connect,
/// reconnect and loop run only on the network thread, `mosquitto_disconnect` once from `stop`, and
/// `mosquitto_destroy` in the forwarder's deinit, after both threads were joined.
struct MosquittoHandle: @unchecked Sendable {
    let client: OpaquePointer
}

/// `stats`: the status figures plus the forwarder's own.
struct StatsMessage: Encodable {
    var type = "stats"
    var time: Double
    var uptimeSeconds: Double
    var threshold: Double
    var sources: [String: EventProtocol.SourceStatus]
    var mqtt: MQTTForwarder.Counters

    enum CodingKeys: String, CodingKey {
        case type, time, threshold, sources, mqtt
        case uptimeSeconds = "uptime_s"
    }
}

/// Home Assistant's MQTT discovery payload for one `binary_sensor`.
struct DiscoveryConfig: Encodable {
    struct Device: Encodable {
        var identifiers: [String]
        var name: String
        var model: String
        var manufacturer: String
        var swVersion: String
        enum CodingKeys: String, CodingKey {
            case identifiers, name, model, manufacturer
            case swVersion = "sw_version"
        }
    }
    var name: String
    var uniqueID: String
    var stateTopic: String
    var valueTemplate: String
    var jsonAttributesTopic: String
    var availabilityTopic: String
    var payloadAvailable = "online"
    var payloadNotAvailable = "offline"
    var device: Device

    enum CodingKeys: String, CodingKey {
        case name, device
        case uniqueID = "unique_id"
        case stateTopic = "state_topic"
        case valueTemplate = "value_template"
        case jsonAttributesTopic = "json_attributes_topic"
        case availabilityTopic = "availability_topic"
        case payloadAvailable = "payload_available"
        case payloadNotAvailable = "payload_not_available"
    }
}
