#!/usr/bin/env bash
# Runs every fuzz target from its seed corpus until it has executed -r inputs or run -s seconds (default
# 60), whichever comes first; prints executions and coverage (libFuzzer's cov: and ft:) per target. Fails
# when a target crashes or executes nothing, printing the crashing input in base64.
#   -b DIR  the binaries (default .build/release, what `make fuzz-build` makes)
#   -w DIR  the working corpora, one directory per target, which libFuzzer grows (default corpus-run,
#           kept between runs; the seeds in corpus/ are only copied from)
#   -t LIST only these targets (comma-separated names), e.g. to run several instances side by side
set -euo pipefail
cd "$(dirname "$0")"
seconds=60 runs=-1 bin=.build/release work=corpus-run only=
while getopts s:r:b:w:t: opt; do
    case $opt in
        s) seconds=$OPTARG ;;
        r) runs=$OPTARG ;;
        b) bin=$OPTARG ;;
        w) work=$OPTARG ;;
        t) only=,$OPTARG, ;;
        *) exit 2 ;;
    esac
done
export SWIFT_BACKTRACE=enable=no
status=0
for target in $(sed -n 's/^ *"\(Fuzz[A-Za-z0-9]*\)",$/\1/p' Package.swift); do
    if [ -n "$only" ] && [[ "$only" != *",$target,"* ]]; then continue; fi
    mkdir -p "$work/$target"
    [ -d corpus/$target ] && cp -n corpus/$target/* "$work/$target"/ 2>/dev/null || true
    log=$(mktemp)
    started=$SECONDS
    if "$bin/$target" "$work/$target" -runs="$runs" -max_total_time="$seconds" -print_final_stats=1 \
        -rss_limit_mb=2048 -artifact_prefix="$work/$target-" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        coverage=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*\(cov: [0-9]* ft: [0-9]*\).*/\1/p' "$log")
        if [ "${execs:-0}" -gt 0 ]; then
            echo "$target: $execs executions in $((SECONDS - started)) s, $coverage"
        else
            echo "$target: FAILED, no inputs executed"; tail -20 "$log"; status=1
        fi
    else
        echo "$target: FAILED"; tail -40 "$log"; status=1
        sed -n 's/.*Test unit written to //p' "$log" | while read -r artifact; do
            echo "$artifact (base64): $(base64 -w0 "$artifact")"
        done
    fi
    rm -f "$log"
done
exit $status
