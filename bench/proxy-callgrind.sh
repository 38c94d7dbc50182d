#!/usr/bin/env bash
# Instructions per proxied request of `manifold serve` (issue 15): callgrind counts instructions,
# which stay the same however loaded the machine is, unlike wall-clock or CPU time.
#
# A simulated upstream (`manifold sim`, answering GET /item at once, as in `manifold bench
# proxy`) and `manifold serve` with one `proxy = "u"` route run on loopback; the gateway runs
# under callgrind. After WARMUP requests the counters are zeroed, then REQUESTS requests are sent
# by `manifold load` at RATE req/s (keep-alive, open loop), and the counters dumped. The report is
# the instructions per request and the top functions by inclusive and exclusive cost.
#
# Usage: bench/proxy-callgrind.sh [MANIFOLD_BINARY] [OUT_DIR]
#   MANIFOLD_BINARY: a release build with symbols (default target/release/manifold; the
#     workspace's release profile keeps line tables). Env: REQUESTS (2000), WARMUP (300),
#     RATE (200: callgrind runs the gateway ~50x slower; keep it well under its capacity),
#     TARGET (`manifold`, the default: `manifold serve`; `hyper`: the bare tokio + hyper proxy
#     of `manifold bench-peer hyper`, the floor Manifold's own work is measured against;
#     `hyper-per-core`: the same proxy on a single-threaded runtime per thread),
#     CONNECTIONS (unset: `manifold load`'s default; 1 with a low RATE makes every request wake a
#     parked connection, see bench/woken-callgrind.sh), MACHINERY (1: also print the inclusive
#     cost per request of the connection's own machinery and of the allocator).
set -euo pipefail

exe="${1:-${CARGO_TARGET_DIR:-target}/release/manifold}"
out="${2:-$(mktemp -d /tmp/manifold-callgrind.XXXXXX)}"
requests="${REQUESTS:-2000}"
warmup="${WARMUP:-300}"
rate="${RATE:-200}"
target="${TARGET:-manifold}"
conns=()
[ -n "${CONNECTIONS:-}" ] && conns=(--connections "$CONNECTIONS")
mkdir -p "$out"
[ -x "$exe" ] || { echo "proxy-callgrind.sh: $exe is not an executable" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "proxy-callgrind.sh: valgrind not installed" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port="$(free_port)"; gw_port="$(free_port)"; admin_port="$(free_port)"

cat > "$out/sim.toml" <<EOF
seed = 7
host = "127.0.0.1"
[services.item]
port = $up_port
  [[services.item.endpoints]]
  method = "GET"
  path = "/item"
  response = { body = { id = "{seq}", name = "widget", price = 9.5 } }
EOF
cat > "$out/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$gw_port"
admin = "127.0.0.1:$admin_port"

[upstreams.u]
endpoints = ["http://127.0.0.1:$up_port"]

[routes.item]
method = "GET"
path = "/item"
proxy = "u"
EOF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

RUST_LOG=warn "$exe" sim -c "$out/sim.toml" > "$out/sim.log" 2>&1 &
pids+=($!)
case "$target" in
  manifold) program=(serve -c "$out/gateway.toml") ;;
  hyper|hyper-per-core)
    program=(bench-peer "$target" --listen "127.0.0.1:$gw_port" --upstream "127.0.0.1:$up_port") ;;
  *) echo "proxy-callgrind.sh: TARGET is manifold, hyper or hyper-per-core, not $target" >&2; exit 1 ;;
esac
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  "$exe" "${program[@]}" > "$out/serve.log" 2>&1 &
gw=$!
pids+=($gw)

url="http://127.0.0.1:$gw_port/item"
for _ in $(seq 1 600); do
  curl -s -o /dev/null "$url" && break
  sleep 0.1
done
curl -sf -o /dev/null "$url" || { echo "proxy-callgrind.sh: the gateway did not answer $url" >&2; tail "$out/serve.log" >&2; exit 1; }

"$exe" load "$url" --rate "$rate" -n "$warmup" "${conns[@]}" --json > "$out/warmup.json"
callgrind_control -z "$gw" > /dev/null
"$exe" load "$url" --rate "$rate" -n "$requests" "${conns[@]}" --json > "$out/load.json"
callgrind_control -d "$gw" > /dev/null
ok="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$out/load.json")"
dump="$(ls -t "$out"/callgrind.out.* | head -1)"
total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')"
echo "requests answered: $ok of $requests (load: $out/load.json)"
echo "instructions: $total, per request: $(( total / ok ))"
echo "profile: $dump"
# callgrind_annotate 3.19 shows 99% of the cost unless told otherwise (--threshold=100); the
# rows at 100.0% are the threads' entry points, not work of their own. Paths shortened.
short() { grep -E '^ *[0-9,]+ ' | grep -v '(100.0%)' | sed -E 's#/root/.cargo/registry/src/[^/]*/##; s#/rustc/[0-9a-f]*/library/##; s# \[[^]]*\]$##' | cut -c1-220; }
if [ "${MACHINERY:-0}" = 1 ]; then
  per() { awk -v n="$ok" '{ c=$1; gsub(",","",c); $1=""; printf "%9d /req %s\n", c/n, $0 }'; }
  echo "--- the connection's machinery and the allocator, inclusive, per request"
  callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null | short \
    | grep -E 'idle::|conn::run|serve_connection|Dispatcher.*new|into_parts|poll_read_from_io|drop_in_place<hyper::server::conn::http1::Connection|^ *[0-9,]+ +\([^)]*\) +(\?\?\?:)?(malloc|free|realloc|__libc_malloc|_int_malloc|_int_free|cfree)' \
    | head -30 | per
fi
echo "--- top 25 by exclusive instructions"
callgrind_annotate --threshold=100 "$dump" 2>/dev/null | short | head -25
echo "--- top 60 by inclusive instructions"
callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null | short | head -60
