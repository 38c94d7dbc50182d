#!/bin/sh
# Same-run comparison: parse-only vs read+critical path (Rust) vs the Python reference.
# Usage: crates/manifold-trace/bench/compare.sh [TRACES] [RUNS]
set -eu
cd "$(dirname "$0")/../../.."
exec cargo run --release -q -p manifold-trace --example speed -- "${1:-20000}" "${2:-5}"
