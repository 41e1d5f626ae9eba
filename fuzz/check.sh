#!/usr/bin/env bash
# The fuzz check of `make test`: builds the targets the plain way, `swift build -Xswiftc -sanitize=fuzzer`
# (debug, the quickest build), and runs each for a few seconds (default 3) on a scratch copy of its seed
# corpus. Fails unless every target executes inputs without crashing.
set -euo pipefail
cd "$(dirname "$0")"
"${SWIFT:-swift}" build -Xswiftc -sanitize=fuzzer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash run.sh -b .build/debug -s "${1:-3}" -w "$work"
