#!/usr/bin/env bash
# Starts (or stops) the Redis servers the tests use, on loopback ports, with their files in
# a scratch directory:
#   one standalone server         RS2_REDIS_URL=redis://127.0.0.1:16379
#   a 3-primary Cluster           RS2_REDIS_CLUSTER_NODES=redis://127.0.0.1:17000,...:17001,...:17002
#
# Usage: scripts/redis-servers.sh start   # prints the two export lines to eval
#        scripts/redis-servers.sh stop
# Needs redis-server and redis-cli (Debian: apt-get install -y redis-server redis-tools).
set -euo pipefail

DIR="${RS2_REDIS_DIR:-${TMPDIR:-/tmp}/rs2-redis-servers}"
STANDALONE_PORT="${RS2_REDIS_PORT:-16379}"
CLUSTER_PORTS=(17000 17001 17002)

start_server() { # port, extra args...
    local port="$1"
    shift
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$DIR/$port" \
        --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
        --save "" --appendonly no "$@"
}

wait_ready() { # port
    for _ in $(seq 1 100); do
        if redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.1
    done
    echo "redis on port $1 did not start; log:" >&2
    cat "$DIR/$1/redis.log" >&2 || true
    return 1
}

case "${1:-}" in
start)
    "$0" stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
    mkdir -p "$DIR"
    start_server "$STANDALONE_PORT" >&2
    for port in "${CLUSTER_PORTS[@]}"; do
        start_server "$port" --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
            --cluster-node-timeout 5000 >&2
    done
    for port in "$STANDALONE_PORT" "${CLUSTER_PORTS[@]}"; do wait_ready "$port"; done
    addrs=()
    urls=()
    for port in "${CLUSTER_PORTS[@]}"; do
        addrs+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2
    for _ in $(seq 1 100); do
        if redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; then
            break
        fi
        sleep 0.1
    done
    redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q 'cluster_state:ok' || {
        echo "the cluster did not reach cluster_state:ok" >&2
        exit 1
    }
    echo "export RS2_REDIS_URL=redis://127.0.0.1:$STANDALONE_PORT"
    (IFS=,; echo "export RS2_REDIS_CLUSTER_NODES=${urls[*]}")
    ;;
stop)
    for port in "$STANDALONE_PORT" "${CLUSTER_PORTS[@]}"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
