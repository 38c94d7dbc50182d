#!/usr/bin/env bash
# Instructions per request of `manifold serve` with telemetry off, metrics only, and full
# tracing, on the checkout DAG of `manifold bench compose` and on a proxy route (issue 14 item
# 7). Callgrind counts instructions, which do not move with the machine's load the way CPU time
# does; each mode is a gateway of its own under `valgrind --tool=callgrind`, against the same
# `manifold sim` upstreams (instant answers), with the same bounded load from `manifold load`.
# Counters are zeroed after a warm-up and dumped after N requests (and a wait for the
# exporter's last batch), so start-up is not counted.
#
#   CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release -p manifold
#   bench/telemetry-callgrind.sh [N] [OUT_DIR]
#
# Modes (the `[telemetry]` of `manifold bench compose --telemetry`): off (`metrics = false`,
# `tracing = false`), metrics (`tracing = false`), full (`sample_ratio = 1.0`, the trace store,
# OTLP/HTTP to a local sink answering 200), and default (no `[telemetry]`: metrics, tracing
# and the trace store, no export; what bench/proxy-callgrind.sh measures). Env: MODES (default
# "off metrics full default"), ROUTES (default "compose proxy"), WARM (200), RATE (100).
set -euo pipefail
# shellcheck source=lib/checkout.sh
source "$(dirname "$0")/lib/checkout.sh"
N=${1:-600}
OUT=${2:-$(mktemp -d /tmp/telemetry-callgrind.XXXXXX)}
MANIFOLD=${MANIFOLD:-${CARGO_TARGET_DIR:-target}/release/manifold}
MODES=${MODES:-off metrics full default}
ROUTES=${ROUTES:-compose proxy}
WARM=${WARM:-200}
RATE=${RATE:-100}
BODY='{"total": 42.5, "items": [{"sku": "a-1", "qty": 2}], "address": "1 Main St"}'
mkdir -p "$OUT"
[ -x "$MANIFOLD" ] || { echo "telemetry-callgrind.sh: $MANIFOLD is not an executable" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

{ checkout_sim_toml; cat <<'TOML'
[services.item]
  [[services.item.endpoints]]
  method = "GET"
  path = "/item"
  latency = "0ms"
  response = { body = { id = "{seq}", name = "widget", price = 9.5 } }
TOML
} > "$OUT/sim.toml"
"$MANIFOLD" sim -c "$OUT/sim.toml" --json > "$OUT/sim.json" &
pids+=($!)
for _ in $(seq 100); do [ -s "$OUT/sim.json" ] && break; sleep 0.1; done
url() { python3 -c "import json,sys; print(json.load(open('$OUT/sim.json'))['services']['$1'][0])"; }
ORDER=$(url order); PAYMENT=$(url payment); INVENTORY=$(url inventory); SHIPPING=$(url shipping); ITEM=$(url item)

# The OTLP sink of the full mode: answers every export 200 with an empty
# ExportTraceServiceResponse, and counts the bytes it was sent. HTTP/1.1 keep-alive, as a
# real collector: with the handler's HTTP/1.0 default the exporter reconnected for every batch
# (~1,400 instructions per checkout on its thread that are the sink's, not Manifold's).
SINK_PORT=$(free_port)
python3 - "$SINK_PORT" > "$OUT/sink.log" 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
        print("export", n, flush=True)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)

telemetry_section() { # mode
  case $1 in
    off) printf '[telemetry]\nmetrics = false\ntracing = false\n' ;;
    metrics) printf '[telemetry]\nmetrics = true\ntracing = false\n' ;;
    full) printf '[telemetry]\nmetrics = true\ntracing = true\nsample_ratio = 1.0\notlp = { endpoint = "http://127.0.0.1:%s", timeout = "5s", queue_capacity = 4096 }\n' "$SINK_PORT" ;;
    default) ;;
    *) echo "unknown mode $1" >&2; exit 1 ;;
  esac
}

# The compose route: `manifold_bench::compose::gateway_config`, with these upstreams; and a
# proxy route to the order service's GET /item.
gateway_toml() { # listen admin telemetry-section
  checkout_gateway_toml "127.0.0.1:$1" "127.0.0.1:$2" "$ORDER" "$PAYMENT" "$INVENTORY" "$SHIPPING"
  cat <<TOML
[upstreams.item]
endpoints = ["$ITEM"]

[routes.item]
method = "GET"
path = "/item"
proxy = "item"
TOML
  printf "%s\n" "$3"
}
run() { # route mode
  local route=$1 mode=$2 gw admin name=$1-$2
  gw=$(free_port); admin=$(free_port)
  gateway_toml "$gw" "$admin" "$(telemetry_section "$mode")" > "$OUT/$name.toml"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.callgrind" \
    "$MANIFOLD" serve -c "$OUT/$name.toml" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  local url load
  if [ "$route" = compose ]; then
    url=http://127.0.0.1:$gw/checkout
    load=(-X POST -b "$BODY")
    for _ in $(seq 600); do
      curl -s -o /dev/null -X POST -H 'content-type: application/json' -d "$BODY" "$url" && break
      sleep 0.2
    done
    url="$url?rid={seq}"
  else
    url=http://127.0.0.1:$gw/item
    load=()
    for _ in $(seq 600); do curl -s -o /dev/null "$url" && break; sleep 0.2; done
  fi
  "$MANIFOLD" load "${load[@]}" -r "$RATE" -n "$WARM" "$url" > /dev/null
  sleep 1.5 # the warm-up's last export
  callgrind_control -z "$pid" > /dev/null
  "$MANIFOLD" load "${load[@]}" -r "$RATE" -n "$N" "$url" > "$OUT/$name.load.txt"
  sleep 2.5 # the last export (flush interval 1 s)
  callgrind_control -d "$pid" > /dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file ir
  file=$(ls -t "$OUT/$name.callgrind"* | grep -v '\.callgrind$' | head -1)
  ir=$(grep -m1 '^summary:' "$file" | awk '{print $2}')
  # A run with errors (timeouts on an overloaded machine) counts retries and logging: rerun it.
  local errors
  errors=$(awk '/^requests/ {print $6}' "$OUT/$name.load.txt")
  echo "$route $mode: $((ir / N)) instructions per request ($N requests, $errors errors; $file)"
}

for route in $ROUTES; do
  for mode in $MODES; do run "$route" "$mode"; done
done
echo "callgrind files, configs and logs in $OUT"
