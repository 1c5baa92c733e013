#!/usr/bin/env python3
"""Filtered search speed against unfiltered, from one `fathom eval` run.

For a snapshot and its queries, runs `fathom eval --json` once unfiltered
and once with every --filter (same ef sweep, same process, best of
--repeats), then prints, per filter, its matching share, the QPS at which
it reaches the target recall (interpolated between the two ef of the sweep
that bracket it) and that QPS against the unfiltered QPS at the same recall,
with distances per query there.

Usage: tools/filter_ratios.py SNAPSHOT QUERIES.fvecs --filter EXPR [--filter EXPR ...]
           [--ef 10,16,...] [--recall 0.95] [--repeats 3] [--fathom target/release/fathom]
"""

import argparse
import json
import math
import subprocess
from collections import defaultdict


def at_recall(rows, target):
    """(qps, distances) where recall first reaches target, interpolated in
    log QPS between the bracketing ef; None when the sweep never does."""
    rows = sorted(rows, key=lambda r: r["ef"])
    prev = None
    for r in rows:
        if r["recall"] >= target:
            if prev is None or prev["recall"] >= target:
                return r["qps"], r["mean_distances"]
            t = (target - prev["recall"]) / (r["recall"] - prev["recall"])
            qps = math.exp(math.log(prev["qps"]) + t * (math.log(r["qps"]) - math.log(prev["qps"])))
            dist = prev["mean_distances"] + t * (r["mean_distances"] - prev["mean_distances"])
            return qps, dist
        prev = r
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("snapshot")
    p.add_argument("queries")
    p.add_argument("--filter", action="append", default=[])
    p.add_argument("--ef", default="10,16,24,32,48,64,96,128,192,256,384,512")
    p.add_argument("--recall", type=float, default=0.95)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--fathom", default="target/release/fathom")
    p.add_argument("--plan", default="auto")
    a = p.parse_args()
    base = [a.fathom, "eval", a.snapshot, "--queries", a.queries, "--ef", a.ef, "--json",
            "--repeats", str(a.repeats), "--plan", a.plan]
    if a.limit:
        base += ["--limit", str(a.limit)]
    rows = defaultdict(list)
    out = subprocess.run(base, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        rows[None].append(json.loads(line))
    if a.filter:
        cmd = base + [x for f in a.filter for x in ("--filter", f)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr.strip())
        out = done.stdout
        for line in out.splitlines():
            r = json.loads(line)
            rows[r["filter"]].append(r)
    plain = at_recall(rows[None], a.recall)
    print(f"recall@10 {a.recall}: unfiltered {plain[0]:,.0f} QPS, {plain[1]:,.0f} distances"
          if plain else "unfiltered never reaches the recall")
    print(f"{'filter':<70} {'matching':>9} {'QPS':>9} {'ratio':>6} {'distances':>10} {'x plain':>8}")
    for f in a.filter:
        r = rows[f]
        share = r[0].get("selectivity", 0.0)
        got = at_recall(r, a.recall)
        if got is None or plain is None:
            best = max(x["recall"] for x in r)
            print(f"{f:<70} {share:>8.1%} {'—':>9} {'—':>6}   (best recall {best:.3f})")
            continue
        print(f"{f:<70} {share:>8.1%} {got[0]:>9,.0f} {got[0] / plain[0]:>6.2f} {got[1]:>10,.0f} "
              f"{got[1] / plain[1]:>8.2f}")


if __name__ == "__main__":
    main()
