#!/usr/bin/env python3
"""Network benchmark: onetun against wireguard-go + kernel TCP, with loopback as the limit.

    python3 scripts/bench.py [--onetun PATH] [--relay PATH] [--seconds N]
                             [--rows loopback,kernel,onetun,peers,proxies]
                             [--paths direct,wan,loss1,lossy] [--json FILE]

Needs root, iperf3, wireguard-go, wg and ip. Python standard library only. Five rows, each in network
namespaces of its own that are torn down before the next row starts:

  loopback   iperf3 and the echo server on 127.0.0.1 in one namespace: what the machine can do at most.
  kernel     the reference. Namespaces A and B joined by a veth pair (10.77.0.1/30 -- 10.77.0.2/30), a
             wireguard-go interface in each (A 192.168.4.3, B 192.168.4.1/24); clients in A talk to
             192.168.4.1 through the tunnel with the kernel's TCP on both ends.
  onetun     B as above, its peer being onetun's key; onetun runs in A with the endpoint 10.77.0.2:51820
             and forwards 127.0.0.1:15201 -> 192.168.4.1:5201 (iperf3) and 127.0.0.1:17007 ->
             192.168.4.1:7007 (echo); clients in A talk to 127.0.0.1.
  peers      (direct path only) onetun with two peers from one configuration file: B as above and C, a
             third namespace joined to A by its own veth pair (10.78.0.1/30 -- 10.78.0.2/30), its
             wireguard-go at 192.168.5.1; AllowedIPs route 192.168.4.1/32 to B and 192.168.5.1/32 to C.
             iperf3 1-stream upload and download to B alone, then to B and C at the same time (two iperf3
             clients started together); the row shows the sum of the two, and the ratio to B alone.
  proxies    (paths direct and wan) onetun as in `onetun`, with a forward to a bulk server in B (helper _bulk,
             port 7008) and to the echo server, plus --socks5 127.0.0.1:11080 and --http-proxy
             127.0.0.1:18080. iperf3 speaks neither proxy, so one Python client (helper _proxies) measures
             all three ways in, in one run: one kept connection per way in (SOCKS5 CONNECT or HTTP CONNECT
             to 192.168.4.1:7008, each handshake step waiting for its answer), then rounds until about
             27 x --seconds have passed, each round in a rotating order: a 16 MiB upload and a 16 MiB
             download per way in (timed to the receiver's last byte) and 0.25 s (wan: 2 s) of connections
             per second per way in (connect, the handshake, a 1-byte echo, close). The medians, each proxy's median
             per-round ratio to the plain forward (targets: throughput >= 0.95, conn/s >= 0.90; PASS or
             FAIL printed, the exit status unchanged), the client's and onetun's CPU per GiB and per
             connection.

Per row: TCP throughput (iperf3 -J, upload and download = -R, 1 and 4 streams; the receiver's
end.sum_received.bits_per_second), connections per second (connect, send 1 byte, receive it back, close),
request/response round-trip time (one connection, 64-byte ping-pong) p50 and p99, and for kernel and onetun
the client side's process (wireguard-go in A, or onetun): peak RSS (VmHWM), CPU seconds (utime + stime)
over the row, and the peak VmRSS sampled every 50 ms during the 4-stream upload (the target: <= 64 MiB).
Ratios are against the kernel row.

Paths (--paths): `direct` is the above, every WireGuard datagram crossing the veth pair as it is. The other
paths put netem-relay (Tools/NetemRelay) in B between the two WireGuard ends, for the kernel row and the
onetun row alike: A's endpoint becomes 10.77.0.2:51821, the relay forwards to B's wireguard-go on
127.0.0.1:51820 and back.

  wan    25 ms each way (50 ms RTT): iperf3 upload and download, 1 and 4 streams.
  loss1  50 ms RTT and 1 % random loss each way: upload and download, 1 stream.
  lossy  2 % loss, 2 % reordering (a reordered datagram is held 3 ms longer), 1 % duplication, 1 ms each
         way: 64 MiB uploaded and 64 MiB downloaded (iperf3 -n), timed.

Every wait is bounded; every process is ours, started here and stopped by its PID; everything is torn
down in a finally block, also after Ctrl-C or SIGTERM. Traffic goes only to loopback and to addresses in
the namespaces made here.
"""

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

IPERF_PORT = 5201
ECHO_PORT = 7007
WG_PORT = 51820
FWD_IPERF_PORT = 15201
FWD_ECHO_PORT = 17007
VETH_A, VETH_B = "10.77.0.1", "10.77.0.2"
TUN_A, TUN_B = "192.168.4.3", "192.168.4.1"
RTT_ROUNDS = 5000
RTT_SIZE = 64
CPS_SECONDS = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_ROWS = ("loopback", "kernel", "onetun", "peers", "proxies")
# Row `peers`: a second peer C beside B, joined to A by its own veth pair.
VETH_A2, VETH_C = "10.78.0.1", "10.78.0.2"
TUN_C = "192.168.5.1"
FWD_IPERF_PORT_C = 15202
RELAY_PORT = 51821
# Row `proxies`: a bulk server (helper _bulk) in B beside the echo server, reached through a port forward,
# onetun's SOCKS5 proxy and its HTTP CONNECT proxy with one client program (helper _proxies).
BULK_PORT = 7008
FWD_BULK_PORT = 17008
SOCKS5_PORT = 11080
HTTP_PROXY_PORT = 18080
PROXY_BYTES = 16 << 20  # one transfer, up or down, on a way in's bulk connection
PROXY_CPS_SLICE = 0.25  # seconds of connections per second through one way in, in a round
PROXY_CPS_SLICE_RELAYED = 2.0  # the same through the relay (about 20 connections at 50 ms RTT)
PROXY_SHARE = 3         # each way in gets about PROXY_SHARE x --seconds of each measurement
PROXY_MODES = (("plain", "onetun plain forward (same client)"), ("socks5", "onetun via SOCKS5"),
               ("http", "onetun via HTTP CONNECT"))
PROXY_TARGETS = {"up1_mbps": 0.95, "down1_mbps": 0.95, "cps": 0.90}  # a proxy's median / the forward's
KERNEL_CC = ["cubic"]  # --kernel-cc
LOSSY_BYTES = 64 << 20
# Per path: the relay's arguments (None: no relay) and the measurements, each (name, streams, reverse,
# bytes or None for --seconds).
PATHS = {
    "direct": (None, [("up1", 1, False, None), ("down1", 1, True, None), ("up4", 4, False, None),
                      ("down4", 4, True, None)]),
    "wan": (["--delay-ms", "25"], [("up1", 1, False, None), ("down1", 1, True, None), ("up4", 4, False, None),
                                   ("down4", 4, True, None)]),
    "loss1": (["--delay-ms", "25", "--loss", "0.01", "--seed", "11"],
              [("up1", 1, False, None), ("down1", 1, True, None)]),
    "lossy": (["--delay-ms", "1", "--loss", "0.02", "--reorder", "0.02", "--reorder-delay-ms", "3",
               "--duplicate", "0.01", "--seed", "7"],
              [("up64", 1, False, LOSSY_BYTES), ("down64", 1, True, LOSSY_BYTES)]),
}
PATH_TITLES = {
    "direct": "direct (veth, no relay)",
    "wan": "wan: 50 ms RTT (netem-relay, 25 ms each way)",
    "loss1": "loss1: 50 ms RTT, 1 % random loss each way",
    "lossy": "lossy: 2 % loss, 2 % reordering, 1 % duplication, 2 ms RTT; 64 MiB each way",
}
TITLES = {"loopback": "loopback", "kernel": "wireguard-go + kernel TCP", "onetun": "onetun",
          "peers": "onetun, two peers at once", "proxies": "onetun: plain forward, SOCKS5, HTTP CONNECT"}


class BenchError(Exception):
    """A row cannot go on; the message says why, in one line or a few."""


class Terminated(BaseException):
    """SIGTERM, handled like Ctrl-C: unwind through the finally blocks."""


# --------------------------------------------------------------------------------------------------
# Helpers that run inside a namespace: `ip netns exec NS python3 bench.py _echo|_cps|_rtt ...`.
# --------------------------------------------------------------------------------------------------

def helper_echo(host, port):
    """Echo server: one thread, epoll, echoes whatever arrives, closes when the client does."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(1024)
    lst.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ, None)
    pending = {}  # socket -> bytes not yet written back

    def close(s):
        sel.unregister(s)
        pending.pop(s, None)
        s.close()

    while True:
        for key, events in sel.select():
            s = key.fileobj
            if s is lst:
                for _ in range(64):
                    try:
                        c, _ = lst.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(c, selectors.EVENT_READ, None)
                continue
            if events & selectors.EVENT_WRITE:
                try:
                    n = s.send(pending[s])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    close(s)
                    continue
                rest = pending[s][n:]
                if rest:
                    pending[s] = rest
                else:
                    del pending[s]
                    sel.modify(s, selectors.EVENT_READ, None)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                close(s)
                continue
            if not data:
                close(s)
                continue
            try:
                n = s.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                close(s)
                continue
            if n < len(data):
                pending[s] = data[n:]
                sel.modify(s, selectors.EVENT_WRITE, None)


def recv_exactly(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def connections(host, port, seconds, mode="plain", target_host=None, target_port=None):
    """Connections one at a time for `seconds`, each: connect (through `mode`'s handshake, see open_stream),
    send 1 byte, receive it back, close. Returns (count, seconds, error); stops at the first failure."""
    count = 0
    error = None
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            s = open_stream(host, port, mode, target_host, target_port, 3.0)
            try:
                s.sendall(b"x")
                if recv_exactly(s, 1) != b"x":
                    raise ConnectionError("wrong byte echoed")
            finally:
                s.close()
        except OSError as e:
            error = "connection %d: %s" % (count + 1, e)
            break
        count += 1
    return count, time.monotonic() - start, error


def helper_cps(host, port, seconds):
    """Connections per second, one at a time; prints JSON. Stops at the first failure."""
    count, elapsed, error = connections(host, port, seconds)
    print(json.dumps({"connections": count, "seconds": elapsed, "error": error}))


def helper_rtt(host, port, rounds, size):
    """Round-trip times of `size`-byte ping-pongs on one connection; prints JSON with p50/p99 in µs."""
    samples = []
    error = None
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    try:
        s = socket.create_connection((host, port), timeout=3.0)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        give_up = time.monotonic() + 60.0
        for i in range(rounds + 200):  # the first 200 warm up and are not counted
            t0 = time.perf_counter_ns()
            s.sendall(payload)
            if recv_exactly(s, size) != payload:
                raise ConnectionError("wrong bytes echoed")
            t1 = time.perf_counter_ns()
            if i >= 200:
                samples.append((t1 - t0) / 1000.0)
            if time.monotonic() > give_up:
                error = "gave up after 60 s, %d round trips" % len(samples)
                break
        s.close()
    except OSError as e:
        error = "after %d round trips: %s" % (len(samples), e)
    result = {"rounds": len(samples), "error": error}
    if samples:
        samples.sort()
        result["p50_us"] = samples[len(samples) // 2]
        result["p99_us"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        result["mean_us"] = statistics.fmean(samples)
    print(json.dumps(result))


STREAM_BUF = 256 << 10  # the bulk helpers' sends and receives


def helper_bulk(host, port):
    """Bulk server for the proxies row, a thread per connection, commands until the client closes: 'u' and
    8 bytes N (big-endian): read N bytes, discard them, answer 'k'; 'd' and N: write N bytes."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(64)

    def serve(c):
        buf = bytearray(STREAM_BUF)
        view = memoryview(buf)
        try:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                command = c.recv(9, socket.MSG_WAITALL)
                if len(command) < 9:
                    break
                left = int.from_bytes(command[1:], "big")
                if command[:1] == b"u":
                    while left:
                        n = c.recv_into(view[:min(left, STREAM_BUF)])
                        if not n:
                            return
                        left -= n
                    c.sendall(b"k")
                elif command[:1] == b"d":
                    while left:
                        n = min(left, STREAM_BUF)
                        c.sendall(view[:n])
                        left -= n
                else:
                    break
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = lst.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def open_stream(host, port, mode, target_host, target_port, timeout):
    """A TCP connection to `host`:`port` that reaches `target_host`:`target_port`: `plain` (a port forward to
    it), `socks5` (RFC 1928 CONNECT, no authentication, each step waiting for its answer as clients do) or
    `http` (CONNECT host:port, waiting for the 2xx head). Returns the socket, ready for the target's bytes."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "socks5":
            s.sendall(b"\x05\x01\x00")
            if recv_exactly(s, 2) != b"\x05\x00":
                raise ConnectionError("SOCKS5: no-authentication method refused")
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(target_host) + target_port.to_bytes(2, "big"))
            head = recv_exactly(s, 4)
            if head[:2] != b"\x05\x00":
                raise ConnectionError("SOCKS5: CONNECT refused, reply %d" % head[1])
            atyp = head[3]
            rest = 4 if atyp == 1 else 16 if atyp == 4 else recv_exactly(s, 1)[0] if atyp == 3 else None
            if rest is None:
                raise ConnectionError("SOCKS5: reply with address type %d" % atyp)
            recv_exactly(s, rest + 2)
        elif mode == "http":
            authority = "%s:%d" % (target_host, target_port)
            s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority)).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("HTTP CONNECT: closed after %r" % head[:80])
                head += chunk
                if len(head) > 16384:
                    raise ConnectionError("HTTP CONNECT: no end of the reply head")
            status = head.split(b"\r\n", 1)[0].split()
            if len(status) < 2 or not status[1].startswith(b"2"):
                raise ConnectionError("HTTP CONNECT: %r" % head.split(b"\r\n", 1)[0])
            if not head.endswith(b"\r\n\r\n"):
                raise ConnectionError("HTTP CONNECT: bytes after the reply head before any request")
        elif mode != "plain":
            raise ValueError("unknown mode " + mode)
        return s
    except BaseException:
        s.close()
        raise


def process_cpu(pid):
    """utime + stime of process `pid` in seconds, None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def transfer(s, buf, way, nbytes):
    """One bulk transfer on a connection to helper_bulk: `nbytes` up (timed until the server's 'k' says it
    has them all) or down (until the last byte is here). Returns the seconds."""
    view = memoryview(buf)
    start = time.perf_counter()
    s.sendall((b"u" if way == "up" else b"d") + nbytes.to_bytes(8, "big"))
    left = nbytes
    if way == "up":
        while left:
            n = min(left, len(buf))
            s.sendall(view[:n])
            left -= n
        if recv_exactly(s, 1) != b"k":
            raise ConnectionError("the bulk server did not confirm the upload")
    else:
        while left:
            n = s.recv_into(view[:min(left, len(buf))])
            if not n:
                raise ConnectionError("closed with %d bytes still to come" % left)
            left -= n
    return time.perf_counter() - start


def helper_proxies(spec):
    """The proxies row's measurements, in one process in A. `spec` (JSON): onetun's PID, per mode the bulk
    and echo ports, the target, the transfer size, the connections' slice, the time budget. Opens one
    connection per mode (plain, socks5, http) to the bulk server and keeps it; then rounds until the budget
    is spent, each round in a rotating order: one upload of `bytes` per mode, one download per mode, a
    `cps_slice`-second slice of connections per second per mode; every transfer and slice timed with the
    client's and onetun's CPU over it. Prints JSON: per mode the per-round samples (None where it failed)."""
    spec = json.loads(spec)
    modes, pid, nbytes = spec["modes"], spec["pid"], spec["bytes"]
    out = {m: {"up": [], "down": [], "cps": [], "error": None} for m in modes}
    conns = {}
    for m in modes:
        try:
            conns[m] = open_stream("127.0.0.1", spec["bulk_port"][m], m, spec["target"], spec["bulk_target_port"],
                                   10.0)
            conns[m].settimeout(60.0)
        except OSError as e:
            out[m]["error"] = "opening the bulk connection: %s" % e
    buf = bytearray(STREAM_BUF)
    start = time.monotonic()
    rnd = 0
    while rnd < spec["min_rounds"] or (time.monotonic() - start < spec["budget_s"] and rnd < spec["max_rounds"]):
        order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
        for way in ("up", "down", "cps"):
            for m in order:
                sample = None
                if not out[m]["error"]:
                    c0, o0 = time.process_time(), process_cpu(pid)
                    try:
                        if way == "cps":
                            n, secs, error = connections("127.0.0.1", spec["echo_port"][m], spec["cps_slice"], m,
                                                         spec["target"], spec["echo_target_port"])
                            if error:
                                raise ConnectionError(error)
                            sample = {"connections": n, "seconds": secs}
                        else:
                            sample = {"bytes": nbytes, "seconds": transfer(conns[m], buf, way, nbytes)}
                        c1, o1 = time.process_time(), process_cpu(pid)
                        sample["client_cpu_s"] = c1 - c0
                        sample["onetun_cpu_s"] = None if o0 is None or o1 is None else o1 - o0
                    except OSError as e:
                        out[m]["error"] = "round %d, %s: %s" % (rnd + 1, way, e)
                        sample = None
                out[m][way].append(sample)
        rnd += 1
    for c in conns.values():
        c.close()
    print(json.dumps({"rounds": rnd, "seconds": time.monotonic() - start, "modes": out}))


def run_helper(argv):
    kind = argv[0]
    if kind == "_echo":
        helper_echo(argv[1], int(argv[2]))
    elif kind == "_cps":
        helper_cps(argv[1], int(argv[2]), float(argv[3]))
    elif kind == "_bulk":
        helper_bulk(argv[1], int(argv[2]))
    elif kind == "_proxies":
        helper_proxies(argv[1])
    elif kind == "_rtt":
        helper_rtt(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
    else:
        sys.exit("unknown helper " + kind)


# --------------------------------------------------------------------------------------------------
# Processes, namespaces and wireguard-go, all torn down by Teardown.
# --------------------------------------------------------------------------------------------------

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, timeout=10, check=True, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise BenchError("timed out after %d s: %s" % (timeout, " ".join(cmd)))
    if check and p.returncode != 0:
        raise BenchError("failed (%d): %s: %s" % (p.returncode, " ".join(cmd), p.stderr.strip()))
    return p


def stop_process(proc, name, grace=3.0):
    """SIGTERM, then SIGKILL after `grace` seconds; by PID, only a process we started (a Popen)."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log("  %s (pid %d) ignored SIGTERM; killing it" % (name, proc.pid))
        proc.kill()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log("  %s (pid %d) did not die" % (name, proc.pid))
    except ProcessLookupError:
        pass


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


class Teardown:
    """What a row made, undone in reverse order."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []       # (Popen, name)
        self.namespaces = []  # names
        self.wg_sockets = []  # /var/run/wireguard/IF.sock paths
        self.relay_log = None  # netem-relay's output: its counters, as JSON, once it has stopped

    def popen(self, cmd, name, logname=None, env=None):
        out = open(os.path.join(self.workdir, logname), "w") if logname else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.procs.append((proc, name))
        return proc

    def netns(self, name):
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def close(self):
        for proc, name in reversed(self.procs):
            try:
                stop_process(proc, name)
            except Exception as e:  # keep tearing down
                log("  stopping %s: %s" % (name, e))
        self.procs.clear()
        for path in self.wg_sockets:
            # Only after its wireguard-go is gone: one killed hard cannot remove its socket itself.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log("  removing %s: %s" % (path, e))
        self.wg_sockets.clear()
        for ns in reversed(self.namespaces):
            try:
                run(["ip", "netns", "del", ns], check=False)
            except BenchError as e:
                log("  " + str(e))
        self.namespaces.clear()


def wait_until(predicate, seconds, step=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def bound(pid, port, tables, state=None):
    """Is there a socket on `port` in /proc/PID/net/TABLE for one of `tables` (in `state`, if given) in the
    namespace of process `pid`?"""
    want = ":%04X" % port
    for name in tables:
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want) and (state is None or fields[3] == state):
                        return True
        except (OSError, StopIteration):
            pass
    return False


def listening(pid, port):
    """Is there a TCP socket in LISTEN state on `port` in the namespace of process `pid`?"""
    return bound(pid, port, ("tcp", "tcp6"), "0A")


def start_server(td, ns, cmd, name, port, logname):
    """Start a server in `ns`; return its Popen once it listens (`ip netns exec` execs, so the PID is its)."""
    proc = td.popen(["ip", "netns", "exec", ns] + cmd, name, logname)
    if not wait_until(lambda: listening(proc.pid, port) or proc.poll() is not None, 10):
        raise BenchError("%s is not listening on port %d after 10 s" % (name, port))
    if proc.poll() is not None:
        raise BenchError("%s exited (%s): %s" % (name, proc.returncode, tail(os.path.join(td.workdir, logname))))
    return proc


def genkey(workdir, name):
    path = os.path.join(workdir, name + ".key")
    private = run(["wg", "genkey"]).stdout.strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private + "\n")
    public = run(["wg", "pubkey"], input=private + "\n").stdout.strip()
    return path, private, public


def start_wireguard_go(td, ns, ifname):
    """wireguard-go in the foreground (-f) in `ns`, so its PID is the Popen's."""
    if len(ifname) > 15:
        raise BenchError("interface name too long: " + ifname)
    sock = "/var/run/wireguard/%s.sock" % ifname
    if os.path.exists(sock):
        raise BenchError("%s exists: another wireguard-go serves %s" % (sock, ifname))
    proc = td.popen(["ip", "netns", "exec", ns, "wireguard-go", "-f", ifname],
                    "wireguard-go " + ifname, ifname + ".log")
    td.wg_sockets.append(sock)

    def up():
        if proc.poll() is not None or not os.path.exists(sock):
            return False
        return run(["ip", "-n", ns, "link", "show", ifname], check=False).returncode == 0

    if not wait_until(up, 10, 0.1):
        raise BenchError("wireguard-go %s did not come up: %s" % (ifname, tail(os.path.join(td.workdir, ifname + ".log"))))
    return proc


def make_pair(td, tag):
    """Namespaces A and B joined by a veth pair; returns (nsA, nsB)."""
    pid = os.getpid()
    ns_a = td.netns("onetun-bench-%d-%s-a" % (pid, tag))
    ns_b = td.netns("onetun-bench-%d-%s-b" % (pid, tag))
    va, vb = "ob%sva%d" % (tag[0], pid), "ob%svb%d" % (tag[0], pid)
    run(["ip", "-n", ns_a, "link", "add", va, "type", "veth", "peer", "name", vb, "netns", ns_b])
    run(["ip", "-n", ns_a, "addr", "add", VETH_A + "/30", "dev", va])
    run(["ip", "-n", ns_b, "addr", "add", VETH_B + "/30", "dev", vb])
    run(["ip", "-n", ns_a, "link", "set", va, "up"])
    run(["ip", "-n", ns_b, "link", "set", vb, "up"])
    # The client side opens tens of thousands of short connections: more ports, reuse TIME_WAIT ones.
    run(["ip", "netns", "exec", ns_a, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000"], check=False)
    run(["ip", "netns", "exec", ns_a, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"], check=False)
    return ns_a, ns_b


def wg_peer_b(td, ns_b, tag, peer_public):
    """wireguard-go in B: 192.168.4.1/24, listening on WG_PORT, accepting `peer_public` as 192.168.4.3."""
    ifname = "ob%swb%d" % (tag[0], os.getpid())
    proc = start_wireguard_go(td, ns_b, ifname)
    key, _, public = genkey(td.workdir, ifname)
    run(["ip", "netns", "exec", ns_b, "wg", "set", ifname, "private-key", key, "listen-port", str(WG_PORT),
         "peer", peer_public, "allowed-ips", TUN_A + "/32"])
    run(["ip", "-n", ns_b, "addr", "add", TUN_B + "/24", "dev", ifname])
    run(["ip", "-n", ns_b, "link", "set", ifname, "up"])
    return ifname, proc, public


def latest_handshake(ns, ifname):
    p = run(["ip", "netns", "exec", ns, "wg", "show", ifname, "latest-handshakes"], check=False)
    try:
        return int(p.stdout.split()[1])
    except (IndexError, ValueError):
        return 0


# --------------------------------------------------------------------------------------------------
# Measurements.
# --------------------------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Samples a process every 50 ms: VmRSS, VmHWM and utime + stime. A window (start_window/end_window)
    records the peak VmRSS inside it and the CPU seconds spent in it."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.hwm_kib = 0
        self.cpu_s = 0.0
        self.window = None  # peak VmRSS (KiB) while a window is open
        self.window_peak = {}
        self.window_cpu0 = 0.0
        self.window_cpu = {}

    def sample(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                status = f.read()
            with open("/proc/%d/stat" % self.pid) as f:
                stat = f.read()
        except OSError:
            return
        rss = hwm = 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; field 3 (state) is fields[0]
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15
        with self.lock:
            self.hwm_kib = max(self.hwm_kib, hwm, rss)
            # The sampling thread and a window's start or end read /proc outside the lock: never go back.
            self.cpu_s = max(self.cpu_s, cpu)
            if self.window is not None:
                self.window = max(self.window, rss)

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(0.05)

    def start_window(self):
        with self.lock:
            self.window = 0
        self.sample()
        with self.lock:
            self.window_cpu0 = self.cpu_s

    def end_window(self, name):
        self.sample()
        with self.lock:
            self.window_peak[name] = self.window
            self.window = None
            self.window_cpu[name] = self.cpu_s - self.window_cpu0

    def finish(self):
        self.sample()
        self.stop_event.set()
        self.join(timeout=2)


def iperf(ns, host, port, seconds, streams, reverse, nbytes=None):
    """Mbit/s received: for `seconds`, or until `nbytes` have been sent (then at most 120 s)."""
    # The kernel's congestion control, set per socket on both ends (iperf3 -C) and the same in every row: a
    # host may have made BBR its default (and may not let a namespace change it); Linux's own default, and
    # the reference here, is CUBIC.
    cmd = ["ip", "netns", "exec", ns, "iperf3", "-c", host, "-p", str(port), "-J",
           "-P", str(streams), "--connect-timeout", "3000", "-C", KERNEL_CC[0]]
    cmd += ["-n", str(nbytes)] if nbytes else ["-t", str(seconds)]
    if reverse:
        cmd.append("-R")
    timeout = (120 if nbytes else seconds) + 20
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("iperf3 did not finish within %d s" % timeout)
    try:
        result = json.loads(p.stdout)
    except ValueError:
        raise BenchError("iperf3 exit %d, no JSON: %s" % (p.returncode, (p.stderr or p.stdout).strip()[:300]))
    if result.get("error"):
        raise BenchError("iperf3: " + result["error"])
    try:
        mbps = result["end"]["sum_received"]["bits_per_second"] / 1e6
    except (KeyError, TypeError):
        raise BenchError("iperf3 JSON without end.sum_received.bits_per_second")
    if mbps <= 0:
        raise BenchError("iperf3 reports 0 bit/s")
    return mbps


def helper(ns, args, timeout):
    cmd = ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__)] + [str(a) for a in args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s did not finish within %d s" % (args[0], timeout))
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise BenchError("%s exit %d: %s" % (args[0], p.returncode, p.stderr.strip()[-300:]))


def probe_echo(ns, host, port, seconds):
    """One round trip through the echo service, retried until `seconds` pass; None when it works, else why."""
    deadline = time.monotonic() + seconds
    why = "no attempt"
    while time.monotonic() < deadline:
        r = helper(ns, ["_rtt", host, port, 1, RTT_SIZE], timeout=70)
        if r.get("rounds") and not r.get("error"):
            return None
        why = r.get("error") or "no round trip"
        time.sleep(0.5)
    return why


def measure(row, ns, iperf_host, iperf_port, echo_host, echo_port, seconds, sampler, alive, path="direct"):
    """Runs every measurement of `path`; one failing does not stop the others unless `alive()` says the
    process under test has gone (then the rest are recorded as skipped). Connections per second and
    round trips only on the direct path."""
    m = row["results"]
    errors = row["errors"]
    for name, streams, reverse, nbytes in PATHS[path][1]:
        why = alive()
        if why:
            errors[name] = why
            continue
        log("  iperf3 %s, %d stream%s, %s" % ("download" if reverse else "upload", streams,
                                             "s" if streams > 1 else "",
                                             "%d MiB" % (nbytes >> 20) if nbytes else "%d s" % seconds))
        if sampler:
            sampler.start_window()
        try:
            m[name + "_mbps"] = iperf(ns, iperf_host, iperf_port, seconds, streams, reverse, nbytes)
            if nbytes:
                m[name + "_s"] = nbytes * 8 / 1e6 / m[name + "_mbps"]
        except BenchError as e:
            errors[name] = str(e)
            log("    " + str(e))
            row["restart_iperf"]()
        finally:
            if sampler:
                sampler.end_window(name)
        time.sleep(0.5)
    for name in (("cps", "rtt") if path == "direct" else ()):
        why = alive()
        if why:
            errors[name] = why
            continue
        if sampler:
            sampler.start_window()
        try:
            if name == "cps":
                log("  connections per second, %.0f s" % CPS_SECONDS)
                r = helper(ns, ["_cps", echo_host, echo_port, CPS_SECONDS], timeout=CPS_SECONDS + 30)
                if r["connections"]:
                    m["cps"] = r["connections"] / r["seconds"]
            else:
                log("  round trips, %d x %d bytes" % (RTT_ROUNDS, RTT_SIZE))
                r = helper(ns, ["_rtt", echo_host, echo_port, RTT_ROUNDS, RTT_SIZE], timeout=90)
                if "p50_us" in r:
                    m["rtt_p50_us"], m["rtt_p99_us"] = r["p50_us"], r["p99_us"]
            if r.get("error"):
                errors[name] = r["error"]
                log("    " + r["error"])
        except BenchError as e:
            errors[name] = str(e)
            log("    " + str(e))
        finally:
            if sampler:
                sampler.end_window(name)


def finish_row(row, sampler, seconds, path):
    """The sampler's figures: peak RSS during each measurement, and CPU seconds per GiB the iperf3 runs
    moved (receiver's rate times duration, or the bytes of a sized run): the CPU spent during those runs
    only, not during the row's set-up, connections per second or round trips, which move no data."""
    if sampler.window_peak.get("up4") and path == "direct":
        row["results"]["up4_peak_rss_mib"] = sampler.window_peak["up4"] / 1024
    row["rss_peaks_mib"] = {k: round(v / 1024, 1) for k, v in sampler.window_peak.items() if v}
    moved = 0.0
    cpu = 0.0
    for name, _, _, nbytes in PATHS[path][1]:
        mbps = row["results"].get(name + "_mbps")
        if mbps and name in sampler.window_cpu:
            moved += nbytes if nbytes else mbps * 1e6 / 8 * seconds
            cpu += sampler.window_cpu[name]
    if moved:
        row["results"]["cpu_s_per_gib"] = cpu / (moved / (1 << 30))


def new_row(name, path="direct"):
    return {"name": name, "path": path, "title": TITLES[name], "results": {}, "errors": {}, "skipped": None,
            "restart_iperf": lambda: None}


def udp_bound(pid, port):
    """Is there a UDP socket bound to `port` in the namespace of process `pid`?"""
    return bound(pid, port, ("udp", "udp6"))


def drop_counters(ns):
    """Where datagrams and packets died in `ns`: UDP receive-buffer overflows (the kernel's Udp
    RcvbufErrors and Udp6's) and every interface's RX/TX drops, only the nonzero ones."""
    out = {}
    p = run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/snmp6", "/proc/net/netstat"], check=False)
    lines = p.stdout.splitlines()
    for head, values in zip(lines, lines[1:]):
        # A receiver short of memory drops segments and prunes (reneges on) out-of-order data.
        if head.startswith("TcpExt:") and values.startswith("TcpExt:"):
            for k, v in zip(head.split()[1:], values.split()[1:]):
                if k in ("PruneCalled", "RcvPruned", "OfoPruned", "TCPRcvQDrop", "TCPOFODrop", "TCPBacklogDrop",
                         "TCPZeroWindowDrop", "TCPRenoReorder", "TCPSACKReneging") and int(v):
                    out["tcp " + k] = int(v)
    for head, values in zip(lines, lines[1:]):
        if head.startswith("Udp:") and values.startswith("Udp:"):
            for k, v in zip(head.split()[1:], values.split()[1:]):
                if k in ("RcvbufErrors", "SndbufErrors", "InErrors") and int(v):
                    out["udp " + k] = int(v)
    for line in lines:
        f = line.split()
        if len(f) == 2 and f[0] in ("Udp6RcvbufErrors", "Udp6SndbufErrors") and int(f[1]):
            out[f[0]] = int(f[1])
    p = run(["ip", "-n", ns, "-s", "-j", "link", "show"], check=False)
    try:
        for link in json.loads(p.stdout):
            st = link.get("stats64") or link.get("stats") or {}
            for way in ("rx", "tx"):
                d = st.get(way, {}).get("dropped", 0)
                if d:
                    out["%s %s dropped" % (link["ifname"], way)] = d
    except ValueError:
        pass
    return out


def endpoint_for(td, ns_b, path, relay):
    """The WireGuard endpoint A uses on `path`: B's wireguard-go itself, or netem-relay in B in front of it."""
    args = PATHS[path][0]
    if args is None:
        return "%s:%d" % (VETH_B, WG_PORT)
    cmd = ["ip", "netns", "exec", ns_b, relay, "--listen", "%s:%d" % (VETH_B, RELAY_PORT),
           "--target", "127.0.0.1:%d" % WG_PORT] + args
    log("  netem-relay " + " ".join(args))
    logname = "relay-%s-%s.log" % (path, ns_b)
    proc = td.popen(cmd, "netem-relay", logname)
    td.relay_log = os.path.join(td.workdir, logname)
    if not wait_until(lambda: udp_bound(proc.pid, RELAY_PORT) or proc.poll() is not None, 10):
        raise BenchError("netem-relay is not bound to port %d after 10 s" % RELAY_PORT)
    if proc.poll() is not None:
        raise BenchError("netem-relay exited (%s): %s" % (proc.returncode, tail(td.relay_log)))
    return "%s:%d" % (VETH_B, RELAY_PORT)


def servers(td, ns, bind):
    """iperf3 and the echo server in `ns`; returns a function that restarts iperf3 (after a failed run
    iperf3 -s can stay busy with the broken test)."""
    state = {}

    def start_iperf():
        state["iperf"] = start_server(td, ns, ["iperf3", "-s", "-p", str(IPERF_PORT)], "iperf3 -s",
                                      IPERF_PORT, "iperf3-%s.log" % ns)

    def restart_iperf():
        try:
            stop_process(state["iperf"], "iperf3 -s")
            start_iperf()
        except BenchError as e:
            log("    restarting iperf3 -s: %s" % e)

    start_iperf()
    start_server(td, ns, [sys.executable, os.path.abspath(__file__), "_echo", bind, str(ECHO_PORT)],
                 "echo server", ECHO_PORT, "echo-%s.log" % ns)
    return restart_iperf


def row_loopback(td, seconds):
    row = new_row("loopback")
    ns = td.netns("onetun-bench-%d-lo" % os.getpid())
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000"], check=False)
    row["restart_iperf"] = servers(td, ns, "127.0.0.1")
    measure(row, ns, "127.0.0.1", IPERF_PORT, "127.0.0.1", ECHO_PORT, seconds, None, lambda: None)
    return row


def configure_reference_a(ns_a, if_a, key_a, pub_b, endpoint):
    """wireguard-go `if_a` in A as the reference's end: key `key_a`, WG_PORT, B (`pub_b`) as its peer at
    `endpoint` for TUN_B, TUN_A on the interface, up."""
    run(["ip", "netns", "exec", ns_a, "wg", "set", if_a, "private-key", key_a, "listen-port", str(WG_PORT),
         "peer", pub_b, "allowed-ips", TUN_B + "/32", "endpoint", endpoint,
         "persistent-keepalive", "10"])
    run(["ip", "-n", ns_a, "addr", "add", TUN_A + "/24", "dev", if_a])
    run(["ip", "-n", ns_a, "link", "set", if_a, "up"])


def row_kernel(td, seconds, path="direct", relay=None):
    row = new_row("kernel", path)
    ns_a, ns_b = make_pair(td, "kernel")
    # A's key first: B needs it as its peer.
    if_a = "obkwa%d" % os.getpid()
    wg_a = start_wireguard_go(td, ns_a, if_a)
    key_a, _, pub_a = genkey(td.workdir, if_a)
    if_b, _, pub_b = wg_peer_b(td, ns_b, "kernel", pub_a)
    configure_reference_a(ns_a, if_a, key_a, pub_b, endpoint_for(td, ns_b, path, relay))
    row["restart_iperf"] = servers(td, ns_b, "0.0.0.0")
    sampler = Sampler(wg_a.pid)
    sampler.start()
    why = probe_echo(ns_a, TUN_B, ECHO_PORT, 15)
    if why:
        raise BenchError("no echo through the wireguard-go tunnel within 15 s (%s); handshake: %s"
                         % (why, "yes" if latest_handshake(ns_b, if_b) else "none"))

    def alive():
        if wg_a.poll() is not None:
            return "wireguard-go in A exited (%s)" % wg_a.returncode
        return None

    measure(row, ns_a, TUN_B, IPERF_PORT, TUN_B, ECHO_PORT, seconds, sampler, alive, path)
    row["drops"] = {"A": drop_counters(ns_a), "B": drop_counters(ns_b)}
    sampler.finish()
    row["results"]["peak_rss_mib"] = sampler.hwm_kib / 1024
    row["results"]["cpu_s"] = sampler.cpu_s
    finish_row(row, sampler, seconds, path)
    row["process"] = "wireguard-go " + if_a
    return row


def row_onetun(td, seconds, onetun, onetun_log, path="direct", relay=None):
    row = new_row("onetun", path)
    ns_a, ns_b = make_pair(td, "onetun")
    _, private, public = genkey(td.workdir, "onetun")
    if_b, _, pub_b = wg_peer_b(td, ns_b, "onetun", public)
    endpoint = endpoint_for(td, ns_b, path, relay)
    row["restart_iperf"] = servers(td, ns_b, "0.0.0.0")
    # The private key through the environment, which both onetuns read and other users cannot see.
    env = dict(os.environ, ONETUN_PRIVATE_KEY=private)
    cmd = ["ip", "netns", "exec", ns_a, onetun,
           "127.0.0.1:%d:%s:%d" % (FWD_IPERF_PORT, TUN_B, IPERF_PORT),
           "127.0.0.1:%d:%s:%d" % (FWD_ECHO_PORT, TUN_B, ECHO_PORT),
           "--endpoint-addr", endpoint, "--endpoint-public-key", pub_b,
           "--source-peer-ip", TUN_A, "--keep-alive", "10", "--log", onetun_log]
    log("  " + " ".join(cmd[4:]))
    proc = td.popen(cmd, "onetun", "onetun-%s.log" % path, env=env)
    logpath = os.path.join(td.workdir, "onetun-%s.log" % path)
    row["process"] = "onetun"
    sampler = Sampler(proc.pid)
    sampler.start()

    def alive():
        if proc.poll() is not None:
            return "onetun exited (%s): %s" % (proc.returncode, tail(logpath, 5))
        return None

    ok = wait_until(lambda: proc.poll() is not None or
                    (listening(proc.pid, FWD_IPERF_PORT) and listening(proc.pid, FWD_ECHO_PORT)), 10)
    if proc.poll() is not None:
        raise BenchError("onetun exited (%s) at start:\n%s" % (proc.returncode, tail(logpath)))
    if not ok:
        raise BenchError("onetun is not listening on 127.0.0.1:%d and :%d after 10 s:\n%s"
                         % (FWD_IPERF_PORT, FWD_ECHO_PORT, tail(logpath)))
    log("  onetun (pid %d) listens; checking the tunnel with one echo" % proc.pid)
    why = probe_echo(ns_a, "127.0.0.1", FWD_ECHO_PORT, 15)
    if why:
        hs = latest_handshake(ns_b, if_b)
        raise BenchError("onetun listens but no echo came back through it within 15 s (%s); WireGuard "
                         "handshake with the peer: %s%s\nonetun's log:\n%s"
                         % (why, "done" if hs else "none",
                            "" if proc.poll() is None else "; onetun exited (%s)" % proc.returncode,
                            tail(logpath)))
    measure(row, ns_a, "127.0.0.1", FWD_IPERF_PORT, "127.0.0.1", FWD_ECHO_PORT, seconds, sampler, alive, path)
    row["drops"] = {"A": drop_counters(ns_a), "B": drop_counters(ns_b)}
    sampler.finish()
    row["results"]["peak_rss_mib"] = sampler.hwm_kib / 1024
    row["results"]["cpu_s"] = sampler.cpu_s
    finish_row(row, sampler, seconds, path)
    if proc.poll() is not None:
        row["errors"]["process"] = "onetun exited (%s) during the row" % proc.returncode
    return row


def iperf_together(jobs):
    """Runs iperf(*job) for every job at the same time; returns their rates, or raises the first error."""
    results = [None] * len(jobs)

    def one(i, job):
        try:
            results[i] = iperf(*job)
        except BenchError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BenchError):
            raise r
    return results


def row_peers(td, seconds, onetun, onetun_log):
    """onetun with two peers (B and C) from a configuration file: one peer alone, then both at once."""
    row = new_row("peers")
    ns_a, ns_b = make_pair(td, "peers")
    pid = os.getpid()
    ns_c = td.netns("onetun-bench-%d-peers-c" % pid)
    va, vc = "obpva2%d" % pid, "obpvc%d" % pid
    run(["ip", "-n", ns_a, "link", "add", va, "type", "veth", "peer", "name", vc, "netns", ns_c])
    run(["ip", "-n", ns_a, "addr", "add", VETH_A2 + "/30", "dev", va])
    run(["ip", "-n", ns_c, "addr", "add", VETH_C + "/30", "dev", vc])
    run(["ip", "-n", ns_a, "link", "set", va, "up"])
    run(["ip", "-n", ns_c, "link", "set", vc, "up"])
    _, private, public = genkey(td.workdir, "onetun-peers")
    if_b, _, pub_b = wg_peer_b(td, ns_b, "peers", public)
    if_c = "obpwc%d" % pid
    start_wireguard_go(td, ns_c, if_c)
    key_c, _, pub_c = genkey(td.workdir, if_c)
    run(["ip", "netns", "exec", ns_c, "wg", "set", if_c, "private-key", key_c, "listen-port", str(WG_PORT),
         "peer", public, "allowed-ips", TUN_A + "/32"])
    run(["ip", "-n", ns_c, "addr", "add", TUN_C + "/24", "dev", if_c])
    run(["ip", "-n", ns_c, "link", "set", if_c, "up"])
    run(["ip", "-n", ns_c, "route", "add", TUN_A + "/32", "dev", if_c])
    restart_b = servers(td, ns_b, "0.0.0.0")
    restart_c = servers(td, ns_c, "0.0.0.0")
    row["restart_iperf"] = lambda: (restart_b(), restart_c())
    config = os.path.join(td.workdir, "peers.conf")
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[Interface]\nPrivateKey = %s\nAddress = %s/32\n\n" % (private, TUN_A))
        f.write("[Peer]\nPublicKey = %s\nEndpoint = %s:%d\nAllowedIPs = %s/32\nPersistentKeepalive = 10\n\n"
                % (pub_b, VETH_B, WG_PORT, TUN_B))
        f.write("[Peer]\nPublicKey = %s\nEndpoint = %s:%d\nAllowedIPs = %s/32\nPersistentKeepalive = 10\n"
                % (pub_c, VETH_C, WG_PORT, TUN_C))
    cmd = ["ip", "netns", "exec", ns_a, onetun, "-c", config,
           "127.0.0.1:%d:%s:%d" % (FWD_IPERF_PORT, TUN_B, IPERF_PORT),
           "127.0.0.1:%d:%s:%d" % (FWD_ECHO_PORT, TUN_B, ECHO_PORT),
           "127.0.0.1:%d:%s:%d" % (FWD_IPERF_PORT_C, TUN_C, IPERF_PORT),
           "127.0.0.1:%d:%s:%d" % (FWD_ECHO_PORT + 1, TUN_C, ECHO_PORT), "--log", onetun_log]
    log("  " + " ".join(cmd[4:]))
    proc = td.popen(cmd, "onetun", "onetun-peers.log")
    logpath = os.path.join(td.workdir, "onetun-peers.log")
    row["process"] = "onetun"
    sampler = Sampler(proc.pid)
    sampler.start()
    ok = wait_until(lambda: proc.poll() is not None or
                    (listening(proc.pid, FWD_IPERF_PORT) and listening(proc.pid, FWD_IPERF_PORT_C)), 10)
    if proc.poll() is not None or not ok:
        raise BenchError("onetun did not come up with two peers:\n%s" % tail(logpath))
    for port, peer in ((FWD_ECHO_PORT, "B"), (FWD_ECHO_PORT + 1, "C")):
        why = probe_echo(ns_a, "127.0.0.1", port, 15)
        if why:
            raise BenchError("no echo through peer %s within 15 s (%s):\n%s" % (peer, why, tail(logpath)))
    m, errors = row["results"], row["errors"]
    for name, reverse in (("up1", False), ("down1", True)):
        way = "download" if reverse else "upload"
        try:
            log("  iperf3 %s, 1 stream, peer B alone" % way)
            m["alone_" + name + "_mbps"] = iperf(ns_a, "127.0.0.1", FWD_IPERF_PORT, seconds, 1, reverse)
            time.sleep(0.5)
            log("  iperf3 %s, 1 stream each, peers B and C at once" % way)
            b, c = iperf_together([(ns_a, "127.0.0.1", FWD_IPERF_PORT, seconds, 1, reverse),
                                   (ns_a, "127.0.0.1", FWD_IPERF_PORT_C, seconds, 1, reverse)])
            m[name + "_mbps"] = b + c
            m["each_" + name + "_mbps"] = [b, c]
        except BenchError as e:
            errors[name] = str(e)
            log("    " + str(e))
            row["restart_iperf"]()
        time.sleep(0.5)
    if proc.poll() is not None:
        errors["process"] = "onetun exited (%s) during the row" % proc.returncode
    row["drops"] = {"A": drop_counters(ns_a), "B": drop_counters(ns_b), "C": drop_counters(ns_c)}
    sampler.finish()
    row["results"]["peak_rss_mib"] = sampler.hwm_kib / 1024
    row["results"]["cpu_s"] = sampler.cpu_s
    return row


def row_proxies(td, seconds, onetun, onetun_log, path="direct", relay=None):
    """onetun with a port forward to a bulk server and the echo server in B, a SOCKS5 proxy and an HTTP
    proxy; one client program (helper _proxies) through each of the three to the same servers: 1-stream
    upload and download (PROXY_BYTES transfers on one kept connection per way in) and connections per
    second (PROXY_CPS_SLICE-second slices), in rounds of every measurement through every way in (the order
    rotating from round to round), so that the machine's drift hits all three alike. Per way in the median
    of its samples; per proxy the median over the rounds of its sample's ratio to the forward's in the same
    round."""
    row = new_row("proxies", path)
    ns_a, ns_b = make_pair(td, "xproxies")
    for ns in (ns_a, ns_b):
        # Each connection idles while the others take their turn: no slow start again after it.
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_slow_start_after_idle=0"], check=False)
    _, private, public = genkey(td.workdir, "onetun-proxies")
    if_b, _, pub_b = wg_peer_b(td, ns_b, "xproxies", public)
    start_server(td, ns_b, [sys.executable, os.path.abspath(__file__), "_echo", "0.0.0.0", str(ECHO_PORT)],
                 "echo server", ECHO_PORT, "echo-%s.log" % ns_b)
    start_server(td, ns_b, [sys.executable, os.path.abspath(__file__), "_bulk", "0.0.0.0", str(BULK_PORT)],
                 "bulk server", BULK_PORT, "bulk-%s.log" % ns_b)
    env = dict(os.environ, ONETUN_PRIVATE_KEY=private)
    cmd = ["ip", "netns", "exec", ns_a, onetun,
           "127.0.0.1:%d:%s:%d" % (FWD_BULK_PORT, TUN_B, BULK_PORT),
           "127.0.0.1:%d:%s:%d" % (FWD_ECHO_PORT, TUN_B, ECHO_PORT),
           "--socks5", "127.0.0.1:%d" % SOCKS5_PORT, "--http-proxy", "127.0.0.1:%d" % HTTP_PROXY_PORT,
           "--endpoint-addr", endpoint_for(td, ns_b, path, relay), "--endpoint-public-key", pub_b,
           "--source-peer-ip", TUN_A, "--keep-alive", "10", "--log", onetun_log]
    log("  " + " ".join(cmd[4:]))
    proc = td.popen(cmd, "onetun", "onetun-proxies-%s.log" % path, env=env)
    logpath = os.path.join(td.workdir, "onetun-proxies-%s.log" % path)
    row["process"] = "onetun"
    ports = (FWD_BULK_PORT, FWD_ECHO_PORT, SOCKS5_PORT, HTTP_PROXY_PORT)
    ok = wait_until(lambda: proc.poll() is not None or all(listening(proc.pid, p) for p in ports), 10)
    if proc.poll() is not None:
        raise BenchError("onetun exited (%s) at start:\n%s" % (proc.returncode, tail(logpath)))
    if not ok:
        raise BenchError("onetun is not listening on 127.0.0.1:%s after 10 s:\n%s"
                         % (", :".join(str(p) for p in ports), tail(logpath)))
    why = probe_echo(ns_a, "127.0.0.1", FWD_ECHO_PORT, 15)
    if why:
        raise BenchError("no echo through onetun within 15 s (%s); handshake: %s\n%s"
                         % (why, "done" if latest_handshake(ns_b, if_b) else "none", tail(logpath)))
    modes = [m for m, _ in PROXY_MODES]
    budget = 3 * len(modes) * PROXY_SHARE * seconds
    # A connection takes two round trips of the path: on a slow one a slice must hold enough of them.
    cps_slice = PROXY_CPS_SLICE if path == "direct" else PROXY_CPS_SLICE_RELAYED
    spec = {"pid": proc.pid, "modes": modes, "target": TUN_B, "bytes": PROXY_BYTES, "cps_slice": cps_slice,
            "bulk_port": {"plain": FWD_BULK_PORT, "socks5": SOCKS5_PORT, "http": HTTP_PROXY_PORT},
            "echo_port": {"plain": FWD_ECHO_PORT, "socks5": SOCKS5_PORT, "http": HTTP_PROXY_PORT},
            "bulk_target_port": BULK_PORT, "echo_target_port": ECHO_PORT, "budget_s": budget,
            "min_rounds": 5, "max_rounds": 10000}
    log("  rounds of: a %d MiB upload, a %d MiB download, %.2f s of connections per second through each of "
        "the forward, SOCKS5 and HTTP CONNECT; about %d s" % (PROXY_BYTES >> 20, PROXY_BYTES >> 20,
                                                               cps_slice, budget))
    r = helper(ns_a, ["_proxies", json.dumps(spec)], timeout=budget + 300)
    if proc.poll() is not None:
        raise BenchError("onetun exited (%s) during the row:\n%s" % (proc.returncode, tail(logpath)))
    res = row["results"]
    res["rounds"], res["seconds"] = r["rounds"], r["seconds"]
    keys = {"up1_mbps": "up", "down1_mbps": "down", "cps": "cps"}

    def value(sample, key):
        if not sample:
            return None
        if key == "cps":
            return sample["connections"] / sample["seconds"] if sample["connections"] else None
        return sample["bytes"] * 8 / 1e6 / sample["seconds"]

    values = {m: {k: [value(x, k) for x in r["modes"][m][way]] for k, way in keys.items()} for m in modes}
    for m in modes:
        got = r["modes"][m]
        if got["error"]:
            row["errors"][m] = got["error"]
        out = res[m] = {"samples": values[m]}
        for k in keys:
            v = [x for x in values[m][k] if x]
            if v:
                out[k] = statistics.median(v)
        # CPU: the client's share of a core over the transfers, onetun's seconds per GiB, both per connection.
        for way in ("up", "down"):
            done = [x for x in got[way] if x]
            if done:
                t = sum(x["seconds"] for x in done)
                out[way + "1_client_cpu_share"] = sum(x["client_cpu_s"] for x in done) / t
                ot = [x["onetun_cpu_s"] for x in done if x["onetun_cpu_s"] is not None]
                if ot:
                    out[way + "1_onetun_cpu_s_per_gib"] = sum(ot) / (len(ot) * PROXY_BYTES / (1 << 30))
        done = [x for x in got["cps"] if x and x["connections"]]
        if done:
            n = sum(x["connections"] for x in done)
            out["cps_client_cpu_us"] = sum(x["client_cpu_s"] for x in done) * 1e6 / n
            ot = [x for x in done if x["onetun_cpu_s"] is not None]
            if ot:
                out["cps_onetun_cpu_us"] = sum(x["onetun_cpu_s"] for x in ot) * 1e6 / sum(x["connections"] for x in ot)
    for m in modes[1:]:
        out = res[m]
        out["round_ratios"], out["ratio"], out["ratio_iqr"] = {}, {}, {}
        for k in keys:
            pairs = [p / q for p, q in zip(values[m][k], values["plain"][k]) if p and q]
            out["round_ratios"][k] = pairs
            if pairs:
                out["ratio"][k] = statistics.median(pairs)
                if len(pairs) >= 4:
                    q = statistics.quantiles(pairs, n=4)
                    out["ratio_iqr"][k] = (q[0], q[2])
    row["drops"] = {"A": drop_counters(ns_a), "B": drop_counters(ns_b)}
    return row


def print_proxies(row, seconds):
    print()
    print("proxies (%s): one Python client for all three ways in to the same servers in B. Rounds, each"
          % PATH_TITLES[row["path"]])
    print("through every way in (the order rotating): a %d MiB upload and a %d MiB download on one kept"
          % (PROXY_BYTES >> 20, PROXY_BYTES >> 20))
    print("connection (%d KiB sendall / recv_into, timed to the receiver's last byte), and %.2f s of conn/s"
          % (STREAM_BUF >> 10, PROXY_CPS_SLICE if row["path"] == "direct" else PROXY_CPS_SLICE_RELAYED))
    print("(connect, the proxy's handshake, a 1-byte echo, close). Medians over the rounds; under each proxy")
    print("the median of its per-round ratios to the plain forward's sample of the same round.")
    titles = dict(PROXY_MODES)
    width = max(len(t) for t in titles.values()) + 2
    if row["skipped"]:
        print("%s: skipped: %s" % (TITLES["proxies"], row["skipped"].splitlines()[0]))
        return
    res = row["results"]
    print("%d rounds in %.0f s." % (res.get("rounds", 0), res.get("seconds", 0)))
    cols = (("up1_mbps", "up 1", "%.1f"), ("down1_mbps", "down 1", "%.1f"), ("cps", "conn/s", "%.0f"))
    print("%-*s%s" % (width, "", "".join("%11s" % h for _, h, _ in cols)))
    for mode, title in PROXY_MODES:
        r = res.get(mode, {})
        print("%-*s%s" % (width, title, "".join("%11s" % (fmt % r[k] if r.get(k) else "-") for k, _, fmt in cols)))
        if mode != "plain":
            print("%-*s%s" % (width, "", "".join("%11s" % ("%.3fx" % r["ratio"][k] if k in r.get("ratio", {}) else "")
                                                  for k, _, _ in cols)))
    for mode, title in PROXY_MODES[1:]:
        iqr = res.get(mode, {}).get("ratio_iqr", {})
        if iqr:
            print("%s, per-round ratios' interquartile range: %s" % (title, "; ".join(
                "%s %.3f-%.3f" % (h, iqr[k][0], iqr[k][1]) for k, h, _ in cols if k in iqr)))
    for mode, title in PROXY_MODES:
        r = res.get(mode, {})
        parts = []
        for way in ("up1", "down1"):
            if way + "_client_cpu_share" in r:
                parts.append("%s: client %.0f %% of a core, onetun %.2f s/GiB" % (
                    way, r[way + "_client_cpu_share"] * 100, r.get(way + "_onetun_cpu_s_per_gib", float("nan"))))
        if "cps_client_cpu_us" in r:
            parts.append("a connection: client %.0f µs, onetun %.0f µs" % (
                r["cps_client_cpu_us"], r.get("cps_onetun_cpu_us", float("nan"))))
        if parts:
            print("%s, CPU: %s" % (title, "; ".join(parts)))
    if row.get("relay"):
        print("%s: relay: %s" % (TITLES["proxies"], row["relay"]))
    for name, why in row["errors"].items():
        print("%s: %s: %s" % (TITLES["proxies"], name, why.splitlines()[0] if why else why))
    drops = ", ".join("%s %s %d" % (side, k, v) for side, d in sorted((row.get("drops") or {}).items())
                      for k, v in sorted(d.items()))
    if drops:
        print("%s: drops: %s" % (TITLES["proxies"], drops))
    for mode, title in PROXY_MODES[1:]:
        ratio = res.get(mode, {}).get("ratio", {})
        verdicts = []
        for k, h, _ in cols:
            target = PROXY_TARGETS[k]
            if k in ratio:
                verdicts.append("%s %.3fx (target >= %.2f: %s)" % (h, ratio[k], target,
                                                                   "PASS" if ratio[k] >= target else "FAIL"))
            else:
                verdicts.append("%s - (target >= %.2f: FAIL, not measured)" % (h, target))
        print("%s against the plain forward: %s" % (title, "; ".join(verdicts)))


# --------------------------------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------------------------------

COLUMNS = [  # key, heading, format
    ("up1_mbps", "up 1", "%.1f"),
    ("up4_mbps", "up 4", "%.1f"),
    ("down1_mbps", "down 1", "%.1f"),
    ("down4_mbps", "down 4", "%.1f"),
    ("up64_s", "up 64M s", "%.2f"),
    ("down64_s", "down 64M s", "%.2f"),
    ("cps", "conn/s", "%.0f"),
    ("rtt_p50_us", "RTT p50", "%.0f"),
    ("rtt_p99_us", "RTT p99", "%.0f"),
    ("peak_rss_mib", "peak RSS", "%.1f"),
    ("up4_peak_rss_mib", "RSS up 4", "%.1f"),
    ("cpu_s", "CPU s", "%.2f"),
    ("cpu_s_per_gib", "CPU s/GiB", "%.2f"),
]
# Smaller is better: the ratio printed is reference / value, so above 1 always means onetun is better.
LOWER_IS_BETTER = {"up64_s", "down64_s", "rtt_p50_us", "rtt_p99_us", "peak_rss_mib", "up4_peak_rss_mib", "cpu_s",
                   "cpu_s_per_gib"}


def print_table(rows, seconds):
    print()
    print("Throughput in Mbit/s (iperf3, %d s, 1 or 4 streams); 64M s = seconds for 64 MiB; RTT in µs (%d-byte"
          % (seconds, RTT_SIZE))
    print("ping-pong); RSS in MiB; CPU s = utime + stime of the client side's process over its row; CPU s/GiB =")
    print("its CPU during the iperf3 runs over the bytes they moved. Under each onetun row its ratio to the kernel")
    print("row of the same path, oriented so that above 1 is better. Kernel TCP congestion control: %s."
          % KERNEL_CC[0])
    for path in PATHS:
        prow = [r for r in rows if r["path"] == path and r["name"] != "proxies"]
        if not prow:
            continue
        cols = [c for c in COLUMNS if any(r["results"].get(c[0]) is not None for r in prow)] or COLUMNS[:4]
        ref = next((r for r in prow if r["name"] == "kernel" and not r["skipped"]), None)
        width = max(len(r["title"]) for r in prow) + 2
        print()
        print(PATH_TITLES[path])
        print("%-*s%s" % (width, "", "".join("%11s" % h for _, h, _ in cols)))
        for r in prow:
            if r["skipped"]:
                print("%-*s%s" % (width, r["title"], "skipped: " + r["skipped"].splitlines()[0]))
                continue
            cells, ratios = [], []
            for key, _, fmt in cols:
                v = r["results"].get(key)
                cells.append("%11s" % (fmt % v if v is not None else "-"))
                rv = ref["results"].get(key) if ref else None
                if v and rv:
                    ratios.append("%11s" % ("%.2fx" % ((rv / v) if key in LOWER_IS_BETTER else (v / rv))))
                else:
                    ratios.append("%11s" % "")
            print("%-*s%s" % (width, r["title"], "".join(cells)))
            if ref and r is not ref:
                print("%-*s%s" % (width, "", "".join(ratios)))
        for r in prow:
            for name, why in r["errors"].items():
                print("%s: %s: %s" % (r["title"], name, why.splitlines()[0] if why else why))
            if r.get("relay"):
                print("%s: relay: %s" % (r["title"], r["relay"]))
            drops = ", ".join("%s %s %d" % (side, k, v) for side, d in sorted((r.get("drops") or {}).items())
                              for k, v in sorted(d.items()))
            if drops:
                print("%s: drops: %s" % (r["title"], drops))
            if r.get("rss_peaks_mib"):
                print("%s: peak RSS per measurement (MiB): %s" % (r["title"], ", ".join(
                    "%s %.1f" % kv for kv in r["rss_peaks_mib"].items())))
    peers = next((r for r in rows if r["name"] == "peers" and not r["skipped"]), None)
    if peers:
        res = peers["results"]
        for name, way in (("up1", "upload"), ("down1", "download")):
            alone, both = res.get("alone_" + name + "_mbps"), res.get(name + "_mbps")
            if alone and both:
                b, c = res["each_" + name + "_mbps"]
                print("two peers, 1-stream %s: B alone %.1f Mbit/s; B and C at once %.1f + %.1f = %.1f Mbit/s, "
                      "%.2fx B alone" % (way, alone, b, c, both, both / alone))
    for proxies in (r for r in rows if r["name"] == "proxies"):
        print_proxies(proxies, seconds)
    onetun = next((r for r in rows if r["name"] == "onetun" and r["path"] == "direct" and not r["skipped"]), None)
    if onetun and onetun["results"].get("up4_peak_rss_mib") is not None:
        peak = onetun["results"]["up4_peak_rss_mib"]
        print("onetun peak RSS during the 4-stream upload: %.1f MiB (target <= 64 MiB: %s)"
              % (peak, "met" if peak <= 64 else "NOT met"))


def relay_summary(path):
    """netem-relay's counters (its last line, JSON) in a few words; None without a relay."""
    if not path:
        return None
    try:
        with open(path) as f:
            c = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return "no counters"
    parts = []
    for way in ("to_target", "to_client"):
        w = c[way]
        parts.append("%s %d in, %d out, %d lost, %d queue drops, %d reordered, %d duplicated, %d send errors"
                     % (way.replace("_", " "), w["received"], w["sent"], w["lost"], w["queue_drops"],
                        w["reordered"], w["duplicated"], w["send_errors"]))
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------

def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        run_helper(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(description="Benchmark onetun against wireguard-go + kernel TCP.")
    ap.add_argument("--onetun", default=".build/release/onetun", help="the onetun binary (row onetun)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 run (default 5)")
    ap.add_argument("--rows", default=",".join(ALL_ROWS), help="comma-separated: " + ",".join(ALL_ROWS))
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ",".join(PATHS))
    ap.add_argument("--relay", default=".build/release/netem-relay", help="netem-relay (paths other than direct)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--onetun-log", default="warn", help="onetun's --log level (default warn)")
    ap.add_argument("--kernel-cc", default="cubic", help="the kernel's TCP congestion control in the namespaces (default cubic, Linux's default)")
    ap.add_argument("--logs", help="copy every process's log (onetun, relay, wireguard-go, iperf3) to this directory")
    args = ap.parse_args()
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows_wanted:
        if r not in ALL_ROWS:
            ap.error("unknown row %r; rows are %s" % (r, ",".join(ALL_ROWS)))
    KERNEL_CC[0] = args.kernel_cc
    paths_wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
    for p in paths_wanted:
        if p not in PATHS:
            ap.error("unknown path %r; paths are %s" % (p, ",".join(PATHS)))
    relay = os.path.abspath(args.relay)
    if set(paths_wanted) - {"direct"} and not (os.path.isfile(relay) and os.access(relay, os.X_OK)):
        sys.exit("%s is missing or not executable (swift build -c release --product netem-relay)" % args.relay)
    if not 1 <= args.seconds <= 600:
        ap.error("--seconds must be between 1 and 600")
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (network namespaces)")
    need = ["ip", "iperf3"] + (["wireguard-go", "wg"] if set(rows_wanted) & {"kernel", "onetun", "peers", "proxies"}
                               else [])
    missing = [t for t in need if not shutil.which(t)]
    if missing:
        sys.exit("missing tools: " + " ".join(missing))

    def on_term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C must tear down.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    workdir = tempfile.mkdtemp(prefix="onetun-bench-")
    rows = []
    try:
        for path in PATHS:
            if path not in paths_wanted:
                continue
            for name in ALL_ROWS:
                if name not in rows_wanted or (name in ("loopback", "peers") and path != "direct") \
                        or (name == "proxies" and path not in ("direct", "wan")):
                    continue
                log("== %s, path %s" % (TITLES[name], path))
                if name in ("onetun", "peers", "proxies"):
                    onetun = os.path.abspath(args.onetun)
                    if not (os.path.isfile(onetun) and os.access(onetun, os.X_OK)):
                        row = new_row(name, path)
                        row["skipped"] = "%s is missing or not executable (swift build -c release)" % args.onetun
                        log("  " + row["skipped"])
                        rows.append(row)
                        continue
                td = Teardown(workdir)
                try:
                    if name == "loopback":
                        row = row_loopback(td, args.seconds)
                    elif name == "kernel":
                        row = row_kernel(td, args.seconds, path, relay)
                    elif name == "peers":
                        row = row_peers(td, args.seconds, onetun, args.onetun_log)
                    elif name == "proxies":
                        row = row_proxies(td, args.seconds, onetun, args.onetun_log, path, relay)
                    else:
                        row = row_onetun(td, args.seconds, onetun, args.onetun_log, path, relay)
                except BenchError as e:
                    row = new_row(name, path)
                    row["skipped"] = "failed: " + str(e)
                    log("  " + row["skipped"])
                finally:
                    # A second Ctrl-C must not cut the teardown short.
                    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
                    try:
                        td.close()
                    finally:
                        signal.signal(signal.SIGINT, old)
                row["relay"] = relay_summary(td.relay_log)
                rows.append(row)
    except (KeyboardInterrupt, Terminated):
        log("interrupted; torn down")
        return 130
    finally:
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for f in os.listdir(workdir):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(workdir, f), args.logs)
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(rows, args.seconds)
    if args.json:
        out = {"seconds": args.seconds, "kernel_cc": KERNEL_CC[0], "rtt_rounds": RTT_ROUNDS, "rtt_size": RTT_SIZE,
               "cps_seconds": CPS_SECONDS, "cpus": os.cpu_count(), "rows": []}
        for r in rows:
            out["rows"].append({k: r.get(k) for k in ("name", "path", "title", "results", "errors", "skipped",
                                                      "process", "relay", "drops", "rss_peaks_mib")})
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    failed = any(r["skipped"] and r["skipped"].startswith("failed") for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
