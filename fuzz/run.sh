#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60) from its seed corpus; prints executions per target.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
export SWIFT_BACKTRACE=enable=no
bin=.build/release
status=0
for target in $(sed -n 's/^ *"\(Fuzz[A-Za-z0-9]*\)",$/\1/p' Package.swift); do
    work=corpus-run/$target
    mkdir -p "$work"
    [ -d corpus/$target ] && cp -n corpus/$target/* "$work"/ 2>/dev/null || true
    log=$(mktemp)
    if "$bin/$target" "$work" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "$target: ok, $execs executions in ${seconds}s"
    else
        echo "$target: FAILED"; tail -40 "$log"; status=1
    fi
    rm -f "$log"
done
exit $status
