import Foundation

/// remote_check.py, the two ends of the remote UDP forwarding tests — a UDP echo service standing for the
/// local server, and the WireGuard-side client — written into a namespace's scratch directory and run inside
/// the namespace with python3 (standard library only).
///
/// udp_check.py's echo client binds its sockets to loopback, which cannot reach an address behind the
/// wireguard-go interface (the kernel refuses a loopback source off the loopback device); this one leaves
/// the source address to the kernel, so it is the peer's tunnel address, as for any host on the WireGuard
/// side.
enum RemoteCheckScript {
    static let source = #"""
        """UDP echo check from the WireGuard side. Standard library only.

        serve-udp-echo ADDR PORT
            A UDP echo service; prints "ready" once bound.
        udp-echo HOST PORT CLIENTS TOTAL WINDOW
            CLIENTS sockets (distinct source ports) share TOTAL datagrams, each with at most WINDOW
            outstanding; every reply must be one of the socket's own, byte for byte. Prints one JSON line.
        """
        import json, select, socket, sys, time


        def payload(client, seq):
            head = b"client %03d seq %07d |" % (client, seq)
            size = 32 + (client * 131 + seq * 17) % 1200
            return head + bytes((client * 7 + seq + k) & 0xFF for k in range(size - len(head)))


        def udp_echo(host, port, clients, total, window):
            port, clients, total, window = int(port), int(clients), int(total), int(window)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            share = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
            socks = []
            for _ in range(clients):
                s = socket.socket(family, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.connect((host, port))
                s.setblocking(False)
                socks.append(s)
            ports = {s.getsockname()[1] for s in socks}
            state = [{"next": 0, "out": {}, "ok": 0, "lost": 0, "foreign": 0, "unexpected": 0, "corrupt": 0}
                     for _ in range(clients)]
            by_fd = {s.fileno(): i for i, s in enumerate(socks)}

            def fill(i):
                st = state[i]
                while len(st["out"]) < window and st["next"] < share[i]:
                    seq = st["next"]
                    try:
                        socks[i].send(payload(i, seq))
                    except BlockingIOError:
                        return
                    st["out"][seq] = time.monotonic()
                    st["next"] += 1

            start = time.monotonic()
            for i in range(clients):
                fill(i)
            poller = select.poll()
            for s in socks:
                poller.register(s.fileno(), select.POLLIN)
            deadline = start + 30
            while time.monotonic() < deadline:
                if all(st["next"] == share[i] and not st["out"] for i, st in enumerate(state)):
                    break
                for fd, _ in poller.poll(100):
                    i = by_fd[fd]
                    st = state[i]
                    while True:
                        try:
                            data = socks[i].recv(65535)
                        except BlockingIOError:
                            break
                        except ConnectionRefusedError:
                            st["unexpected"] += 1
                            continue
                        try:
                            words = data.split(b"|", 1)[0].split()
                            cid, seq = int(words[1]), int(words[3])
                        except (IndexError, ValueError):
                            st["corrupt"] += 1
                            continue
                        if cid != i:
                            st["foreign"] += 1
                        elif seq not in st["out"]:
                            st["unexpected"] += 1
                        elif data != payload(i, seq):
                            st["corrupt"] += 1
                            del st["out"][seq]
                        else:
                            st["ok"] += 1
                            del st["out"][seq]
                    fill(i)
                now = time.monotonic()
                for i, st in enumerate(state):
                    late = [seq for seq, sent in st["out"].items() if now - sent > 2]
                    for seq in late:
                        del st["out"][seq]
                        st["lost"] += 1
                    if late:
                        fill(i)
            result = {"clients": clients, "sourcePorts": len(ports), "sent": sum(st["next"] for st in state)}
            for key in ("ok", "lost", "foreign", "unexpected", "corrupt"):
                result[key] = sum(st[key] for st in state)
            result["clientsAllOk"] = sum(1 for i, st in enumerate(state) if st["ok"] == share[i])
            result["seconds"] = time.monotonic() - start
            return result


        def serve_udp_echo(addr, port):
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((addr, int(port)))
            print("ready", flush=True)
            while True:
                data, peer = s.recvfrom(65535)
                s.sendto(data, peer)


        def main(argv):
            if argv[1] == "serve-udp-echo":
                serve_udp_echo(*argv[2:])
                return
            if argv[1] != "udp-echo":
                sys.exit("unknown command " + argv[1])
            try:
                result = udp_echo(*argv[2:])
            except OSError as e:
                result = {"error": "%s: %s" % (type(e).__name__, e)}
            print(json.dumps(result), flush=True)


        if __name__ == "__main__":
            main(sys.argv)
        """#
}

extension ForwardSession {
    var remoteScript: URL { directory.appendingPathComponent("remote_check.py") }

    /// Starts remote_check.py's UDP echo service on `address`:`port` and waits until it is bound.
    @discardableResult
    func startRemoteUDPEcho(address: String, port: UInt16) throws -> ChildProcess {
        try RemoteCheckScript.source.write(to: remoteScript, atomically: true, encoding: .utf8)
        let child = try namespace.spawn(
            ["python3", "-u", remoteScript.path, "serve-udp-echo", address, String(port)], logName: "udp-echo.log")
        try waitFor(child, "ready", seconds: 10)
        return child
    }

    /// Runs remote_check.py's UDP echo check against `host`:`port` (an address behind the wireguard-go
    /// interface, so the datagrams go through the tunnel) inside the namespace.
    func remoteUDPEcho(host: String, port: UInt16, clients: Int, total: Int, window: Int, timeout: Double = 45) throws -> CheckResult {
        try RemoteCheckScript.source.write(to: remoteScript, atomically: true, encoding: .utf8)
        let outcome = try peer.execute(
            ["python3", remoteScript.path, "udp-echo", host, String(port), String(clients), String(total), String(window)],
            timeout: timeout)
        guard outcome.status == 0, let line = outcome.stdout.split(separator: "\n").last else {
            throw HarnessError("remote udp-echo to \(host):\(port) failed (\(outcome.status)): \(outcome.stderr.trimmed)\nonetun: \(onetunLog)")
        }
        return try CheckResult(line: String(line))
    }
}
