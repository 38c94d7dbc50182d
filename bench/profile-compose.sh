#!/usr/bin/env bash
# Instructions per composed checkout: `manifold serve` on the checkout route of `manifold bench
# compose`, and the hand-written tokio::join! aggregator (example `hand_written`), each under
# callgrind in a process of its own, against the same simulated upstreams (instant: the figure is
# the aggregator's work, not its waits), the same bounded load from `manifold load`. Counters are
# zeroed after a warm-up and dumped after N checkouts, so startup is not counted.
#
#   CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release -p manifold -p manifold-bench --bin manifold --example hand_written
#   (without `--bin manifold`, `--example` selects the example alone: the gateway binary is not built)
#   [RATE=20] bench/profile-compose.sh [N] [OUT_DIR]
#
# RATE (checkouts per second, default 100): lower it on a loaded machine. The gateway under
# callgrind must keep up, or the concurrency limit sheds checkouts and the count measures 503s.
# MANIFOLD and HAND override the two binaries (an A/B against a saved build).
# GATEWAY_EXTRA: TOML appended to the gateway's config, e.g. $'[telemetry]\nmetrics = false\ntracing
# = false' for telemetry off (the default config has metrics, tracing and the trace store on).
# VG_OPTS: more callgrind options, e.g. "--cache-sim=yes --branch-sim=yes" for simulated cache
# misses and mispredicted branches beside the instructions (the files' `summary:` line).
# CALLGRIND=0 runs both aggregators natively (no instruction count): with RATE=2000, the
# connection count below at the benchmark's rate.
#
# Prints Ir per request for each, and the upstream connections each aggregator opened per
# checkout while the counted checkouts ran (from `ss` snapshots of the sockets to the simulated
# services: established ones new since the first snapshot, plus new TIME-WAITs, minus those
# established before that are gone; a reused keep-alive connection counts 0). The callgrind
# files (callgrind_annotate them) stay in OUT_DIR.
set -euo pipefail
# shellcheck source=lib/checkout.sh
source "$(dirname "$0")/lib/checkout.sh"
N=${1:-1000}
OUT=${2:-$(mktemp -d /tmp/profile-compose.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-target}/release
MANIFOLD=${MANIFOLD:-$TARGET/manifold}
HAND=${HAND:-$TARGET/examples/hand_written}
WARM=200
RATE=${RATE:-100}
CALLGRIND=${CALLGRIND:-1}
BODY='{"total": 42.5, "items": [{"sku": "a-1", "qty": 2}], "address": "1 Main St"}'
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

checkout_sim_toml > "$OUT/sim.toml"
"$MANIFOLD" sim -c "$OUT/sim.toml" --json > "$OUT/sim.json" &
pids+=($!)
for _ in $(seq 100); do [ -s "$OUT/sim.json" ] && break; sleep 0.1; done
url() { python3 -c "import json,sys; print(json.load(open('$OUT/sim.json'))['services']['$1'][0])"; }
ORDER=$(url order); PAYMENT=$(url payment); INVENTORY=$(url inventory); SHIPPING=$(url shipping)
SIM_PORTS=$(python3 -c "import json; print(' '.join(sorted({u.rsplit(':',1)[1].strip('/') for v in json.load(open('$OUT/sim.json'))['services'].values() for u in v})))")

# The TCP sockets touching a simulated service's port: `STATE local peer`, one a line.
sockets() { ss -Htan | awk -v ports="$SIM_PORTS" '
  BEGIN { n = split(ports, p, " "); for (i = 1; i <= n; i++) want[p[i]] = 1 }
  { l = $4; r = $5; sub(/.*:/, "", l); sub(/.*:/, "", r)
    if ((l in want) || (r in want)) print $1, $4, $5 }'; }
# Connections opened between two snapshots, per checkout: client-side ESTAB new in the second,
# plus TIME-WAIT new in the second, minus client-side ESTAB of the first gone from the second.
opened() { # before after n
  python3 - "$1" "$2" "$3" "$SIM_PORTS" <<'PY'
import sys
before, after, n, ports = open(sys.argv[1]).read().split("\n"), open(sys.argv[2]).read().split("\n"), int(sys.argv[3]), set(sys.argv[4].split())
def sets(lines):
    est, tw = set(), set()
    for line in lines:
        f = line.split()
        if len(f) != 3: continue
        state, local, peer = f
        if state == "ESTAB" and peer.rsplit(":", 1)[1] in ports: est.add((local, peer))
        elif state == "TIME-WAIT": tw.add((local, peer))
    return est, tw
eb, tb = sets(before); ea, ta = sets(after)
opened = len(ea - eb) + len(ta - tb) - len(eb - ea)
print(f"{opened} upstream connections opened during {n} checkouts ({opened / n:.3f} per checkout; {len(ea)} open at the end)")
PY
}

{ checkout_gateway_toml 127.0.0.1:18480 127.0.0.1:18481 "$ORDER" "$PAYMENT" "$INVENTORY" "$SHIPPING"
  printf '%s\n' "${GATEWAY_EXTRA:-}"; } > "$OUT/gateway.toml"

profile() { # name url command...
  local name=$1 url=$2; shift 2
  if [ "$CALLGRIND" = 1 ]; then
    valgrind --tool=callgrind ${VG_OPTS:-} --callgrind-out-file="$OUT/$name.callgrind" "$@" > "$OUT/$name.log" 2>&1 &
  else
    "$@" > "$OUT/$name.log" 2>&1 &
  fi
  local pid=$!
  pids+=($pid)
  for _ in $(seq 600); do
    curl -s -o /dev/null -X POST -H 'content-type: application/json' -d "$BODY" "$url" && break
    sleep 0.2
  done
  "$MANIFOLD" load -X POST -b "$BODY" -r $RATE -n $WARM "$url?rid={seq}" > /dev/null
  [ "$CALLGRIND" = 1 ] && callgrind_control -z "$pid" > /dev/null
  sockets > "$OUT/$name.sockets.before"
  "$MANIFOLD" load -X POST -b "$BODY" -r $RATE -n "$N" "$url?rid={seq}" > "$OUT/$name.load.txt"
  sockets > "$OUT/$name.sockets.after"
  echo "$name: $(opened "$OUT/$name.sockets.before" "$OUT/$name.sockets.after" "$N")"
  if [ "$CALLGRIND" != 1 ]; then
    kill "$pid"; wait "$pid" 2>/dev/null || true
    return
  fi
  callgrind_control -d "$pid" > /dev/null
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file
  file=$(ls -t "$OUT/$name.callgrind"* | grep -v '\.callgrind$' | head -1)
  local ir
  ir=$(grep -m1 '^summary:' "$file" | awk '{print $2}')
  echo "$name: $((ir / N)) instructions per checkout ($N checkouts; $file)"
}

profile manifold http://127.0.0.1:18480/checkout "$MANIFOLD" serve -c "$OUT/gateway.toml"
if [ -x "$HAND" ]; then profile hand-written http://127.0.0.1:18482/checkout "$HAND" 127.0.0.1:18482 "$ORDER" "$PAYMENT" "$INVENTORY" "$SHIPPING"; else echo "hand-written: $HAND not built (see the build line above)"; fi
echo "callgrind files and logs in $OUT"
