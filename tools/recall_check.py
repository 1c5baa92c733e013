"""Online recall against `fathom eval`, on one snapshot at several ef.

Serves SNAPSHOT once per ef (as names e<ef>), with every call sampled and
the exact re-runs unbudgeted, sends each query once per name at that ef,
waits for the server's estimates, and prints them beside `fathom eval`'s
recall on the same queries. Needs the fathom Python package (tools/test.sh
builds it into target/python-venv) and target/release/fathom.

Usage: target/python-venv/bin/python tools/recall_check.py SNAPSHOT QUERIES.fvecs
           [--ef 10,20,40,80] [--limit 1000] [--filter EXPR]
"""

import argparse
import json
import subprocess
import threading
import time

import numpy as np

import fathom

BIN = "target/release/fathom"


def read_fvecs(path, limit):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    rows = raw.reshape(-1, dim + 1)[:, 1:].view(np.float32)
    return rows[:limit].copy()


def serve(args):
    proc = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--no-watch", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    found = {}
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            for word in line.split():
                if word.startswith("grpc=") and not ready.is_set():
                    found["addr"] = word[5:]
                    ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise SystemExit("fathom serve did not start")
    return proc, found["addr"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("snapshot")
    p.add_argument("queries")
    p.add_argument("--ef", default="10,20,40,80")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--filter", default=None)
    a = p.parse_args()
    efs = [int(e) for e in a.ef.split(",")]
    queries = read_fvecs(a.queries, a.limit)
    n = len(queries)
    args = []
    for ef in efs:
        args += ["--index", f"e{ef}={a.snapshot}"]
    args += ["--recall-sample", "1", "--recall-budget", "1", "--recall-window", str(n)]
    proc, addr = serve(args)
    try:
        client = fathom.Client(addr, timeout=60)
        kind = "filtered" if a.filter else "plain"
        print(f"{'ef':>5} {'eval recall':>12} {'online':>8} {'95% interval':>17} {'samples':>8} {'diff':>8}")
        for ef in efs:
            name = f"e{ef}"
            for start in range(0, n, 100):
                client.search(name, queries[start:start + 100], k=10, ef=ef, filter=a.filter)
                while True:
                    info = {i["name"]: i for i in client.list_indexes()}[name]
                    got = [e for e in info["recall"] if e["kind"] == kind]
                    if got and got[0]["samples"] + info["recall_samples_dropped"] >= min(n, start + 100):
                        break
                    time.sleep(0.05)
            e = got[0]
            cmd = [BIN, "eval", a.snapshot, "--queries", a.queries, "--limit", str(n), "--ef", str(ef), "--json"]
            if a.filter:
                cmd += ["--filter", a.filter]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(f"{ef:>5} {row['recall']:>12.4f} {e['estimate']:>8.4f} {e['low']:>8.4f}..{e['high']:<7.4f} "
                  f"{e['samples']:>8} {e['estimate'] - row['recall']:>+8.4f}")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
