#!/usr/bin/env python3
"""Search a fathom server by a stored item's vector, from Python.

A small example over the fathom package's client (pip install ./python):
it fetches one item's vector with get, searches the same index with it,
and prints the hits (the item itself comes first, at distance ~0).

    python3 tools/client.py                      # against `fathom demo`
    python3 tools/client.py --target 127.0.0.1:50051 --index tracks --id track:000042 -k 10
    python3 tools/client.py --filter 'markets = "SE" AND explicit = false'
    python3 tools/client.py --like track:000042,track:000043 --unlike track:000007 \\
        --strategy best_score --exclude track:000044 --group-by artist --group-size 1
    python3 tools/client.py --indexes tracks,episodes --min-per-index 2      # federated
    python3 tools/client.py --index tracks --delete track:000042 --token ADMIN

For a server with --tls-cert, give --tls-ca CA.pem; for one with --tokens,
--token TOKEN or FATHOM_TOKEN (a search token may fetch one item per call,
which is what this script does).
"""

import argparse
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="127.0.0.1:50051", help="server address (host:port)")
    ap.add_argument("--index", default="tracks", help="index to search")
    ap.add_argument("--id", default="track:000042", help="item whose vector is the query")
    ap.add_argument("-k", type=int, default=10, help="number of hits")
    ap.add_argument("--ef", type=int, help="beam width (default: the index's)")
    ap.add_argument("--filter", help="only items matching this expression")
    ap.add_argument("--like", default="", help="comma-separated seed ids")
    ap.add_argument("--unlike", default="", help="comma-separated ids to search away from")
    ap.add_argument("--strategy", default="average_vector",
                    choices=["average_vector", "best_score", "sum_scores"])
    ap.add_argument("--exclude", default="", help="comma-separated ids never to return")
    ap.add_argument("--indexes", default="", help="comma-separated indexes searched together")
    ap.add_argument("--min-per-index", type=int, help="hits each federated index gets at least")
    ap.add_argument("--group-by", help="keyword field to cap, e.g. artist")
    ap.add_argument("--group-size", type=int, help="hits per group value")
    ap.add_argument("--diversity", type=float, help="MMR, lambda = 1 - diversity")
    ap.add_argument("--delete", default="", help="comma-separated ids to delete from --index first")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    ap.add_argument("--tls-ca", help="PEM of the CA of the server's certificate (turns on TLS)")
    ap.add_argument("--token", default=os.environ.get("FATHOM_TOKEN"), help="bearer token")
    args = ap.parse_args()
    ids = lambda s: [x for x in s.split(",") if x]

    try:
        import fathom
    except ImportError:
        sys.exit("the fathom package is not installed: pip install ./python")

    try:
        client = fathom.Client(args.target, token=args.token, tls_ca=args.tls_ca, timeout=args.timeout)
        if args.delete:
            deleted = client.delete(args.index, ids(args.delete))
            print(f"deleted {deleted} of {len(ids(args.delete))} from {args.index}")
        exclude = ids(args.exclude) or None
        if args.like or args.unlike or args.group_by or args.diversity:
            positive = ids(args.like) or [args.id]
            found, distances = client.recommend(
                args.index, positive=positive, negative=ids(args.unlike), strategy=args.strategy,
                exclude_ids=exclude, filter=args.filter, diversity=args.diversity,
                group_by=args.group_by, group_size=args.group_size, k=args.k, ef=args.ef)
            where = [args.index] * len(found)
        else:
            vectors, _ = client.get(args.index, [args.id])
            target = ids(args.indexes) or args.index
            answer = client.search(target, vectors[0], k=args.k, ef=args.ef, filter=args.filter,
                                   exclude_ids=exclude, min_per_index=args.min_per_index)
            found, distances = answer[0], answer[1]
            where = answer[2] if len(answer) == 3 else [args.index] * len(found)
    except (ValueError, OSError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    print(f"{'RANK':>4}  {'ID':<32}  {'DISTANCE':<9}  INDEX")
    for rank, (i, d, w) in enumerate(zip(found, distances, where), 1):
        print(f"{rank:>4}  {i:<32}  {d:<9.4f}  {w}")


if __name__ == "__main__":
    main()
