#!/usr/bin/env python3
"""Instructions per MiB of the in-memory transfer (`make bench-instr`).

Runs core-transfer (two TunnelCores joined in memory, one TCP connection, a fake clock) under valgrind's
callgrind twice, with 0 MiB and with --mib MiB, and reports the difference per MiB: the whole path, the
part spent in libsodium (the crypto), the rest, and the functions that cost the most outside the crypto.
The count is exact and does not depend on the machine's load, so a regression shows as a number.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile


def callgrind(binary, mib, workdir):
    out = os.path.join(workdir, f"callgrind.{mib}")
    env = dict(os.environ, SWIFT_DETERMINISTIC_HASHING="1", SWIFT_BACKTRACE="enable=no")
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, str(mib)],
        env=env, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        sys.exit(f"bench-instr: core-transfer {mib} failed under callgrind:\n{run.stdout}{run.stderr}")
    annotate = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--tree=none", "--auto=no", out], capture_output=True, text=True, check=True)
    functions = {}
    total = None
    for line in annotate.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([\d. %]+\)\s+)?(.*)$", line)
        if not m:
            continue
        count = int(m.group(1).replace(",", ""))
        name = m.group(2).strip()
        if name.startswith("PROGRAM TOTALS"):
            total = count
        elif name and "events annotated" not in name:
            functions[name] = functions.get(name, 0) + count
    if total is None:
        sys.exit("bench-instr: no PROGRAM TOTALS in callgrind_annotate's output")
    return total, functions


def short(name):
    """The function of a callgrind_annotate line, demangled when swift-demangle is there."""
    name = re.sub(r"\s*\[[^\]]*\]$", "", name)
    name = name.split(":", 1)[1] if ":" in name else name
    if name.startswith("$s"):
        try:
            name = subprocess.run(["swift-demangle", "--simplified", "--compact", name], capture_output=True,
                                  text=True, timeout=10).stdout.strip() or name
        except (OSError, subprocess.TimeoutExpired):
            pass
    return name[:110]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=".build/release/core-transfer")
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    if args.mib < 1:
        parser.error("--mib must be at least 1")
    with tempfile.TemporaryDirectory() as workdir:
        base_total, base = callgrind(args.binary, 0, workdir)
        total, functions = callgrind(args.binary, args.mib, workdir)
    per_mib = (total - base_total) / args.mib
    delta = {k: (v - base.get(k, 0)) / args.mib for k, v in functions.items()}
    crypto = sum(v for k, v in delta.items() if "libsodium" in k)
    print(f"in-memory transfer, {args.mib} MiB through two TunnelCores (callgrind, instructions per MiB)")
    print(f"  total   {per_mib / 1e6:8.2f} M")
    print(f"  crypto  {crypto / 1e6:8.2f} M  ({crypto / per_mib:.0%}, libsodium)")
    print(f"  rest    {(per_mib - crypto) / 1e6:8.2f} M  ({(per_mib - crypto) / per_mib:.0%})")
    print("  the costliest functions outside libsodium, per MiB:")
    rest = sorted(((v, k) for k, v in delta.items() if "libsodium" not in k), reverse=True)[: args.top]
    for v, k in rest:
        print(f"    {v / 1e6:7.2f} M  {short(k)}")


if __name__ == "__main__":
    main()
