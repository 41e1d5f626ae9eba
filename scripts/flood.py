#!/usr/bin/env python3
"""Flood benchmark: what datagrams from strangers (and forged ones from the peer's address) at onetun's
endpoint socket cost a working tunnel.

    python3 scripts/flood.py [--onetun PATH] [--against onetun|wireguard-go] [--seconds N]
                             [--rate DATAGRAMS_PER_S] [--procs N] [--kinds garbage,init-1port,...]
                             [--onetun-log LEVEL] [--json FILE] [--logs DIR]

Needs root, iperf3, wireguard-go, wg and ip. Python standard library only; the namespaces, the
wireguard-go peer, the servers and the measurements are bench.py's (imported). onetun runs in namespace A,
the peer (wireguard-go, 10.77.0.2:51820) in B, as in bench.py's onetun row. onetun's endpoint socket is
not connected: it receives from anyone, and its port is the peer's view of onetun's endpoint (`wg show
IF endpoints`). With `--against wireguard-go` the reference faces the same floods instead: wireguard-go
in A (its socket at 10.77.0.1:51820) and an iperf3 upload over the kernel's TCP through its interface, the
rest the same (no exit count: that is onetun's log line).

Every row runs one iperf3 upload (1 stream, --seconds) through onetun's TCP forward while a flood process
in B sends datagrams at that socket through a raw socket (IP_HDRINCL), which also lets it forge the peer's
own address, 10.77.0.2:51820. The kinds:

  baseline          no flood; run at the start, in the middle and at the end, the mean is the reference
  sink              the garbage flood at a UDP socket in A that nobody reads: what the flood costs the
                    machine (the sender, the veth, the kernel) without onetun doing anything
  garbage           random bytes, random sizes (1..1472), from random source ports
  init-1port        148-byte type-1 messages, random content (mac1 fails), from one source port
  init-ports        the same from random source ports
  unknown-idx       transport messages naming random receiver indices, from random source ports
  unknown-idx-peer  the same from the peer's address
  real-idx          transport messages naming onetun's real receiver index (captured), random counters and
                    content, random sizes (32..1452): each costs onetun a failed authentication
  real-idx-peer     the same from the peer's address
  replay            real transport datagrams from the peer (captured during a 1 s download), sent again
                    verbatim: refused by the replay window before decryption
  replay-peer       the same from the peer's address

The capture is an AF_PACKET socket on B's veth, taken just before each row that needs it, so the index is
the session's current one. Per row: the datagrams per second the flood achieved, onetun's CPU % with the
flood alone (1.5 s before the upload starts) and that CPU time per flood datagram it read, the upload's
Mbit/s and its ratio to the baseline, onetun's CPU % over the upload (utime + stime), its VmRSS before the
flood, the peak during it and after it, the UDP receive-buffer overflows in A during the row (onetun's
socket; for `sink`, the sink's), and whether onetun still runs and an echo still crosses the tunnel. New
lines in onetun's log (info and above: a roaming peer, a lost session) are shown. At the end onetun is
stopped and its own count of refused datagrams (its last line) is set beside the flood datagrams that
reached its socket (sent, less the receive-buffer overflows, which include some of the peer's own).

Every wait is bounded; every process is ours, stopped by its PID; namespaces and processes are torn down in
a finally block, also after Ctrl-C or SIGTERM. Traffic goes only to addresses in the namespaces made here.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (side-effect free: its main() runs only as a script)
from bench import BenchError, Terminated, log, run  # noqa: E402

SINK_PORT = 40999
ONE_PORT = 40000  # init-1port's source port
MAX_UDP_PAYLOAD = 1472  # the veth's MTU 1500: no fragments
CAPTURE_LIMIT = 2048
IDLE_SECONDS = 1.5  # per row, the flood without the upload: onetun's CPU for the flood alone
# (name, payload, source, title): payload as made by make_pool; source "peer" (10.77.0.2:51820, forged),
# "one" (10.77.0.2:ONE_PORT) or "many" (10.77.0.2, a random port per datagram).
KINDS = [
    ("sink", "garbage", "many", "garbage at an unread socket (control)"),
    ("garbage", "garbage", "many", "garbage, random sizes"),
    ("init-1port", "init", "one", "initiations, 1 source port"),
    ("init-ports", "init", "many", "initiations, random ports"),
    ("unknown-idx", "unknown", "many", "transport, unknown index"),
    ("unknown-idx-peer", "unknown", "peer", "transport, unknown idx, peer addr"),
    ("real-idx", "realidx", "many", "transport, real index"),
    ("real-idx-peer", "realidx", "peer", "transport, real index, peer addr"),
    ("replay", "replay", "many", "replays"),
    ("replay-peer", "replay", "peer", "replays, peer addr"),
]
KIND_NAMES = [k[0] for k in KINDS]
# The order of the rows: baselines at the start, middle and end, the floods between.
ORDER = ["baseline", "sink", "garbage", "init-1port", "init-ports", "unknown-idx", "unknown-idx-peer",
         "baseline", "real-idx", "real-idx-peer", "replay", "replay-peer", "baseline"]


# --------------------------------------------------------------------------------------------------
# Helpers that run inside a namespace: `ip netns exec NS python3 flood.py _flood|_capture|_sink ...`.
# --------------------------------------------------------------------------------------------------

def ip_udp(src, sport, dst, dport, payload):
    """An IPv4 + UDP datagram for a raw IPPROTO_RAW socket: the kernel fills in the IP checksum and ID;
    the UDP checksum is left 0 (none, allowed over IPv4)."""
    length = 8 + len(payload)
    return (struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                        socket.inet_aton(src), socket.inet_aton(dst))
            + struct.pack("!HHHH", sport, dport, length, 0) + payload)


def read_capture(path):
    out = []
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i + 2 <= len(data):
        n = struct.unpack_from("!H", data, i)[0]
        out.append(data[i + 2:i + 2 + n])
        i += 2 + n
    return out


def make_pool(payload, source, peer_port, capture, size, rng):
    """`size` distinct payloads with their sources; returns (payloads, ports)."""
    randbytes = rng.randbytes
    payloads = []
    if payload in ("realidx", "replay") and not capture:
        raise SystemExit("no captured datagrams")
    index = capture[-1][4:8] if capture else None
    for i in range(size):
        if payload == "garbage":
            payloads.append(randbytes(rng.randint(1, MAX_UDP_PAYLOAD)))
        elif payload == "init":
            payloads.append(b"\x01\x00\x00\x00" + randbytes(144))
        elif payload == "unknown":
            n = rng.randint(32, 1452)
            payloads.append(b"\x04\x00\x00\x00" + randbytes(4) + struct.pack("<Q", rng.getrandbits(62))
                            + randbytes(n - 16))
        elif payload == "realidx":
            n = rng.randint(32, 1452)
            payloads.append(b"\x04\x00\x00\x00" + index + struct.pack("<Q", rng.getrandbits(62)) + randbytes(n - 16))
        elif payload == "replay":
            payloads.append(capture[i % len(capture)])
        else:
            raise SystemExit("unknown payload " + payload)
    if source == "peer":
        ports = [peer_port] * size
    elif source == "one":
        ports = [ONE_PORT] * size
    else:
        ports = [rng.randint(1024, 65535) for _ in range(size)]
    return payloads, ports


def helper_flood(spec):
    """Sends prebuilt datagrams round-robin at `rate` a second (0: as fast as it can) for `seconds`;
    prints JSON with what it sent."""
    rng = random.Random(spec["seed"])
    capture = read_capture(spec["capture"]) if spec.get("capture") else []
    payloads, ports = make_pool(spec["payload"], spec["source"], spec["peer_port"], capture, 4096, rng)
    pool = [ip_udp(spec["src"], p, spec["dst"], spec["dport"], d) for d, p in zip(payloads, ports)]
    mask = len(pool) - 1
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    send = s.sendto
    dst = (spec["dst"], 0)
    rate = spec["rate"]
    sent = errors = i = 0
    start = time.monotonic()
    end = start + spec["seconds"]
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        k = 256
        if rate:
            k = min(k, int((now - start) * rate) - sent - errors)
            if k <= 0:
                time.sleep(0.0005)
                continue
        for _ in range(k):
            try:
                send(pool[i & mask], dst)
                sent += 1
            except OSError:  # ENOBUFS: the queue is full; counted, not retried
                errors += 1
            i += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "errors": errors, "seconds": elapsed,
                      "mean_size": sum(map(len, payloads)) / len(payloads)}), flush=True)


def helper_capture(ifname, src, sport, dst, dport, out, seconds, limit):
    """WireGuard transport datagrams src:sport -> dst:dport seen on `ifname` (AF_PACKET), written to `out`
    as 2-byte lengths and payloads; stops after `limit` of them or `seconds`."""
    # ETH_P_ALL: a socket bound to ETH_P_IP alone sees only incoming packets, not what B sends.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((ifname, 0x0003))
    want_src, want_dst = socket.inet_aton(src), socket.inet_aton(dst)
    got = []
    deadline = time.monotonic() + seconds
    print("ready", flush=True)
    while len(got) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            pkt, addr = s.recvfrom(65536)
        except socket.timeout:
            break
        if addr[1] != 0x0800 or len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != socket.IPPROTO_UDP:
            continue
        if pkt[12:16] != want_src or pkt[16:20] != want_dst:
            continue
        ihl = (pkt[0] & 15) * 4
        sp, dp, length = struct.unpack_from("!HHH", pkt, ihl)
        payload = pkt[ihl + 8:ihl + length]
        if sp == sport and dp == dport and len(payload) >= 32 and payload[:4] == b"\x04\x00\x00\x00":
            got.append(payload)
    with open(out, "wb") as f:
        for p in got:
            f.write(struct.pack("!H", len(p)) + p)
    print(json.dumps({"captured": len(got)}), flush=True)


def helper_sink(host, port, seconds):
    """A UDP socket that is never read, for `seconds`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    print("ready", flush=True)
    time.sleep(seconds)


def run_helper(argv):
    kind = argv[0]
    if kind == "_flood":
        helper_flood(json.loads(argv[1]))
    elif kind == "_capture":
        helper_capture(argv[1], argv[2], int(argv[3]), argv[4], int(argv[5]), argv[6], float(argv[7]), int(argv[8]))
    elif kind == "_sink":
        helper_sink(argv[1], int(argv[2]), float(argv[3]))
    else:
        sys.exit("unknown helper " + kind)


# --------------------------------------------------------------------------------------------------
# The setup and the rows.
# --------------------------------------------------------------------------------------------------

def proc_figures(pid):
    """(VmRSS KiB, utime + stime seconds) of `pid`, or (None, None) when it has gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / bench.CLK_TCK
    except (OSError, StopIteration, ValueError, IndexError):
        return None, None


def wakeups(pid):
    """Voluntary context switches of `pid`'s threads so far: how often they slept waiting for work (one
    thread for onetun; wireguard-go's goroutines run on several)."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))
    except (OSError, StopIteration, ValueError):
        return None
    return total


def rcvbuf_errors(ns):
    return bench.drop_counters(ns).get("udp RcvbufErrors", 0)


def wait_ready(proc, path, seconds):
    """Whether the helper `proc` said "ready" on its first line within `seconds` (and still runs)."""
    def said():
        with open(path) as f:
            return f.readline().startswith("ready")
    return bench.wait_until(lambda: proc.poll() is not None or said(), seconds) and proc.poll() is None


def last_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


class Setup:
    """onetun in A, wireguard-go in B, the servers in B; everything registered with `td`."""

    name = "onetun"
    upload = ("127.0.0.1", bench.FWD_IPERF_PORT)
    echo = ("127.0.0.1", bench.FWD_ECHO_PORT)

    def __init__(self, td, onetun, onetun_log):
        self.td = td
        self.ns_a, self.ns_b = bench.make_pair(td, "flood")
        self.veth_b = "obfvb%d" % os.getpid()
        _, private, public = bench.genkey(td.workdir, "onetun")
        self.if_b, _, pub_b = bench.wg_peer_b(td, self.ns_b, "flood", public)
        self.restart_iperf = bench.servers(td, self.ns_b, "0.0.0.0")
        env = dict(os.environ, ONETUN_PRIVATE_KEY=private)
        cmd = ["ip", "netns", "exec", self.ns_a, onetun,
               "127.0.0.1:%d:%s:%d" % (bench.FWD_IPERF_PORT, bench.TUN_B, bench.IPERF_PORT),
               "127.0.0.1:%d:%s:%d" % (bench.FWD_ECHO_PORT, bench.TUN_B, bench.ECHO_PORT),
               "--endpoint-addr", "%s:%d" % (bench.VETH_B, bench.WG_PORT), "--endpoint-public-key", pub_b,
               "--source-peer-ip", bench.TUN_A, "--keep-alive", "10", "--log", onetun_log]
        log("  " + " ".join(cmd[4:]))
        self.logpath = os.path.join(td.workdir, "onetun.log")
        self.proc = td.popen(cmd, "onetun", "onetun.log", env=env)
        p = self.proc
        ok = bench.wait_until(lambda: p.poll() is not None or (bench.listening(p.pid, bench.FWD_IPERF_PORT) and
                                                               bench.listening(p.pid, bench.FWD_ECHO_PORT)), 10)
        if p.poll() is not None or not ok:
            raise BenchError("onetun did not start:\n" + bench.tail(self.logpath))
        why = bench.probe_echo(self.ns_a, "127.0.0.1", bench.FWD_ECHO_PORT, 15)
        if why:
            raise BenchError("no echo through onetun within 15 s (%s):\n%s" % (why, bench.tail(self.logpath)))
        out = run(["ip", "netns", "exec", self.ns_b, "wg", "show", self.if_b, "endpoints"]).stdout.split()
        m = re.match(r"^(\d+\.\d+\.\d+\.\d+):(\d+)$", out[-1] if out else "")
        if not m or m.group(1) != bench.VETH_A:
            raise BenchError("the peer does not know onetun's endpoint: %r" % out)
        self.port = int(m.group(2))
        log("  onetun (pid %d) works; its endpoint socket is %s:%d" % (p.pid, bench.VETH_A, self.port))
        self.start_sampling()

    def start_sampling(self):
        """RSS and CPU of the process facing the floods, sampled from now on; its log read from the start."""
        self.sampler = bench.Sampler(self.proc.pid)
        self.sampler.start()
        self.log_offset = 0

    def alive(self):
        return self.proc.poll() is None

    def new_log(self):
        """onetun's log lines since the last call, but for debug and trace ones."""
        try:
            with open(self.logpath, errors="replace") as f:
                f.seek(self.log_offset)
                text = f.read()
                self.log_offset = f.tell()
        except OSError:
            return []
        # Debug lines but the connections' closing ones (at --onetun-log debug: retransmissions, time-outs).
        return [line.strip() for line in text.splitlines()
                if line.strip() and (not re.search(r" (debug|trace) ", line) or "; TCP: " in line)]

    def capture(self, seconds=3.0):
        """Transport datagrams from the peer to onetun, captured on B's veth during a 1 s download."""
        out = os.path.join(self.td.workdir, "capture.bin")
        logname = "capture.log"
        cap = self.td.popen(["ip", "netns", "exec", self.ns_b, sys.executable, os.path.abspath(__file__), "_capture",
                             self.veth_b, bench.VETH_B, str(bench.WG_PORT), bench.VETH_A, str(self.port), out,
                             str(seconds), str(CAPTURE_LIMIT)], "capture", logname)
        path = os.path.join(self.td.workdir, logname)
        if not wait_ready(cap, path, 5):
            raise BenchError("the capture did not start")
        try:
            bench.iperf(self.ns_a, self.upload[0], self.upload[1], 1, 1, True)
        except BenchError as e:
            log("    capture's download: %s" % e)
            self.restart_iperf()
        try:
            cap.wait(timeout=seconds + 5)
        except subprocess.TimeoutExpired:
            bench.stop_process(cap, "capture")
        got = read_capture(out) if os.path.exists(out) else []
        if not got:
            raise BenchError("captured no transport datagram from the peer")
        log("    captured %d transport datagrams (mean %d bytes), receiver index %s"
            % (len(got), sum(map(len, got)) / len(got), got[-1][4:8].hex()))
        return out


class ReferenceSetup(Setup):
    """The reference in A instead of onetun: wireguard-go (its socket at 10.77.0.1:51820) and the kernel's
    TCP through its interface, to the same peer, servers and floods."""

    name = "wireguard-go"
    upload = (bench.TUN_B, bench.IPERF_PORT)
    echo = (bench.TUN_B, bench.ECHO_PORT)

    def __init__(self, td):
        self.td = td
        self.ns_a, self.ns_b = bench.make_pair(td, "flood")
        self.veth_b = "obfvb%d" % os.getpid()
        if_a = "obfwa%d" % os.getpid()
        self.proc = bench.start_wireguard_go(td, self.ns_a, if_a)
        self.logpath = os.path.join(td.workdir, if_a + ".log")
        key_a, _, pub_a = bench.genkey(td.workdir, if_a)
        self.if_b, _, pub_b = bench.wg_peer_b(td, self.ns_b, "flood", pub_a)
        bench.configure_reference_a(self.ns_a, if_a, key_a, pub_b, "%s:%d" % (bench.VETH_B, bench.WG_PORT))
        self.restart_iperf = bench.servers(td, self.ns_b, "0.0.0.0")
        why = bench.probe_echo(self.ns_a, bench.TUN_B, bench.ECHO_PORT, 15)
        if why:
            raise BenchError("no echo through the wireguard-go tunnel within 15 s (%s)" % why)
        self.port = bench.WG_PORT
        log("  wireguard-go %s (pid %d) works; its socket is %s:%d" % (if_a, self.proc.pid, bench.VETH_A, self.port))
        self.start_sampling()

    def new_log(self):
        return []


def flood_row(st, kind, args, seq):
    """One iperf3 upload with the flood `kind` (None: baseline); returns the row's dict."""
    row = {"kind": kind or "baseline", "errors": []}
    spec = next((k for k in KINDS if k[0] == kind), None)
    row["title"] = spec[3] if spec else "no flood"
    if not st.alive():
        row["errors"].append("%s is not running" % st.name)
        return row
    capture = None
    if spec and spec[1] in ("realidx", "replay"):
        capture = st.capture()
    sink = None
    floods = []
    dport = st.port
    if kind == "sink":
        sink = st.td.popen(["ip", "netns", "exec", st.ns_a, sys.executable, os.path.abspath(__file__), "_sink",
                            bench.VETH_A, str(SINK_PORT), str(args.seconds + 20)], "sink", "sink.log")
        if not wait_ready(sink, os.path.join(st.td.workdir, "sink.log"), 5):
            raise BenchError("the sink did not start")
        dport = SINK_PORT
    st.new_log()
    rss0, _ = proc_figures(st.proc.pid)
    drops0 = rcvbuf_errors(st.ns_a)
    st.sampler.start_window()
    if spec:
        for i in range(args.procs):
            fspec = {"payload": spec[1], "source": spec[2], "src": bench.VETH_B, "peer_port": bench.WG_PORT,
                     "dst": bench.VETH_A, "dport": dport, "rate": args.rate / args.procs,
                     "seconds": args.seconds + IDLE_SECONDS + 1.0, "seed": seq * 100 + i, "capture": capture}
            logname = "flood-%d-%d.log" % (seq, i)
            p = st.td.popen(["ip", "netns", "exec", st.ns_b, sys.executable, os.path.abspath(__file__), "_flood",
                             json.dumps(fspec)], "flood", logname)
            floods.append((p, os.path.join(st.td.workdir, logname)))
        for p, path in floods:
            if not wait_ready(p, path, 10):
                raise BenchError("the flood process did not start")
    # The flood alone first: onetun's CPU over IDLE_SECONDS, after half a second to get going.
    time.sleep(0.5)
    idle_drops0 = rcvbuf_errors(st.ns_a)
    _, cpu0 = proc_figures(st.proc.pid)
    wake0 = wakeups(st.proc.pid)
    t0 = time.monotonic()
    time.sleep(IDLE_SECONDS)
    _, cpu1 = proc_figures(st.proc.pid)
    wake1 = wakeups(st.proc.pid)
    idle = time.monotonic() - t0
    idle_drops = rcvbuf_errors(st.ns_a) - idle_drops0
    if cpu0 is not None and cpu1 is not None:
        row["idle_cpu_pct"] = 100 * (cpu1 - cpu0) / idle
        row["idle_cpu_s"] = cpu1 - cpu0
        row["idle_seconds"] = idle
        row["idle_rcvbuf_drops"] = idle_drops
    _, cpu0 = proc_figures(st.proc.pid)
    t0 = time.monotonic()
    try:
        row["mbps"] = bench.iperf(st.ns_a, st.upload[0], st.upload[1], args.seconds, 1, False)
    except BenchError as e:
        row["errors"].append(str(e))
        st.restart_iperf()
    _, cpu1 = proc_figures(st.proc.pid)
    t1 = time.monotonic()
    if cpu0 is not None and cpu1 is not None:
        row["cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
    sent = secs = 0.0
    for p, path in floods:
        try:
            p.wait(timeout=args.seconds + 10)
        except subprocess.TimeoutExpired:
            bench.stop_process(p, "flood")
        r = last_json(path)
        if r is None:
            row["errors"].append("flood process: " + bench.tail(path, 3))
            continue
        sent += r["sent"]
        secs = max(secs, r["seconds"])
        row["mean_size"] = r["mean_size"]
        if r["errors"]:
            row["send_errors"] = row.get("send_errors", 0) + r["errors"]
    if floods and secs:
        row["rate"] = sent / secs
        row["flood_seconds"] = secs
        if dport == st.port and row.get("idle_cpu_s") is not None:
            # Per datagram onetun read: those sent in the window less those its full socket refused.
            read = row["rate"] * row["idle_seconds"] - row["idle_rcvbuf_drops"]
            if read > 0:
                row["us_per_dgram"] = row["idle_cpu_s"] * 1e6 / read
                if wake0 is not None and wake1 is not None and wake1 > wake0:
                    row["dgrams_per_wakeup"] = read / (wake1 - wake0)
    st.sampler.end_window(row["kind"] + str(seq))
    if sink:
        bench.stop_process(sink, "sink")
    time.sleep(0.5)
    rss1, _ = proc_figures(st.proc.pid)
    row["rss_before_mib"] = rss0 / 1024 if rss0 else None
    row["rss_after_mib"] = rss1 / 1024 if rss1 else None
    peak = st.sampler.window_peak.get(row["kind"] + str(seq))
    row["rss_peak_mib"] = peak / 1024 if peak else None
    row["rcvbuf_drops"] = rcvbuf_errors(st.ns_a) - drops0
    if not st.alive():
        row["check"] = "%s exited (%s)" % (st.name, st.proc.returncode)
        row["errors"].append(row["check"] + ": " + bench.tail(st.logpath, 5))
    else:
        why = bench.probe_echo(st.ns_a, st.echo[0], st.echo[1], 10)
        row["check"] = "ok" if why is None else "echo failed: " + why
    row["log"] = st.new_log()
    return row


def print_table(rows, args, name="onetun"):
    base = [r["mbps"] for r in rows if r["kind"] == "baseline" and r.get("mbps")]
    ref = sum(base) / len(base) if base else None
    print()
    print("%s under floods at its endpoint socket: an iperf3 upload (1 stream, %d s) through it per row, with %d"
          % (name, args.seconds, args.procs))
    print("flood process%s aiming at %s datagrams/s in all. ratio: against the mean of the baselines (%s Mbit/s)."
          % ("" if args.procs == 1 else "es", "%d" % args.rate if args.rate else "as many",
             "%.1f" % ref if ref else "-"))
    print("idle %%: %s's CPU (utime + stime) over %.1f s of the flood alone, before the upload; µs/dg: that CPU time"
          % (name, IDLE_SECONDS))
    print("per flood datagram it read (sent less its socket's overflows); dg/wk: those datagrams per voluntary")
    print("context switch. CPU %%: %s's over the upload. RSS MiB: before / peak during / after. rcvbuf: UDP" % name)
    print("receive-buffer overflows in its namespace over the row (sink: the sink's). check: %s alive and an" % name)
    print("echo through it afterwards.")
    print()
    head = ("%-36s %7s %6s %6s %6s %6s %5s %5s %17s %7s  %s"
            % ("flood", "dgram/s", "idle %", "µs/dg", "dg/wk", "Mbit/s", "ratio", "CPU %", "RSS MiB b/peak/a",
               "rcvbuf", "check"))
    print(head)
    print("-" * len(head))

    def f(v, fmt):
        return fmt % v if v is not None else "-"
    for r in rows:
        rss = "%s/%s/%s" % (f(r.get("rss_before_mib"), "%.1f"), f(r.get("rss_peak_mib"), "%.1f"),
                            f(r.get("rss_after_mib"), "%.1f"))
        ratio = r["mbps"] / ref if ref and r.get("mbps") else None
        print("%-36s %7s %6s %6s %6s %6s %5s %5s %17s %7s  %s"
              % (r["title"], f(r.get("rate"), "%.0f"), f(r.get("idle_cpu_pct"), "%.0f"),
                 f(r.get("us_per_dgram"), "%.2f"), f(r.get("dgrams_per_wakeup"), "%.1f"), f(r.get("mbps"), "%.0f"),
                 f(ratio, "%.2f"),
                 f(r.get("cpu_pct"), "%.0f"), rss, f(r.get("rcvbuf_drops"), "%d"), r.get("check", "-")))
    notes = []
    for r in rows:
        for e in r["errors"]:
            notes.append("%s: %s" % (r["title"], e.splitlines()[0]))
        if r.get("send_errors"):
            notes.append("%s: %d sends refused (ENOBUFS)" % (r["title"], r["send_errors"]))
        for line in r.get("log", [])[:3]:
            notes.append("%s: onetun logged: %s" % (r["title"], line.split(" onetun: ", 1)[-1][:200]))
        if len(r.get("log", [])) > 3:
            notes.append("%s: ... %d lines in all" % (r["title"], len(r["log"])))
    if notes:
        print()
        print("\n".join(notes))


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        run_helper(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(description="onetun under floods at its endpoint socket.")
    ap.add_argument("--onetun", default=".build/release/onetun", help="the onetun binary")
    ap.add_argument("--against", choices=("onetun", "wireguard-go"), default="onetun",
                    help="what faces the floods in A: onetun (default), or the reference, wireguard-go with the "
                         "kernel's TCP")
    ap.add_argument("--seconds", type=int, default=8, help="seconds per iperf3 upload (default 8)")
    ap.add_argument("--rate", type=int, default=100000,
                    help="flood datagrams per second, all processes together; 0: as fast as they can (default 100000)")
    ap.add_argument("--procs", type=int, default=2, help="flood processes per row, sharing --rate (default 2)")
    ap.add_argument("--kinds", default=",".join(KIND_NAMES), help="comma-separated, of: " + ",".join(KIND_NAMES))
    ap.add_argument("--onetun-log", default="info",
                    help="onetun's --log level (default info; at debug each connection's TCP summary is shown)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("--logs", help="copy every process's log to this directory")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for k in kinds:
        if k not in KIND_NAMES:
            ap.error("unknown kind %r; kinds are %s" % (k, ",".join(KIND_NAMES)))
    if not 1 <= args.seconds <= 120:
        ap.error("--seconds must be between 1 and 120")
    if not 0 <= args.rate <= 10_000_000 or not 1 <= args.procs <= 16:
        ap.error("--rate must be between 0 and 10000000, --procs between 1 and 16")
    onetun = os.path.abspath(args.onetun)
    if not (os.path.isfile(onetun) and os.access(onetun, os.X_OK)):
        sys.exit("%s is missing or not executable (swift build -c release)" % args.onetun)
    if os.geteuid() != 0:
        sys.exit("flood.py needs root (network namespaces, raw sockets)")
    missing = [t for t in ("ip", "iperf3", "wireguard-go", "wg") if not shutil.which(t)]
    if missing:
        sys.exit("missing tools: " + " ".join(missing))

    def on_term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    workdir = tempfile.mkdtemp(prefix="onetun-flood-")
    td = bench.Teardown(workdir)
    rows = []
    status = 0
    summary = None
    try:
        log("== setting up: %s in A, wireguard-go in B" % args.against)
        st = Setup(td, onetun, args.onetun_log) if args.against == "onetun" else ReferenceSetup(td)
        order = [k for k in ORDER if k == "baseline" or k in kinds]
        for seq, kind in enumerate(order):
            log("== %s" % kind)
            row = flood_row(st, None if kind == "baseline" else kind, args, seq)
            rows.append(row)
            log("   %s Mbit/s, flood %s datagrams/s, %s CPU %s %%, check %s" % (
                "%.1f" % row["mbps"] if row.get("mbps") else "-", "%.0f" % row["rate"] if row.get("rate") else "-",
                st.name,
                "%.0f" % row["cpu_pct"] if row.get("cpu_pct") is not None else "-", row.get("check")))
        if st.alive() and st.name == "onetun":
            bench.stop_process(st.proc, "onetun")
            m = re.search(r"shutting down after .*", open(st.logpath, errors="replace").read())
            summary = m.group(0) if m else None
    except BenchError as e:
        log("failed: %s" % e)
        status = 1
    except (KeyboardInterrupt, Terminated):
        log("interrupted; tearing down")
        status = 130
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            td.close()
        finally:
            signal.signal(signal.SIGINT, old)
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for name in os.listdir(workdir):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(workdir, name), args.logs)
        shutil.rmtree(workdir, ignore_errors=True)
    if status == 130:
        return status
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "rate": args.rate, "procs": args.procs, "rows": rows,
                       "against": args.against, "onetun_exit": summary}, f, indent=2)
            f.write("\n")
    if rows:
        print_table(rows, args, args.against)
    if summary:
        print("onetun at exit: " + summary)
        delivered = sum(r.get("rate", 0) * r.get("flood_seconds", 0) - r.get("rcvbuf_drops", 0)
                        for r in rows if r["kind"] != "sink")
        print("flood datagrams that reached onetun's socket, about: %d (sent less receive-buffer overflows)"
              % delivered)
    if any(r.get("check") not in (None, "ok") or r["errors"] for r in rows):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
