#!/usr/bin/env bash
# A local WireGuard peer for trying onetun: wireguard-go in its own network namespace.
#
#   scripts/wg-peer.sh up NS IFNAME PORT OUR_PUBKEY   prints the peer's public key on stdout
#   scripts/wg-peer.sh down NS IFNAME                 safe to run again, or after a failed `up`
#
# The peer listens on PORT inside NS (reach it from a process in NS at 127.0.0.1:PORT), has tunnel
# addresses 192.168.4.2/24 and fd00:4::2/64 (they exist only inside NS), and accepts OUR_PUBKEY with
# allowed-ips 192.168.4.3/32,fd00:4::3/128. wireguard-go runs in the foreground (-f) in the background of
# this script so its PID is known: /tmp/NS.wg.pid. Its log is /tmp/NS.wg.log and its key /tmp/NS.wg.key
# until `down`.
# wireguard-go's control socket /var/run/wireguard/IFNAME.sock is not per namespace: IFNAME must be
# unique on the machine. Needs root.
set -Eeuo pipefail

usage() {
    echo "usage: $0 up NS IFNAME PORT OUR_PUBKEY | down NS IFNAME" >&2
    exit 2
}

check_names() {
    local ns=$1 ifname=$2
    [[ $ns =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || { echo "bad namespace name: $ns" >&2; exit 2; }
    # Linux interface names are at most 15 bytes; a leading '-' would be read as an option.
    [[ $ifname =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$ ]] || { echo "bad interface name: $ifname" >&2; exit 2; }
}

pid_file() { echo "/tmp/$1.wg.pid"; }

# Is PID a wireguard-go serving IFNAME? Guards against killing an unrelated process that reused the PID.
is_our_wireguard_go() {
    local pid=$1 ifname=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *wireguard-go* && $cmdline == *" $ifname "* ]]
}

down() {
    local ns=$1 ifname=$2 pidf pid
    check_names "$ns" "$ifname"
    pidf=$(pid_file "$ns")
    if [[ -f $pidf ]]; then
        pid=$(<"$pidf")
        if is_our_wireguard_go "$pid" "$ifname"; then
            kill -TERM "$pid" 2>/dev/null || true
            # Not our child, so `wait` cannot be used: poll, at most 5 s, then SIGKILL.
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
                # Killed hard, it cannot remove its control socket itself.
                rm -f "/var/run/wireguard/$ifname.sock"
            fi
        fi
        rm -f "$pidf"
    fi
    if [[ -e /var/run/netns/$ns ]]; then
        ip netns del "$ns"
    fi
    rm -f "/tmp/$ns.wg.key" "/tmp/$ns.wg.log"
}

up() {
    local ns=$1 ifname=$2 port=$3 our_pubkey=$4 pidf key pid public
    check_names "$ns" "$ifname"
    [[ $port =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) || { echo "bad port: $port" >&2; exit 2; }
    [[ $our_pubkey =~ ^[A-Za-z0-9+/]{43}=$ ]] || { echo "bad public key: $our_pubkey" >&2; exit 2; }
    if [[ -e /var/run/netns/$ns ]]; then
        echo "namespace $ns already exists; run: $0 down $ns $ifname" >&2
        exit 1
    fi
    if [[ -e /var/run/wireguard/$ifname.sock ]]; then
        echo "interface name $ifname is in use by another wireguard-go" >&2
        exit 1
    fi
    pidf=$(pid_file "$ns")
    key="/tmp/$ns.wg.key"

    # From here on, any failure tears down what was made.
    trap 'down "$ns" "$ifname"' ERR

    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    # `ip netns exec` execs wireguard-go, so $! is wireguard-go's own PID.
    ip netns exec "$ns" wireguard-go -f "$ifname" </dev/null >"/tmp/$ns.wg.log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidf"
    for _ in $(seq 50); do
        [[ -S /var/run/wireguard/$ifname.sock ]] && ip netns exec "$ns" ip link show "$ifname" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! [[ -S /var/run/wireguard/$ifname.sock ]]; then
        echo "wireguard-go did not come up; its log:" >&2
        cat "/tmp/$ns.wg.log" >&2 || true
        false
    fi

    (umask 077 && wg genkey >"$key")
    public=$(wg pubkey <"$key")
    ip netns exec "$ns" wg set "$ifname" private-key "$key" listen-port "$port" \
        peer "$our_pubkey" allowed-ips 192.168.4.3/32,fd00:4::3/128
    ip netns exec "$ns" ip addr add 192.168.4.2/24 dev "$ifname"
    ip netns exec "$ns" ip addr add fd00:4::2/64 dev "$ifname" nodad
    ip netns exec "$ns" ip link set "$ifname" up
    trap - ERR
    echo "$public"
}

case ${1:-} in
up) [[ $# -eq 5 ]] || usage; up "$2" "$3" "$4" "$5" ;;
down) [[ $# -eq 3 ]] || usage; down "$2" "$3" ;;
*) usage ;;
esac
