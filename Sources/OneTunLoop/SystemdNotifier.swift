import CUV
import Glibc
import Logging

/// sd_notify(3) without libsystemd: datagrams to the AF_UNIX socket named by NOTIFY_SOCKET (a path, or
/// an abstract name when it starts with '@'), sent from the loop with a non-blocking sendto, so a stuck
/// service manager costs a dropped datagram, never a stalled loop. READY=1 once the listeners are bound,
/// STATUS= lines, STOPPING=1 at shutdown, and WATCHDOG=1 every WATCHDOG_USEC / 2 on a libuv timer when
/// WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is our pid: the watchdog is meant for another
/// process otherwise).
@_spi(OneTunInternals) public final class SystemdNotifier {
    let fd: Int32
    var address = sockaddr_un()
    let addressLength: socklen_t
    let loop: UnsafeMutablePointer<uv_loop_t>
    let logger: Logger
    var watchdog: UnsafeMutablePointer<uv_timer_t>?
    /// Milliseconds between WATCHDOG=1 pings; 0 without a watchdog.
    public let watchdogInterval: UInt64
    public private(set) var sent = 0
    public private(set) var failed = 0

    /// nil when NOTIFY_SOCKET is unset or unusable (said in the log).
    public static func fromEnvironment(loop: UnsafeMutablePointer<uv_loop_t>, logger: Logger) -> SystemdNotifier? {
        guard let raw = getenv("NOTIFY_SOCKET"), raw.pointee != 0 else { return nil }
        let path = String(cString: raw)
        var interval: UInt64 = 0
        if let usecText = getenv("WATCHDOG_USEC").map({ String(cString: $0) }), let usec = UInt64(usecText), usec > 0 {
            let pid = getenv("WATCHDOG_PID").map { String(cString: $0) }
            if pid == nil || pid.flatMap({ Int32($0) }) == getpid() {
                interval = max(1, usec / 2 / 1000)
            } else {
                logger.debug("WATCHDOG_USEC is for process \(pid ?? "?"), not this one (\(getpid())): no watchdog pings")
            }
        }
        guard let notifier = SystemdNotifier(path: path, watchdogInterval: interval, loop: loop, logger: logger) else { return nil }
        return notifier
    }

    init?(path: String, watchdogInterval: UInt64, loop: UnsafeMutablePointer<uv_loop_t>, logger: Logger) {
        self.loop = loop
        self.logger = logger
        self.watchdogInterval = watchdogInterval
        var name = Array(path.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard name.first == UInt8(ascii: "/") || abstract, name.count < capacity else {
            logger.warning("NOTIFY_SOCKET '\(path)' is neither an absolute path nor an abstract name ('@…') that fits sun_path; not notifying the service manager")
            return nil
        }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        // An abstract name's length is exactly its bytes (its leading NUL included); a path's, with its NUL.
        addressLength = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (abstract ? 0 : 1))
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            logger.warning("NOTIFY_SOCKET: cannot make a socket: \(String(cString: strerror(errno)))")
            return nil
        }
        logger.debug("notifying the service manager at \(path)\(watchdogInterval > 0 ? ", watchdog pings every \(watchdogInterval) ms" : "")")
    }

    deinit {
        close(fd)
        watchdog?.deallocate()
    }

    /// Sends one notification ("KEY=value" lines); never blocks.
    public func send(_ text: String) {
        let bytes = Array(text.utf8)
        let rc = withUnsafePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), $0, addressLength) }
        }
        if rc < 0 {
            failed += 1
            logger.debug("NOTIFY_SOCKET: \(text.prefix { $0 != "\n" }) not sent: \(String(cString: strerror(errno)))")
        } else {
            sent += 1
        }
    }

    /// Starts the WATCHDOG=1 pings, if there is a watchdog.
    public func startWatchdog() {
        guard watchdogInterval > 0, watchdog == nil else { return }
        let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop, timer)
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        watchdog = timer
        uv_timer_start(timer, { timer in
            Unmanaged<SystemdNotifier>.fromOpaque(timer!.pointee.data).takeUnretainedValue().send("WATCHDOG=1")
        }, watchdogInterval, watchdogInterval)
    }

    /// STOPPING=1, and the watchdog stops (its handle closes, so the loop can end).
    public func stopping() {
        send("STOPPING=1")
        if let timer = watchdog {
            uv_timer_stop(timer)
            uv_close(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self)) { $0!.deallocate() }
            watchdog = nil
        }
    }
}
