#!/usr/bin/env python3
"""Straightforward Python implementation of the same work as the Rust reader + critical path:
parse a Jaeger `{"data":[...]}` file, resolve parents, clip children to parents, drop
non-blocking (FOLLOWS_FROM) subtrees, and compute Jaeger's critical-path sections.

Usage: reference.py FILE [REPEATS]  -> prints one JSON line with timings and a checksum.
"""
import json
import sys
import time


def critical_path(spans):
    by_id = {}
    for s in spans:
        by_id.setdefault(s["spanID"], s)
    children = {}
    roots = []
    for s in by_id.values():
        parent = None
        follows = False
        for r in s.get("references") or []:
            if r.get("spanID") in by_id:
                parent = r["spanID"]
                follows = r.get("refType") == "FOLLOWS_FROM"
                break
        if parent is None or parent == s["spanID"]:
            roots.append(s)
        elif not follows:
            children.setdefault(parent, []).append(s)
    if not roots:
        return []
    root = min(roots, key=lambda s: (s["startTime"], -s["duration"]))
    start = {}
    end = {}
    kids = {}
    start[root["spanID"]] = root["startTime"]
    end[root["spanID"]] = root["startTime"] + root["duration"]
    stack = [root["spanID"]]
    while stack:
        p = stack.pop()
        ps, pe = start[p], end[p]
        keep = []
        for c in children.get(p, []):
            cid = c["spanID"]
            s, e = c["startTime"], c["startTime"] + c["duration"]
            if s >= ps:
                if s >= pe:
                    continue
                e = min(e, pe)
            elif e <= ps:
                continue
            else:
                s, e = ps, min(e, pe)
            start[cid], end[cid] = s, e
            keep.append(cid)
            stack.append(cid)
        keep.sort(key=lambda c: start[c])
        kids[p] = keep
    sections = []
    # iterative version of jaeger-ui's computeCriticalPath
    frames = [(root["spanID"], start[root["spanID"]], end[root["spanID"]])]
    while frames:
        node, lo, cursor = frames.pop()
        cands = sorted(kids.get(node, []), key=lambda c: -end[c])
        chain = []
        for c in cands:
            if not chain or end[c] < start[chain[-1]]:
                chain.append(c)
        todo = []
        for c in chain:
            c_hi = min(end[c], cursor)
            if c_hi < cursor:
                sections.append((node, c_hi, cursor))
            todo.append((c, start[c], max(c_hi, start[c])))
            cursor = max(min(cursor, start[c]), lo)
        if lo < cursor:
            sections.append((node, lo, cursor))
        # children are emitted after their parent's sections here; order does not change the total
        frames.extend(reversed(todo))
    return sections


def main():
    path = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    results = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            doc = json.load(f)
        t1 = time.perf_counter()
        spans = 0
        checksum = 0
        for trace in doc["data"]:
            spans += len(trace["spans"])
            for _, a, b in critical_path(trace["spans"]):
                checksum += a % 1000003 + 1
        t2 = time.perf_counter()
        results.append({"parse_s": t1 - t0, "total_s": t2 - t0, "spans": spans, "checksum": checksum})
    results.sort(key=lambda r: r["total_s"])
    med = results[len(results) // 2]
    med["spans_per_s"] = med["spans"] / med["total_s"]
    med["runs"] = [round(r["total_s"], 4) for r in results]
    print(json.dumps(med))


if __name__ == "__main__":
    main()
