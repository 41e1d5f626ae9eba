import Testing
import Foundation
import Glibc

/// forward_check.py, the other end of the forwarder's end-to-end tests, written into a namespace's scratch
/// directory and run inside the namespace with python3 (standard library only).
///
/// `serve` listens on the peer's tunnel addresses, one port per service: sink (reads to EOF, answers the
/// SHA-256 of what it got, closes), source (reads "N\n", sends N bytes of a file, closes), echo, reset
/// (closes with SO_LINGER 0, so RST), halfclose (greeting, SHUT_WR, reads to EOF and logs the digest) and
/// finreset (a goodbye, SHUT_WR and at once RST, the client's bytes unread).
/// `client` runs one check against onetun's forwarded port on 127.0.0.1 and prints one JSON line: upload,
/// download, echo (many concurrent connections), echo-late (reads back only after a delay, so both
/// directions' windows close and must reopen), halfclose-client, halfclose-server, closes (and closes-many),
/// connects.
/// Every socket has a timeout, so no check can hang.
enum ForwardCheckScript {
    static let source = #"""
        """End-to-end checks of a TCP port forwarder. Standard library only.

        serve ADDR[,ADDR...] --sink P --source P --echo P --reset P --halfclose P --finreset P [--file F]
            Listens on every ADDR with each service; prints "ready" once all are bound, and one line per
            half-close connection.
        client HOST PORT CHECK [ARGS...]
            Runs one check against HOST:PORT and prints one JSON line.
        mkfile PATH N       writes N random bytes to PATH, prints their sha256.
        digest PATH [N]     prints the sha256 of the first N bytes of PATH (all of it without N).
        """
        import errno, hashlib, json, os, random, socket, struct, sys, threading, time

        CHUNK = 262144


        def log(*parts):
            print(*parts, flush=True)


        def recv_all(conn):
            """Reads until EOF; returns (byte count, sha256 hex)."""
            h, n = hashlib.sha256(), 0
            while True:
                d = conn.recv(CHUNK)
                if not d:
                    return n, h.hexdigest()
                h.update(d)
                n += len(d)


        def read_line(conn):
            data = b""
            while not data.endswith(b"\n"):
                d = conn.recv(1)
                if not d:
                    break
                data += d
            return data.decode().strip()


        # MARK: - services

        def sink(conn):
            # Reads until EOF (the client's SHUT_WR), then answers with the digest and closes. An end by
            # reset is logged as such: an aborted upload must not look complete.
            try:
                _, digest = recv_all(conn)
            except ConnectionResetError:
                log("sink: ended by a reset")
                return
            conn.sendall(digest.encode() + b"\n")


        def source(conn, path):
            n = int(read_line(conn))
            if path:
                with open(path, "rb") as f:
                    while n > 0:
                        d = f.read(min(CHUNK, n))
                        if not d:
                            break
                        conn.sendall(d)
                        n -= len(d)
            else:
                rng = random.Random(n)
                while n > 0:
                    d = rng.randbytes(min(CHUNK, n))
                    conn.sendall(d)
                    n -= len(d)
            conn.shutdown(socket.SHUT_WR)
            recv_all(conn)


        def echo(conn):
            while True:
                d = conn.recv(CHUNK)
                if not d:
                    break
                conn.sendall(d)


        def reset(conn):
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


        def finreset(conn):
            # The client's first bytes arrive and stay unread; a goodbye and our FIN, then at once a RST
            # (SO_LINGER 0): FIN and RST reach onetun back to back.
            time.sleep(0.02)
            conn.sendall(b"bye\n")
            conn.shutdown(socket.SHUT_WR)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


        def halfclose(conn):
            # Greeting, then our FIN; the client keeps sending after it saw our EOF.
            conn.sendall(b"greeting\n")
            conn.shutdown(socket.SHUT_WR)
            n, digest = recv_all(conn)
            log("halfclose received %d %s" % (n, digest))


        def serve(args):
            addrs = args[0].split(",")
            opts = dict(zip(args[1::2], args[2::2]))
            path = opts.get("--file")
            services = {"--sink": sink, "--source": lambda c: source(c, path), "--echo": echo,
                        "--reset": reset, "--halfclose": halfclose, "--finreset": finreset}
            listeners = []
            for flag, handler in services.items():
                if flag not in opts:
                    continue
                for addr in addrs:
                    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
                    s = socket.socket(family, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((addr, int(opts[flag])))
                    s.listen(512)
                    listeners.append((s, handler))

            def handle(conn, handler):
                try:
                    conn.settimeout(120)
                    handler(conn)
                except OSError as e:
                    log("error", handler.__name__ if hasattr(handler, "__name__") else "?", e)
                finally:
                    conn.close()

            def accept_loop(s, handler):
                while True:
                    conn, _ = s.accept()
                    threading.Thread(target=handle, args=(conn, handler), daemon=True).start()

            for s, handler in listeners:
                threading.Thread(target=accept_loop, args=(s, handler), daemon=True).start()
            log("ready")
            while True:
                time.sleep(3600)


        # MARK: - checks

        def connect(host, port, timeout=60):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            conn = socket.socket(family, socket.SOCK_STREAM)
            conn.settimeout(timeout)
            conn.connect((host, port))
            return conn


        def check_upload(host, port, path, n=None):
            """Sends the first n bytes of path (all of it), SHUT_WR, reads the sink's digest then EOF."""
            size = os.path.getsize(path) if n is None else int(n)
            start = time.monotonic()
            conn = connect(host, port)
            sent = 0
            with open(path, "rb") as f:
                while sent < size:
                    d = f.read(min(CHUNK, size - sent))
                    conn.sendall(d)
                    sent += len(d)
            conn.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                d = conn.recv(4096)
                if not d:
                    break
                reply += d
            conn.close()
            return {"sent": sent, "digest": reply.decode().strip(), "seconds": time.monotonic() - start}


        def check_download(host, port, n):
            start = time.monotonic()
            conn = connect(host, port)
            conn.sendall(b"%d\n" % int(n))
            received, digest = recv_all(conn)
            conn.close()
            return {"received": received, "digest": digest, "seconds": time.monotonic() - start}


        def check_echo(host, port, count, size):
            """count concurrent connections, each sending size bytes of its own and reading them back. A
            connection that makes no progress for 30 s fails; the whole check ends after 45 s at the latest."""
            count, size = int(count), int(size)
            results = [None] * count
            progress = [[0, 0] for _ in range(count)]  # bytes sent, bytes received

            def one(i):
                try:
                    payload = random.Random(i).randbytes(size)
                    conn = connect(host, port, timeout=30)

                    def send():
                        try:
                            for k in range(0, size, 65536):
                                conn.sendall(payload[k:k + 65536])
                                progress[i][0] += len(payload[k:k + 65536])
                            conn.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass

                    sender = threading.Thread(target=send, daemon=True)
                    sender.start()
                    h = hashlib.sha256()
                    while True:
                        d = conn.recv(CHUNK)
                        if not d:
                            break
                        h.update(d)
                        progress[i][1] += len(d)
                    sender.join(30)
                    conn.close()
                    if progress[i][1] == size and h.hexdigest() == hashlib.sha256(payload).hexdigest():
                        results[i] = "ok"
                    else:
                        results[i] = "got %d of %d bytes back" % (progress[i][1], size)
                except OSError as e:
                    results[i] = "%s after sending %d and receiving %d bytes" % (e, progress[i][0], progress[i][1])

            start = time.monotonic()
            threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
            for t in threads:
                t.start()
            deadline = start + 45
            for t in threads:
                t.join(max(0, deadline - time.monotonic()))
            failures = {i: r or "unfinished" for i, r in enumerate(results) if r != "ok"}
            return {"ok": count - len(failures), "failed": len(failures), "failures": dict(list(failures.items())[:10]),
                    "seconds": time.monotonic() - start}


        def check_echo_late(host, port, size, delay, stall=10):
            """One connection sending size bytes while reading them back only after delay seconds: both
            directions' windows close on the way, and must open again. Fails after stall seconds without progress."""
            size, delay = int(size), float(delay)
            payload = random.Random(9).randbytes(size)
            start = time.monotonic()
            conn = connect(host, port, timeout=float(stall))
            progress = [0, 0]

            def send():
                try:
                    for k in range(0, size, 65536):
                        conn.sendall(payload[k:k + 65536])
                        progress[0] += len(payload[k:k + 65536])
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            time.sleep(delay)
            h = hashlib.sha256()
            error = None
            try:
                while True:
                    d = conn.recv(CHUNK)
                    if not d:
                        break
                    h.update(d)
                    progress[1] += len(d)
            except OSError as e:
                error = str(e)
            sender.join(5)
            conn.close()
            return {"sent": progress[0], "received": progress[1], "equal": h.hexdigest() == hashlib.sha256(payload).hexdigest(),
                    "error": error, "seconds": time.monotonic() - start}


        def check_echo_paced(host, port, seconds, rate=65536, stall=60):
            """One connection sending rate bytes a second for seconds and reading the echo as it comes. It must
            come through whatever happens to the path meanwhile (an outage shorter than stall) byte-exact, with
            no reset."""
            seconds, rate, stall = float(seconds), int(rate), float(stall)
            rnd = random.Random(7)
            sent, received = hashlib.sha256(), hashlib.sha256()
            progress = [0, 0]
            conn = connect(host, port, timeout=stall)

            def send():
                end = time.monotonic() + seconds
                try:
                    while time.monotonic() < end:
                        d = rnd.randbytes(max(1, rate // 10))
                        conn.sendall(d)
                        sent.update(d)
                        progress[0] += len(d)
                        time.sleep(0.1)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            start = time.monotonic()
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            error = None
            try:
                while True:
                    d = conn.recv(CHUNK)
                    if not d:
                        break
                    received.update(d)
                    progress[1] += len(d)
            except OSError as e:
                error = str(e)
            sender.join(5)
            conn.close()
            return {"sent": progress[0], "received": progress[1], "equal": sent.hexdigest() == received.hexdigest(),
                    "error": error, "seconds": time.monotonic() - start}


        def check_halfclose_client(host, port, n):
            """Client half-closes first: sends n bytes, SHUT_WR; the server replies after our EOF; then EOF."""
            payload = random.Random(7).randbytes(int(n))
            conn = connect(host, port, timeout=30)
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            reply = b""
            while not reply.endswith(b"\n"):
                d = conn.recv(4096)
                if not d:
                    break
                reply += d
            # After the reply, the server's FIN.
            eof = conn.recv(4096) == b""
            conn.close()
            return {"reply": reply.decode().strip(), "expected": hashlib.sha256(payload).hexdigest(), "eof": eof}


        def check_halfclose_server(host, port, n):
            """Server half-closes first: we read its greeting and EOF, then still send n bytes and SHUT_WR."""
            payload = random.Random(8).randbytes(int(n))
            conn = connect(host, port, timeout=30)
            greeting = b""
            while True:
                d = conn.recv(4096)
                if not d:
                    break
                greeting += d
            sent = 0
            for k in range(0, len(payload), 65536):
                conn.sendall(payload[k:k + 65536])
                sent += len(payload[k:k + 65536])
            conn.shutdown(socket.SHUT_WR)
            # The server closes once it has read our EOF; that shows up here as EOF or, at the latest, nothing.
            try:
                conn.settimeout(5)
                conn.recv(4096)
            except OSError:
                pass
            conn.close()
            return {"greeting": greeting.decode().strip(), "sent": sent, "expected": hashlib.sha256(payload).hexdigest()}


        def check_closes(host, port):
            """Connects, sends a little, and measures how long until the connection ends (RST or FIN). A
            reset may come at any step, even before connect returns, and counts as one wherever it lands."""
            start = time.monotonic()
            outcome = "eof"
            conn = None
            try:
                conn = connect(host, port, timeout=5)
                conn.sendall(b"hello\n")
                while True:
                    d = conn.recv(4096)
                    if not d:
                        break
            except socket.timeout:
                outcome = "timeout"
            except (ConnectionResetError, BrokenPipeError):
                outcome = "reset"
            except OSError as e:
                outcome = errno.errorcode.get(e.errno, str(e))
            if conn is not None:
                conn.close()
            return {"outcome": outcome, "seconds": time.monotonic() - start}


        def check_closes_many(host, port, n):
            """`closes` n times in a row; counts the outcomes."""
            outcomes = {}
            start = time.monotonic()
            for _ in range(int(n)):
                o = check_closes(host, port)["outcome"]
                outcomes[o] = outcomes.get(o, 0) + 1
            return {"outcomes": outcomes, "seconds": time.monotonic() - start}


        def check_abort(host, port, n):
            """Once the connection is through (a first kilobyte, half a second), sends n bytes and at once
            resets the connection (SO_LINGER 0): data then RST, back to back."""
            conn = connect(host, port, timeout=10)
            conn.sendall(b"x" * 1024)
            time.sleep(0.5)
            conn.sendall(random.Random(3).randbytes(int(n)))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return {"sent": int(n)}


        def check_connects(host, port):
            """Whether anything accepts a connection there."""
            try:
                connect(host, port, timeout=5).close()
                return {"connected": True}
            except OSError as e:
                return {"connected": False, "error": str(e)}


        CHECKS = {"upload": check_upload, "download": check_download, "echo": check_echo, "echo-late": check_echo_late,
                  "echo-paced": check_echo_paced, "abort": check_abort,
                  "halfclose-client": check_halfclose_client, "halfclose-server": check_halfclose_server,
                  "closes": check_closes, "closes-many": check_closes_many, "connects": check_connects}


        def main(argv):
            mode = argv[1]
            if mode == "serve":
                serve(argv[2:])
            elif mode == "client":
                host, port, check = argv[2], int(argv[3]), argv[4]
                try:
                    result = CHECKS[check](host, port, *argv[5:])
                except OSError as e:
                    result = {"error": "%s: %s" % (type(e).__name__, e)}
                result["check"] = check
                print(json.dumps(result), flush=True)
            elif mode == "mkfile":
                path, n = argv[2], int(argv[3])
                h = hashlib.sha256()
                with open(path, "wb") as f:
                    while n > 0:
                        d = os.urandom(min(1 << 20, n))
                        f.write(d)
                        h.update(d)
                        n -= len(d)
                print(h.hexdigest())
            elif mode == "digest":
                path = argv[2]
                n = int(argv[3]) if len(argv) > 3 else os.path.getsize(path)
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    while n > 0:
                        d = f.read(min(1 << 20, n))
                        if not d:
                            break
                        h.update(d)
                        n -= len(d)
                print(h.hexdigest())
            else:
                sys.exit("unknown mode " + mode)


        if __name__ == "__main__":
            main(sys.argv)
        """#
}

/// The services' ports on the peer's tunnel addresses; `unused` has no listener, so the peer's kernel
/// refuses connections to it.
enum ServicePort {
    static let sink: UInt16 = 5001
    static let source: UInt16 = 5002
    static let echo: UInt16 = 5003
    static let reset: UInt16 = 5004
    static let halfclose: UInt16 = 5005
    static let finreset: UInt16 = 5006
    static let unused: UInt16 = 5009
}

/// One check's JSON line.
struct CheckResult: CustomStringConvertible {
    let fields: [String: Any]
    let line: String

    init(line: String) throws {
        self.line = line
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw HarnessError("forward_check.py printed no JSON result: '\(line)'")
        }
        fields = object
    }

    subscript(string key: String) -> String? { fields[key] as? String }
    subscript(int key: String) -> Int? { (fields[key] as? NSNumber)?.intValue }
    subscript(double key: String) -> Double? { (fields[key] as? NSNumber)?.doubleValue }
    subscript(bool key: String) -> Bool? { (fields[key] as? NSNumber)?.boolValue }
    var description: String { line }
}

/// A wireguard-go peer in its namespace, forward_check.py's services on the peer's tunnel addresses, and
/// onetun forwarding ports on 127.0.0.1 to them; `close()` stops everything, in reverse order.
/// Runs `body` with a fresh session and closes it; an error thrown fails the test with the end of
/// onetun's log and of the services' log.
func withForwardSession(_ body: (ForwardSession) throws -> Void) throws {
    let session = try ForwardSession()
    defer { session.close() }
    do {
        try body(session)
    } catch {
        Issue.record("\(error)\nonetun log:\n\(session.onetunLog.suffix(6000))\nservices log:\n\(session.serverLog.suffix(2000))")
    }
}

final class ForwardSession {
    let peer: OneTunPeer
    let script: URL
    private(set) var server: ChildProcess?
    private(set) var onetun: ChildProcess?

    var namespace: TestNamespace { peer.namespace }
    var directory: URL { peer.namespace.directory }

    init() throws {
        peer = try OneTunPeer()
        script = peer.namespace.directory.appendingPathComponent("forward_check.py")
        do {
            try ForwardCheckScript.source.write(to: script, atomically: true, encoding: .utf8)
        } catch {
            peer.close()
            throw error
        }
    }

    func close() {
        onetun?.terminate()
        server?.terminate()
        peer.close()
    }

    /// Runs forward_check.py inside the namespace; its standard output, or a thrown error.
    @discardableResult
    func python(_ args: [String], timeout: Double = 30) throws -> String {
        let outcome = try peer.execute(["python3", script.path] + args, timeout: timeout)
        guard outcome.status == 0 else {
            throw HarnessError("forward_check.py \(args.joined(separator: " ")) failed (\(outcome.status)): \(outcome.stderr.trimmed)")
        }
        return outcome.stdout.trimmed
    }

    /// Writes `size` random bytes to a file in the scratch directory; returns it and its SHA-256.
    func randomFile(_ name: String, size: Int) throws -> (URL, String) {
        let file = directory.appendingPathComponent(name)
        let digest = try python(["mkfile", file.path, String(size)], timeout: 60)
        return (file, digest)
    }

    /// Starts the services on `addresses` (the peer's tunnel addresses by default) and waits until they
    /// listen. `file` is what the source service sends.
    func startServer(addresses: [String] = ["192.168.4.1", "fd00:4::1"], file: URL? = nil) throws {
        var args = ["python3", "-u", script.path, "serve", addresses.joined(separator: ","),
                    "--sink", "\(ServicePort.sink)", "--source", "\(ServicePort.source)", "--echo", "\(ServicePort.echo)",
                    "--reset", "\(ServicePort.reset)", "--halfclose", "\(ServicePort.halfclose)",
                    "--finreset", "\(ServicePort.finreset)"]
        if let file { args += ["--file", file.path] }
        let child = try namespace.spawn(args, logName: "services.log")
        server = child
        try waitFor(child, "ready", seconds: 10)
    }

    /// Starts onetun with `arguments` (forwards and options), under `environment`, and waits until it is
    /// forwarding. Throws with its output when it exits or does not get there in time.
    func startOnetun(_ arguments: [String], environment: [String: String] = [:]) throws {
        let env = environment.isEmpty ? [] : ["env"] + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let child = try namespace.spawn(env + [onetunExecutable] + arguments, logName: "onetun.log")
        onetun = child
        try waitFor(child, "tunnel to", seconds: 10)
    }

    /// onetun's arguments for `forwards` through this session's peer, as `source`.
    func onetunArguments(_ forwards: [String], source: String = "192.168.4.3", extra: [String] = ["--log", "debug"]) -> [String] {
        forwards + peer.tunnelArguments + ["--source-peer-ip", source] + extra
    }

    /// Runs one client check against 127.0.0.1:`port` inside the namespace.
    func client(_ port: UInt16, _ check: String, _ args: [String] = [], host: String = "127.0.0.1", timeout: Double = 60) throws -> CheckResult {
        let outcome = try peer.execute(["python3", script.path, "client", host, String(port), check] + args, timeout: timeout)
        guard outcome.status == 0, let line = outcome.stdout.split(separator: "\n").last else {
            let state = onetun.map { $0.isRunning ? "\nonetun's threads now:\n\($0.stateReport)" : "" } ?? ""
            throw HarnessError("client \(check) on port \(port) failed (\(outcome.status)): \(outcome.stderr.trimmed)\nonetun: \(onetunLog)\(state)")
        }
        return try CheckResult(line: String(line))
    }

    /// Starts one client check in the background; `finish` waits for its result.
    func startClient(_ port: UInt16, _ check: String, _ args: [String] = [], host: String = "127.0.0.1", logName: String) throws -> ChildProcess {
        try namespace.spawn(["python3", "-u", script.path, "client", host, String(port), check] + args, logName: logName)
    }

    /// The result of a check started with `startClient`, waiting at most `seconds` for it.
    func finish(_ child: ChildProcess, seconds: Double) throws -> CheckResult {
        try waitFor(child, "\"check\"", seconds: seconds)
        guard let line = child.output.split(separator: "\n").last(where: { $0.contains("\"check\"") }) else {
            throw HarnessError("no result from \(child.arguments.joined(separator: " ")): \(child.output)")
        }
        return try CheckResult(line: String(line))
    }

    var onetunLog: String { onetun?.output ?? "" }
    var serverLog: String { server?.output ?? "" }

    /// Polls `child`'s output for `text`, at most `seconds`; throws when the child exits first or time runs out.
    func waitFor(_ child: ChildProcess, _ text: String, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if child.output.contains(text) { return }
            guard child.isRunning || child.output.contains(text) else {
                throw HarnessError("\(child.arguments.joined(separator: " ")) exited: \(child.output)")
            }
            usleep(20_000)
        }
        throw HarnessError("no '\(text)' from \(child.arguments.joined(separator: " ")) within \(seconds) s: \(child.output)")
    }
}
