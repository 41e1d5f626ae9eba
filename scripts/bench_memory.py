#!/usr/bin/env python3
"""Memory benchmark: onetun's resident memory with many idle connections and with clients that stop reading.

    python3 scripts/bench_memory.py --onetun PATH [--connections N] [--waves N] [--stalled N]
                                    [--download-mib N] [--tests idle,stalled] [--json FILE] [--logs DIR]

Needs root, wireguard-go, wg, ip and prlimit. Python standard library only. The namespaces and the
wireguard-go peer are scripts/bench.py's (imported, which has no side effects): A and B joined by a veth
pair, wireguard-go in B (192.168.4.1/24) whose peer is onetun's key; onetun runs in A with the endpoint
10.77.0.2:51820 and one forward, 127.0.0.1:17100 -> 192.168.4.1:7100. In B one server process (epoll, all
connections) answers on 7100; every connection opens with a 100-byte request: `echo` gets a 100-byte reply
and the connection then stays open, idle, until the client closes it; `send N` gets N bytes of a fixed
pseudo-random stream (N = 0: without end) and then the server's FIN. In A one client process (asyncio, raw
non-blocking sockets) holds the connections; the controller (this process, outside the namespaces) drives
it over a pipe, one JSON line per command, and reads onetun's VmRSS from /proc/PID/status.

  idle     onetun's VmRSS at idle (tunnel up, one probe connection made and closed, no connection open),
           then, per wave: --connections idle connections opened through the forward (batches of --batch,
           each connection's 100-byte request answered before it counts, a failed one retried up to
           --retries times), VmRSS with all of them open, all closed by the client, VmRSS once the server
           and onetun have let go of them (bounded wait) and --settle seconds more. Targets per wave: every
           connection opened; VmRSS with them open <= 100 MiB; VmRSS after they close within 10 % of the
           idle baseline.
  stalled  a fresh onetun. A --download-mib download through the forward (SHA-256 checked), --downloads
           times alone (the baseline), then --stalled clients each ask for an endless download and never
           read; once their buffers have filled (VmRSS and the kernel's queues steady), the same download
           again --downloads times. Targets: the median download's rate with the stalled clients at least
           0.7 of the baseline's (the machine is shared and noisy); VmRSS growth from the stalled clients,
           divided by their number, under 4.5 MiB (onetun's design bound: a TCP receive buffer of at most
           4 MiB plus a pending chunk of 256 KiB a connection).

onetun gets --max-connections 20000 (or twice --connections), so its default limit is not what is measured,
capped to what its descriptor limit leaves room for. onetun raises its soft RLIMIT_NOFILE to the hard one;
when this process may raise the hard limit to 65536 (CAP_SYS_RESOURCE), onetun runs under
`prlimit --nofile=65536:65536`, else with the hard limit as it is (said at the start; 20000 on a container
that forbids raising it is enough for 10,000 connections). Every wait is bounded; every process is ours, stopped by its PID; namespaces
and processes are torn down in a finally block, also after Ctrl-C or SIGTERM. Traffic goes only to loopback
and to addresses in the namespaces made here. Prints everything, then exits 1 if a target failed (or a test
could not run), 0 otherwise.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (namespaces, wireguard-go, Teardown, Sampler; no side effects on import)
from bench import BenchError, Terminated, log, run, wait_until  # noqa: E402

SERVER_PORT = 7100
FWD_PORT = 17100
REQUEST_SIZE = 100
REPLY_SIZE = 100
NOFILE = 65536
PATTERN_SEED = 20261203
PATTERN_LEN = 16 << 20  # the stream `send` serves: this many pseudo-random bytes, repeated
SEND_CAP = 1 << 30      # `send 0` stops after this much (a stalled client never takes more than its buffers)
CHUNK = 256 << 10

IDLE_LIMIT_MIB = 100.0
RELEASE_TOLERANCE = 0.10
SPEED_RATIO = 0.7
PER_STALLED_LIMIT_MIB = 4.5


def raise_nofile(want=NOFILE):
    """Soft and hard RLIMIT_NOFILE up to `want` (root may raise the hard limit up to fs.nr_open)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(soft, want), max(hard, want)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pattern():
    return random.Random(PATTERN_SEED).randbytes(PATTERN_LEN)


def expected_sha256(pat, size):
    h = hashlib.sha256()
    left = size
    while left:
        n = min(left, len(pat))
        h.update(pat[:n])
        left -= n
    return h.hexdigest()


def request(text):
    return text.encode().ljust(REQUEST_SIZE, b" ")


# --------------------------------------------------------------------------------------------------
# The server, in B: `ip netns exec B python3 bench_memory.py _server HOST PORT`.
# --------------------------------------------------------------------------------------------------

class Conn:
    __slots__ = ("sock", "inbuf", "out", "pos", "left", "reply")

    def __init__(self, sock):
        self.sock = sock
        self.inbuf = b""
        self.out = None   # "echo" or "send" once the request is in
        self.pos = 0      # offset in the pattern (send)
        self.left = 0     # bytes still to send (send)
        self.reply = b""  # the echo reply not yet written


def helper_server(host, port):
    raise_nofile()
    pat = memoryview(pattern())
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(65535)
    lst.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lst, selectors.EVENT_READ, None)
    counts = Counter()

    def close(c):
        sel.unregister(c.sock)
        c.sock.close()
        counts["closed"] += 1

    def on_term(signum, frame):
        print(json.dumps(dict(counts)), flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)

    while True:
        for key, events in sel.select():
            if key.data is None:
                for _ in range(256):
                    try:
                        s, _ = lst.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        counts["accept error " + type(e).__name__] += 1
                        break
                    s.setblocking(False)
                    counts["accepted"] += 1
                    sel.register(s, selectors.EVENT_READ, Conn(s))
                continue
            c = key.data
            s = c.sock
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    close(c)
                    continue
                if data == b"":
                    close(c)
                    continue
                if data and c.out is None:
                    c.inbuf += data
                    if len(c.inbuf) >= REQUEST_SIZE:
                        words = c.inbuf[:REQUEST_SIZE].split()
                        if words[:1] == [b"echo"]:
                            c.out, c.reply = "echo", b"r" * REPLY_SIZE
                        elif words[:1] == [b"send"] and len(words) == 2 and words[1].isdigit():
                            c.out, c.left = "send", int(words[1]) or SEND_CAP
                        else:
                            counts["bad request"] += 1
                            close(c)
                            continue
                        counts[c.out] += 1
                        c.inbuf = b""
                        sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                        events |= selectors.EVENT_WRITE
            if events & selectors.EVENT_WRITE and c.out in ("echo", "send"):
                try:
                    if c.out == "echo":
                        n = s.send(c.reply)
                        c.reply = c.reply[n:]
                        done = not c.reply
                    else:
                        n = s.send(pat[c.pos:c.pos + min(CHUNK, c.left, PATTERN_LEN - c.pos)])
                        c.pos = (c.pos + n) % PATTERN_LEN
                        c.left -= n
                        done = c.left == 0
                        if done:
                            s.shutdown(socket.SHUT_WR)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    close(c)
                    continue
                if done:
                    # Then only the client's close is awaited.
                    c.out = "done"
                    sel.modify(s, selectors.EVENT_READ, c)


# --------------------------------------------------------------------------------------------------
# The client, in A: `ip netns exec A python3 bench_memory.py _client HOST PORT`; one JSON command a line
# on stdin, one JSON answer a line on stdout.
# --------------------------------------------------------------------------------------------------

def describe(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    text = str(e) or type(e).__name__
    return "%s: %s" % (type(e).__name__, text[:80])


async def connect_one(loop, host, port, req, want_reply, timeout, retries, errors):
    """One connection: connect, send the request, read the reply if wanted. Returns (socket or None,
    attempts made, the last error). Every try is bounded by `timeout` a step."""
    last = None
    for attempt in range(retries + 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (host, port)), timeout)
            await asyncio.wait_for(loop.sock_sendall(s, req), timeout)
            got = 0
            while want_reply and got < REPLY_SIZE:
                chunk = await asyncio.wait_for(loop.sock_recv(s, REPLY_SIZE - got), timeout)
                if not chunk:
                    raise ConnectionError("closed after %d of %d reply bytes" % (got, REPLY_SIZE))
                got += len(chunk)
            return s, attempt + 1, None
        except (OSError, asyncio.TimeoutError) as e:
            s.close()
            last = describe(e)
            errors[last] += 1
            await asyncio.sleep(0.2 * (attempt + 1))
    return None, retries + 1, last


async def open_many(loop, host, port, held, cmd):
    n, batch, retries, timeout = cmd["n"], cmd["batch"], cmd["retries"], cmd["timeout"]
    deadline = time.monotonic() + cmd["deadline"]
    req = request(cmd.get("request", "echo"))
    want_reply = cmd.get("reply", True)
    attempt_errors, final_errors = Counter(), Counter()
    connected = failed = retried = not_tried = 0
    start = time.monotonic()
    for first in range(0, n, batch):
        if time.monotonic() > deadline:
            not_tried = n - first
            break
        size = min(batch, n - first)
        results = await asyncio.gather(*[connect_one(loop, host, port, req, want_reply, timeout, retries,
                                                     attempt_errors) for _ in range(size)])
        for s, attempts, why in results:
            retried += attempts - 1
            if s is None:
                failed += 1
                final_errors[why] += 1
            else:
                connected += 1
                held.append(s)
    return {"connected": connected, "failed": failed, "not_tried": not_tried, "retries": retried,
            "seconds": time.monotonic() - start, "attempt_errors": dict(attempt_errors.most_common(8)),
            "errors": dict(final_errors.most_common(8))}


def check(held):
    """How many of `held` the other side has closed or reset (POLLRDHUP, POLLHUP, POLLERR), without
    reading."""
    p = select.poll()
    for s in held:
        p.register(s.fileno(), select.POLLIN | select.POLLRDHUP)
    gone = 0
    for _, ev in p.poll(0):
        if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            gone += 1
    return {"held": len(held), "closed_by_peer": gone}


def download(host, port, size, expected, timeout):
    """One `send size` download on a blocking socket; the time from connect to the last byte."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    result = {"bytes": 0, "seconds": None, "ok": False, "error": None}
    start = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        try:
            s.sendall(request("send %d" % size))
            while got < size:
                n = s.recv_into(view[got:], min(size - got, 1 << 20))
                if n == 0:
                    raise ConnectionError("closed after %d of %d bytes" % (got, size))
                got += n
                if time.monotonic() - start > 4 * timeout:
                    raise TimeoutError("gave up after %.0f s, %d of %d bytes" % (4 * timeout, got, size))
            result["seconds"] = time.monotonic() - start
        finally:
            s.close()
    except OSError as e:
        result["error"] = describe(e)
    result["bytes"] = got
    if got == size:
        result["ok"] = hashlib.sha256(buf).hexdigest() == expected
        if not result["ok"]:
            result["error"] = "SHA-256 mismatch"
    return result


def helper_client(host, port):
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    loop = asyncio.new_event_loop()
    pat = None
    sets = {"idle": [], "stalled": []}
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "open":
            out = loop.run_until_complete(open_many(loop, host, port, sets[cmd["set"]], cmd))
        elif op == "check":
            out = check(sets[cmd["set"]])
        elif op == "close":
            held = sets[cmd["set"]]
            for s in held:
                s.close()
            out = {"closed": len(held)}
            held.clear()
        elif op == "download":
            if pat is None:
                pat = pattern()
            out = download(host, port, cmd["size"], expected_sha256(pat, cmd["size"]), cmd["timeout"])
        elif op == "quit":
            return
        else:
            out = {"error": "unknown op " + op}
        print(json.dumps(out), flush=True)


class Client:
    """The client helper in A, driven one command at a time with a bounded wait for each answer."""

    def __init__(self, td, ns):
        self.errlog = os.path.join(td.workdir, "client.log")
        err = open(self.errlog, "w")
        try:
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                                          "_client", "127.0.0.1", str(FWD_PORT)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        finally:
            err.close()
        td.procs.append((self.proc, "client"))
        self.buf = b""

    def call(self, cmd, timeout):
        if self.proc.poll() is not None:
            raise BenchError("the client helper exited (%s): %s" % (self.proc.returncode, bench.tail(self.errlog, 5)))
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("the client helper did not answer %s within %.0f s" % (cmd["op"], timeout))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError("the client helper exited during %s: %s" % (cmd["op"], bench.tail(self.errlog, 5)))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


# --------------------------------------------------------------------------------------------------
# Measuring onetun.
# --------------------------------------------------------------------------------------------------

def status_kib(pid, field="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib(pid, samples=5, step=0.2):
    """The median of a few VmRSS samples, in MiB."""
    values = []
    for i in range(samples):
        v = status_kib(pid)
        if v is not None:
            values.append(v)
        if i + 1 < samples:
            time.sleep(step)
    if not values:
        raise BenchError("cannot read /proc/%d/status (onetun gone?)" % pid)
    return statistics.median(values) / 1024


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def tcp_sockets(pid):
    """(local port, remote port, state, tx_queue, rx_queue) of every TCP socket in the namespace of `pid`."""
    out = []
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                next(f)
                for line in f:
                    fl = line.split()
                    tx, rx = fl[4].split(":")
                    out.append((int(fl[1].rsplit(":", 1)[1], 16), int(fl[2].rsplit(":", 1)[1], 16), fl[3],
                                int(tx, 16), int(rx, 16)))
        except (OSError, StopIteration):
            pass
    return out


def established(pid, local_port):
    return sum(1 for lp, _, st, _, _ in tcp_sockets(pid) if lp == local_port and st == "01")


def kernel_queues(pid):
    """In A: bytes queued in the kernel on the forward's connections: onetun's send queues (local port
    FWD_PORT) and the clients' receive queues (remote port FWD_PORT)."""
    tx = rx = 0
    for lp, rp, st, t, r in tcp_sockets(pid):
        if st != "01":
            continue
        if lp == FWD_PORT:
            tx += t
        elif rp == FWD_PORT:
            rx += r
    return tx, rx


def log_problems(path, limit=6):
    """Lines of onetun's log (run at warn or quieter: every line is a problem), the first few distinct."""
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if l.strip()]
    except OSError:
        return 0, []
    seen, first = set(), []
    for l in lines:
        key = l[l.find(" ") + 1:][:120]
        if key not in seen:
            seen.add(key)
            first.append(l[:300])
            if len(first) >= limit:
                break
    return len(lines), first


class Onetun:
    def __init__(self, td, args, ns_a, pub_b, private, tag):
        self.logpath = os.path.join(td.workdir, "onetun-%s.log" % tag)
        env = dict(os.environ, ONETUN_PRIVATE_KEY=private)
        cmd = ["ip", "netns", "exec", ns_a] + (["prlimit", "--nofile=%d:%d" % (NOFILE, NOFILE)] if args.prlimit else []) + [
               args.onetun,
               "127.0.0.1:%d:%s:%d" % (FWD_PORT, bench.TUN_B, SERVER_PORT),
               "--endpoint-addr", "%s:%d" % (bench.VETH_B, bench.WG_PORT), "--endpoint-public-key", pub_b,
               "--source-peer-ip", bench.TUN_A, "--keep-alive", "10",
               "--max-connections", str(args.max_connections), "--log", args.onetun_log]
        log("  " + " ".join(cmd[4:]).replace(pub_b, "PEER-KEY"))
        self.proc = td.popen(cmd, "onetun", os.path.basename(self.logpath), env=env)
        self.pid = self.proc.pid
        try:
            self.started(args)
        except BaseException:
            self.stop()
            raise

    def started(self, args):
        ok = wait_until(lambda: self.proc.poll() is not None or bench.listening(self.pid, FWD_PORT), 10)
        if self.proc.poll() is not None:
            raise BenchError("onetun exited (%s) at start:\n%s" % (self.proc.returncode, bench.tail(self.logpath)))
        if not ok:
            raise BenchError("onetun is not listening on 127.0.0.1:%d after 10 s:\n%s"
                             % (FWD_PORT, bench.tail(self.logpath)))
        try:
            exe = os.path.realpath("/proc/%d/exe" % self.pid)
        except OSError:
            exe = "?"
        if exe != os.path.realpath(args.onetun):
            raise BenchError("PID %d is %s, not %s: ip netns exec or prlimit did not exec" % (self.pid, exe, args.onetun))

    def alive(self):
        if self.proc.poll() is not None:
            raise BenchError("onetun exited (%s):\n%s" % (self.proc.returncode, bench.tail(self.logpath)))

    def stop(self):
        bench.stop_process(self.proc, "onetun")


def probe(client, seconds=20):
    """One idle connection opened and closed, retried until the tunnel answers; None or why not."""
    deadline = time.monotonic() + seconds
    why = "no attempt"
    while time.monotonic() < deadline:
        r = client.call({"op": "open", "set": "idle", "n": 1, "batch": 1, "retries": 0, "timeout": 3,
                         "deadline": 5}, timeout=20)
        client.call({"op": "close", "set": "idle"}, timeout=10)
        if r["connected"] == 1:
            return None
        why = ", ".join(r["errors"]) or "no reply"
        time.sleep(0.5)
    return why


def start_part(td, args, ns_a, ns_b, if_b, pub_b, private, client, tag):
    ot = Onetun(td, args, ns_a, pub_b, private, tag)
    why = probe(client)
    if why:
        raise BenchError("no reply through onetun within 20 s (%s); WireGuard handshake: %s\nonetun's log:\n%s"
                         % (why, "done" if bench.latest_handshake(ns_b, if_b) else "none", bench.tail(ot.logpath)))
    return ot


# --------------------------------------------------------------------------------------------------
# The two tests.
# --------------------------------------------------------------------------------------------------

def wait_released(ot, server_pid, fds_base, seconds):
    """Until the server holds no connection on SERVER_PORT and onetun is back to its idle descriptor count;
    returns the seconds it took, or None if that did not happen within `seconds`."""
    start = time.monotonic()
    ok = wait_until(lambda: established(server_pid, SERVER_PORT) == 0 and (fd_count(ot.pid) or 0) <= fds_base,
                    seconds, 0.25)
    return time.monotonic() - start if ok else None


def test_idle(td, args, ctx, client, server_pid):
    res = {"connections": args.connections, "waves": [], "problems": []}
    ot = start_part(td, args, *ctx, client, "idle")
    res["onetun_log"] = ot.logpath
    try:
        time.sleep(args.settle)
        base = rss_mib(ot.pid)
        fds_base = fd_count(ot.pid)
        res["baseline_rss_mib"] = base
        res["baseline_fds"] = fds_base
        log("  idle baseline: VmRSS %.1f MiB, %d descriptors" % (base, fds_base))
        for wave in range(1, args.waves + 1):
            ot.alive()
            w = {"wave": wave}
            res["waves"].append(w)
            log("  wave %d: opening %d connections" % (wave, args.connections))
            deadline = max(60.0, args.connections / 40.0)
            r = client.call({"op": "open", "set": "idle", "n": args.connections, "batch": args.batch,
                             "retries": args.retries, "timeout": 10, "deadline": deadline},
                            timeout=deadline + 4 * 10 * (args.retries + 1) + 30)
            w.update(connected=r["connected"], failed=r["failed"], not_tried=r["not_tried"], retries=r["retries"],
                     open_s=r["seconds"], errors=r["errors"], attempt_errors=r["attempt_errors"])
            log("    %d connected, %d failed, %d not tried, %d retries, %.1f s%s"
                % (r["connected"], r["failed"], r["not_tried"], r["retries"], r["seconds"],
                   ("; errors: " + json.dumps(r["attempt_errors"])) if r["attempt_errors"] else ""))
            time.sleep(2)
            ot.alive()
            w["rss_open_mib"] = rss_mib(ot.pid)
            w["fds_open"] = fd_count(ot.pid)
            w["server_open"] = established(server_pid, SERVER_PORT)
            w["closed_by_peer"] = client.call({"op": "check", "set": "idle"}, timeout=30)["closed_by_peer"]
            w["hwm_mib"] = (status_kib(ot.pid, "VmHWM") or 0) / 1024
            log("    open: VmRSS %.1f MiB, onetun %d descriptors, server holds %d, %d closed by the other side"
                % (w["rss_open_mib"], w["fds_open"], w["server_open"], w["closed_by_peer"]))
            client.call({"op": "close", "set": "idle"}, timeout=60)
            w["release_s"] = wait_released(ot, server_pid, fds_base, args.release_wait)
            if w["release_s"] is None:
                res["problems"].append("wave %d: %d descriptors in onetun and %d connections at the server %d s "
                                       "after the clients closed" % (wave, fd_count(ot.pid) or -1,
                                                                     established(server_pid, SERVER_PORT),
                                                                     args.release_wait))
            time.sleep(args.settle)
            ot.alive()
            w["rss_closed_mib"] = rss_mib(ot.pid)
            w["fds_closed"] = fd_count(ot.pid)
            w["pass_connected"] = w["connected"] == args.connections
            w["pass_open"] = w["rss_open_mib"] <= IDLE_LIMIT_MIB
            w["pass_closed"] = w["rss_closed_mib"] <= base * (1 + RELEASE_TOLERANCE)
            log("    closed: VmRSS %.1f MiB, onetun %d descriptors (released in %s)"
                % (w["rss_closed_mib"], w["fds_closed"],
                   "%.1f s" % w["release_s"] if w["release_s"] is not None else "not within %d s" % args.release_wait))
        res["hwm_mib"] = (status_kib(ot.pid, "VmHWM") or 0) / 1024
    finally:
        ot.stop()
        res["log_lines"], res["log_first"] = log_problems(ot.logpath)
    return res


def downloads(client, ot, args, label, count=None):
    size = args.download_mib << 20
    out = []
    for i in range(count or args.downloads):
        ot.alive()
        r = client.call({"op": "download", "size": size, "timeout": 30}, timeout=150)
        out.append(r)
        log("    %s download %d: %s" % (label, i + 1, "%.2f s" % r["seconds"] if r["ok"] else r["error"]))
    return out


def median_seconds(runs):
    ok = [r["seconds"] for r in runs if r["ok"]]
    return statistics.median(ok) if ok else None


def server_queue(server_pid):
    """Bytes the server has sent and not had acknowledged (its send queues) on SERVER_PORT: what onetun's
    closed windows hold back."""
    return sum(t for lp, _, st, t, _ in tcp_sockets(server_pid) if lp == SERVER_PORT and st == "01")


def test_stalled(td, args, ctx, client, server_pid):
    res = {"stalled": args.stalled, "download_mib": args.download_mib, "problems": []}
    ot = start_part(td, args, *ctx, client, "stalled")
    res["onetun_log"] = ot.logpath
    sampler = bench.Sampler(ot.pid)
    sampler.start()
    try:
        time.sleep(args.settle)
        res["rss_idle_mib"] = rss_mib(ot.pid)
        log("  idle: VmRSS %.1f MiB; %d MiB downloads alone (one to warm up, not counted)"
            % (res["rss_idle_mib"], args.download_mib))
        res["warm_up"] = downloads(client, ot, args, "warm-up", 1)
        res["alone"] = downloads(client, ot, args, "alone")
        time.sleep(1)
        res["rss_before_mib"] = rss_mib(ot.pid)
        log("  before the stalled clients: VmRSS %.1f MiB; opening %d that never read"
            % (res["rss_before_mib"], args.stalled))
        sampler.start_window()
        r = client.call({"op": "open", "set": "stalled", "n": args.stalled, "batch": args.stalled, "retries": 2,
                         "timeout": 10, "deadline": 60, "request": "send 0", "reply": False}, timeout=200)
        res["stalled_connected"] = r["connected"]
        if r["errors"]:
            res["problems"].append("stalled clients: %s" % json.dumps(r["errors"]))
        # Filled: at least 3 s in, and neither VmRSS nor the kernel's queues moved by 256 KiB over the
        # last 2 s; 30 s at most.
        start = time.monotonic()
        history = []
        while True:
            time.sleep(0.5)
            ot.alive()
            history.append((status_kib(ot.pid) or 0, kernel_queues(ot.pid)))
            t = time.monotonic() - start
            if t >= 3 and len(history) >= 5:
                old, new = history[-5], history[-1]
                if abs(new[0] - old[0]) < 256 and all(abs(a - b) < (256 << 10) for a, b in zip(new[1], old[1])):
                    break
            if t >= 30:
                res["problems"].append("the stalled clients' buffers were still filling after 30 s")
                break
        res["fill_s"] = time.monotonic() - start
        res["rss_during_mib"] = rss_mib(ot.pid)
        tx, rx = kernel_queues(ot.pid)
        n = max(r["connected"], 1)
        res["kernel_tx_per_client_mib"] = tx / n / (1 << 20)
        res["kernel_rx_per_client_mib"] = rx / n / (1 << 20)
        res["server_queue_per_client_mib"] = server_queue(server_pid) / n / (1 << 20)
        log("  stalled clients filled in %.1f s: VmRSS %.1f MiB; per stalled client the kernel holds %.2f MiB "
            "in onetun's send queue and %.2f MiB in the client's receive queue"
            % (res["fill_s"], res["rss_during_mib"], res["kernel_tx_per_client_mib"], res["kernel_rx_per_client_mib"]))
        res["with_stalled"] = downloads(client, ot, args, "with stalled clients")
        res["rss_after_downloads_mib"] = rss_mib(ot.pid)
        c = client.call({"op": "check", "set": "stalled"}, timeout=30)
        res["stalled_closed_by_peer"] = c["closed_by_peer"]
        sampler.end_window("stalled")
        res["peak_rss_stalled_mib"] = sampler.window_peak["stalled"] / 1024
        client.call({"op": "close", "set": "stalled"}, timeout=30)
        if wait_until(lambda: kernel_queues(ot.pid) == (0, 0) and established(ot.pid, FWD_PORT) == 0, 20, 0.25):
            time.sleep(args.settle)
        else:
            res["problems"].append("onetun still held stalled connections 20 s after their clients closed")
        res["rss_after_mib"] = rss_mib(ot.pid)
        base, contended = median_seconds(res["alone"]), median_seconds(res["with_stalled"])
        mib = args.download_mib
        res["alone_s"], res["with_stalled_s"] = base, contended
        res["alone_mbps"] = mib * 8.388608 / base if base else None
        res["with_stalled_mbps"] = mib * 8.388608 / contended if contended else None
        res["ratio"] = base / contended if base and contended else None
        res["per_client_mib"] = (res["rss_during_mib"] - res["rss_before_mib"]) / n
        res["pass_speed"] = bool(res["ratio"] and res["ratio"] >= SPEED_RATIO and
                                 all(x["ok"] for x in res["alone"] + res["with_stalled"]))
        res["pass_memory"] = res["per_client_mib"] < PER_STALLED_LIMIT_MIB and r["connected"] == args.stalled
    finally:
        sampler.finish()
        ot.stop()
        res["log_lines"], res["log_first"] = log_problems(ot.logpath)
    return res


# --------------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------------

def verdict(ok):
    return "PASS" if ok else "FAIL"


def print_idle(res, args):
    print()
    print("1. Idle connections: %d per wave through one forward (100-byte request, 100-byte reply, then idle);"
          % res["connections"])
    print("   VmRSS in MiB (median of 5 samples); idle baseline %.1f MiB, %d descriptors."
          % (res["baseline_rss_mib"], res["baseline_fds"]))
    print("   Targets: all connected; VmRSS open <= %.0f MiB; VmRSS closed <= baseline + %d %% (%.1f MiB)."
          % (IDLE_LIMIT_MIB, RELEASE_TOLERANCE * 100, res["baseline_rss_mib"] * (1 + RELEASE_TOLERANCE)))
    print("   KiB/conn: VmRSS growth over the wave's start (the previous wave's RSS closed) per connection;")
    print("   released s: until the server held none and onetun was back to its idle descriptors.")
    head = ("wave", "connected", "failed", "retries", "open s", "RSS open", "KiB/conn", "fds open", "srv open",
            "peer-closed", "released s", "RSS closed", "fds closed", "connected", "open", "closed")
    print("   " + "".join("%12s" % h for h in head))
    before = res["baseline_rss_mib"]
    for w in res["waves"]:
        # Per connection: the growth over the RSS the wave started from (the last wave's after-close figure).
        per = (w["rss_open_mib"] - before) * 1024 / w["connected"] if w["connected"] else None
        before = w.get("rss_closed_mib", before)
        cells = [w["wave"], w["connected"], w["failed"] + w["not_tried"], w["retries"], "%.1f" % w["open_s"],
                 "%.1f" % w["rss_open_mib"], "%.1f" % per if per is not None else "-", w["fds_open"],
                 w["server_open"], w["closed_by_peer"],
                 "%.1f" % w["release_s"] if w["release_s"] is not None else ">%d" % args.release_wait,
                 "%.1f" % w.get("rss_closed_mib", float("nan")), w.get("fds_closed", "-"),
                 verdict(w.get("pass_connected")), verdict(w.get("pass_open")), verdict(w.get("pass_closed"))]
        print("   " + "".join("%12s" % c for c in cells))
    for w in res["waves"]:
        if w["errors"] or w["attempt_errors"]:
            print("   wave %d errors: failed connections %s; all attempts %s"
                  % (w["wave"], json.dumps(w["errors"]), json.dumps(w["attempt_errors"])))
    print("   onetun's peak RSS (VmHWM): %.1f MiB" % res.get("hwm_mib", 0))


def print_stalled(res):
    print()
    print("2. Stalled clients: %d clients each asking for an endless download and never reading; a %d MiB"
          % (res["stalled"], res["download_mib"]))
    print("   download (SHA-256 checked) through the same forward, alone and with them (median of %d each)."
          % len(res["alone"]))

    def times(runs):
        return ", ".join("%.2f" % r["seconds"] if r["ok"] else "failed (%s)" % r["error"] for r in runs)
    print("   alone:                %s s -> median %s s, %s Mbit/s"
          % (times(res["alone"]), "%.2f" % res["alone_s"] if res["alone_s"] else "-",
             "%.0f" % res["alone_mbps"] if res["alone_mbps"] else "-"))
    print("   with stalled clients: %s s -> median %s s, %s Mbit/s"
          % (times(res["with_stalled"]), "%.2f" % res["with_stalled_s"] if res["with_stalled_s"] else "-",
             "%.0f" % res["with_stalled_mbps"] if res["with_stalled_mbps"] else "-"))
    print("   rate with / alone: %s (target >= %.1f): %s"
          % ("%.2f" % res["ratio"] if res["ratio"] else "-", SPEED_RATIO, verdict(res["pass_speed"])))
    print("   VmRSS (MiB): idle %.1f, before the stalled clients (after the downloads alone) %.1f, stalled and"
          % (res["rss_idle_mib"], res["rss_before_mib"]))
    print("   filled (%.1f s in) %.1f, after the downloads beside them %.1f, peak while stalled %.1f, after they"
          % (res["fill_s"], res["rss_during_mib"], res["rss_after_downloads_mib"], res["peak_rss_stalled_mib"]))
    print("   closed %.1f. %d of %d stalled clients connected, %d closed by the other side meanwhile."
          % (res["rss_after_mib"], res["stalled_connected"], res["stalled"], res["stalled_closed_by_peer"]))
    print("   Kernel queues per stalled client: onetun's send queue %.2f MiB, the client's receive queue %.2f MiB,"
          % (res["kernel_tx_per_client_mib"], res["kernel_rx_per_client_mib"]))
    print("   the server's send queue (written, not yet acknowledged by onetun) %.2f MiB."
          % res["server_queue_per_client_mib"])
    print("   VmRSS growth per stalled client: (%.1f - %.1f) / %d = %.2f MiB (target < %.1f MiB: 4 MiB receive"
          % (res["rss_during_mib"], res["rss_before_mib"], max(res["stalled_connected"], 1), res["per_client_mib"],
             PER_STALLED_LIMIT_MIB))
    print("   buffer + 256 KiB pending chunk): %s" % verdict(res["pass_memory"]))


def print_log(name, res):
    if res.get("log_lines"):
        print("   onetun's log (%s, --log as given): %d lines; the first distinct ones:" % (name, res["log_lines"]))
        for l in res["log_first"]:
            print("     " + l)
    else:
        print("   onetun's log (%s): empty" % name)
    for p in res.get("problems", []):
        print("   problem: " + p)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_server":
        helper_server(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        helper_client(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description="onetun's memory with many idle connections and with stalled clients.")
    ap.add_argument("--onetun", required=True, help="the onetun binary")
    ap.add_argument("--connections", type=int, default=10000, help="idle connections per wave (default 10000)")
    ap.add_argument("--waves", type=int, default=5, help="waves of idle connections (default 5)")
    ap.add_argument("--batch", type=int, default=200, help="connections opened at once (default 200)")
    ap.add_argument("--retries", type=int, default=2, help="retries of a failed connection (default 2)")
    ap.add_argument("--stalled", type=int, default=20, help="clients that never read (default 20)")
    ap.add_argument("--download-mib", type=int, default=16, help="the measured download (default 16 MiB)")
    ap.add_argument("--downloads", type=int, default=5,
                    help="downloads alone and with the stalled clients, each (default 5; a warm-up one more)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait before an idle or after-close reading (default 3)")
    ap.add_argument("--release-wait", type=int, default=60,
                    help="seconds the connections may take to go after the clients close (default 60)")
    ap.add_argument("--tests", default="idle,stalled", help="comma-separated: idle,stalled")
    ap.add_argument("--onetun-log", default="warn", help="onetun's --log level (default warn)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--logs", help="copy every process's log (onetun, wireguard-go, server, client) to this directory")
    args = ap.parse_args()
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    for t in tests:
        if t not in ("idle", "stalled"):
            ap.error("unknown test %r; tests are idle,stalled" % t)
    if not 1 <= args.connections <= 30000:
        ap.error("--connections must be between 1 and 30000")
    if not 1 <= args.waves <= 20:
        ap.error("--waves must be between 1 and 20")
    if not 1 <= args.stalled <= 200 or not 1 <= args.download_mib <= 1024 or not 1 <= args.downloads <= 10:
        ap.error("--stalled 1..200, --download-mib 1..1024, --downloads 1..10")
    if not 1 <= args.batch <= 2000 or not 0 <= args.retries <= 5:
        ap.error("--batch 1..2000, --retries 0..5")
    args.onetun = os.path.abspath(args.onetun)
    if not (os.path.isfile(args.onetun) and os.access(args.onetun, os.X_OK)):
        sys.exit("%s is missing or not executable (swift build -c release)" % args.onetun)
    if os.geteuid() != 0:
        sys.exit("bench_memory.py needs root (network namespaces)")
    missing = [t for t in ("ip", "wireguard-go", "wg") if not shutil.which(t)]
    if missing:
        sys.exit("missing tools: " + " ".join(missing))

    def on_term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hard_before = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = raise_nofile()[1]
    # onetun raises its soft limit to the hard one. Below NOFILE, raise the hard one too (prlimit around
    # onetun) when we may (CAP_SYS_RESOURCE); a container may not let even root.
    args.prlimit = nofile >= NOFILE and shutil.which("prlimit") is not None
    if args.prlimit:
        log("RLIMIT_NOFILE: hard limit %d here; onetun runs under prlimit --nofile=%d:%d" % (hard_before, NOFILE, NOFILE))
    else:
        log("RLIMIT_NOFILE: hard limit %d, which cannot be raised here (no CAP_SYS_RESOURCE); onetun and the "
            "helpers get %d descriptors" % (hard_before, nofile))
    need = args.connections + args.stalled + 200
    if nofile < need:
        sys.exit("%d connections need about %d descriptors; the hard limit is %d" % (args.connections, need, nofile))
    # At least 20000 (or twice the connections), so onetun's default limit is not what is measured; but within
    # what its descriptors leave room for (it keeps 64 and one per listener), or it warns about it.
    args.max_connections = min(max(20000, 2 * args.connections), nofile - 100)

    workdir = tempfile.mkdtemp(prefix="onetun-bench-mem-")
    td = bench.Teardown(workdir)
    results = {"settings": {"onetun": args.onetun, "connections": args.connections, "waves": args.waves,
                            "stalled": args.stalled, "download_mib": args.download_mib, "downloads": args.downloads,
                            "cpus": os.cpu_count(), "nofile": nofile, "max_connections": args.max_connections},
               "errors": {}}
    try:
        try:
            ns_a, ns_b = bench.make_pair(td, "mem")
            for ns, keys in ((ns_a, ("net.core.somaxconn=65535",)),
                             (ns_b, ("net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535"))):
                for k in keys:
                    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", k], check=False)
            _, private, public = bench.genkey(workdir, "onetun")
            if_b, _, pub_b = bench.wg_peer_b(td, ns_b, "mem", public)
            server = bench.start_server(td, ns_b, [sys.executable, os.path.abspath(__file__), "_server", bench.TUN_B,
                                                   str(SERVER_PORT)], "server", SERVER_PORT, "server.log")
            client = Client(td, ns_a)
            ctx = (ns_a, ns_b, if_b, pub_b, private)
        except BenchError as e:
            results["errors"]["setup"] = str(e)
            log("  setup failed: " + str(e))
            tests = []
        for t in tests:
            log("== %s" % t)
            try:
                if t == "idle":
                    results["idle"] = test_idle(td, args, ctx, client, server.pid)
                else:
                    results["stalled"] = test_stalled(td, args, ctx, client, server.pid)
            except BenchError as e:
                results["errors"][t] = str(e)
                log("  %s failed: %s" % (t, e))
    except (KeyboardInterrupt, Terminated):
        log("interrupted; tearing down")
        return 130
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            td.close()
        finally:
            signal.signal(signal.SIGINT, old)
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for f in os.listdir(workdir):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(workdir, f), args.logs)
        shutil.rmtree(workdir, ignore_errors=True)

    verdicts = []
    if "idle" in results:
        res = results["idle"]
        print_idle(res, args)
        print_log("idle", res)
        waves = res["waves"]
        complete = len(waves) == args.waves and all("rss_closed_mib" in w for w in waves)
        verdicts.append(("idle: all %d connections opened, every wave" % args.connections,
                         complete and all(w["pass_connected"] for w in waves)))
        verdicts.append(("idle: VmRSS with them open <= %.0f MiB, every wave (max %.1f)"
                         % (IDLE_LIMIT_MIB, max([w["rss_open_mib"] for w in waves if "rss_open_mib" in w] or [0])),
                         complete and all(w["pass_open"] for w in waves)))
        verdicts.append(("idle: VmRSS after close within %d %% of the baseline %.1f, every wave (max %.1f)"
                         % (RELEASE_TOLERANCE * 100, res["baseline_rss_mib"],
                            max([w["rss_closed_mib"] for w in waves if "rss_closed_mib" in w] or [0])),
                         complete and all(w["pass_closed"] for w in waves)))
    if "stalled" in results:
        res = results["stalled"]
        print_stalled(res)
        print_log("stalled", res)
        verdicts.append(("stalled: %d MiB download at >= %.1f of its rate alone (%s)"
                         % (args.download_mib, SPEED_RATIO, "%.2f" % res["ratio"] if res["ratio"] else "-"),
                         res["pass_speed"]))
        verdicts.append(("stalled: VmRSS growth per stalled client < %.1f MiB (%.2f)"
                         % (PER_STALLED_LIMIT_MIB, res["per_client_mib"]), res["pass_memory"]))
    for name, why in results["errors"].items():
        verdicts.append(("%s: could not run: %s" % (name, why.splitlines()[0]), False))
    print()
    print("Summary (%s):" % args.onetun)
    for name, ok in verdicts:
        print("  %s  %s" % (verdict(ok), name))
    results["verdicts"] = [{"target": n, "pass": ok} for n, ok in verdicts]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0 if verdicts and all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
