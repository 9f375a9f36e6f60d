import Foundation

extension Configuration {
    /// `mqtt:` — the site's broker. Present with a `host`, the daemon publishes each camera's state
    /// (retained), transaction outcomes, its availability (with a last will) and periodic stats.
    public struct MQTT: Decodable, Equatable, Sendable {
        public var host: String?
        /// Default 1883, or 8883 when `ca_file` turns TLS on.
        public var port: Int?
        /// TLS: the CA bundle that signs the broker's certificate (turns TLS on), and this client's own
        /// certificate and key when the broker asks for one.
        public var caFile: String?
        public var certFile: String?
        public var keyFile: String?
        public var username: String?
        /// A file whose first line is the password (never the password itself in this file).
        public var passwordFile: String?
        /// Default `livenessd-<hostname>`.
        public var clientID: String?
        /// Default `livenessd/<hostname>`: one terminal's topics under one prefix.
        public var topicPrefix: String?
        /// 0, 1 (default) or 2.
        public var qos: Int?
        public var keepaliveSeconds: Int?
        /// Messages waiting for the broker before the oldest are dropped (and counted); default 1000.
        public var queueLimit: Int?
        /// Seconds between `stats` messages (default 60; 0 turns them off).
        public var statsIntervalSeconds: Double?
        /// Home Assistant MQTT discovery: one `binary_sensor` per camera (off by default).
        public var homeassistant: Bool?
        /// Home Assistant's discovery prefix (default `homeassistant`).
        public var discoveryPrefix: String?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case host, port, username, qos, homeassistant
            case caFile = "ca_file"
            case certFile = "cert_file"
            case keyFile = "key_file"
            case passwordFile = "password_file"
            case clientID = "client_id"
            case topicPrefix = "topic_prefix"
            case keepaliveSeconds = "keepalive_seconds"
            case queueLimit = "queue_limit"
            case statsIntervalSeconds = "stats_interval_seconds"
            case discoveryPrefix = "discovery_prefix"
        }

        public func validate(path: String) throws(ConfigurationError) {
            guard let host = self.host, !host.isEmpty else {
                throw ConfigurationError(
                    "\(path): mqtt.host is missing: name the broker (e.g. host: broker.example.lan)")
            }
            if let port = self.port, !(1...65_535).contains(port) {
                throw ConfigurationError("\(path): mqtt.port must be from 1 to 65535, got \(port)")
            }
            if let qos = self.qos, !(0...2).contains(qos) {
                throw ConfigurationError("\(path): mqtt.qos must be 0, 1 or 2, got \(qos)")
            }
            if let seconds = self.keepaliveSeconds, !(5...3600).contains(seconds) {
                throw ConfigurationError("\(path): mqtt.keepalive_seconds must be from 5 to 3600, got \(seconds)")
            }
            if let limit = self.queueLimit, !(1...1_000_000).contains(limit) {
                throw ConfigurationError("\(path): mqtt.queue_limit must be from 1 to 1000000 messages, got \(limit)")
            }
            if let seconds = self.statsIntervalSeconds, !(seconds == 0 || (seconds >= 0.1 && seconds <= 86_400)) {
                throw ConfigurationError(
                    "\(path): mqtt.stats_interval_seconds must be 0 (off) or from 0.1 to 86400, got \(seconds)")
            }
            for (key, prefix) in [("topic_prefix", self.topicPrefix), ("discovery_prefix", self.discoveryPrefix)] {
                if let prefix,
                    prefix.isEmpty || prefix.contains(where: { "+#\0".contains($0) }) || prefix.hasSuffix("/")
                {
                    throw ConfigurationError(
                        "\(path): mqtt.\(key) '\(prefix)' is not a topic prefix (no +, # or trailing /)")
                }
            }
            if (self.certFile == nil) != (self.keyFile == nil) {
                throw ConfigurationError("\(path): mqtt.cert_file and mqtt.key_file go together: give both or neither")
            }
            if self.certFile != nil && self.caFile == nil {
                throw ConfigurationError("\(path): mqtt.cert_file needs mqtt.ca_file (TLS is on only with a CA)")
            }
            if self.passwordFile != nil && self.username == nil {
                throw ConfigurationError("\(path): mqtt.password_file needs mqtt.username")
            }
            for (key, file) in [
                ("ca_file", self.caFile), ("cert_file", self.certFile), ("key_file", self.keyFile),
                ("password_file", self.passwordFile),
            ] {
                if let file, !FileManager.default.isReadableFile(atPath: file) {
                    throw ConfigurationError("\(path): mqtt.\(key) \(file) does not exist or cannot be read")
                }
            }
        }
    }

    /// `metrics:` — Prometheus text exposition at `http://<listen>/metrics`. Off when absent; on, it listens on
    /// loopback unless `listen` names another address.
    public struct Metrics: Decodable, Equatable, Sendable {
        /// `HOST:PORT` (default `127.0.0.1:9464`).
        public var listen: String?
        /// False turns the endpoint off without removing the section.
        public var enabled: Bool?

        public static let defaultListen = "127.0.0.1:9464"

        enum CodingKeys: String, CodingKey, CaseIterable { case listen, enabled }

        /// The host and port to bind.
        public var address: (host: String, port: Int)? {
            let text = self.listen ?? Self.defaultListen
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65_535).contains(port)
            else { return nil }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return host.isEmpty ? nil : (host, port)
        }

        public func validate(path: String) throws(ConfigurationError) {
            guard self.address != nil else {
                throw ConfigurationError(
                    "\(path): metrics.listen must be HOST:PORT (e.g. 127.0.0.1:9464), got '\(self.listen ?? "")'")
            }
        }
    }
}
