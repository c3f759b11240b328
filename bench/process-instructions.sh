#!/usr/bin/env bash
# The whole gateway process's instructions per request under callgrind, with a real Redis and a real
# downstream: for the Redis and queue paths, which `hookgate hotpath` (memory store, in process) does not
# take. One connection, so one Redis command per batch. Two runs (N1 and N2 requests) and their difference
# per request, so that start-up and shutdown cancel out. Deterministic to about 1 %: use it for A/B on a
# machine whose timings are too noisy.
#
#   bench/process-instructions.sh BIN STORE FORWARD [N1 N2]
#   bench/process-instructions.sh target/release/hookgate redis http
#   bench/process-instructions.sh /tmp/old-hookgate redis queue 10 1500
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,10p "$0" >&2; exit 2; }
BIN=$(realpath "$1"); STORE=$2; KIND=$3; N1=${4:-10}; N2=${5:-1500}
command -v valgrind >/dev/null || { echo "process-instructions: needs valgrind" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "process-instructions: needs redis-server (scripts/needs-redis)" >&2; exit 1; }
cargo build --release --quiet --bin hookgate
TOOLS=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/hookgate
source bench/common.sh
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
redis_port=$(free_port); echo_port=$(free_port)
redis-server --port "$redis_port" --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
"$TOOLS" echo --listen "127.0.0.1:$echo_port" >/dev/null 2>&1 & pids+=($!)
wait_port "$redis_port"; wait_port "$echo_port"

count() { # requests: the instructions of one whole run of the gateway
  local n=$1 port admin gateway
  port=$(free_port); admin=$(free_port)
  gateway_toml "$port" "$admin" "$STORE" "$redis_port" "$KIND" "$echo_port" "pi$n" > "$work/g.toml"
  [ "$KIND" = queue ] && echo "allow_volatile = true" >> "$work/g.toml"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" "$BIN" serve --threads 1 \
    --config "$work/g.toml" >/dev/null 2>"$work/valgrind.$n" &
  gateway=$!
  wait_port "$port"
  "$TOOLS" loadgen --url "http://127.0.0.1:$port/webhooks/bench" --secret bench-secret-0123456789 \
    --connections 1 --events "$n" --quiet >/dev/null
  if [ "$KIND" = queue ]; then # the delivery is part of the cost: wait (at most 30 s) for the queue to drain
    for _ in $(seq 1 150); do
      [ "$(redis-cli -p "$redis_port" xlen "pi$n:queue:bench")" = 0 ] && break
      sleep 0.2
    done
  fi
  kill -TERM "$gateway"; wait "$gateway" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.$n"
}
one=$(count "$N1"); two=$(count "$N2")
echo "$STORE/$KIND: $(( (two - one) / (N2 - N1) )) instructions per request ($one at $N1 requests, $two at $N2)"
