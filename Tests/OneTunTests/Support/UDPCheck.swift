import Foundation

/// udp_check.py, the other end of the UDP forwarding tests, written into a namespace's scratch directory
/// and run inside the namespace with python3 (standard library only).
///
/// `serve` runs a UDP echo service and a tiny DNS responder (A records for one name) on the peer's tunnel
/// addresses. `client` runs one check against a forwarded port and prints one JSON line: echo (many client
/// sockets, each pacing itself with a small window of outstanding datagrams and checking that every reply
/// is exactly one of its own), dns (a query built by hand, the answer parsed), oversize (a datagram too
/// big for the tunnel gets no reply; a normal one right after does). Every socket has a timeout.
enum UDPCheckScript {
    static let source = #"""
        """UDP checks of a port forwarder. Standard library only.

        serve ADDR[,ADDR...] --echo P --dns P --name NAME --answer A.B.C.D
        client HOST PORT echo CLIENTS TOTAL WINDOW
        client HOST PORT dns NAME
        client HOST PORT oversize SIZE
        """
        import json, select, socket, struct, sys, threading, time


        def log(*parts):
            print(*parts, flush=True)


        def family(host):
            return socket.AF_INET6 if ":" in host else socket.AF_INET


        # MARK: - services

        def echo_loop(s):
            while True:
                data, peer = s.recvfrom(65535)
                s.sendto(data, peer)


        def dns_answer(query, name, answer):
            """A response to one query: A record for `name` (class IN), NXDOMAIN for anything else."""
            if len(query) < 12:
                return None
            qid, flags, qdcount = struct.unpack("!HHH", query[:6])
            if qdcount != 1:
                return None
            labels, i = [], 12
            while i < len(query) and query[i] != 0:
                n = query[i]
                labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
            qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
            question = query[12:i + 5]
            asked = ".".join(labels).lower()
            rd = flags & 0x0100
            if asked == name.lower() and qtype == 1 and qclass == 1:
                header = struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, 1, 0, 0)
                record = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + socket.inet_aton(answer)
                return header + question + record
            return struct.pack("!HHHHHH", qid, 0x8403 | rd, 1, 0, 0, 0) + question


        def dns_loop(s, name, answer):
            while True:
                data, peer = s.recvfrom(65535)
                try:
                    reply = dns_answer(data, name, answer)
                except (struct.error, IndexError):
                    reply = None
                if reply:
                    s.sendto(reply, peer)


        def serve(args):
            addrs = args[0].split(",")
            opts = dict(zip(args[1::2], args[2::2]))
            threads = []
            for addr in addrs:
                for flag in ("--echo", "--dns"):
                    if flag not in opts:
                        continue
                    s = socket.socket(family(addr), socket.SOCK_DGRAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                    s.bind((addr, int(opts[flag])))
                    if flag == "--echo":
                        t = threading.Thread(target=echo_loop, args=(s,), daemon=True)
                    else:
                        t = threading.Thread(target=dns_loop, args=(s, opts["--name"], opts["--answer"]), daemon=True)
                    threads.append(t)
            for t in threads:
                t.start()
            log("ready")
            while True:
                time.sleep(3600)


        # MARK: - checks

        def payload(client, seq):
            """Client id and sequence number, padded to a size that varies with both (32..1232 bytes)."""
            head = b"client %03d seq %07d |" % (client, seq)
            size = 32 + (client * 131 + seq * 17) % 1200
            return head + bytes((client + seq + k) & 0xFF for k in range(size - len(head)))


        def check_echo(host, port, clients, total, window):
            """`clients` sockets (distinct source ports) share `total` datagrams, each keeping at most
            `window` outstanding. Replies are matched to what the socket itself sent: a reply carrying
            another client's id, an unknown or repeated sequence number, or different bytes is counted.
            UDP may drop (a busy machine overflows wireguard-go's 208 KiB socket buffer), so like a DNS
            client a datagram without a reply within 0.5 s is sent again, up to 5 times; only then does it
            count as lost. A reply to a datagram already answered counts as a duplicate, not an error."""
            clients, total, window = int(clients), int(total), int(window)
            share = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
            socks = []
            for i in range(clients):
                s = socket.socket(family(host), socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.bind(("::1" if ":" in host else "127.0.0.1", 0))
                s.connect((host, port))
                s.setblocking(False)
                socks.append(s)
            ports = {s.getsockname()[1] for s in socks}
            state = [{"next": 0, "out": {}, "ok": 0, "lost": 0, "foreign": 0, "unexpected": 0, "corrupt": 0,
                      "lostInFirstWindow": 0, "tries": {}, "retried": 0, "done": set(), "duplicate": 0}
                     for _ in range(clients)]
            by_fd = {s.fileno(): i for i, s in enumerate(socks)}
            start = time.monotonic()

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

            for i in range(clients):
                fill(i)
            poller = select.poll()
            for s in socks:
                poller.register(s.fileno(), select.POLLIN)
            deadline = start + 120
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
                        elif seq in st["done"]:
                            st["duplicate"] += 1
                        elif seq not in st["out"]:
                            st["unexpected"] += 1
                        elif data != payload(i, seq):
                            st["corrupt"] += 1
                            del st["out"][seq]
                        else:
                            st["ok"] += 1
                            st["done"].add(seq)
                            del st["out"][seq]
                    fill(i)
                now = time.monotonic()
                for i, st in enumerate(state):
                    late = [seq for seq, sent in st["out"].items() if now - sent > 0.5]
                    for seq in late:
                        tries = st["tries"].get(seq, 0)
                        if tries < 5:
                            st["tries"][seq] = tries + 1
                            st["retried"] += 1
                            st["out"][seq] = now
                            try:
                                socks[i].send(payload(i, seq))
                            except BlockingIOError:
                                pass
                            continue
                        del st["out"][seq]
                        st["lost"] += 1
                        if seq < window:
                            st["lostInFirstWindow"] += 1
                    if late:
                        fill(i)
            seconds = time.monotonic() - start
            result = {"clients": clients, "sourcePorts": len(ports), "sent": sum(st["next"] for st in state)}
            for key in ("ok", "lost", "lostInFirstWindow", "foreign", "unexpected", "corrupt", "retried", "duplicate"):
                result[key] = sum(st[key] for st in state)
            result["unfinished"] = sum(len(st["out"]) + share[i] - st["next"] for i, st in enumerate(state))
            result["clientsAllOk"] = sum(1 for i, st in enumerate(state) if st["ok"] == share[i])
            result["seconds"] = seconds
            return result


        def dns_query(qid, name):
            header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
            question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
            return header + question + struct.pack("!HH", 1, 1)


        def skip_name(msg, i):
            while True:
                n = msg[i]
                if n == 0:
                    return i + 1
                if n & 0xC0 == 0xC0:
                    return i + 2
                i += 1 + n


        def check_dns(host, port, name):
            s = socket.socket(family(host), socket.SOCK_DGRAM)
            s.settimeout(3)
            qid = 0x5A17
            start = time.monotonic()
            s.sendto(dns_query(qid, name), (host, port))
            msg, _ = s.recvfrom(65535)
            seconds = time.monotonic() - start
            rid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
            i = 12
            for _ in range(qd):
                i = skip_name(msg, i) + 4
            addresses = []
            for _ in range(an):
                i = skip_name(msg, i)
                rtype, rclass, ttl, rdlength = struct.unpack("!HHIH", msg[i:i + 10])
                i += 10
                if rtype == 1 and rclass == 1 and rdlength == 4:
                    addresses.append(socket.inet_ntoa(msg[i:i + 4]))
                i += rdlength
            return {"id": rid == qid, "rcode": flags & 0x0F, "response": bool(flags & 0x8000), "answers": addresses,
                    "seconds": seconds}


        def check_oversize(host, port, size):
            """One datagram of `size` bytes: no reply within 2 s expected. Then 100 bytes: a reply expected."""
            s = socket.socket(family(host), socket.SOCK_DGRAM)
            s.connect((host, port))
            s.settimeout(2)
            big = b"B" * int(size)
            s.send(big)
            try:
                got = s.recv(65535)
                big_reply = len(got)
            except socket.timeout:
                big_reply = None
            small = b"small datagram after the big one " + b"s" * 67
            s.settimeout(3)
            s.send(small)
            try:
                got = s.recv(65535)
                small_reply = got == small
            except socket.timeout:
                small_reply = False
            return {"bigReply": big_reply, "smallReply": small_reply}


        CHECKS = {"echo": check_echo, "dns": check_dns, "oversize": check_oversize}


        def main(argv):
            if argv[1] == "serve":
                serve(argv[2:])
            elif argv[1] == "client":
                host, port, check = argv[2], int(argv[3]), argv[4]
                try:
                    result = CHECKS[check](host, port, *argv[5:])
                except OSError as e:
                    result = {"error": "%s: %s" % (type(e).__name__, e)}
                result["check"] = check
                print(json.dumps(result), flush=True)
            else:
                sys.exit("unknown mode " + argv[1])


        if __name__ == "__main__":
            main(sys.argv)
        """#
}

/// The UDP services' ports on the peer's tunnel addresses.
enum UDPServicePort {
    static let echo: UInt16 = 7000
    static let dns: UInt16 = 53
}

extension ForwardSession {
    var udpScript: URL { directory.appendingPathComponent("udp_check.py") }

    /// Starts udp_check.py's echo and DNS services on `addresses` and waits until they are bound; the
    /// DNS responder answers A queries for `name` with `answer`.
    func startUDPServer(addresses: [String], name: String = "service.onetun.test", answer: String = "10.20.30.40") throws -> ChildProcess {
        try UDPCheckScript.source.write(to: udpScript, atomically: true, encoding: .utf8)
        let child = try namespace.spawn(
            ["python3", "-u", udpScript.path, "serve", addresses.joined(separator: ","), "--echo", "\(UDPServicePort.echo)",
             "--dns", "\(UDPServicePort.dns)", "--name", name, "--answer", answer],
            logName: "udp-services.log")
        try waitFor(child, "ready", seconds: 10)
        return child
    }

    /// Runs one udp_check.py client check against `host`:`port` inside the namespace.
    func udpClient(_ port: UInt16, _ check: String, _ args: [String] = [], host: String = "127.0.0.1", timeout: Double = 150) throws -> CheckResult {
        let outcome = try peer.execute(["python3", udpScript.path, "client", host, String(port), check] + args, timeout: timeout)
        guard outcome.status == 0, let line = outcome.stdout.split(separator: "\n").last else {
            throw HarnessError("udp client \(check) on port \(port) failed (\(outcome.status)): \(outcome.stderr.trimmed)\nonetun: \(onetunLog)")
        }
        return try CheckResult(line: String(line))
    }

    /// The namespace's kernel UDP counters (/proc/net/snmp "Udp:" and "Udp6" lines), to tell where
    /// datagrams were lost: a full socket receive buffer shows up as RcvbufErrors.
    func udpCounters() throws -> [String: Int] {
        let snmp = try namespace.run(["cat", "/proc/net/snmp"])
        let lines = snmp.split(separator: "\n").filter { $0.hasPrefix("Udp:") }
        guard lines.count >= 2 else { return [:] }
        let names = lines[0].split(separator: " ").dropFirst(), values = lines[1].split(separator: " ").dropFirst()
        var counters: [String: Int] = [:]
        for (n, v) in zip(names, values) { counters[String(n)] = Int(v) }
        return counters
    }

    /// Each UDP socket in the namespace with its local address, receive queue and drop count
    /// (/proc/net/udp and udp6), one per line; only sockets that dropped something.
    func udpSocketDrops() throws -> String {
        var lines: [String] = []
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            for row in try namespace.run(["cat", table]).split(separator: "\n").dropFirst() {
                let f = row.split(separator: " ")
                guard f.count >= 13, let drops = Int(f[f.count - 1]), drops > 0 else { continue }
                let local = f[1], queues = f[4]
                let port = Int(local.split(separator: ":").last ?? "", radix: 16) ?? -1
                lines.append("\(table) local \(local) (port \(port)) tx:rx queue \(queues) drops \(drops)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
