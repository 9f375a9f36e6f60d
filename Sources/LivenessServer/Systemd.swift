import Foundation

/// The two systemd interfaces the daemon uses, written by hand (libsystemd has no Swift binding and
/// both are a few lines of documented protocol):
/// * sd_notify(3): datagrams like "READY=1" to the socket in $NOTIFY_SOCKET ('@' = abstract).
/// * sd_listen_fds(3): sockets passed from fd 3 on when $LISTEN_PID is this process.
public struct SystemdNotifier: Sendable {
    public let socketPath: String?
    /// Half the watchdog interval systemd set (WATCHDOG_USEC), nil when no watchdog is configured.
    public let watchdogIntervalSeconds: Double?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        if let text = environment["WATCHDOG_USEC"], let microseconds = Double(text), microseconds > 0,
            environment["WATCHDOG_PID"].map({ Int32($0) == getpid() }) ?? true
        {
            self.watchdogIntervalSeconds = microseconds / 2e6
        } else {
            self.watchdogIntervalSeconds = nil
        }
    }

    public var isActive: Bool { self.socketPath != nil }

    /// Sends `state` (e.g. "READY=1\nSTATUS=…"); silently does nothing outside systemd.
    public func notify(_ state: String) {
        guard let path = self.socketPath else { return }
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        let message = Array(state.utf8)
        _ = withUnixSocketAddress(path) { address, length in
            message.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, 0, address, length) }
        }
    }

    /// The first socket systemd passed (socket activation), if any.
    public static func listenDescriptor(environment: [String: String] = ProcessInfo.processInfo.environment) -> CInt? {
        guard let pid = environment["LISTEN_PID"].flatMap(Int32.init), pid == getpid(),
            let count = environment["LISTEN_FDS"].flatMap(Int.init), count >= 1
        else { return nil }
        return 3
    }
}
