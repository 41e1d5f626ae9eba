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
wg_pid=""

cleanup() {
    [ -n "$wg_pid" ] && kill "$wg_pid" 2>/dev/null && wait "$wg_pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

in_ns() { ip netns exec "$ns" "$@"; }

echo "== setting up a WireGuard peer (wireguard-go) in network namespace $ns"
ip netns add "$ns"
in_ns ip link set lo up
in_ns wireguard-go -f "$ifname" >"$work/wireguard-go.log" 2>&1 &
wg_pid=$!
for _ in $(seq 50); do in_ns ip link show "$ifname" >/dev/null 2>&1 && break; sleep 0.1; done
(umask 077; wg genkey >"$work/peer.key"; wg genkey >"$work/onetun.key")
peer_public=$(wg pubkey <"$work/peer.key")
onetun_public=$(wg pubkey <"$work/onetun.key")
in_ns wg set "$ifname" private-key "$work/peer.key" listen-port 51820 \
    peer "$onetun_public" allowed-ips 192.168.4.3/32,fd00:4::3/128
in_ns ip addr add 192.168.4.2/24 dev "$ifname"
in_ns ip addr add fd00:4::2/64 dev "$ifname"
in_ns ip link set "$ifname" up

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
