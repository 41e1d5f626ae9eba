import Foundation
import Glibc
import Testing

/// A network namespace made for one test (`ip netns add otNNNNNN`), with loopback up.
///
/// Everything it creates — the namespace, the processes started with `spawn`, the scratch directory — is
/// removed by `close()`, which `deinit` also calls, so a test that throws half-way leaves nothing behind.
/// Traffic the tests send stays on this namespace's loopback or on addresses that exist only inside it.
final class TestNamespace {
    let name: String
    /// Scratch files for this namespace (keys, logs); removed on close.
    let directory: URL
    private var children: [ChildProcess] = []
    private var closed = false

    /// Root, and `ip netns add` really works here (it does not inside some containers). Probed once.
    /// With ONETUN_REQUIRE_E2E=1 (CI sets it) the end-to-end tests are never skipped: they run, and
    /// fail where they cannot make their namespace; `EndToEndGuardTests` says why.
    static let canCreateNamespaces: Bool = isRequired || probe()

    static let isRequired = ProcessInfo.processInfo.environment["ONETUN_REQUIRE_E2E"] == "1"

    static func probe() -> Bool {
        guard getuid() == 0 else { return false }
        let probe = "otprobe\(String(UInt32.random(in: 0..<0xff_ffff), radix: 16))"
        guard (try? Command.run(["ip", "netns", "add", probe], timeout: 10)) != nil else { return false }
        _ = try? Command.run(["ip", "netns", "del", probe], timeout: 10)
        return true
    }

    static let skipReason: Comment = "needs root and `ip netns add` to create network namespaces"

    init() throws {
        name = try Self.addNamespace()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-\(name)")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try run(["ip", "link", "set", "lo", "up"])
        } catch {
            close()
            throw error
        }
    }

    /// `ip netns add otNNNNNN`. A name already taken (a leftover from a killed run) makes it fail, so try
    /// a few others.
    private static func addNamespace() throws -> String {
        var lastError: Error = HarnessError("no namespace name tried")
        for _ in 0..<5 {
            let candidate = "ot" + randomHex(6)
            guard !FileManager.default.fileExists(atPath: "/var/run/netns/\(candidate)") else { continue }
            do {
                try Command.run(["ip", "netns", "add", candidate])
                return candidate
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    deinit { close() }

    /// Kills and reaps every process started with `spawn`, deletes the namespace and the scratch directory.
    /// Safe to call more than once.
    func close() {
        guard !closed else { return }
        closed = true
        for child in children.reversed() { child.terminate() }
        children.removeAll()
        _ = try? Command.run(["ip", "netns", "del", name], timeout: 10)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs a command inside the namespace, bounded by `timeout` seconds; returns its standard output and
    /// throws (with its standard error) when it fails.
    @discardableResult
    func run(_ args: [String], input: String? = nil, timeout: Double = 20) throws -> String {
        try Command.run(["ip", "netns", "exec", name] + args, input: input, timeout: timeout)
    }

    /// Starts a long-running command inside the namespace. `ip netns exec` execs the command, so the
    /// tracked PID is the command's own. The namespace kills and reaps it on close at the latest.
    func spawn(_ args: [String], logName: String) throws -> ChildProcess {
        precondition(!closed, "namespace \(name) is closed")
        let log = directory.appendingPathComponent(logName)
        let child = try ChildProcess(["ip", "netns", "exec", name] + args, log: log)
        children.append(child)
        return child
    }

    /// Runs `body` on a fresh thread that has first joined this namespace (setns(2) changes only the
    /// calling thread's network namespace, so the test's own threads are untouched). Sockets created in
    /// `body` belong to the namespace for their whole life and can then be used from any thread.
    func withinNamespace<T>(_ body: () throws -> T) throws -> T {
        let path = "/var/run/netns/\(name)"
        var outcome: Result<T, Error>?
        withoutActuallyEscaping(body) { body in
            let job = ThreadJob {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    outcome = .failure(HarnessError("open \(path): \(String(cString: strerror(errno)))"))
                    return
                }
                defer { Glibc.close(fd) }
                guard setNetworkNamespace(fd) == 0 else {
                    outcome = .failure(HarnessError("setns \(path): \(String(cString: strerror(errno)))"))
                    return
                }
                outcome = Result { try body() }
            }
            // The job outlives neither this call nor `body`: the thread is joined before returning.
            job.runOnNewThreadAndJoin()
        }
        guard let outcome else { throw HarnessError("namespace thread did not run") }
        return try outcome.get()
    }

    /// A UDP socket (close-on-exec) that lives in this namespace; the caller closes it.
    func makeUDPSocket(family: Int32 = AF_INET) throws -> Int32 {
        try withinNamespace {
            let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
            return fd
        }
    }
}

/// A background process started by a test, with its output in a log file. `terminate()` sends SIGTERM,
/// waits (bounded), then SIGKILL, and always reaps it.
///
/// Spawned with posix_spawn rather than Foundation's `Process`: the test runner's threads block most
/// signals and `Process` passes that mask on, so a child that does not unblock SIGTERM itself would
/// ignore it. Here the child starts with an empty mask and default handlers.
final class ChildProcess {
    let arguments: [String]
    let log: URL
    let pid: pid_t
    private var waitStatus: Int32?
    private var terminated = false

    init(_ arguments: [String], log: URL) throws {
        precondition(!arguments.isEmpty)
        self.arguments = arguments
        self.log = log
        let logFD = open(log.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw HarnessError("open \(log.path): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(logFD) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        // Nothing else of ours: a descriptor another thread has just made without close-on-exec (a pipe
        // to a command's standard input) would otherwise live on in this child, and that command would
        // wait for an end of input that only comes when this child exits.
        _ = GNU.addCloseFrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        var child = pid_t()
        let status = posix_spawnp(&child, arguments[0], &actions, &attributes, argv, environ)
        guard status == 0 else {
            throw HarnessError("spawn \(arguments.joined(separator: " ")): \(String(cString: strerror(status)))")
        }
        pid = child
    }

    deinit { terminate() }

    var isRunning: Bool { !reap(blocking: false) }

    /// What the kernel says the process is doing, for a test's failure message when it seems stuck: per
    /// thread its state, CPU ticks (user, system) and kernel stack. A loop asleep in `epoll_wait` with no
    /// timer armed, one spinning, and one blocked in another system call look different here.
    var stateReport: String {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        guard !tasks.isEmpty else { return "process \(pid): gone" }
        return tasks.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { tid -> String in
            let base = "/proc/\(pid)/task/\(tid)"
            let stat = (try? String(contentsOfFile: base + "/stat", encoding: .utf8)) ?? ""
            let fields = stat.split(separator: ")").last.map { $0.split(separator: " ") } ?? []
            let state = fields.count > 13 ? "\(fields[0]) utime \(fields[11]) stime \(fields[12])" : "?"
            let stack = ((try? String(contentsOfFile: base + "/stack", encoding: .utf8)) ?? "")
                .split(separator: "\n").prefix(6).joined(separator: " < ")
            return "thread \(tid): \(state); \(stack)"
        }.joined(separator: "\n")
    }

    /// What the process wrote so far (stdout and stderr together).
    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// The exit status once the process has exited by itself; nil while it runs or when a signal killed it.
    var exitCode: Int32? {
        guard reap(blocking: false), let status = waitStatus, status >= 0, status & 0x7F == 0 else { return nil }
        return (status >> 8) & 0xFF
    }

    /// Waits at most `seconds` for the process to exit; true when it has.
    func waitForExit(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !isRunning { return true }
            usleep(10_000)
        }
        return !isRunning
    }

    /// Returns true when the process ignored SIGTERM for `grace` seconds and had to be SIGKILLed.
    @discardableResult
    func terminate(grace: Double = 5) -> Bool {
        guard !terminated else { return false }
        terminated = true
        var forced = false
        if isRunning {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(grace)
            while isRunning && Date() < deadline { usleep(5_000) }
            if isRunning {
                kill(pid, SIGKILL)
                forced = true
            }
        }
        _ = reap(blocking: true)
        return forced
    }

    /// waitpid on our own PID only; true once the process has exited and been reaped.
    private func reap(blocking: Bool) -> Bool {
        if waitStatus != nil { return true }
        var status: Int32 = 0
        for _ in 0..<100 {
            let result = waitpid(pid, &status, blocking ? 0 : WNOHANG)
            if result == pid {
                waitStatus = status
                return true
            }
            if result == 0 { return false }
            if errno == EINTR { continue }
            // ECHILD: nothing left to reap; never kill this PID again, it may be reused.
            waitStatus = -1
            return true
        }
        return false
    }
}

/// Runs programs to completion with a time bound. Output goes to files, not pipes, so a chatty child
/// can never block on a full pipe while we wait for it.
enum Command {
    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func execute(
        _ args: [String], input: String? = nil, environment: [String: String]? = nil, timeout: Double = 20
    ) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = args
        if let environment { process.environment = environment }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-cmd-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        // Every descriptor close-on-exec from birth: tests run in parallel, and a child another test
        // spawns meanwhile must not inherit this command's input pipe (the command, `wg pubkey` say,
        // would read until that child exits; seen as a 20 s time-out under load).
        var ends: [Int32] = [-1, -1]
        guard GNU.pipe2(&ends, O_CLOEXEC) == 0 else { throw HarnessError("pipe2: \(String(cString: strerror(errno)))") }
        let inRead = FileHandle(fileDescriptor: ends[0], closeOnDealloc: true)
        let inWrite = FileHandle(fileDescriptor: ends[1], closeOnDealloc: true)
        func openCloexec(_ url: URL) throws -> FileHandle {
            let fd = open(url.path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw HarnessError("open \(url.path): \(String(cString: strerror(errno)))") }
            return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        }
        let outHandle = try openCloexec(outURL), errHandle = try openCloexec(errURL)
        defer {
            try? outHandle.close()
            try? errHandle.close()
        }
        process.standardOutput = outHandle
        process.standardError = errHandle
        process.standardInput = inRead
        try process.run()
        try? inRead.close()
        // Inputs here are a key or two, far below the pipe buffer, so this write cannot block.
        if let input { inWrite.write(Data(input.utf8)) }
        try? inWrite.close()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let stdout = String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self)
        var stderr = String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self)
        if timedOut { stderr += "\n(killed after \(timeout) s)" }
        return Outcome(status: timedOut ? -1 : process.terminationStatus, stdout: stdout, stderr: stderr)
    }

    /// Standard output of a command that must succeed; throws with its standard error otherwise.
    @discardableResult
    static func run(_ args: [String], input: String? = nil, timeout: Double = 20) throws -> String {
        let outcome = try execute(args, input: input, timeout: timeout)
        guard outcome.status == 0 else {
            throw HarnessError("`\(args.joined(separator: " "))` failed (\(outcome.status)): \(outcome.stderr.trimmed)")
        }
        return outcome.stdout
    }
}

func randomHex(_ digits: Int) -> String {
    (0..<digits).map { _ in String(UInt8.random(in: 0..<16), radix: 16) }.joined()
}

// MARK: - Threads and setns

/// setns(2) is not exported by the Glibc module (it sits behind _GNU_SOURCE), so look it up once.
private let setnsFunction: (@convention(c) (Int32, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return nil }  // RTLD_DEFAULT
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
}()

/// CLONE_NEWNET from <linux/sched.h>.
private let cloneNewNet: Int32 = 0x4000_0000

private func setNetworkNamespace(_ fd: Int32) -> Int32 {
    guard let setns = setnsFunction else {
        errno = ENOSYS
        return -1
    }
    return setns(fd, cloneNewNet)
}

/// A closure run on its own pthread. The thread is always joined before the closure's captures go away,
/// which is what makes the unchecked Sendable sound here.
private final class ThreadJob: @unchecked Sendable {
    let work: () -> Void
    init(_ work: @escaping () -> Void) { self.work = work }

    func runOnNewThreadAndJoin() {
        var thread = pthread_t()
        let argument = Unmanaged.passRetained(self).toOpaque()
        let status = pthread_create(&thread, nil, { argument in
            let job = Unmanaged<ThreadJob>.fromOpaque(argument!).takeRetainedValue()
            job.work()
            return nil
        }, argument)
        guard status == 0 else {
            Unmanaged<ThreadJob>.fromOpaque(argument).release()
            return
        }
        pthread_join(thread, nil)
    }
}

/// glibc's GNU extensions that Swift's Glibc module leaves out (it is built without _GNU_SOURCE).
enum GNU {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32

    static func symbol<T>(_ name: String, as type: T.Type) -> T {
        guard let pointer = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { fatalError("glibc has no \(name)") }
        return unsafeBitCast(pointer, to: type)
    }

    /// posix_spawn_file_actions_addclosefrom_np(3) (glibc 2.34).
    static let addCloseFrom = symbol("posix_spawn_file_actions_addclosefrom_np", as: AddCloseFrom.self)
    /// pipe2(2).
    static let pipe2 = symbol("pipe2", as: Pipe2.self)
}

extension TestNamespace {
    /// The namespace's own /etc/hosts (`ip netns exec` bind-mounts /etc/netns/NAME/hosts over it):
    /// localhost, then `lines`. Rewritten in place, so that a mount a running process holds sees it.
    func setHosts(_ lines: String) throws {
        let directory = "/etc/netns/\(name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/hosts"
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw HarnessError("cannot write \(path)") }
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data("127.0.0.1 localhost\n\(lines)".utf8))
        try handle.close()
    }

    /// Removes what `setHosts` made.
    func removeHosts() { try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)") }
}
