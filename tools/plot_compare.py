#!/usr/bin/env python3
"""Summarise a results.jsonl written by tools/compare.sh (fathom + peers).

Usage:
    python3 tools/plot_compare.py OUTDIR/results.jsonl [--png OUTDIR/recall_qps.png]

Input: one JSON object per line with at least engine, ef, recall, qps
(build_s optional), as printed by `fathom eval --json` (tagged by compare.sh)
and by tools/compare_peers.py --json. Lines that are not JSON objects are
ignored.

Output:
* a markdown table on stdout: per engine, the QPS at recall 0.90 / 0.95 /
  0.99, the best recall reached, and the build time. The QPS at a target
  recall is interpolated linearly in recall between the two consecutive ef
  points (sorted by ef) whose recalls bracket the target; "—" when no ef
  reached it. When already the smallest ef measured reaches the target, the
  QPS of that point is shown as "≥N" (the true value at exactly the target
  recall is at least that).
* a recall-vs-QPS plot (log-scale QPS, one line per engine, points in ef
  order) written as PNG with matplotlib's Agg backend.

Runs under tools/.venv (matplotlib); when started with another python it
bootstraps that venv through compare_peers.py and re-executes itself there.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = (0.90, 0.95, 0.99)


def load(paths):
    """Per-engine lists of result records, in order of first appearance."""
    engines = {}
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    print(f"plot_compare: {path}:{n}: skipping bad JSON ({e})", file=sys.stderr)
                    continue
                if not all(isinstance(rec.get(f), (int, float)) for f in ("ef", "recall", "qps")):
                    print(f"plot_compare: {path}:{n}: skipping record without ef/recall/qps",
                          file=sys.stderr)
                    continue
                engines.setdefault(rec.get("engine", "?"), []).append(rec)
    for recs in engines.values():
        recs.sort(key=lambda r: r["ef"])
    return engines


def qps_at_recall(recs, target):
    """(qps, lower_bound_flag) at `target` recall, or (None, False) if never reached.

    recs are sorted by ef. The first pair of consecutive points with
    recall_i < target <= recall_{i+1} is used for linear interpolation of
    QPS in recall.
    """
    if not recs:
        return None, False
    if recs[0]["recall"] >= target:
        return float(recs[0]["qps"]), True
    for a, b in zip(recs, recs[1:]):
        if a["recall"] < target <= b["recall"]:
            t = (target - a["recall"]) / (b["recall"] - a["recall"])
            return a["qps"] + t * (b["qps"] - a["qps"]), False
    return None, False


def fmt_qps(value, lower_bound):
    if value is None:
        return "—"
    return ("≥" if lower_bound else "") + f"{value:,.0f}"


def markdown_table(engines, targets=TARGETS):
    head = (["engine"] + [f"QPS @ recall {t:.2f}" for t in targets]
            + ["max recall (ef)", "build s", "build threads"])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, recs in engines.items():
        cells = [name]
        for t in targets:
            cells.append(fmt_qps(*qps_at_recall(recs, t)))
        best = max(recs, key=lambda r: r["recall"])
        cells.append(f"{best['recall']:.4f} ({best['ef']})")
        build = next((r["build_s"] for r in recs if isinstance(r.get("build_s"), (int, float))),
                     None)
        cells.append("—" if build is None else f"{build:.2f}")
        threads = next((r["threads"] for r in recs if r.get("threads") is not None), None)
        cells.append("—" if threads is None else str(threads))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(engines, png, title=None, targets=TARGETS, xmin=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for name, recs in engines.items():
        ax.plot([r["recall"] for r in recs], [r["qps"] for r in recs],
                marker="o", markersize=4, linewidth=1.6,
                linestyle="-" if name.startswith("fathom") else "--", label=name)
    for t in targets:
        ax.axvline(t, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    if xmin is not None:
        ax.set_xlim(left=xmin)
    ax.set_xlabel("recall@k")
    ax.set_ylabel("queries per second (1 search thread, log scale)")
    ax.set_title(title or "recall vs QPS")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv):
    p = argparse.ArgumentParser(description="Summarise fathom/peer results (JSON lines).")
    p.add_argument("results", nargs="+", help="results .jsonl file(s)")
    p.add_argument("--png", help="write the recall-vs-QPS plot here")
    p.add_argument("--title", help="plot title")
    p.add_argument("--xmin", type=float, help="left end of the recall axis (default: automatic)")
    args = p.parse_args(argv)

    engines = load(args.results)
    if not engines:
        sys.exit("plot_compare: no usable records found")
    print(markdown_table(engines))
    if args.png:
        plot(engines, args.png, args.title, xmin=args.xmin)
        print(f"\nplot: {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.path.insert(0, HERE)
        sys.dont_write_bytecode = True   # no tools/__pycache__ in the work tree
        import compare_peers
        # creates tools/.venv if needed and re-executes this script under it;
        # exits with a message if matplotlib cannot be installed there
        compare_peers.ensure_venv(script=__file__)
    sys.exit(main(sys.argv[1:]))
