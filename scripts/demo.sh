#!/usr/bin/env bash
# `make demo`: the main job end to end against a local wireguard-go peer, then everything torn down.
# A network namespace holds the peer (wireguard-go, tunnel addresses 192.168.4.2 and fd00:4::2) and a small
# HTTP server listening only on the tunnel address. onetun runs in the same namespace with the endpoint on
# 127.0.0.1 and forwards 127.0.0.1:8080 to the server, so curl reaches a page that only exists behind the
# peer; no traffic leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ONETUN=${ONETUN:-.build/release/onetun}
ns="onetun-demo-$$"
ifname="wgdemo$((RANDOM % 10000))"
work=$(mktemp -d)
pids=()

# wg-peer.sh tracks wireguard-go's own PID (a `func … &` would only give the PID of a subshell, and
# killing that leaves wireguard-go running) and tears everything down, also after a failed `up`. For the
# same reason background jobs below call `ip netns exec` directly (it execs), never the in_ns function.
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    bash scripts/wg-peer.sh down "$ns" "$ifname" || true
    rm -rf "$work"
}
trap cleanup EXIT

in_ns() { ip netns exec "$ns" "$@"; }

# Waits (bounded) until something listens on TCP port $2 at $1 inside the namespace.
wait_listening() {
    for _ in $(seq 100); do
        in_ns bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}

echo "== setting up a WireGuard peer (wireguard-go) in network namespace $ns"
(umask 077; wg genkey >"$work/onetun.key")
onetun_public=$(wg pubkey <"$work/onetun.key")
peer_public=$(bash scripts/wg-peer.sh up "$ns" "$ifname" 51820 "$onetun_public")

echo "== an HTTP server behind the peer, on 192.168.4.2:80 and [fd00:4::2]:80 only"
mkdir -p "$work/www"
cat >"$work/www/index.html" <<HTML
<!doctype html>
<title>behind the WireGuard peer</title>
<p>Hello from 192.168.4.2, reached through onetun's user-space WireGuard tunnel.</p>
HTML
ip netns exec "$ns" python3 -m http.server 80 --bind 192.168.4.2 --directory "$work/www" >"$work/http4.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" python3 -m http.server 80 --bind fd00:4::2 --directory "$work/www" >"$work/http6.log" 2>&1 &
pids+=($!)
wait_listening 192.168.4.2 80
wait_listening fd00:4::2 80

common=(--private-key-file "$work/onetun.key" --endpoint-public-key "$peer_public" --endpoint-addr 127.0.0.1:51820)

echo
echo "== onetun 127.0.0.1:8080:192.168.4.2:80 (IPv4 inside the tunnel)"
ip netns exec "$ns" "$ONETUN" 127.0.0.1:8080:192.168.4.2:80 "${common[@]}" --source-peer-ip 192.168.4.3 >"$work/onetun4.log" 2>&1 &
onetun4=$!
pids+=($onetun4)
wait_listening 127.0.0.1 8080
echo "\$ curl http://127.0.0.1:8080/"
in_ns curl -sS --max-time 20 http://127.0.0.1:8080/

echo
echo "== onetun [::1]:8081:[fd00:4::2]:80 (IPv6 inside the tunnel, and on the local side)"
ip netns exec "$ns" "$ONETUN" "[::1]:8081:[fd00:4::2]:80" "${common[@]}" --source-peer-ip fd00:4::3 >"$work/onetun6.log" 2>&1 &
onetun6=$!
pids+=($onetun6)
wait_listening ::1 8081
echo "\$ curl 'http://[::1]:8081/'"
in_ns curl -sS --max-time 20 'http://[::1]:8081/'

echo
echo "== onetun --ping 192.168.4.2 through the tunnel"
in_ns timeout 30 "$ONETUN" "${common[@]}" --source-peer-ip 192.168.4.3 --ping 192.168.4.2 --ping-count 2

echo
echo "== the peer's view (wg show): latest handshake and bytes moved"
in_ns wg show "$ifname"

echo
echo "== stopping onetun with SIGINT (exit status 0 expected)"
kill -INT "$onetun4" "$onetun6"
status=0
wait "$onetun4" || status=$?
wait "$onetun6" || status=$?
echo "onetun logs:"
sed 's/^/  /' "$work/onetun4.log" "$work/onetun6.log"
if [[ $status -ne 0 ]]; then
    echo "onetun exited with status $status" >&2
    exit 1
fi
echo
echo "demo done: curl reached the page behind the peer through onetun; tearing down"
