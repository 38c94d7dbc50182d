#!/usr/bin/env bash
# Instructions per proxied request on a *woken* connection (issue 15 goals 1 and 3): every
# request arrives on a keep-alive connection that has been idle longer than the gateway's park
# wait (50 ms, `crates/manifold-gateway/src/idle.rs`), so hyper's connection and buffers were
# given up and are made again for it. Compare with bench/proxy-callgrind.sh (requests at 200/s
# spread over connections that stay busy), which this runs with one connection, RATE requests a
# second (default 10: 100 ms between requests, twice the park wait; the gateway under callgrind
# answers in a few ms), and the connection's machinery (the park, the clock, hyper's connection
# made and dropped) and the allocator printed per request besides the totals.
#
# Usage: bench/woken-callgrind.sh [MANIFOLD_BINARY] [OUT_DIR]
#   Env: REQUESTS (300), WARMUP (20), RATE (10).
set -euo pipefail
exec env REQUESTS="${REQUESTS:-300}" WARMUP="${WARMUP:-20}" RATE="${RATE:-10}" CONNECTIONS=1 \
  MACHINERY=1 TARGET=manifold "$(dirname "$0")/proxy-callgrind.sh" "${1:-}" \
  "${2:-$(mktemp -d /tmp/manifold-woken.XXXXXX)}"
