#!/usr/bin/env bash
# `make demo`: the main job end to end against a local wireguard-go peer, then everything torn down.
# A network namespace holds the peer (wireguard-go, tunnel address 192.168.4.2 and fd00:4::2); onetun runs
# in the same namespace with the endpoint on 127.0.0.1, so no traffic leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ONETUN=${ONETUN:-.build/release/onetun}
ns="onetun-demo-$$"
ifname="wgdemo$((RANDOM % 10000))"
work=$(mktemp -d)

# wg-peer.sh tracks wireguard-go's own PID (a `func … &` would only give the PID of a subshell, and
# killing that leaves wireguard-go running) and tears everything down, also after a failed `up`.
cleanup() {
    bash scripts/wg-peer.sh down "$ns" "$ifname" || true
    rm -rf "$work"
}
trap cleanup EXIT

in_ns() { ip netns exec "$ns" "$@"; }

echo "== setting up a WireGuard peer (wireguard-go) in network namespace $ns"
(umask 077; wg genkey >"$work/onetun.key")
onetun_public=$(wg pubkey <"$work/onetun.key")
peer_public=$(bash scripts/wg-peer.sh up "$ns" "$ifname" 51820 "$onetun_public")

common=(--private-key-file "$work/onetun.key" --endpoint-public-key "$peer_public" --endpoint-addr 127.0.0.1:51820)

echo
echo "== onetun --ping 192.168.4.2 through the tunnel (IPv4 inside)"
in_ns timeout 30 "$ONETUN" "${common[@]}" --source-peer-ip 192.168.4.3 --ping 192.168.4.2 --ping-count 3
echo
echo "== onetun --ping fd00:4::2 through the tunnel (IPv6 inside)"
in_ns timeout 30 "$ONETUN" "${common[@]}" --source-peer-ip fd00:4::3 --ping fd00:4::2 --ping-count 3
echo
echo "== the peer's view (wg show): latest handshake and bytes moved"
in_ns wg show "$ifname"
echo
echo "demo done: the tunnel works end to end; tearing down"
