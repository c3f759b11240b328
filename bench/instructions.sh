#!/usr/bin/env bash
# Instructions per request of the in-process request path, counted by valgrind's callgrind: stable on a
# noisy machine, where a timing is not. Two paths: the door's layers, verify a 1 KiB body, claim and
# commit in the memory store, forward to the `discard` handler; and the same with a real HTTP forward over
# loopback to an echo downstream in the same process. Each is run twice, sending 1 000 and 2 000 of 2 000 requests signed
# beforehand: the difference, over 1 000, is the handling of one request. Only the instructions inside
# `hookgate::cli::hotpath::drive` are counted (the loop that sends, with everything it runs: the stack, the
# downstream, the runtime's driver), so set-up, signing and whatever is made on first use (governor's and
# metrics' clock calibrates itself by spinning on the wall clock, a count that moved by 10 % from run to run)
# stay out of it; a warm-up request has gone through the stack before.
#
#   bench/instructions.sh            # measure, and fail when a path costs 10 % more than bench/instructions.json
#   bench/instructions.sh --update   # measure, and write the figures as the new baseline (say why in the commit)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  echo "instructions: installing valgrind (Debian package)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
cargo build --release --quiet --bin hookgate
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target_dir/release/hookgate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # path flag, requests: the instructions of one whole run
  local out="$work/callgrind.$1.$2"
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hookgate::cli::hotpath::drive' \
    --callgrind-out-file="$out" "$BIN" hotpath --requests "$2" --signed 2000 $3 \
    >/dev/null 2>"$work/valgrind.log" || { cat "$work/valgrind.log" >&2; exit 1; }
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}
measure() { # name, flag
  local one two
  one=$(count "$1" 1000 "$2")
  two=$(count "$1" 2000 "$2")
  local per=$(( (two - one) / 1000 ))
  # A renamed or inlined `drive` would count (almost) nothing, and pass any baseline.
  if [ "$per" -lt 10000 ]; then
    echo "instructions: $1: only $per per request: is hookgate::cli::hotpath::drive still a function of its own?" >&2
    exit 1
  fi
  echo "$per"
}
discard=$(measure discard "")
loopback=$(measure loopback --loopback)
echo "instructions per request: discard $discard, loopback $loopback"

baseline=bench/instructions.json
if [ "${1:-}" = "--update" ]; then
  printf '{\n  "discard": %s,\n  "loopback": %s\n}\n' "$discard" "$loopback" > "$baseline"
  echo "instructions: wrote $baseline"
  exit 0
fi
python3 - "$baseline" "$discard" "$loopback" <<'PY'
import json, sys
base = json.load(open(sys.argv[1]))
now = {"discard": int(sys.argv[2]), "loopback": int(sys.argv[3])}
worse = []
for path, value in now.items():
    ratio = value / base[path]
    print(f"instructions: {path}: {value} per request, {ratio:.3f}x the baseline {base[path]}")
    if ratio > 1.10:
        worse.append(f"{path}: {value} per request is {ratio:.2f}x the baseline {base[path]} (more than 10 % over)")
if worse:
    sys.exit("instructions: the request path grew:\n  " + "\n  ".join(worse) +
             "\n  If it is on purpose, run bench/instructions.sh --update and say why in the commit.")
PY
