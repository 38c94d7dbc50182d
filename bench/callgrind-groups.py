#!/usr/bin/env python3
"""Exclusive instructions per request of two callgrind profiles, grouped by crate and module.

Usage: bench/callgrind-groups.py A.out B.out REQUESTS_A REQUESTS_B

A and B are `callgrind.out` files (e.g. bench/proxy-callgrind.sh's for Manifold and for
`TARGET=hyper`); the report lists, per group, A's and B's instructions per request and the
difference, largest difference first. Groups: libc's memcpy/memset and the clock, jemalloc, then
the function's crate (and its module for manifold_gateway, manifold_telemetry, tokio, hyper and
http). It reads `callgrind_annotate --inclusive=no` (valgrind's), so the counts are exclusive.
"""
import collections
import re
import subprocess
import sys

LIBC = ["memcpy", "memmove", "memset", "clock_gettime", "Timespec", "epoll", "futex", "rjem"]
BY_MODULE = ("manifold_gateway", "manifold_telemetry", "tokio", "hyper", "http")


def load(path):
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", path],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    counts = collections.Counter()
    started = False
    for line in out:
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        if line.startswith("--"):
            if counts:
                break
            continue
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*)$", line)
        if not m or float(m.group(2)) > 50:  # thread entry points: inclusive in any listing
            continue
        rest = m.group(3)
        fn = rest.split(":", 1)[1] if ":" in rest else rest
        counts[re.sub(r" \[.*\]$", "", fn)] += int(m.group(1).replace(",", ""))
    return counts


def group(fn):
    for key in LIBC:
        if key in fn:
            return key
    f = fn.lstrip("<&")
    m = re.match(r"([a-z_0-9]+)::([a-z_0-9]+)(?:::([a-z_0-9]+))?", f)
    if not m:
        return f[:60]
    if m.group(1) == "tokio" and m.group(3):
        return "::".join(m.groups())
    if m.group(1) in BY_MODULE:
        return f"{m.group(1)}::{m.group(2)}"
    return m.group(1)


def main():
    a_path, b_path, na, nb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ga, gb = collections.Counter(), collections.Counter()
    for fn, n in load(a_path).items():
        ga[group(fn)] += n
    for fn, n in load(b_path).items():
        gb[group(fn)] += n
    rows = sorted(set(ga) | set(gb), key=lambda k: -(ga[k] / na - gb[k] / nb))
    print(f"{'group':60s} {'A/req':>8s} {'B/req':>8s} {'diff':>8s}")
    for k in rows:
        a, b = ga[k] / na, gb[k] / nb
        if abs(a - b) >= 50:
            print(f"{k[:60]:60s} {a:8.0f} {b:8.0f} {a - b:8.0f}")
    print(f"{'total':60s} {sum(ga.values()) / na:8.0f} {sum(gb.values()) / nb:8.0f}")


if __name__ == "__main__":
    main()
