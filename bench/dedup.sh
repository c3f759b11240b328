#!/usr/bin/env bash
# Dedup store figures, on a private redis-server on a free loopback port:
#  1. redis-benchmark -t set -P 1 at 64 connections: the reference;
#  2. the criterion benches: memory claim+commit on one core, Redis claim+commit from 64 tasks;
#  3. Redis memory per done event after 100 000 events.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is needed (scripts/test installs it)"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
  --pidfile "$dir/redis.pid" >/dev/null
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
url="redis://127.0.0.1:$port"

echo "== redis-benchmark -t set -P 1 -c 64 -n 300000"
redis-benchmark -p "$port" -t set -P 1 -c 64 -n 300000 -q
redis-cli -p "$port" flushall >/dev/null

echo "== criterion: claim+commit"
HOOKGATE_BENCH_REDIS_URL="$url" cargo bench --bench dedup -- --warm-up-time 2 --measurement-time 5 2>&1 |
  grep -E "^dedup_|time:|thrpt:"
redis-cli -p "$port" flushall >/dev/null

echo "== Redis memory per done event"
cargo run --release --quiet --example dedup_state_cost -- "$url" 100000
