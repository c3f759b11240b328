#!/usr/bin/env bash
# Where a pinned gateway's CPU goes, per request: hookgate on core 0, everything else on the other cores,
# the same load as `bench/run.sh --pinned` (hookgate loadgen, 64 connections, 1 KiB signed GitHub-scheme
# events). While the load runs, `perf record` samples the gateway's stacks (cpu-clock, frame pointers)
# and `perf stat` counts its system calls and context switches; bench/profile.py sorts the samples into
# the parts of a request.
#
#   bench/profile.sh [memory|redis]    # default: memory
#   PERF_DATA=/tmp/gw.data bench/profile.sh    # also keeps the samples, for `perf report -i`
#
# Builds its own binary with frame pointers (target/profile), so that every sample has its whole stack.
# Needs perf (Debian package linux-perf) and 2 or more cores. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

STORE=${1:-memory}
case "$STORE" in memory|redis) ;; *) echo "profile: memory or redis, not $STORE" >&2; exit 2 ;; esac
SECONDS_SAMPLED=${SECONDS_SAMPLED:-6}
CORES=$(nproc)
[ "$CORES" -ge 2 ] || { echo "profile: needs 2 or more cores" >&2; exit 1; }
command -v perf >/dev/null || { echo "profile: needs perf" >&2; exit 1; }
REST="1-$((CORES - 1))"

RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_STRIP=false \
  cargo build --release --quiet --bin hookgate --target-dir target/profile
BIN=target/profile/release/hookgate

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. bench/common.sh

ECHO=$(free_port); REDIS=$(free_port); PORT=$(free_port); ADMIN=$(free_port)
taskset -c "$REST" "$BIN" echo --listen "127.0.0.1:$ECHO" >/dev/null 2>&1 & pids+=($!)
if [ "$STORE" = redis ]; then
  taskset -c "$REST" redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$REDIS"
fi
# The dedup store's default key prefix, "hg".
gateway_toml "$PORT" "$ADMIN" "$STORE" "$REDIS" http "$ECHO" hg > "$work/hookgate.toml"
taskset -c 0 "$BIN" serve --config "$work/hookgate.toml" --threads 1 >"$work/gateway.log" 2>&1 & pids+=($!)
GATEWAY=$!
wait_port "$ECHO"; wait_port "$PORT"; wait_port "$ADMIN"

requests() { curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '/^hookgate_requests_total/ {n += $NF} END {printf "%d\n", n}'; }
ticks() { cut -d' ' -f14,15 "/proc/$GATEWAY/stat" | awk '{print $1 + $2}'; }

taskset -c "$REST" "$BIN" loadgen --url "http://127.0.0.1:$PORT/webhooks/bench" --secret bench-secret-0123456789 \
  --duration "$((SECONDS_SAMPLED + 3))s" --connections 64 --json --quiet >"$work/load.json" &
LOAD=$!
sleep 1
before_requests=$(requests); before_ticks=$(ticks)
perf stat -e task-clock,context-switches,raw_syscalls:sys_enter -p "$GATEWAY" -o "$work/stat.txt" -- sleep "$SECONDS_SAMPLED" &
STAT=$!
perf record -q -e cpu-clock -F 4999 -g -p "$GATEWAY" -o "$work/perf.data" -- sleep "$SECONDS_SAMPLED" 2>/dev/null
wait "$STAT"
[ -z "${PERF_DATA:-}" ] || cp "$work/perf.data" "$PERF_DATA"
after_requests=$(requests); after_ticks=$(ticks)
wait "$LOAD"

served=$((after_requests - before_requests))
cpu_seconds=$(python3 -c "print(($after_ticks - $before_ticks) / $(getconf CLK_TCK))")
echo "# hookgate on core 0 ($STORE dedup), load on cores $REST, ${SECONDS_SAMPLED} s sampled"
echo
perf script -i "$work/perf.data" 2>/dev/null | python3 bench/profile.py --requests "$served" --cpu-seconds "$cpu_seconds"
echo
python3 - "$work/stat.txt" "$served" <<'PY'
import re, sys
text, served = open(sys.argv[1]).read(), int(sys.argv[2])
def count(event):
    m = re.search(r"([\d,.]+)\s+(msec\s+)?" + re.escape(event), text)
    return float(m.group(1).replace(",", "")) if m else float("nan")
print("| per request | count |")
print("|---|---|")
print(f"| system calls | {count('raw_syscalls:sys_enter') / served:.2f} |")
print(f"| context switches (the gateway's thread going to sleep and being woken) | {count('context-switches') / served:.3f} |")
PY
