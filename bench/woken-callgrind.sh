#!/usr/bin/env bash
# Instructions per proxied request on a *woken* connection (issue 15 goals 1 and 3): every
# request arrives on a keep-alive connection that has been idle longer than the gateway's park
# wait (50 ms, `crates/manifold-gateway/src/idle.rs`), so hyper's connection and buffers were
# given up and are made again for it. Compare with bench/proxy-callgrind.sh (requests at 200/s
# spread over connections that stay busy).
#
# As bench/proxy-callgrind.sh, but `manifold load` keeps one connection (--connections 1) and
# sends RATE requests a second (default 10: 100 ms between requests, twice the park wait; the
# gateway under callgrind answers in a few ms). Besides the totals it prints the inclusive cost
# per request of the connection's own machinery (the park, the clock, hyper's connection made
# and dropped) and of the allocator.
#
# Usage: bench/woken-callgrind.sh [MANIFOLD_BINARY] [OUT_DIR]
#   Env: REQUESTS (300), WARMUP (20), RATE (10).
set -euo pipefail

exe="${1:-${CARGO_TARGET_DIR:-target}/release/manifold}"
out="${2:-$(mktemp -d /tmp/manifold-woken.XXXXXX)}"
requests="${REQUESTS:-300}"
warmup="${WARMUP:-20}"
rate="${RATE:-10}"
mkdir -p "$out"
[ -x "$exe" ] || { echo "woken-callgrind.sh: $exe is not an executable" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "woken-callgrind.sh: valgrind not installed" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port="$(free_port)"; gw_port="$(free_port)"; admin_port="$(free_port)"

cat > "$out/sim.toml" <<EOT
seed = 7
host = "127.0.0.1"
[services.item]
port = $up_port
  [[services.item.endpoints]]
  method = "GET"
  path = "/item"
  response = { body = { id = "{seq}", name = "widget", price = 9.5 } }
EOT
cat > "$out/gateway.toml" <<EOT
[server]
listen = "127.0.0.1:$gw_port"
admin = "127.0.0.1:$admin_port"

[upstreams.u]
endpoints = ["http://127.0.0.1:$up_port"]

[routes.item]
method = "GET"
path = "/item"
proxy = "u"
EOT

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

RUST_LOG=warn "$exe" sim -c "$out/sim.toml" > "$out/sim.log" 2>&1 &
pids+=($!)
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  "$exe" serve -c "$out/gateway.toml" > "$out/serve.log" 2>&1 &
gw=$!
pids+=($gw)

url="http://127.0.0.1:$gw_port/item"
for _ in $(seq 1 600); do
  curl -s -o /dev/null "$url" && break
  sleep 0.1
done
curl -sf -o /dev/null "$url" || { echo "woken-callgrind.sh: the gateway did not answer $url" >&2; tail "$out/serve.log" >&2; exit 1; }

"$exe" load "$url" --rate "$rate" -n "$warmup" --connections 1 --json > "$out/warmup.json"
callgrind_control -z "$gw" > /dev/null
"$exe" load "$url" --rate "$rate" -n "$requests" --connections 1 --json > "$out/load.json"
callgrind_control -d "$gw" > /dev/null
ok="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$out/load.json")"
dump="$(ls -t "$out"/callgrind.out.* | head -1)"
total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')"
echo "requests answered: $ok of $requests (load: $out/load.json)"
echo "instructions: $total, per request: $(( total / ok ))"
echo "profile: $dump"
short() { grep -E '^ *[0-9,]+ ' | grep -v '(100.0%)' | sed -E 's#/root/.cargo/registry/src/[^/]*/##; s#/rustc/[0-9a-f]*/library/##; s# \[[^]]*\]$##' | cut -c1-200; }
per() { awk -v n="$ok" '{ c=$1; gsub(",","",c); $1=""; printf "%9d /req %s\n", c/n, $0 }'; }
echo "--- the connection's machinery and the allocator, inclusive, per request"
callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null | short \
  | grep -E 'idle::|conn::run|serve_connection|Dispatcher.*new|into_parts|poll_read_from_io|drop_in_place<hyper::server::conn::http1::Connection|^ *[0-9,]+ +\([^)]*\) +(\?\?\?:)?(malloc|free|realloc|__libc_malloc|_int_malloc|_int_free|cfree)' \
  | head -30 | per
echo "--- top 25 by exclusive instructions"
callgrind_annotate --threshold=100 "$dump" 2>/dev/null | short | head -25
echo "--- top 50 by inclusive instructions"
callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null | short | head -50
