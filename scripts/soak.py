#!/usr/bin/env python3
"""Soak test: onetun under mixed load for a long time, through a lossy path, against a wireguard-go peer.

    python3 scripts/soak.py [--onetun PATH] [--relay PATH] [--minutes N] [--json FILE] [--logs DIR]

Needs root, wireguard-go, wg and ip. Python standard library only. The namespaces, keys, wireguard-go and
process handling come from bench.py (imported, not run): namespace A holds onetun and the clients, B the
wireguard-go peer (192.168.4.1), netem-relay in front of it (A's endpoint is 10.77.0.2:51821; by default
10 ms each way, 1 % loss and 1 % reordering each way) and the servers. onetun forwards

  127.0.0.1:17101 -> 192.168.4.1:7101 TCP   transfers: uploads and downloads of random data
  127.0.0.1:17103 -> 192.168.4.1:7101 TCP   churn: short connections, one after another
  127.0.0.1:17102 -> 192.168.4.1:7102 UDP   datagrams echoed back

All of it at once, for --minutes (default 30):

  upload    random data of a random size (1 KiB to 8 MiB, log-uniform); its SHA-256 goes first, the
            server hashes what arrives, compares and answers with its digest, which the client compares.
  download  the server sends random data and then its SHA-256; the client hashes what arrives and compares.
  churn     connection after connection: most echo a few bytes (checked byte for byte), some are reset
            by the client right after sending (SO_LINGER 0), some are closed before sending anything. A
            reset or early close is expected there; any other error is a failure.
  udp       datagrams at a steady rate, each derived from its sequence number (so a reply can be checked
            byte for byte without keeping it); a new client socket (a new flow in onetun) every 30 s.
            Loss is counted (the path loses on purpose), corruption is a failure.

onetun's VmRSS (and open descriptors) are sampled every 10 s. It passes when every TCP transfer was
SHA-256-equal, nothing failed (apart from the expected churn closes), onetun still runs, the RSS grew by
less than 5 % after warm-up (see rss_verdict), every kind of load made progress and UDP lost no more than
--udp-max-loss and no UDP flow went unanswered. Exit status 0 on PASS, 1 on FAIL, 2 when it could not run,
130 when interrupted.

Every loop is bounded in count or time; every process is ours, stopped by PID; the namespaces go in a
finally block, also after Ctrl-C or SIGTERM. Traffic goes only to loopback and the namespaces made here.
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (its main() only runs as a script; importing it starts nothing)
from bench import BenchError, Terminated, log  # noqa: E402

TCP_PORT = 7101
UDP_PORT = 7102
FWD_TCP_PORT = 17101
FWD_CHURN_PORT = 17103
FWD_UDP_PORT = 17102
TUN_A, TUN_B = bench.TUN_A, bench.TUN_B
VETH_B = bench.VETH_B
WG_PORT, RELAY_PORT = bench.WG_PORT, bench.RELAY_PORT

SAMPLE_S = 10            # RSS sampling period
RSS_LIMIT = 0.05         # growth allowed after warm-up
MIN_SIZE, MAX_SIZE = 1 << 10, 8 << 20
IO_TIMEOUT = 60.0        # a socket silent this long fails its transfer
MAX_TRANSFER_S = 300.0   # a transfer still running after this fails, however slowly it moves
UDP_MAX = 1392           # tunnel MTU 1420 less the IPv4 and UDP headers
UDP_FLOW_S = 30.0        # a new UDP client socket this often
UDP_DRAIN_S = 5.0        # an old UDP socket keeps receiving this long
MAX_ERRORS = 20          # error messages kept per helper (all are counted)
CHUNK = 64 << 10

OP_UPLOAD, OP_DOWNLOAD, OP_ECHO, OP_ABORT = b"U", b"D", b"E", b"A"


# --------------------------------------------------------------------------------------------------
# Counters shared by a helper's threads, printed as one JSON line every few seconds and at the end.
# --------------------------------------------------------------------------------------------------

class Stats:
    def __init__(self, kind):
        self.kind = kind
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = []  # the first MAX_ERRORS messages, each with the seconds since the helper started
        self.start = time.monotonic()

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def fail(self, name, msg):
        """A failure: counted under `name` and under "failures", its message kept if there is room."""
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            self.counts["failures"] = self.counts.get("failures", 0) + 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append("%.0fs %s" % (time.monotonic() - self.start, msg))

    def emit(self, final=False, **extra):
        with self.lock:
            line = {"kind": self.kind, "final": final, "t": round(time.monotonic() - self.start, 1),
                    "counts": dict(self.counts), "errors": list(self.errors)}
        line.update(extra)
        print(json.dumps(line), flush=True)


def reporter(stats, stop, extra=lambda: {}):
    """Prints `stats` every 5 s until `stop` is set (a daemon thread)."""
    def loop():
        while not stop.wait(5.0):
            stats.emit(**extra())
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def on_sigterm_exit():
    """SIGTERM raises SystemExit in the main thread, so a helper's finally block still reports. The
    helper also gets SIGTERM when soak.py dies (PR_SET_PDEATHSIG; `ip netns exec` execs, so soak.py is
    the parent): killed hard, it leaves no load or server running behind it."""
    def handler(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, handler)
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl
        raise SystemExit(0)


def recv_exactly(s, n, h=None, deadline=None):
    """n bytes from s (hashed into h instead of kept, if h is given); ConnectionError on EOF."""
    buf = bytearray() if h is None else None
    got = 0
    while got < n:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("still running after %.0f s, %d of %d bytes" % (MAX_TRANSFER_S, got, n))
        chunk = s.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("closed by the other side after %d of %d bytes" % (got, n))
        got += len(chunk)
        if h is None:
            buf += chunk
        else:
            h.update(chunk)
    return bytes(buf) if h is None else None


def send_all(s, data, deadline):
    view = memoryview(data)
    for off in range(0, len(view), CHUNK):
        if time.monotonic() > deadline:
            raise TimeoutError("still running after %.0f s, %d of %d bytes sent" % (MAX_TRANSFER_S, off, len(view)))
        s.sendall(view[off:off + CHUNK])


# --------------------------------------------------------------------------------------------------
# Servers in B: `ip netns exec B python3 soak.py _tcpserver|_udpserver ...`.
# --------------------------------------------------------------------------------------------------

def tcp_server(host, port, lifetime):
    """One thread per connection. The first byte names the operation:
    U len(8) sha256(32) data  -> sha256 of what arrived (32) + b"1" if it equals the announced one, else b"0"
    D len(8)                  -> len random bytes, then their sha256 (32)
    E len(4) data             -> data echoed
    A ...                     -> read until the client's reset or close (expected: the churn's aborts)
    (nothing)                 -> a client that closed before sending (expected: the churn's closes)
    It exits after `lifetime` seconds at the latest (soak.py stops it long before)."""
    stats = Stats("tcpserver")
    on_sigterm_exit()
    live = [0]
    lock = threading.Lock()

    def serve(c):
        with lock:
            live[0] += 1
        op = b"?"
        try:
            c.settimeout(IO_TIMEOUT)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.monotonic() + MAX_TRANSFER_S
            op = c.recv(1)
            if not op:
                stats.add("early_close")
                return
            if op == OP_UPLOAD:
                n, want = struct.unpack("!Q32s", recv_exactly(c, 40))
                h = hashlib.sha256()
                recv_exactly(c, n, h, deadline)
                got = h.digest()
                c.sendall(got + (b"1" if got == want else b"0"))
                if got == want:
                    stats.add("upload_ok")
                    stats.add("upload_bytes", n)
                else:
                    stats.fail("upload_mismatch", "upload of %d bytes: SHA-256 differs" % n)
            elif op == OP_DOWNLOAD:
                (n,) = struct.unpack("!Q", recv_exactly(c, 8))
                data = os.urandom(n)
                send_all(c, data, deadline)
                c.sendall(hashlib.sha256(data).digest())
                stats.add("download_sent")
                stats.add("download_bytes", n)
            elif op == OP_ECHO:
                (n,) = struct.unpack("!I", recv_exactly(c, 4))
                c.sendall(recv_exactly(c, n, None, deadline))
                stats.add("echo")
            elif op == OP_ABORT:
                for _ in range(1 << 16):  # bounded: the client sends a few bytes and resets
                    if not c.recv(65536):
                        break
                stats.add("abort_close")
            else:
                stats.fail("bad_op", "unknown operation byte %r" % op)
                return
            # Wait for the client's close: the client ends each connection.
            c.recv(1)
        except ConnectionResetError as e:
            if op == OP_ABORT:
                stats.add("abort_reset")  # expected
            elif op == b"?":
                stats.add("early_reset")  # expected: a churn close or reset before the first byte arrived
            else:
                stats.fail("error_" + op.decode(errors="replace"), "op %r: %s" % (op, e))
        except (OSError, ValueError, struct.error) as e:
            stats.fail("error_" + op.decode(errors="replace"), "op %r: %s" % (op, e))
        finally:
            c.close()
            with lock:
                live[0] -= 1

    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(1024)
    lst.settimeout(1.0)
    end = time.monotonic() + lifetime
    stop = threading.Event()
    reporter(stats, stop, lambda: {"live": live[0]})
    try:
        while time.monotonic() < end:
            try:
                c, _ = lst.accept()
            except socket.timeout:
                continue
            stats.add("accepted")
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    finally:
        stop.set()
        stats.emit(final=True, live=live[0])


def udp_server(host, port, lifetime):
    """Echoes every datagram to where it came from, for `lifetime` seconds at the latest."""
    stats = Stats("udpserver")
    on_sigterm_exit()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((host, port))
    s.settimeout(1.0)
    end = time.monotonic() + lifetime
    stop = threading.Event()
    reporter(stats, stop)
    try:
        while time.monotonic() < end:
            try:
                data, peer = s.recvfrom(65536)
            except socket.timeout:
                continue
            stats.add("echoed")
            try:
                s.sendto(data, peer)
            except OSError as e:
                stats.add("send_errors")
                stats.fail("send_error", str(e))
    finally:
        stop.set()
        stats.emit(final=True)


# --------------------------------------------------------------------------------------------------
# Clients in A: `ip netns exec A python3 soak.py _transfers|_churn|_udp ...`; each runs for `seconds`,
# then finishes what it started (bounded by MAX_TRANSFER_S) and prints its final line.
# --------------------------------------------------------------------------------------------------

def log_uniform_size(rng):
    return int(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE))))


def upload_once(host, port, rng, stats):
    n = log_uniform_size(rng)
    data = os.urandom(n)
    want = hashlib.sha256(data).digest()
    deadline = time.monotonic() + MAX_TRANSFER_S
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as s:
        s.sendall(OP_UPLOAD + struct.pack("!Q32s", n, want))
        send_all(s, data, deadline)
        reply = recv_exactly(s, 33, None, deadline)
    if reply[:32] != want or reply[32:] != b"1":
        stats.fail("upload_sha_mismatch", "upload of %d bytes: the server's SHA-256 %s, ours %s"
                   % (n, reply[:32].hex()[:16], want.hex()[:16]))
        return
    stats.add("upload_ok")
    stats.add("upload_bytes", n)


def download_once(host, port, rng, stats):
    n = log_uniform_size(rng)
    deadline = time.monotonic() + MAX_TRANSFER_S
    h = hashlib.sha256()
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as s:
        s.sendall(OP_DOWNLOAD + struct.pack("!Q", n))
        recv_exactly(s, n, h, deadline)
        want = recv_exactly(s, 32, None, deadline)
    if h.digest() != want:
        stats.fail("download_sha_mismatch", "download of %d bytes: SHA-256 %s, the server's %s"
                   % (n, h.hexdigest()[:16], want.hex()[:16]))
        return
    stats.add("download_ok")
    stats.add("download_bytes", n)


def run_workers(stats, seconds, workers):
    """Runs each (name, fn) in `workers` in its own thread, over and over until `seconds` pass; then
    waits for them (each transfer is bounded by MAX_TRANSFER_S) and prints the final line."""
    on_sigterm_exit()
    end = time.monotonic() + seconds
    stop = threading.Event()
    reporter(stats, stop)

    def loop(name, fn, seed):
        rng = random.Random(seed)
        while time.monotonic() < end:
            try:
                fn(rng)
            except (OSError, ValueError, struct.error) as e:
                stats.fail(name + "_error", "%s: %s: %s" % (name, type(e).__name__, e))
                time.sleep(0.5)  # a failing path is not hammered

    threads = [threading.Thread(target=loop, args=(name, fn, i), daemon=True)
               for i, (name, fn) in enumerate(workers)]
    for t in threads:
        t.start()
    stuck = 0
    try:
        for t in threads:
            t.join(timeout=max(0.0, end - time.monotonic()) + MAX_TRANSFER_S + 30)
            stuck += t.is_alive()
        if stuck:
            stats.fail("stuck", "%d worker(s) still busy %.0f s after the end" % (stuck, MAX_TRANSFER_S + 30))
    finally:
        stop.set()
        stats.emit(final=True)


def transfers_client(host, port, seconds, uploads, downloads):
    stats = Stats("transfers")
    workers = ([("upload", lambda rng: upload_once(host, port, rng, stats))] * uploads +
               [("download", lambda rng: download_once(host, port, rng, stats))] * downloads)
    run_workers(stats, seconds, workers)


def churn_once(host, port, rng, stats):
    """One short connection: 80 % echo a few bytes (checked), 10 % reset by us after sending, 10 % closed
    before sending anything."""
    r = rng.random()
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if r < 0.8:
            data = os.urandom(rng.randint(1, 4096))
            s.sendall(OP_ECHO + struct.pack("!I", len(data)) + data)
            got = recv_exactly(s, len(data), None, time.monotonic() + MAX_TRANSFER_S)
            if got != data:
                stats.fail("echo_mismatch", "churn echo of %d bytes came back different" % len(data))
                return
            stats.add("echo_ok")
            stats.add("echo_bytes", len(data))
        elif r < 0.9:
            s.sendall(OP_ABORT + os.urandom(rng.randint(1, 2048)))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            stats.add("abort")
        else:
            stats.add("close")
    stats.add("connections")


def churn_client(host, port, seconds, workers):
    stats = Stats("churn")
    run_workers(stats, seconds, [("churn", lambda rng: churn_once(host, port, rng, stats))] * workers)


class Datagrams:
    """Datagram `seq` is b"SOAK" + seq (8) + its length (2) + bytes derived from a key and seq, 14 to
    UDP_MAX bytes long: a reply is checked against the datagram rebuilt from its sequence number."""

    def __init__(self, key):
        self.key = key

    def build(self, seq):
        h = hashlib.shake_128(self.key + seq.to_bytes(8, "big")).digest(2 + UDP_MAX)
        size = 14 + int.from_bytes(h[:2], "big") % (UDP_MAX - 14 + 1)
        return b"SOAK" + struct.pack("!QH", seq, size) + h[2:2 + size - 14]

    def seq_of(self, data, sent):
        """The datagram's sequence number if it is one we sent, byte for byte; else None."""
        if len(data) < 14 or data[:4] != b"SOAK":
            return None
        seq, size = struct.unpack("!QH", data[4:14])
        if seq >= sent or size != len(data) or self.build(seq) != data:
            return None
        return seq


def udp_client(host, port, seconds, rate):
    """Sends `rate` datagrams a second to host:port, from a new socket every UDP_FLOW_S seconds; counts
    replies, duplicates, corrupt ones (not one we sent, byte for byte) and flows that got no reply."""
    stats = Stats("udp")
    on_sigterm_exit()
    stop = threading.Event()
    gen = Datagrams(os.urandom(16))
    received = bytearray()  # one byte per sequence number: 1 once its reply came
    sel = selectors.DefaultSelector()
    flows = {}  # socket -> {"replies": n, "close_at": monotonic or None, "id": n}
    seq = 0
    flow_id = 0

    def new_flow():
        nonlocal flow_id
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        sel.register(s, selectors.EVENT_READ)
        flow_id += 1
        flows[s] = {"replies": 0, "close_at": None, "id": flow_id, "sent": 0}
        stats.add("flows")
        return s

    def close_flow(s):
        f = flows.pop(s)
        sel.unregister(s)
        s.close()
        if f["sent"] and not f["replies"]:
            stats.fail("silent_flows", "flow %d: no reply to any of its %d datagrams" % (f["id"], f["sent"]))

    reporter(stats, stop, lambda: {"sent": seq})
    start = time.monotonic()
    end = start + seconds
    cur = new_flow()
    flow_end = start + UDP_FLOW_S
    next_send = start
    interval = 1.0 / rate
    try:
        while True:
            now = time.monotonic()
            if now >= end + UDP_DRAIN_S:
                break
            if now < end:
                if now >= flow_end:
                    flows[cur]["close_at"] = now + UDP_DRAIN_S
                    cur = new_flow()
                    flow_end = now + UDP_FLOW_S
                # Catch up at most a second's worth after a stall, then pace again.
                for _ in range(rate):
                    if now < next_send:
                        break
                    next_send = max(next_send + interval, now - 1.0)
                    data = gen.build(seq)
                    try:
                        cur.sendto(data, (host, port))
                    except BlockingIOError:
                        stats.add("send_blocked")  # not sent, not counted
                        continue
                    except OSError as e:
                        stats.fail("send_error", "sendto: %s" % e)
                        continue
                    seq += 1
                    received.append(0)
                    flows[cur]["sent"] += 1
                    stats.add("sent")
                    stats.add("sent_bytes", len(data))
            for s in [s for s, f in flows.items() if f["close_at"] is not None and now >= f["close_at"]]:
                close_flow(s)
            timeout = next_send - time.monotonic() if now < end else 0.1
            for key, _ in sel.select(max(0.0, min(timeout, 0.1))):
                s = key.fileobj
                for _ in range(256):
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        stats.fail("recv_error", "recv: %s" % e)
                        break
                    n = gen.seq_of(data, seq)
                    if n is None:
                        stats.fail("corrupt", "a reply of %d bytes that is no datagram we sent (%s...)"
                                   % (len(data), data[:16].hex()))
                    elif received[n]:
                        stats.add("duplicates")
                    else:
                        received[n] = 1
                        flows[s]["replies"] += 1
                        stats.add("received")
                        stats.add("received_bytes", len(data))
    finally:
        for s in list(flows):
            close_flow(s)
        stop.set()
        stats.emit(final=True, sent=seq)


def run_helper(argv):
    kind, a = argv[0], argv[1:]
    if kind == "_tcpserver":
        tcp_server(a[0], int(a[1]), float(a[2]))
    elif kind == "_udpserver":
        udp_server(a[0], int(a[1]), float(a[2]))
    elif kind == "_transfers":
        transfers_client(a[0], int(a[1]), float(a[2]), int(a[3]), int(a[4]))
    elif kind == "_churn":
        churn_client(a[0], int(a[1]), float(a[2]), int(a[3]))
    elif kind == "_probe":
        probe_client(a[0], int(a[1]), float(a[2]))
    elif kind == "_udp":
        udp_client(a[0], int(a[1]), float(a[2]), int(a[3]))
    else:
        sys.exit("unknown helper " + kind)


# --------------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------------

def last_json(path):
    """The last JSON line a helper printed (its latest counters), or None."""
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def proc_status(pid):
    """VmRSS and RssAnon in KiB and the number of open descriptors of `pid`; None once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            status = f.read()
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None
    out = {"fds": fds}
    for line in status.splitlines():
        for key in ("VmRSS", "RssAnon", "Threads"):
            if line.startswith(key + ":"):
                out[key] = int(line.split()[1])
    return out


def udp_socket_drops(pid):
    """Datagrams each UDP socket in the namespace of `pid` dropped (its receive buffer full), by local
    port; only the nonzero ones. /proc/PID/net/udp's last column."""
    out = {}
    try:
        with open("/proc/%d/net/udp" % pid) as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[-1]):
                    port = int(fields[1].rsplit(":", 1)[1], 16)
                    out[port] = out.get(port, 0) + int(fields[-1])
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return out


def warmup_seconds(seconds):
    """5 minutes, or the first half of a run shorter than 10 minutes."""
    return 300.0 if seconds >= 600 else seconds / 2


def rss_window(seconds):
    """Samples in each RSS window: those within H seconds of the warm-up mark, H being two and a half
    minutes, or a quarter of what follows the mark when that is less (a short run). Five-minute windows:
    with two-minute ones a 30-minute run whose RSS had no trend at all (least-squares slope -0.004 MiB a
    minute) still "grew" 6.5 %, the medians of 13 samples swinging with the data in flight."""
    h = min(150.0, (seconds - warmup_seconds(seconds)) / 4)
    return max(3, int(2 * h // SAMPLE_S) + 1)


def rss_verdict(samples, seconds):
    """The RSS criterion. `samples` are (t, VmRSS KiB) taken every SAMPLE_S under load, t from 0 to
    below `seconds`; k = rss_window(seconds). Baseline: the median of the k samples nearest the warm-up
    mark W (for 30 minutes: 31 samples, 2.5 to 7.5 min). Final: the median of the last k samples (the
    last five minutes). Growth = final / baseline - 1 must stay below RSS_LIMIT. Medians, because VmRSS moves
    by a fifth from one sample to the next with the data in flight; the maximum after W is printed too."""
    w = warmup_seconds(seconds)
    k = rss_window(seconds)
    if len(samples) < 2 * k:
        return {"ok": False, "why": "only %d RSS samples, %d needed" % (len(samples), 2 * k), "warmup_s": w}
    near = sorted(sorted(samples, key=lambda s: (abs(s[0] - w), s[0]))[:k])
    last = samples[-k:]
    if near[-1][0] >= last[0][0]:
        return {"ok": False, "why": "run too short: the warm-up and final windows overlap", "warmup_s": w}
    base = statistics.median(r for _, r in near)
    final = statistics.median(r for _, r in last)
    peak = max(r for t, r in samples if t >= w)
    growth = final / base - 1
    return {"ok": growth < RSS_LIMIT, "warmup_s": w, "window": k, "baseline_kib": base, "final_kib": final,
            "baseline_window_s": [near[0][0], near[-1][0]], "final_window_s": [last[0][0], last[-1][0]],
            "growth": growth, "peak_after_warmup_kib": peak, "peak_growth": peak / base - 1}


def start_helper(td, ns, args, name, logname):
    return td.popen(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__)] + [str(a) for a in args],
                    name, logname)


def probe_client(host, port, seconds):
    """One churn echo, retried every half second until it works or `seconds` pass; prints JSON."""
    stats = Stats("probe")
    deadline = time.monotonic() + seconds
    why = None
    for _ in range(int(seconds * 2) + 1):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(OP_ECHO + struct.pack("!I", 5) + b"probe")
                if recv_exactly(s, 5, None, time.monotonic() + 10) != b"probe":
                    raise ConnectionError("the echo came back different")
            why = None
            break
        except OSError as e:
            why = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stats.emit(final=True, why=why)


def probe(ns, port, seconds):
    """None once an echo went through onetun within `seconds`, else why not."""
    r = bench.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "_probe",
                   "127.0.0.1", str(port), str(seconds)], timeout=seconds + 30, check=False)
    for text in reversed(r.stdout.splitlines()):
        if text.startswith("{"):
            return json.loads(text)["why"]
    return "the probe printed nothing: " + r.stderr.strip()[-300:]


def soak(td, args, onetun, relay, result):
    seconds = args.minutes * 60.0
    ns_a, ns_b = bench.make_pair(td, "soak")
    key_path, _, public = bench.genkey(td.workdir, "onetun")
    if_b, _, pub_b = bench.wg_peer_b(td, ns_b, "soak", public)

    relay_args = ["--delay-ms", str(args.delay_ms), "--loss", str(args.loss), "--reorder", str(args.reorder),
                  "--reorder-delay-ms", str(args.reorder_delay_ms), "--seed", str(args.seed)]
    log("netem-relay " + " ".join(relay_args))
    td.relay_log = os.path.join(td.workdir, "relay.log")
    rp = td.popen(["ip", "netns", "exec", ns_b, relay, "--listen", "%s:%d" % (VETH_B, RELAY_PORT),
                   "--target", "127.0.0.1:%d" % WG_PORT] + relay_args, "netem-relay", "relay.log")
    if not bench.wait_until(lambda: bench.udp_bound(rp.pid, RELAY_PORT) or rp.poll() is not None, 10):
        raise BenchError("netem-relay is not bound to port %d after 10 s" % RELAY_PORT)
    if rp.poll() is not None:
        raise BenchError("netem-relay exited (%s): %s" % (rp.returncode, bench.tail(td.relay_log)))

    lifetime = seconds + MAX_TRANSFER_S + 600  # a bound only: they are stopped when the run ends
    tcp_srv = start_helper(td, ns_b, ["_tcpserver", "0.0.0.0", TCP_PORT, lifetime], "tcp server", "tcpserver.log")
    if not bench.wait_until(lambda: bench.listening(tcp_srv.pid, TCP_PORT) or tcp_srv.poll() is not None, 10):
        raise BenchError("the TCP server is not listening after 10 s")
    udp_srv = start_helper(td, ns_b, ["_udpserver", "0.0.0.0", UDP_PORT, lifetime], "udp server", "udpserver.log")
    if not bench.wait_until(lambda: bench.udp_bound(udp_srv.pid, UDP_PORT) or udp_srv.poll() is not None, 10):
        raise BenchError("the UDP echo server is not bound after 10 s")

    cmd = ["ip", "netns", "exec", ns_a, onetun,
           "127.0.0.1:%d:%s:%d" % (FWD_TCP_PORT, TUN_B, TCP_PORT),
           "127.0.0.1:%d:%s:%d" % (FWD_CHURN_PORT, TUN_B, TCP_PORT),
           "127.0.0.1:%d:%s:%d:UDP" % (FWD_UDP_PORT, TUN_B, UDP_PORT),
           "--private-key-file", key_path, "--endpoint-public-key", pub_b,
           "--endpoint-addr", "%s:%d" % (VETH_B, RELAY_PORT), "--source-peer-ip", TUN_A,
           "--keep-alive", "10", "--log", args.onetun_log]
    log("onetun " + " ".join(cmd[5:]))
    proc = td.popen(cmd, "onetun", "onetun.log")
    result["onetun_log"] = os.path.join(td.workdir, "onetun.log")
    ok = bench.wait_until(lambda: proc.poll() is not None or (
        bench.listening(proc.pid, FWD_TCP_PORT) and bench.listening(proc.pid, FWD_CHURN_PORT)
        and bench.udp_bound(proc.pid, FWD_UDP_PORT)), 10)
    if proc.poll() is not None:
        raise BenchError("onetun exited (%s) at start:\n%s" % (proc.returncode, bench.tail(result["onetun_log"])))
    if not ok:
        raise BenchError("onetun does not listen on its forwards after 10 s:\n%s" % bench.tail(result["onetun_log"]))
    why = probe(ns_a, FWD_CHURN_PORT, 20)
    if why:
        raise BenchError("no echo through onetun within 20 s (%s); handshake with the peer: %s\n%s"
                         % (why, "done" if bench.latest_handshake(ns_b, if_b) else "none",
                            bench.tail(result["onetun_log"])))
    result["onetun_pid"] = proc.pid

    log("load for %.1f min: %d upload + %d download workers, %d churn workers, UDP %d/s"
        % (args.minutes, args.uploads, args.downloads, args.churn_workers, args.udp_rate))
    start = time.monotonic()
    clients = {
        "transfers": start_helper(td, ns_a, ["_transfers", "127.0.0.1", FWD_TCP_PORT, seconds, args.uploads,
                                             args.downloads], "transfers client", "transfers.log"),
        "churn": start_helper(td, ns_a, ["_churn", "127.0.0.1", FWD_CHURN_PORT, seconds, args.churn_workers],
                              "churn client", "churn.log"),
        "udp": start_helper(td, ns_a, ["_udp", "127.0.0.1", FWD_UDP_PORT, seconds, args.udp_rate],
                            "udp client", "udp.log"),
    }
    samples = result["samples"]  # {"t", "rss_kib", "anon_kib", "fds", "threads"}
    # Sample at t = 0, 10, 20, ... below `seconds`; the last one after the load has stopped is kept apart.
    for i in range(int(math.ceil(seconds / SAMPLE_S))):
        due = start + i * SAMPLE_S
        time.sleep(max(0.0, due - time.monotonic()))
        st = proc_status(proc.pid)
        if st is None or proc.poll() is not None:
            result["onetun_exit"] = "onetun exited (%s) %.0f s into the load" % (proc.poll(), time.monotonic() - start)
            log(result["onetun_exit"])
            break
        samples.append({"t": i * SAMPLE_S, "rss_kib": st.get("VmRSS"), "anon_kib": st.get("RssAnon"),
                        "fds": st["fds"], "threads": st.get("Threads")})
        if i % 6 == 0:
            c = {k: (last_json(os.path.join(td.workdir, k + ".log")) or {}).get("counts", {}) for k in clients}
            log("  %5.1f min  RSS %6.1f MiB  fds %4d  up %d  down %d  churn %d  udp %d/%d  failures %d"
                % (i * SAMPLE_S / 60, st["VmRSS"] / 1024, st["fds"], c["transfers"].get("upload_ok", 0),
                   c["transfers"].get("download_ok", 0), c["churn"].get("connections", 0),
                   c["udp"].get("received", 0), c["udp"].get("sent", 0),
                   sum(x.get("failures", 0) for x in c.values())))
        dead = [k for k, p in clients.items() if p.poll() is not None]
        if dead:
            result["helper_exit"] = "%s exited early (%s): %s" % (
                dead[0], clients[dead[0]].returncode, bench.tail(os.path.join(td.workdir, dead[0] + ".log"), 5))
            log(result["helper_exit"])
            break
    if result.get("onetun_exit") or result.get("helper_exit"):
        # Cut short: no point loading a dead process for the rest of the run. SIGTERM makes a client
        # print its final counters.
        for p in clients.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
    else:
        # The clients finish what they started; each transfer is bounded, so this wait is too.
        deadline = start + seconds + MAX_TRANSFER_S + 60
    for name, p in clients.items():
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            result.setdefault("helper_exit", "%s did not finish in time" % name)
    result["clients"] = {k: last_json(os.path.join(td.workdir, k + ".log")) for k in clients}
    # Where datagrams died other than in the relay: socket buffers overflowing (A: onetun's sockets and
    # the UDP client's; B: the servers'), interfaces dropping.
    result["drops"] = {"A": bench.drop_counters(ns_a), "B": bench.drop_counters(ns_b)}
    for side, pid in (("A", proc.pid), ("B", udp_srv.pid)):
        for port, n in udp_socket_drops(pid).items():
            result["drops"][side]["udp socket :%d drops" % port] = n
    time.sleep(3)  # time for closes to reach the server; then its live connections should be none
    st = proc_status(proc.pid)
    result["after"] = st and {"rss_kib": st.get("VmRSS"), "anon_kib": st.get("RssAnon"), "fds": st["fds"]}
    result["servers"] = {"tcp": last_json(os.path.join(td.workdir, "tcpserver.log")),
                         "udp": last_json(os.path.join(td.workdir, "udpserver.log"))}
    if proc.poll() is not None:
        result.setdefault("onetun_exit", "onetun exited (%s)" % proc.returncode)
    result["onetun_running"] = proc.poll() is None


def mib(kib):
    return kib / 1024.0


def summarize(result, args):
    """Prints the summary; returns True for PASS."""
    seconds = args.minutes * 60.0
    cl = result.get("clients") or {}
    tr = (cl.get("transfers") or {}).get("counts", {})
    ch = (cl.get("churn") or {}).get("counts", {})
    ud = (cl.get("udp") or {}).get("counts", {})
    srv = (result.get("servers") or {}).get("tcp") or {}
    sc = srv.get("counts", {})
    print()
    print("soak: %.1f min through netem-relay (%s ms each way, %.1f %% loss, %.1f %% reordering by %s ms, each way)"
          % (args.minutes, args.delay_ms, args.loss * 100, args.reorder * 100, args.reorder_delay_ms))
    for kind in ("upload", "download"):
        print("%-9s %8d transfers %9.1f MiB  errors %d  SHA-256 mismatches %d" % (
            kind, tr.get(kind + "_ok", 0), tr.get(kind + "_bytes", 0) / 2**20, tr.get(kind + "_error", 0),
            tr.get(kind + "_sha_mismatch", 0)))
    print("%-9s %8s connections (%d echoed and checked, %d reset by us, %d closed at once), %.1f MiB echoed, "
          "failures %d" % ("churn", ch.get("connections", 0), ch.get("echo_ok", 0), ch.get("abort", 0),
                           ch.get("close", 0), ch.get("echo_bytes", 0) / 2**20, ch.get("failures", 0)))
    print("%-9s expected closes seen by the server: %d resets and %d closes after an abort, %d closes and %d "
          "resets before the first byte; server failures %d; connections still open at the server 3 s after "
          "the end: %s" % ("", sc.get("abort_reset", 0), sc.get("abort_close", 0), sc.get("early_close", 0),
                           sc.get("early_reset", 0),
             sc.get("failures", 0), srv.get("live", "?")))
    sent, got = ud.get("sent", 0), ud.get("received", 0)
    loss = 1 - got / sent if sent else 1.0
    print("%-9s sent %d, received %d (%.2f %% lost), corrupt %d, duplicates %d, flows %d (%d without a reply), "
          "%.1f MiB sent" % ("udp", sent, got, loss * 100, ud.get("corrupt", 0), ud.get("duplicates", 0),
                             ud.get("flows", 0), ud.get("silent_flows", 0), ud.get("sent_bytes", 0) / 2**20))
    if result.get("relay"):
        print("relay:    %s" % result["relay"])
    drops = ", ".join("%s %s %d" % (side, k, v) for side, d in sorted((result.get("drops") or {}).items())
                      for k, v in sorted(d.items()))
    print("drops:    %s" % (drops or "none counted in the namespaces' kernels"))
    print("          (A: onetun's namespace, B: the peer's; %d: the UDP echo server, %d: wireguard-go, %d: the relay)"
          % (UDP_PORT, WG_PORT, RELAY_PORT))
    errors = [(k, e) for k in ("transfers", "churn", "udp") for e in (cl.get(k) or {}).get("errors", [])]
    errors += [("tcp server", e) for e in srv.get("errors", [])]
    if errors:
        print("failures (first %d per process, seconds into the load):" % MAX_ERRORS)
        for k, e in errors:
            print("  %s: %s" % (k, e))

    samples = result["samples"]
    print("onetun RSS (VmRSS, MiB), every %d s; one line a minute:" % SAMPLE_S)
    per_line = 60 // SAMPLE_S
    for i in range(0, len(samples), per_line):
        row = samples[i:i + per_line]
        print("  %4.0f min %s   fds %s" % (row[0]["t"] / 60, " ".join("%6.1f" % mib(s["rss_kib"]) for s in row),
                                          "/".join(str(s["fds"]) for s in row)))
    if result.get("after"):
        a = result["after"]
        print("  after the load: VmRSS %.1f MiB (anonymous %.1f MiB), %d descriptors"
              % (mib(a["rss_kib"]), mib(a["anon_kib"] or 0), a["fds"]))
    rv = rss_verdict([(s["t"], s["rss_kib"]) for s in samples], seconds)
    result["rss"] = rv
    if "baseline_kib" in rv:
        print("RSS after warm-up (%.0f s): baseline = median of the %d samples at %d-%d s = %.2f MiB; final = median "
              "of the %d samples at %d-%d s = %.2f MiB; growth %+.2f %% (limit %.0f %%); max after warm-up %.2f MiB "
              "(%+.2f %%)" % (rv["warmup_s"], rv["window"], rv["baseline_window_s"][0], rv["baseline_window_s"][1],
                              mib(rv["baseline_kib"]), rv["window"], rv["final_window_s"][0], rv["final_window_s"][1],
                              mib(rv["final_kib"]), rv["growth"] * 100, RSS_LIMIT * 100,
                              mib(rv["peak_after_warmup_kib"]), rv["peak_growth"] * 100))

    # Lines at notice level or above, and anything not in the log format (a crash, a message of the runtime).
    notable, last_line = [], ""
    try:
        with open(result.get("onetun_log") or "", errors="replace") as f:
            for line in f:
                last_line = line.rstrip()
                if not re.match(r"\S+ (trace|debug|info) ", line):
                    notable.append(line.rstrip())
    except OSError:
        pass
    print("onetun's log: %d lines above info%s" % (len(notable), ":" if notable else ""))
    for line in notable[:10]:
        print("  " + line[:300])
    if len(notable) > 10:
        print("  ... (%d more)" % (len(notable) - 10))
    if last_line:
        print("  last line: " + last_line[:300])

    checks = []
    mismatches = (tr.get("upload_sha_mismatch", 0) + tr.get("download_sha_mismatch", 0)
                  + ch.get("echo_mismatch", 0) + sc.get("upload_mismatch", 0))
    checked = (tr.get("upload_ok", 0) + tr.get("download_ok", 0) + tr.get("upload_sha_mismatch", 0)
               + tr.get("download_sha_mismatch", 0))
    checks.append((mismatches == 0, "every TCP transfer SHA-256-equal (%d checked, %d differ; churn echoes "
                   "byte-equal: %d checked)" % (checked, mismatches, ch.get("echo_ok", 0))))
    failures = (tr.get("failures", 0) + ch.get("failures", 0) + ud.get("failures", 0) + sc.get("failures", 0)
                + ((result.get("servers") or {}).get("udp") or {}).get("counts", {}).get("failures", 0))
    missing = [k for k in ("transfers", "churn", "udp") if not cl.get(k) or not cl[k].get("final")]
    checks.append((failures == 0 and not missing and not result.get("helper_exit"),
                   "no failures apart from the churn's expected closes (%d%s%s)"
                   % (failures, "; no final report from " + ", ".join(missing) if missing else "",
                      "; " + result["helper_exit"] if result.get("helper_exit") else "")))
    checks.append((result.get("onetun_running", False), "onetun still running"
                   + ("" if result.get("onetun_running") else ": " + result.get("onetun_exit", "no"))))
    checks.append((rv["ok"], "RSS growth after warm-up below %.0f %%%s" % (
        RSS_LIMIT * 100, " (%+.2f %%)" % (rv["growth"] * 100) if "growth" in rv else ": " + rv.get("why", ""))))
    progress = all(x > 0 for x in (tr.get("upload_ok", 0), tr.get("download_ok", 0), ch.get("echo_ok", 0), got))
    checks.append((progress, "every kind of load made progress (uploads, downloads, churn echoes, UDP replies)"))
    checks.append((loss <= args.udp_max_loss, "UDP loss %.2f %% at most %.0f %%" % (loss * 100,
                                                                                  args.udp_max_loss * 100)))
    ok = all(c for c, _ in checks)
    print("checks:")
    for c, what in checks:
        print("  %s  %s" % ("ok  " if c else "FAIL", what))
    print("PASS" if ok else "FAIL")
    result["checks"] = [{"ok": c, "what": w} for c, w in checks]
    result["pass"] = ok
    return ok


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        run_helper(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(description="Soak test: onetun under mixed load through a lossy path.")
    ap.add_argument("--onetun", default=".build/release/onetun", help="the onetun binary")
    ap.add_argument("--relay", default=".build/release/netem-relay", help="netem-relay")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the load (default 30)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="relay delay each way (default 10)")
    ap.add_argument("--loss", type=float, default=0.01, help="relay loss each way (default 0.01)")
    ap.add_argument("--reorder", type=float, default=0.01, help="relay reordering each way (default 0.01)")
    ap.add_argument("--reorder-delay-ms", type=float, default=5.0, help="extra delay of a reordered datagram")
    ap.add_argument("--seed", type=int, default=1, help="the relay's random seed")
    ap.add_argument("--uploads", type=int, default=2, help="upload workers (default 2)")
    ap.add_argument("--downloads", type=int, default=2, help="download workers (default 2)")
    ap.add_argument("--churn-workers", type=int, default=2, help="churn workers (default 2)")
    ap.add_argument("--udp-rate", type=int, default=200, help="UDP datagrams per second (default 200)")
    ap.add_argument("--udp-max-loss", type=float, default=0.10, help="UDP loss allowed (default 0.10)")
    ap.add_argument("--onetun-log", default="info", help="onetun's --log level (default info)")
    ap.add_argument("--json", help="also write the samples, counters and checks as JSON to this file")
    ap.add_argument("--logs", help="copy every process's log to this directory")
    args = ap.parse_args()
    if not 3 <= args.minutes <= 24 * 60:
        ap.error("--minutes must be between 3 and 1440 (shorter runs cannot judge the RSS)")
    if not (0 <= args.uploads <= 16 and 0 <= args.downloads <= 16 and 1 <= args.churn_workers <= 16
            and 1 <= args.udp_rate <= 5000):
        ap.error("workers 0..16 (churn 1..16), --udp-rate 1..5000")
    onetun, relay = os.path.abspath(args.onetun), os.path.abspath(args.relay)
    for path, what in ((onetun, "swift build -c release"), (relay, "swift build -c release --product netem-relay")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            sys.exit("%s is missing or not executable (%s)" % (path, what))
    if os.geteuid() != 0:
        sys.exit("soak.py needs root (network namespaces)")
    missing = [t for t in ("ip", "wireguard-go", "wg") if not shutil.which(t)]
    if missing:
        sys.exit("missing tools: " + " ".join(missing))

    def on_term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    workdir = tempfile.mkdtemp(prefix="onetun-soak-")
    result = {"samples": [], "minutes": args.minutes}
    td = bench.Teardown(workdir)
    try:
        try:
            soak(td, args, onetun, relay, result)
        finally:
            # A second Ctrl-C must not cut the teardown short.
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                td.close()
            finally:
                signal.signal(signal.SIGINT, old)
        result["relay"] = bench.relay_summary(td.relay_log)
        ok = summarize(result, args)
    except BenchError as e:
        log("soak could not run: %s" % e)
        return 2
    except (KeyboardInterrupt, Terminated):
        log("interrupted; torn down")
        return 130
    finally:
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for f in os.listdir(workdir):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(workdir, f), args.logs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({k: v for k, v in result.items() if k != "onetun_log"}, f, indent=2)
                f.write("\n")
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
