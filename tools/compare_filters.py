#!/usr/bin/env python3
"""Compare fathom's filtered search with peers' filtered search (hnswlib, faiss).

Usage:
    FATHOM=/tmp/fathom-v2 python3 tools/compare_filters.py \
        --base D/base.fvecs --queries D/query.fvecs --ids D/ids.txt \
        --attrs D/attrs.jsonl --ground-truth D/gt.ivecs --metric cosine -k 10 \
        --ef 10,16,24,32,48,64,96,128,256 --repeats 2 --out OUTDIR

Runs under tools/.venv, created and filled by compare_peers.py's bootstrap
(only numpy, matplotlib, hnswlib and faiss-cpu are needed here).

What it does, in one run:

* Filters. One fathom filter expression per line of --filters FILE (blank
  lines and lines starting with # are ignored); without it, DEFAULT_FILTERS
  (made for words-dev-384's attrs.jsonl: selectivities from ~50% down to
  ~0.01%, an AND of two fields and a language filter that is anti-correlated
  with most queries). Every expression is ALSO evaluated here, in Python,
  over attrs.jsonl by a small parser of the same grammar as fathom's
  (crates/engine/src/filter/parse.rs): OR / AND / NOT / parentheses,
  = != < <= > >=, [NOT] IN (...); `=` on a multi-valued field means
  "contains"; a missing field matches nothing (so `!=` matches it).
* Ground truth. For each filter, the exact top-min(k, matching) among the
  matching rows by numpy brute force (cosine: on L2-normalised vectors),
  computed once and shared by hnswlib and faiss. fathom computes its own
  exact filtered truth; its reported `matching` must equal ours or the run
  stops (a mismatch means the two evaluators disagree on the filter).
* fathom. The index is built once (M, ef_construction as for the peers) unless
  --fathom-index names an existing one, then ONE `$FATHOM eval --json
  --threads 1 --repeats R --filter ...` call measures all filters (fathom's
  own planner, --plan auto, unless --fathom-plans says otherwise; each extra
  plan is reported as engine `fathom[plan]`), and one call without --filter
  (with --ground-truth when given) measures unfiltered search.
  FATHOM defaults to `fathom` on PATH, else target/release/fathom.
* Peers. Each index is built once (M=16, ef_construction=200 by default, on
  --build-threads threads) and reused for every filter; searches run on ONE
  thread.
  - hnswlib: knn_query(q, k, num_threads=1, filter=callable); the callable
    is `list_of_bools.__getitem__` over row numbers (the cheapest Python
    callable; hnswlib can only call back into Python, once per candidate).
    hnswlib raises when a query finds fewer than k allowed items; the batch
    call then aborts, so that (filter, ef) is re-run as a per-query loop in
    which each raising query counts as a short result with 0 hits (the API
    returns nothing). mode = "per-query" marks such rows.
  - faiss: IndexHNSWFlat searched with SearchParametersHNSW(sel=
    IDSelectorBitmap(matching rows), efSearch=ef); missing results are -1.
  Both are asked for k results, as fathom is (--cap-k asks for
  min(k, matching), the most that can exist: with it hnswlib does not raise
  merely because fewer than k items match).
* "(all pass)" is a pseudo-filter run for the peers only: the callback /
  selector admits every row, so comparing it with "(none)" shows what the
  filter mechanism itself costs (for hnswlib: the Python callback).
* fathom's planner (--plan auto) scans the matching items exactly when that is
  cheaper; rows whose mean_distances equal the matching count are marked
  "exact scan" in the tables (inferred: eval does not print the chosen plan).
  fathom eval does not report short results ("n/a").
* Timing. For each (engine, filter, ef): a pilot batch of the first 50
  queries (also the warm-up), then the best of --repeats batch calls over
  all queries. When the pilot predicts one batch would take longer than
  --budget seconds, only a prefix of the queries that fits the budget is
  timed, once (n_queries in the row says how many; recall is over the same
  prefix). Once a peer reaches recall 1.0 with no short results on a filter,
  its larger efs are skipped (--full-sweep to run them anyway).
* Metrics. recall = mean over queries of |hits ∩ truth| / min(k, matching);
  short = number of queries with fewer than min(k, matching) hits;
  QPS at recall 0.95 is interpolated as in tools/plot_compare.py.

Output (in --out): raw.jsonl (every row of every engine, filter and ef),
filters.md (markdown tables, as in docs/filters.md) and, on stdout, one table per
filter plus the unfiltered line. Progress goes to stderr.
"""

import argparse
import gc
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_peers as cp        # noqa: E402  (stdlib-only at import time)
import plot_compare as pc         # noqa: E402

PEERS = ["hnswlib", "faiss"]
TARGET = 0.95
UNFILTERED = "(none)"
ALLPASS = "(all pass)"

DEFAULT_FILTERS = [
    'markets = "GB"',                     # ~50%
    'lang = "he"',                        # ~13%, anti-correlated with most queries
    'explicit = true',                    # ~10%
    'explicit = true AND year >= 2024',   # ~2.4%, AND of two fields
    'label = "label:12"',                 # ~1%
    'popularity >= 97',                   # ~1%
    'label = "label:105"',                # ~0.1%
    'label = "label:746"',                # ~0.01%
]


def log(msg):
    print(f"[compare_filters] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The filter language, evaluated in Python (same grammar as fathom's parser)
# --------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<op>!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.:-]*)
    )""", re.VERBOSE)


def _tokens(src):
    pos, out = 0, []
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise ValueError(f"filter {src!r}: cannot read at offset {pos}")
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "str":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        out.append((kind, text))
        pos = m.end()
    return out


def _eq(v, lit):
    if isinstance(v, bool) or isinstance(lit, bool):
        return isinstance(v, bool) and isinstance(lit, bool) and v == lit
    return v == lit


def _cmp(op, v, lit):
    if isinstance(v, bool) or isinstance(lit, bool) or not isinstance(v, (int, float)) \
            or not isinstance(lit, (int, float)):
        return False
    return {"<": v < lit, "<=": v <= lit, ">": v > lit, ">=": v >= lit}[op]


def _values(row, field):
    v = row.get(field)
    if v is None:
        return ()
    return v if isinstance(v, list) else (v,)


def parse_filter(src):
    """Parse a fathom filter expression into a predicate row(dict) -> bool."""
    toks = _tokens(src)
    i = 0

    def peek():
        return toks[i] if i < len(toks) else (None, None)

    def kw(word):
        k, t = peek()
        return k == "ident" and t.upper() == word

    def take(kind=None, text=None):
        nonlocal i
        k, t = peek()
        if k is None or (kind and k != kind) or (text and t != text):
            raise ValueError(f"filter {src!r}: expected {text or kind}, got {t!r}")
        i += 1
        return t

    def literal():
        k, t = peek()
        if k == "str":
            take()
            return t
        if k == "num":
            take()
            return float(t) if re.search(r"[.eE]", t) else int(t)
        if k == "ident" and t.upper() in ("TRUE", "FALSE"):
            take()
            return t.upper() == "TRUE"
        raise ValueError(f"filter {src!r}: expected a literal, got {t!r}")

    def condition():
        field = take("ident")
        negate = False
        if kw("NOT"):
            take()
            negate = True
        if kw("IN"):
            take()
            take("punct", "(")
            lits = [literal()]
            while peek() == ("punct", ","):
                take()
                lits.append(literal())
            take("punct", ")")
            f = lambda r: any(_eq(v, l) for v in _values(r, field) for l in lits)  # noqa: E731
            return (lambda r: not f(r)) if negate else f
        if negate:
            raise ValueError(f"filter {src!r}: NOT after a field must be followed by IN")
        op = take("op")
        lit = literal()
        if op == "=":
            return lambda r: any(_eq(v, lit) for v in _values(r, field))
        if op == "!=":
            return lambda r: not any(_eq(v, lit) for v in _values(r, field))
        return lambda r: any(_cmp(op, v, lit) for v in _values(r, field))

    def unary():
        if kw("NOT"):
            take()
            f = unary()
            return lambda r: not f(r)
        if peek() == ("punct", "("):
            take()
            f = expr()
            take("punct", ")")
            return f
        return condition()

    def conj():
        fs = [unary()]
        while kw("AND"):
            take()
            fs.append(unary())
        return fs[0] if len(fs) == 1 else (lambda r: all(f(r) for f in fs))

    def expr():
        fs = [conj()]
        while kw("OR"):
            take()
            fs.append(conj())
        return fs[0] if len(fs) == 1 else (lambda r: any(f(r) for f in fs))

    pred = expr()
    if i != len(toks):
        raise ValueError(f"filter {src!r}: unexpected {toks[i][1]!r}")
    return pred


def read_filters(path):
    if not path or path == "default":
        return list(DEFAULT_FILTERS)
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


# --------------------------------------------------------------------------
# Peers with filters
# --------------------------------------------------------------------------

class HnswlibFiltered:
    name = "hnswlib"

    def __init__(self, base, metric, m, efc, threads):
        import hnswlib
        import numpy as np
        space = {"cosine": "ip", "dot": "ip", "l2": "l2"}[metric]
        self.index = hnswlib.Index(space=space, dim=base.shape[1])
        self.index.init_index(max_elements=base.shape[0], M=m, ef_construction=efc,
                              random_seed=100)
        self.index.add_items(base, np.arange(base.shape[0]), num_threads=threads)
        self.index.set_num_threads(1)
        self.filter = None
        self.per_query = False

    def prepare(self, mask, ef):
        self.index.set_ef(ef)
        self.filter = None if mask is None else mask.tolist().__getitem__
        self.per_query = False
        self.raised = 0

    def search(self, queries, k):
        """(ids [nq, k] with -1 for missing, distance computations or None)."""
        import numpy as np
        if not self.per_query:
            try:
                ids, _ = self.index.knn_query(queries, k=k, num_threads=1, filter=self.filter)
                return ids.astype(np.int64), None
            except RuntimeError:
                self.per_query = True        # some query found < k: go one by one
        out = np.full((queries.shape[0], k), -1, dtype=np.int64)
        self.raised = 0
        for j, q in enumerate(queries):
            try:
                out[j] = self.index.knn_query(q[None, :], k=k, num_threads=1,
                                              filter=self.filter)[0][0]
            except RuntimeError:
                self.raised += 1              # hnswlib returns nothing at all
        return out, None


class FaissFiltered:
    name = "faiss"

    def __init__(self, base, metric, m, efc, threads):
        import faiss
        self.faiss = faiss
        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.IndexHNSWFlat(base.shape[1], m, kind)
        self.index.hnsw.efConstruction = efc
        faiss.omp_set_num_threads(threads)
        self.index.add(base)
        faiss.omp_set_num_threads(1)
        self.per_query = False

    def prepare(self, mask, ef):
        import numpy as np
        faiss = self.faiss
        self.params = faiss.SearchParametersHNSW()
        self.params.efSearch = ef
        self.bits = None
        if mask is not None:
            self.bits = np.packbits(mask.astype(np.uint8), bitorder="little")
            self.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bits))
            self.params.sel = self.sel

    def search(self, queries, k):
        stats = self.faiss.cvar.hnsw_stats
        stats.reset()
        _, ids = self.index.search(queries, k, params=self.params)
        return ids, int(stats.ndis)


PEER_CLASSES = {"hnswlib": HnswlibFiltered, "faiss": FaissFiltered}


def recall_short(found, truth):
    """(recall, short): found [nq, >=kk] with -1 for missing, truth [nq, kk]."""
    import numpy as np
    kk = truth.shape[1]
    found = np.asarray(found, dtype=np.int64)[:, :kk]
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    short = int(((found >= 0).sum(axis=1) < kk).sum())
    return float(hits.sum(axis=1).mean() / kk), short


def measure_peer(peer, args, queries, mask, truth, filt, matching, n_base):
    """All ef values of one peer on one filter (mask None = unfiltered)."""
    ask = truth.shape[1] if args.cap_k else args.k
    nq = queries.shape[0]
    rows = []
    for ef in args.ef:
        peer.prepare(mask, ef)
        pilot = min(50, nq)
        t0 = time.perf_counter()
        peer.search(queries[:pilot], ask)
        per_q = (time.perf_counter() - t0) / pilot
        n_use, repeats = nq, args.repeats
        if per_q * nq * repeats > args.budget:
            repeats = 1
            if per_q * nq > args.budget:
                n_use = max(pilot, min(nq, int(args.budget / max(per_q, 1e-9))))
        q = queries[:n_use]
        best, ids, ndis = None, None, None
        for _ in range(repeats):
            mode_before = peer.per_query
            t0 = time.perf_counter()
            ids, ndis = peer.search(q, ask)
            dt = time.perf_counter() - t0
            if peer.per_query and not mode_before:   # the batch aborted midway: redo
                t0 = time.perf_counter()
                ids, ndis = peer.search(q, ask)
                dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        recall, short = recall_short(ids, truth[:n_use])
        row = {
            "engine": peer.name, "filter": filt, "ef": ef, "k": args.k, "k_asked": ask,
            "matching": matching, "selectivity": round(matching / n_base, 6),
            "recall": round(recall, 6), "qps": round(n_use / best, 2),
            "short": short, "n_queries": n_use, "repeats": repeats,
            "mean_distances": None if ndis is None else round(ndis / n_use, 2),
            "mode": "per-query" if peer.per_query else "batch", "search_threads": 1,
            "raised": getattr(peer, "raised", 0) if peer.per_query else 0,
        }
        rows.append(row)
        log(f"{peer.name:8} {filt:36} ef={ef:<4} recall={recall:.4f} "
            f"qps={row['qps']:>9.1f} short={short}/{n_use} {row['mode']}"
            + (f" raised={row['raised']}" if row["raised"] else ""))
        if not args.full_sweep and recall >= 0.999999 and short == 0:
            break
    return rows


# --------------------------------------------------------------------------
# fathom
# --------------------------------------------------------------------------

def fathom_binary():
    exe = os.environ.get("FATHOM")
    if exe:
        return exe
    if shutil.which("fathom"):
        return "fathom"
    local = os.path.join(HERE, "..", "target", "release", "fathom")
    if os.path.exists(local):
        return os.path.abspath(local)
    sys.exit("compare_filters: no fathom binary: set FATHOM, put fathom on PATH, "
             "or cargo build --release")


def run_json(cmd):
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    if r.returncode != 0:
        sys.exit(f"compare_filters: {cmd[0]} exited with {r.returncode}")
    return [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip().startswith("{")]


def run_fathom(args, exe, index, filters, counts, n_base):
    rows = []
    common = [exe, "eval", index, "--queries", args.queries, "-k", str(args.k),
              "--ef", ",".join(map(str, args.ef)), "--threads", "1",
              "--repeats", str(args.repeats), "--json"]
    for plan in args.fathom_plans:
        engine = "fathom" if plan == "auto" else f"fathom[{plan}]"
        cmd = common + ["--plan", plan]
        for f in filters:
            cmd += ["--filter", f]
        out = run_json(cmd)
        for rec in out:
            filt = rec.get("filter")
            if filt not in counts:
                sys.exit(f"compare_filters: fathom reported an unknown filter {filt!r}")
            if rec.get("matching") != counts[filt]:
                sys.exit(f"compare_filters: MISMATCH for filter {filt!r}: fathom says "
                         f"{rec.get('matching')} items match, the Python evaluator over "
                         f"{args.attrs} says {counts[filt]}")
            rec = dict(rec, engine=engine, search_threads=1)
            rec.setdefault("selectivity", round(counts[filt] / n_base, 6))
            rows.append(rec)
        seen = {r["filter"] for r in rows if r["engine"] == engine}
        if seen != set(filters):
            sys.exit(f"compare_filters: fathom gave no rows for {sorted(set(filters) - seen)}")
    cmd = common[:]
    if args.ground_truth:
        cmd += ["--ground-truth", args.ground_truth]
    for rec in run_json(cmd):
        rows.append(dict(rec, engine="fathom", filter=UNFILTERED, matching=n_base,
                         selectivity=1.0, search_threads=1))
    return rows


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

def summarise(rows, filters, engines):
    """{(filter, engine): dict(qps95, lower, best_recall, best_ef, short_lo, short_hi)}."""
    out = {}
    for filt in [UNFILTERED, ALLPASS] + filters:
        for eng in engines:
            recs = sorted((r for r in rows if r["filter"] == filt and r["engine"] == eng),
                          key=lambda r: r["ef"])
            if not recs:
                continue
            qps, lower = pc.qps_at_recall(recs, TARGET)
            best = max(recs, key=lambda r: (r["recall"], -r["ef"]))
            out[filt, eng] = dict(
                qps=qps, lower=lower, recall=best["recall"], ef=best["ef"],
                short_lo=recs[0].get("short"), short_hi=recs[-1].get("short"),
                ef_lo=recs[0]["ef"], ef_hi=recs[-1]["ef"],
                nq_lo=recs[0].get("n_queries"), nq_hi=recs[-1].get("n_queries"),
                nq=min(r.get("n_queries") or 0 for r in recs) or None,
                per_query=any(r.get("mode") == "per-query" for r in recs),
                raised=max((r.get("raised") or 0) for r in recs),
                exact_efs=[r["ef"] for r in recs if eng.startswith("fathom")
                           and isinstance(r.get("mean_distances"), (int, float))
                           and abs(r["mean_distances"] - r["matching"]) < 0.5],
                nq_min=min(r.get("n_queries") or 0 for r in recs),
                nq_max=max(r.get("n_queries") or 0 for r in recs),
                selectivity=recs[0].get("selectivity"), matching=recs[0].get("matching"))
    return out


def exact_note(s):
    """'exact scan' when fathom scanned the matches at every ef, else from which ef."""
    if not s["exact_efs"]:
        return ""
    if min(s["exact_efs"]) == s["ef_lo"]:
        return "exact scan"
    return f"exact scan from ef {min(s['exact_efs'])}"


def vs_unfiltered(summary, filt, eng, x="x"):
    """QPS@target of this filter / unfiltered, '~' when either is a lower bound."""
    s = summary.get((filt, eng))
    un = summary.get((UNFILTERED, eng)) or summary.get((UNFILTERED, eng.split("[")[0]))
    if not s or not un or s["qps"] is None or un["qps"] is None:
        return "—"
    return ("~" if s["lower"] or un["lower"] else "") + f"{s['qps'] / un['qps']:.2f}{x}"


def fmt_sel(s):
    return f"{100 * s:.3g}%"


def fmt_short(s, n_queries):
    """Short results at the smallest and the largest ef measured."""
    if s["short_lo"] is None:
        return "n/a"
    def of(n):
        return "" if not n or n >= n_queries else f"/{n}"
    lo = f"{s['short_lo']}{of(s['nq_lo'])}"
    if s["ef_lo"] == s["ef_hi"] or (s["short_lo"], s["nq_lo"]) == (s["short_hi"], s["nq_hi"]):
        return lo
    return f"{lo} (ef {s['ef_lo']}) → {s['short_hi']}{of(s['nq_hi'])} (ef {s['ef_hi']})"


def tables(summary, filters, engines, n_queries):
    wide = ["| filter | matching | " + " | ".join(f"{e} QPS @ {TARGET}" for e in engines)
            + " |", "|---|---:|" + "---:|" * len(engines)]
    long = ["| filter | selectivity | engine | QPS @ recall 0.95 | vs unfiltered "
            "| max recall (ef) | short results |", "|---|---:|---|---:|---:|---:|---|"]
    for filt in [UNFILTERED, ALLPASS] + filters:
        if not any((filt, e) in summary for e in engines):
            continue
        cells = []
        for eng in engines:
            s = summary.get((filt, eng))
            if s is None:
                cells.append("n/a")
                continue
            c = pc.fmt_qps(s["qps"], s["lower"])
            if s["qps"] is None:
                c += f" (max {s['recall']:.3f})"
            ex = exact_note(s)
            cells.append(c + (f" ({ex})" if ex == "exact scan" else ""))
            ratio = vs_unfiltered(summary, filt, eng, "×")
            note = f"; {ex}" if ex else ""
            if s["nq_min"] and s["nq_min"] < n_queries:
                rng = (str(s["nq_min"]) if s["nq_min"] == s["nq_max"]
                       else f"{s['nq_min']}–{s['nq_max']}")
                note += f"; timed on the first {rng} of {n_queries} queries (budget)"
            if s["per_query"]:
                note += f"; hnswlib raised on up to {s['raised']} queries (0 hits each)"
            long.append(f"| `{filt}` | {fmt_sel(s['selectivity'])} | {eng} | {c} | {ratio} "
                        f"| {s['recall']:.4f} ({s['ef']}) | {fmt_short(s, n_queries)}{note} |")
        any_s = next((summary[filt, e] for e in engines if (filt, e) in summary), None)
        match = f"{any_s['matching']:,} ({fmt_sel(any_s['selectivity'])})" if any_s else "?"
        wide.append(f"| `{filt}` | {match} | " + " | ".join(cells) + " |")
    return "\n".join(wide), "\n".join(long)


# --------------------------------------------------------------------------

def parse_args(argv):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="base vectors (.fvecs)")
    p.add_argument("--queries", help="query vectors (.fvecs)")
    p.add_argument("--ids", help="ids.txt aligned with the base rows")
    p.add_argument("--attrs", help="attrs.jsonl, one object per base row")
    p.add_argument("--ground-truth", help="unfiltered exact neighbours (.ivecs); "
                   "brute force when omitted")
    p.add_argument("--metric", choices=["cosine", "l2", "dot"], default="cosine")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--ef", type=cp.int_list, default=[10, 16, 24, 32, 48, 64, 96, 128, 256])
    p.add_argument("--filters", default="default",
                   help="file with one filter expression a line, or 'default'")
    p.add_argument("--out", required=True, help="output directory (raw.jsonl, filters.md)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=6.0,
                   help="seconds one timed peer batch may take before only a prefix of "
                        "the queries is timed (default 6)")
    p.add_argument("--full-sweep", action="store_true",
                   help="keep sweeping ef after a peer reached recall 1.0")
    p.add_argument("--cap-k", action="store_true",
                   help="ask the peers for min(k, matching) results instead of k")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--build-threads", type=int, default=cores)
    p.add_argument("--peers", type=lambda s: [x for x in s.split(",") if x],
                   default=list(PEERS), help="comma-separated subset of hnswlib,faiss")
    p.add_argument("--fathom-index", help="existing .fathom snapshot built from the same "
                   "data with attributes (default: build OUT/index.fathom)")
    p.add_argument("--fathom-plans", type=lambda s: [x for x in s.split(",") if x],
                   default=["auto"], help="fathom --plan values to run (default auto)")
    p.add_argument("--no-fathom", action="store_true")
    p.add_argument("--reinstall", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="only re-make the tables from an existing OUT/raw.jsonl")
    args = p.parse_args(argv)
    if not args.report_only and not (args.base and args.queries and args.ids and args.attrs):
        p.error("--base, --queries, --ids and --attrs are required")
    bad = [x for x in args.peers if x not in PEER_CLASSES]
    if bad:
        p.error(f"unknown peers {bad}")
    return args


def main(argv):
    args = parse_args(argv)
    cp.ensure_venv(reinstall=args.reinstall, script=__file__, peers=args.peers)
    import importlib.util
    import numpy as np

    if args.report_only:
        with open(os.path.join(args.out, "raw.jsonl")) as f:
            report([json.loads(ln) for ln in f if ln.strip()], args)
        return 0
    os.makedirs(args.out, exist_ok=True)
    filters = read_filters(args.filters)
    base = cp.read_vecs(args.base, "f")
    queries = cp.read_vecs(args.queries, "f")
    if args.metric == "cosine":
        base, queries = cp.normalise(base), cp.normalise(queries)
    n, nq = base.shape[0], queries.shape[0]

    with open(args.ids) as f:
        ids = [ln.rstrip("\n") for ln in f]
    with open(args.attrs) as f:
        attrs = [json.loads(ln) for ln in f if ln.strip()]
    if len(ids) != n or len(attrs) != n:
        sys.exit(f"compare_filters: {n} base rows, {len(ids)} ids, {len(attrs)} attribute rows")
    bad = next((i for i in range(n) if attrs[i].get("id", ids[i]) != ids[i]), None)
    if bad is not None:
        sys.exit(f"compare_filters: row {bad}: id {ids[bad]!r} but attrs.jsonl says "
                 f"{attrs[bad].get('id')!r}")

    masks, truths, counts = {}, {}, {}
    for filt in filters:
        pred = parse_filter(filt)
        mask = np.fromiter((bool(pred(r)) for r in attrs), dtype=bool, count=n)
        counts[filt] = int(mask.sum())
        if counts[filt] == 0:
            sys.exit(f"compare_filters: filter {filt!r} matches nothing")
        rows_m = np.flatnonzero(mask)
        t0 = time.perf_counter()
        sub = cp.brute_force_topk(base[rows_m], queries, min(args.k, len(rows_m)), args.metric)
        truths[filt] = rows_m[sub]
        masks[filt] = mask
        log(f"{filt:36} matches {counts[filt]:>6} ({fmt_sel(counts[filt] / n):>6}); "
            f"exact truth in {time.perf_counter() - t0:.1f} s")
    if args.ground_truth:
        truths[UNFILTERED] = cp.read_vecs(args.ground_truth, "i")[:, :args.k].astype(np.int64)
    else:
        truths[UNFILTERED] = cp.brute_force_topk(base, queries, args.k, args.metric)
    masks[UNFILTERED] = None
    counts[UNFILTERED] = n
    masks[ALLPASS] = np.ones(n, dtype=bool)
    truths[ALLPASS] = truths[UNFILTERED]
    counts[ALLPASS] = n

    rows = []
    raw_path = os.path.join(args.out, "raw.jsonl")
    raw = open(raw_path, "w")

    def emit(new):
        for r in new:
            raw.write(json.dumps(r) + "\n")
        raw.flush()
        rows.extend(new)

    engines = []
    if not args.no_fathom:
        exe = fathom_binary()
        index = args.fathom_index or os.path.join(args.out, "index.fathom")
        if not args.fathom_index or not os.path.exists(index):
            cmd = [exe, "build", "--input", args.base, "--ids", args.ids, "--attributes",
                   args.attrs, "--metric", args.metric, "--m", str(args.m),
                   "--ef-construction", str(args.ef_construction),
                   "--threads", str(args.build_threads), "--output", index]
            log("$ " + " ".join(shlex.quote(c) for c in cmd))
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=sys.stderr)
            log(f"fathom: built in {time.perf_counter() - t0:.1f} s")
        emit(run_fathom(args, exe, index, filters, counts, n))
        engines += ["fathom" if p == "auto" else f"fathom[{p}]" for p in args.fathom_plans]

    for name in args.peers:
        if importlib.util.find_spec(name) is None:
            log(f"SKIPPING {name}: not installed in {cp.VENV}")
            continue
        log(f"{name}: building {n} x {base.shape[1]} (M={args.m}, "
            f"efc={args.ef_construction}, threads={args.build_threads}) ...")
        t0 = time.perf_counter()
        peer = PEER_CLASSES[name](base, args.metric, args.m, args.ef_construction,
                                  args.build_threads)
        build_s = round(time.perf_counter() - t0, 3)
        log(f"{name}: built in {build_s:.1f} s")
        peer.prepare(None, args.ef[0])
        peer.search(queries, args.k)              # one full warm-up batch (caches, pages)
        engines.append(name)
        for filt in [UNFILTERED, ALLPASS] + filters:
            new = measure_peer(peer, args, queries, masks[filt], truths[filt], filt,
                               counts[filt], n)
            emit([dict(r, build_s=build_s) for r in new])
        del peer
        gc.collect()
    raw.close()

    report(rows, args)
    return 0


def report(rows, args):
    """Print the per-filter tables and write OUT/filters.md from result rows."""
    filters, engines = [], []
    for r in rows:
        if r["filter"] not in (UNFILTERED, ALLPASS) and r["filter"] not in filters:
            filters.append(r["filter"])
        if r["engine"] not in engines:
            engines.append(r["engine"])
    nq = max(r.get("n_queries") or r.get("queries") or 0 for r in rows)
    efs = sorted({r["ef"] for r in rows})
    summary = summarise(rows, filters, engines)
    wide, long = tables(summary, filters, engines, nq)
    for filt in [UNFILTERED, ALLPASS] + filters:
        ss = [(e, summary[filt, e]) for e in engines if (filt, e) in summary]
        if not ss:
            continue
        sel = ss[0][1]["selectivity"]
        print(f"\n== {filt}  ({ss[0][1]['matching']:,} match, {fmt_sel(sel)})")
        print(f"   {'engine':14} {'QPS@0.95':>12} {'vs unfilt.':>10} {'max recall (ef)':>16}  short")
        for eng, s in ss:
            ratio = vs_unfiltered(summary, filt, eng)
            print(f"   {eng:14} {pc.fmt_qps(s['qps'], s['lower']):>12} {ratio:>10} "
                  f"{s['recall']:>9.4f} ({s['ef']:>3})  {fmt_short(s, nq)}"
                  + (f"  [{exact_note(s)}]" if s["exact_efs"] else "")
                  + (f"  [hnswlib raised on up to {s['raised']} queries]" if s["raised"] else ""))
    md_path = os.path.join(args.out, "filters.md")
    with open(md_path, "w") as f:
        f.write(f"QPS at recall@{args.k} = {TARGET} (one search thread; interpolated over "
                f"ef {','.join(map(str, efs))}; \"—\" = never reached, with the best "
                f"recall in parentheses):\n\n{wide}\n\nDetails:\n\n{long}\n")
    print(f"\nwrote {md_path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
