#!/usr/bin/env bash
# hookgate against a plain proxy, side by side on this machine, in one run. See bench/README.md.
#
#   bench/run.sh            # 5 rounds of 5 s per variant, interleaved
#   bench/run.sh --smoke    # 1 round of 1 s: checks that the suite still runs
#   bench/run.sh --pinned   # the proxies (nginx, hookgate) on cores of their own, everything else on the
#                           # others: each proxy's own CPU per request, as where a gateway is deployed.
#                           # PROXY_CORES=N (default 1) cores 0..N-1 for the proxy, the rest for the
#                           # client, the downstream and Redis; nginx runs N workers, hookgate N threads
#   HOOKGATE_BASELINE=/path/to/old/hookgate bench/run.sh
#                           # also runs an older build as base_mem, base_redis and base_queue, interleaved
#                           # with the others in the same rounds: a before/after comparison in one run
#   REPLAY_GUARD=off bench/run.sh
#                           # this build's variants run with replay_guard = "off" (an older build that
#                           # predates the guard does the same work as this one then)
#
# Every variant is driven by the same client (hookgate loadgen: signed 1 KiB JSON events, 64 keep-alive
# connections, closed loop) against the same downstream (hookgate echo):
#   direct         loadgen -> echo                                   (the ceiling)
#   nginx          loadgen -> nginx proxy_pass, upstream keepalive -> echo
#   hookgate_mem   loadgen -> hookgate (verify + memory dedup + http) -> echo
#   hookgate_redis loadgen -> hookgate (verify + Redis dedup + http) -> echo, private redis-server
#   queue_accept   loadgen -> hookgate (verify + Redis dedup + queue): the accept rate (202); the
#                  delivery workers drain to echo at the same time, on the same cores
# Variants run in turn, round after round (A B C D E, A B C D E, ...), so that drift hits them all alike.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=5
DURATION=5s
CONNECTIONS=64
SMOKE=""
PINNED=""
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1; ROUNDS=1; DURATION=1s ;;
    --pinned) PINNED=1 ;;
    *) echo "bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done
PIN_PROXY=()
PIN_REST=()
WORKERS=auto
if [ -n "$PINNED" ]; then
  CORES=$(nproc)
  PROXY_CORES=${PROXY_CORES:-1}
  [ "$CORES" -gt "$PROXY_CORES" ] || { echo "bench: --pinned needs more than PROXY_CORES=$PROXY_CORES cores" >&2; exit 1; }
  command -v taskset >/dev/null || { echo "bench: --pinned needs taskset (util-linux)" >&2; exit 1; }
  PIN_PROXY=(taskset -c "0-$((PROXY_CORES - 1))")
  PIN_REST=(taskset -c "$PROXY_CORES-$((CORES - 1))")
  # hookgate's default thread count follows its CPU affinity: PROXY_CORES threads, as nginx has workers.
  WORKERS=$PROXY_CORES
fi
VARIANTS=(direct nginx hookgate_mem hookgate_redis queue_accept)
BASELINE=${HOOKGATE_BASELINE:-}
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "bench: HOOKGATE_BASELINE=$BASELINE is not an executable" >&2; exit 1; }
  # Each older build runs just before its counterpart, so that the two see the same moment of the machine.
  VARIANTS=(direct nginx base_mem hookgate_mem base_redis hookgate_redis base_queue queue_accept)
fi

if ! command -v nginx >/dev/null 2>&1; then
  echo "bench: installing nginx (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
command -v redis-server >/dev/null || { echo "bench: redis-server is needed (scripts/test installs it)"; exit 1; }
# The chart is drawn with matplotlib, from PyPI into a venv of the bench's own.
venv=bench/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "bench: installing matplotlib into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib==3.10.7
fi
cargo build --release --quiet --bin hookgate
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target_dir/release/hookgate
[ -x "$BIN" ] || { echo "bench: no binary at $BIN" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

. bench/common.sh

ECHO=$(free_port); NGINX=$(free_port); REDIS=$(free_port)
declare -A PORT ADMIN
for v in hookgate_mem hookgate_redis queue_accept base_mem base_redis base_queue; do PORT[$v]=$(free_port); ADMIN[$v]=$(free_port); done

"${PIN_REST[@]}" "$BIN" echo --listen "127.0.0.1:$ECHO" >/dev/null 2>&1 & pids+=($!); ECHO_PID=$!
# Without persistence, as in every earlier run: the figures are the gateway's cost, comparable across builds.
# (With the append-only file on, Redis's own cost per write grows, and it keeps growing as the file does.)
"${PIN_REST[@]}" redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize no >/dev/null 2>&1 &
pids+=($!); REDIS_PID=$!

cat > "$work/nginx.conf" <<NGINX
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$ECHO; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
"${PIN_PROXY[@]}" nginx -c "$work/nginx.conf"

REPLAY_GUARD=${REPLAY_GUARD:-}
case $REPLAY_GUARD in
  ""|off) ;;
  *) echo "bench: REPLAY_GUARD=$REPLAY_GUARD: only off is known" >&2; exit 2 ;;
esac
gateway_config() { # variant, dedup store, forward kind[, "older": a build that refuses allow_volatile]
  local source_line=""
  case $1 in base_*) ;; *) [ -n "$REPLAY_GUARD" ] && source_line="replay_guard = \"$REPLAY_GUARD\"" ;; esac
  gateway_toml "${PORT[$1]}" "${ADMIN[$1]}" "$2" "$REDIS" "$3" "$ECHO" "$1" "$source_line"
  # A queue on a Redis without persistence is refused unless told (builds before that key refuse the key).
  if [ "$3" = queue ] && [ "${4:-allow_volatile}" = allow_volatile ]; then echo "allow_volatile = true"; fi
}
declare -A PID
gateway_config hookgate_mem memory http > "$work/mem.toml"
gateway_config hookgate_redis redis http > "$work/redis.toml"
gateway_config queue_accept redis queue > "$work/queue.toml"
pairs=(hookgate_mem:mem:"$BIN" hookgate_redis:redis:"$BIN" queue_accept:queue:"$BIN")
if [ -n "$BASELINE" ]; then
  gateway_config base_mem memory http > "$work/base_mem.toml"
  gateway_config base_redis redis http > "$work/base_redis.toml"
  gateway_config base_queue redis queue > "$work/base_queue.toml"
  if ! "$BASELINE" check-config "$work/base_queue.toml" >/dev/null 2>&1; then
    gateway_config base_queue redis queue older > "$work/base_queue.toml"
  fi
  pairs+=(base_mem:base_mem:"$BASELINE" base_redis:base_redis:"$BASELINE" base_queue:base_queue:"$BASELINE")
fi
for triple in "${pairs[@]}"; do
  v=${triple%%:*}; rest=${triple#*:}; f=${rest%%:*}; bin=${rest#*:}
  RUST_LOG=warn "${PIN_PROXY[@]}" "$bin" serve --config "$work/$f.toml" >/dev/null 2>"$work/$v.log" &
  pids+=($!); PID[$v]=$!
done
for v in "${VARIANTS[@]}"; do
  case $v in direct|nginx) ;; *) wait_port "${PORT[$v]}" ;; esac
done
for p in "$ECHO" "$NGINX" "$REDIS"; do wait_port "$p"; done
NGINX_PIDS="$(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')"

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$ECHO/webhooks/bench" ;;
    nginx) echo "http://127.0.0.1:$NGINX/webhooks/bench" ;;
    *) echo "http://127.0.0.1:${PORT[$1]}/webhooks/bench" ;;
  esac
}
server_pids() {
  case $1 in
    direct) echo "" ;;
    nginx) echo "$NGINX_PIDS" ;;
    *) echo "${PID[$1]}" ;;
  esac
}
cpu_ticks() { # summed utime+stime of the given pids, in clock ticks
  local total=0
  for pid in "$@"; do
    set -- $(cut -d' ' -f14,15 "/proc/$pid/stat")
    total=$((total + $1 + $2))
  done
  echo $total
}
rss_peak_kb() { local total=0; for pid in "$@"; do total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status"))); done; echo $total; }

HZ=$(getconf CLK_TCK)
# After a variant, wait until its server is idle again (a queue variant's workers drain the backlog it
# accepted), so that no variant pays for the one before it. Bounded: at most 60 s.
settle() {
  [ -n "$1" ] || return 0
  for _ in $(seq 1 300); do
    local a b; a=$(cpu_ticks $1); sleep 0.2; b=$(cpu_ticks $1)
    [ $((b - a)) -le 1 ] && return 0
  done
  echo "bench: $1 still busy after 60 s" >&2
}
runs="$work/runs.jsonl"
: > "$runs"
for round in $(seq 1 "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    servers=$(server_pids "$v")
    before_server=$(cpu_ticks $servers); before_echo=$(cpu_ticks "$ECHO_PID"); before_redis=$(cpu_ticks "$REDIS_PID")
    "${PIN_REST[@]}" "$BIN" loadgen --url "$(url_of "$v")" --secret bench-secret-0123456789 --duration "$DURATION" \
      --connections "$CONNECTIONS" --json --quiet > "$work/report.json"
    after_server=$(cpu_ticks $servers); after_echo=$(cpu_ticks "$ECHO_PID"); after_redis=$(cpu_ticks "$REDIS_PID")
    rss=$( [ -n "$servers" ] && rss_peak_kb $servers || echo 0 )
    python3 - "$v" "$round" "$HZ" "$((after_server - before_server))" "$((after_echo - before_echo))" \
      "$((after_redis - before_redis))" "$rss" \
      "$work/report.json" >> "$runs" <<'PY'
import json, sys
v, rnd, hz, server, echo, redis, rss, path = sys.argv[1:]
r = json.load(open(path))
per_k = lambda ticks: int(ticks) / int(hz) / max(r["requests"], 1) * 1000
print(json.dumps({"variant": v, "round": int(rnd), "requests": r["requests"], "rps": r["requests_per_second"],
  "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"], "errors": r["errors"],
  "by_status": r["by_status"], "cpu_s_per_1k": {"server": per_k(server), "echo": per_k(echo), "redis": per_k(redis),
    "client": (r["cpu_seconds"] or 0) / max(r["requests"], 1) * 1000},
  "rss_peak_mib": int(rss) / 1024}))
PY
    settle "$servers"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-15s round %s: %8.0f req/s  p50 %.2f ms  p99 %.2f ms  status %s" % (r["variant"], r["round"], r["rps"], r["p50_ms"], r["p99_ms"], r["by_status"]))' "$(tail -1 "$runs")"
  done
done

# A variant that answered mostly errors measured the wrong thing (all-401 runs are fast): the run fails.
python3 - "$runs" <<'PY'
import json, sys
bad = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    ok = sum(n for status, n in r["by_status"].items() if str(status).startswith("2"))
    total = sum(r["by_status"].values()) + r["errors"]
    if total == 0 or ok < 0.95 * total:
        bad.append(f'{r["variant"]} round {r["round"]}: {ok} of {total} answers were 2xx {r["by_status"]}')
if bad:
    sys.exit("bench: answers were not mostly 2xx:\n  " + "\n  ".join(bad))
PY

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
guard=${REPLAY_GUARD:+, this build with replay_guard = $REPLAY_GUARD}
mode="shared cores$guard"
if [ -n "$PINNED" ]; then
  stamp="$stamp-pinned"
  mode="pinned$guard: the proxy on core(s) ${PIN_PROXY[2]}, client, downstream and Redis on ${PIN_REST[2]}"
fi
[ -n "$SMOKE" ] && out="$work/smoke" || out="bench/results/$stamp"
mkdir -p "$(dirname "$out")"
"$venv/bin/python" bench/report.py "$runs" "$out" "$(nproc) cores, $(uname -r), $mode, $CONNECTIONS connections, 1 KiB bodies, $ROUNDS x $DURATION"
if [ -n "$SMOKE" ]; then
  cat "$out.md"
  python3 -c "import json,sys; d=json.load(open('$out.json')); assert all(v['requests']>0 for v in d['variants'].values()), 'a variant sent nothing'"
  [ -s "$out.png" ] || { echo "bench smoke: no chart was drawn" >&2; exit 1; }
  echo "bench smoke: ok"
else
  echo "results: $out.json, $out.md, $out.png"
fi
