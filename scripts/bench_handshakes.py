#!/usr/bin/env python3
"""A listening onetun takes the handshakes of many wireguard-go peers at once (`make bench-handshakes`).

    python3 scripts/bench_handshakes.py [--onetun PATH] [--peers 100] [--json FILE]

Needs root, wireguard-go, wg and ip; Python standard library only (and bench.py beside it). Namespace A
runs onetun from a configuration file with a ListenPort and N [Peer] sections without Endpoint (each
AllowedIPs 10.100.x.y/32); namespace P, joined to A by a veth pair (10.79.0.1/30 -- 10.79.0.2/30), runs N
wireguard-go interfaces, one per peer key, each with onetun as its peer at 10.79.0.1:51820. Once every
interface is up, every peer is given a PersistentKeepalive at the same moment (threads running `wg set`),
which makes wireguard-go start its handshake at once. The figures: how long until onetun has logged a
completed handshake for every peer (its log is watched every 10 ms), how many handshakes it completed
(one per peer is the ideal; more means retries), how many peers' wireguard-go saw a handshake, and the
CPU onetun spent. Not part of `make test`; every process and namespace is ours and torn down at the end.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Teardown, run, genkey, start_wireguard_go, wait_until, tail, log)

VETH_A, VETH_P = "10.79.0.1", "10.79.0.2"
TUN_A = "192.168.4.3"
LISTEN_PORT = 51820


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / bench.CLK_TCK


def main():
    ap = argparse.ArgumentParser(description="A listening onetun takes N peers' handshakes at once.")
    ap.add_argument("--onetun", default=".build/release/onetun")
    ap.add_argument("--peers", type=int, default=100, help="wireguard-go peers (default 100, at most 250)")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args()
    if not 1 <= args.peers <= 250:
        ap.error("--peers must be between 1 and 250")
    if os.geteuid() != 0:
        sys.exit("bench_handshakes.py needs root (network namespaces)")
    onetun = os.path.abspath(args.onetun)
    if not os.access(onetun, os.X_OK):
        sys.exit("%s is missing (swift build -c release)" % args.onetun)
    workdir = tempfile.mkdtemp(prefix="onetun-handshakes-")
    td = bench.Teardown(workdir)
    pid = os.getpid()
    n = args.peers
    try:
        ns_a = td.netns("onetun-hs-%d-a" % pid)
        ns_p = td.netns("onetun-hs-%d-p" % pid)
        va, vp = "ohva%d" % pid, "ohvp%d" % pid
        bench.run(["ip", "-n", ns_a, "link", "add", va, "type", "veth", "peer", "name", vp, "netns", ns_p])
        bench.run(["ip", "-n", ns_a, "addr", "add", VETH_A + "/30", "dev", va])
        bench.run(["ip", "-n", ns_p, "addr", "add", VETH_P + "/30", "dev", vp])
        bench.run(["ip", "-n", ns_a, "link", "set", va, "up"])
        bench.run(["ip", "-n", ns_p, "link", "set", vp, "up"])

        bench.log("keys for onetun and %d peers" % n)
        _, private, public = bench.genkey(workdir, "onetun")
        peers = []
        for i in range(n):
            key, _, pub = bench.genkey(workdir, "peer%d" % i)
            peers.append((key, pub))
        config = os.path.join(workdir, "listen.conf")
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("[Interface]\nPrivateKey = %s\nAddress = %s/32\nListenPort = %d\n"
                    % (private, TUN_A, LISTEN_PORT))
            for i, (_, pub) in enumerate(peers):
                f.write("\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.100.%d.%d/32\n" % (pub, i // 250, i % 250 + 1))
        # A remote forward gives onetun something to serve; nothing connects to it.
        cmd = ["ip", "netns", "exec", ns_a, onetun, "-c", config, "-r", "8080:127.0.0.1:8080",
               "--log", "info"]
        proc = td.popen(cmd, "onetun", "onetun.log")
        logpath = os.path.join(workdir, "onetun.log")
        if not bench.wait_until(lambda: proc.poll() is not None or bench.bound(proc.pid, LISTEN_PORT, ("udp",)), 10):
            raise bench.BenchError("onetun is not bound to UDP %d after 10 s:\n%s" % (LISTEN_PORT, bench.tail(logpath)))
        if proc.poll() is not None:
            raise bench.BenchError("onetun exited (%s):\n%s" % (proc.returncode, bench.tail(logpath)))

        bench.log("starting %d wireguard-go interfaces in one namespace" % n)
        names = []
        for i, (key, _) in enumerate(peers):
            ifname = "oh%dx%d" % (i, pid)
            bench.start_wireguard_go(td, ns_p, ifname)
            bench.run(["ip", "netns", "exec", ns_p, "wg", "set", ifname, "private-key", key,
                       "peer", public, "endpoint", "%s:%d" % (VETH_A, LISTEN_PORT), "allowed-ips", TUN_A + "/32"])
            bench.run(["ip", "-n", ns_p, "link", "set", ifname, "up"])
            names.append(ifname)

        cpu_before = cpu_seconds(proc.pid)
        bench.log("every peer starts its handshake now (PersistentKeepalive 25)")
        errors = []
        slowest = [0.0]
        triggered_at = {}  # the peer's public key's first 8 characters (as onetun logs it) -> when wg set returned
        prefix = {ifname: pub[:8] for ifname, (_, pub) in zip(names, peers)}

        def trigger(chunk):
            for ifname in chunk:
                began = time.monotonic()
                p = bench.run(["ip", "netns", "exec", ns_p, "wg", "set", ifname, "peer", public,
                               "persistent-keepalive", "25"], check=False)
                triggered_at[prefix[ifname]] = time.monotonic() - start
                slowest[0] = max(slowest[0], time.monotonic() - began)
                if p.returncode != 0:
                    errors.append("%s: %s" % (ifname, p.stderr.strip()))

        threads = [threading.Thread(target=trigger, args=(names[k::10],)) for k in range(10)]
        start = time.monotonic()
        for t in threads:
            t.start()
        times = []
        done_at = {}
        with open(logpath) as log:
            log.seek(0, os.SEEK_END)
            pending = ""
            deadline = start + 60
            while len(times) < n and time.monotonic() < deadline:
                chunk = log.read()
                if not chunk:
                    time.sleep(0.01)
                    continue
                pending += chunk
                lines = pending.split("\n")
                pending = lines.pop()
                now = time.monotonic() - start
                for line in lines:
                    if "handshake with peer" in line and "complete" in line:
                        times.append(now)
                        done_at.setdefault(line.split("handshake with peer ", 1)[1][:8], now)
        for t in threads:
            t.join()
        triggered = time.monotonic() - start
        time.sleep(1)  # late retries, if any, show in the count
        with open(logpath) as log:
            completed = sum(1 for line in log if "handshake with peer" in line and "complete" in line)
        cpu = cpu_seconds(proc.pid) - cpu_before
        seen = 0
        for ifname in names:
            p = bench.run(["ip", "netns", "exec", ns_p, "wg", "show", ifname, "latest-handshakes"], check=False)
            parts = p.stdout.split()
            if len(parts) >= 2 and parts[1] != "0":
                seen += 1
        # Per peer: from its `wg set` returning (wireguard-go then sends its initiation) to onetun's log line.
        latencies = sorted(max(0.0, done_at[k] - triggered_at[k]) for k in done_at if k in triggered_at)
        figures = {
            "peers": n,
            "handshakes_completed": completed,
            "peers_with_handshake": seen,
            "all_within_s": round(times[-1], 3) if len(times) >= n else None,
            "median_s": round(sorted(times)[len(times) // 2], 3) if times else None,
            "triggers_took_s": round(triggered, 3),
            "per_peer_median_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "per_peer_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
            "onetun_cpu_s": round(cpu, 3),
            "trigger_errors": errors[:5],
        }
        print()
        print("%d wireguard-go peers start a handshake with a listening onetun at once (wg set from 10 threads, "
              "which took %.2f s, the slowest call %.2f s):" % (n, triggered, slowest[0]))
        if figures["all_within_s"] is not None:
            print("  onetun logged a completed handshake for every peer within %.2f s (median %.2f s)"
                  % (figures["all_within_s"], figures["median_s"]))
        else:
            print("  only %d of %d peers completed a handshake within 60 s" % (len(times), n))
        if latencies:
            print("  per peer, from its trigger to onetun's log line: median %.1f ms, max %.1f ms (10 ms polling)"
                  % (figures["per_peer_median_ms"], figures["per_peer_max_ms"]))
        print("  handshakes onetun completed: %d (one per peer: %s); peers whose wireguard-go has a handshake: %d"
              % (completed, "yes" if completed == n else "no", seen))
        print("  onetun's CPU over the burst: %.3f s (%.2f ms a handshake)" % (cpu, 1000 * cpu / max(completed, 1)))
        if errors:
            print("  wg set failed: " + "; ".join(errors[:3]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
                f.write("\n")
        ok = completed >= n and seen == n
        return 0 if ok else 1
    except bench.BenchError as e:
        print("failed: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        td.close()
        subprocess.run(["rm", "-rf", workdir])


if __name__ == "__main__":
    sys.exit(main())
