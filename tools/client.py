#!/usr/bin/env python3
"""Search a fathom server by a stored item's vector, from Python.

Fetches one item's vector with GetItems, searches the same index with it, and
prints the hits (the item itself comes first, at distance ~0). Stubs are
generated from proto/fathom/v1/retrieval.proto with grpcio-tools at run time,
so they always match the contract in this checkout.

    python3 tools/client.py                      # against `fathom demo`
    python3 tools/client.py --target 127.0.0.1:50051 --index tracks --id track:000042 -k 10
    python3 tools/client.py --filter 'markets = "SE" AND explicit = false'

With --filter, only items matching the expression come back (the language
is in docs/filters.md; `fathom query list` shows each index's fields).
Recommendation options (docs/recommend.md) map one to one onto SearchRequest:

    python3 tools/client.py --like track:000042,track:000043 --unlike track:000007 \
        --strategy BEST_SCORE --exclude track:000044 -k 10
    python3 tools/client.py --indexes tracks,episodes --min-per-index 2      # federated
    python3 tools/client.py --group-by artist --group-size 1 --diversity 0.3 --with-attributes

A layered index folder (docs/layers.md) takes deletions, before the search:

    python3 tools/client.py --index tracks --delete track:000042,track:000043 --token ADMIN

For a server with --tls-cert, give --tls-ca CA.pem (and, with
--tls-client-ca, --tls-client-cert/--tls-client-key); for one with --tokens,
--token TOKEN or FATHOM_TOKEN (a search token may fetch one item per call,
which is what this script does).

Run with a Python that lacks grpcio, it creates tools/.venv, installs
tools/requirements-client.txt into it, and re-runs itself there.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROTO_ROOT = ROOT / "proto"
PROTO = "fathom/v1/retrieval.proto"
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements-client.txt"


def have_grpc():
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        return False
    return True


def bootstrap():
    """Re-run this script in tools/.venv with grpcio installed."""
    if os.environ.get("FATHOM_CLIENT_BOOTSTRAPPED"):
        sys.exit(f"grpcio is still not importable in {sys.executable}; "
                 f"try: {VENV}/bin/pip install -r {REQUIREMENTS}")
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} ...", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = subprocess.run([str(python), "-c", "import grpc, grpc_tools"],
                           capture_output=True)
    if probe.returncode != 0:
        print(f"installing grpcio and grpcio-tools into {VENV} ...", file=sys.stderr)
        subprocess.check_call([str(python), "-m", "pip", "install", "--quiet",
                               "-r", str(REQUIREMENTS)])
    env = dict(os.environ, FATHOM_CLIENT_BOOTSTRAPPED="1")
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


def load_stubs(out_dir):
    """Generate the Python stubs of the fathom.v1 contract into out_dir."""
    from grpc_tools import protoc
    import importlib.resources

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ])
    if code != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT / PROTO}")
    sys.path.insert(0, str(out_dir))
    from fathom.v1 import retrieval_pb2, retrieval_pb2_grpc
    return retrieval_pb2, retrieval_pb2_grpc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="127.0.0.1:50051", help="server address (host:port)")
    ap.add_argument("--index", default="tracks", help="index to search")
    ap.add_argument("--id", default="track:000042", help="item whose vector is the query")
    ap.add_argument("-k", type=int, default=10, help="number of hits")
    ap.add_argument("--ef", type=int, default=0, help="beam width (0: the index default)")
    ap.add_argument("--filter", default="",
                    help='only return items matching this expression, '
                         'e.g. \'markets = "SE" AND explicit = false\'')
    ap.add_argument("--like", default="", help="comma-separated seed ids (positive_ids)")
    ap.add_argument("--unlike", default="", help="comma-separated ids (negative_ids)")
    ap.add_argument("--strategy", default="AVERAGE_VECTOR",
                    choices=["AVERAGE_VECTOR", "BEST_SCORE", "SUM_SCORES"])
    ap.add_argument("--exclude", default="", help="comma-separated ids never to return")
    ap.add_argument("--indexes", default="",
                    help="comma-separated indexes to search together (federated)")
    ap.add_argument("--min-per-index", type=int, default=0)
    ap.add_argument("--diversity", type=float, default=0.0, help="MMR, lambda = 1 - diversity")
    ap.add_argument("--group-by", default="", help="keyword field to cap, e.g. artist")
    ap.add_argument("--group-size", type=int, default=0, help="hits per group value")
    ap.add_argument("--with-attributes", action="store_true", help="attributes on each hit")
    ap.add_argument("--delete", default="",
                    help="comma-separated ids to delete from --index first "
                         "(a layered folder; an admin token under --tokens)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    ap.add_argument("--tls-ca", help="PEM of the CA of the server's certificate (turns on TLS)")
    ap.add_argument("--tls-client-cert", help="PEM client certificate, for mutual TLS")
    ap.add_argument("--tls-client-key", help="PEM key of --tls-client-cert")
    ap.add_argument("--token", default=os.environ.get("FATHOM_TOKEN"),
                    help="bearer token (default: $FATHOM_TOKEN)")
    args = ap.parse_args()
    if bool(args.tls_client_cert) != bool(args.tls_client_key):
        ap.error("--tls-client-cert and --tls-client-key go together")
    ids = lambda s: [x for x in s.split(",") if x]

    if not have_grpc():
        bootstrap()
    import grpc

    with tempfile.TemporaryDirectory(prefix="fathom-stubs-") as stubs:
        pb, pb_grpc = load_stubs(stubs)
        if args.tls_ca or args.tls_client_cert:
            def read(path):
                return Path(path).read_bytes() if path else None
            creds = grpc.ssl_channel_credentials(
                root_certificates=read(args.tls_ca),
                private_key=read(args.tls_client_key),
                certificate_chain=read(args.tls_client_cert))
            channel = grpc.secure_channel(args.target, creds)
        else:
            channel = grpc.insecure_channel(args.target)
        # Sent with each call; never printed.
        metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            sys.exit(f"cannot connect to {args.target} within {args.timeout}s "
                     "(is `fathom demo` or `fathom serve` running?)")
        stub = pb_grpc.RetrievalStub(channel)
        try:
            indexes = stub.ListIndexes(pb.ListIndexesRequest(), timeout=args.timeout,
                                       metadata=metadata).indexes
            for ix in indexes:
                layers = f", {len(ix.layers)} layers, {ix.deleted} deleted" if ix.layers else ""
                print(f"index {ix.name}: {ix.count} × {ix.dim} {ix.metric} {ix.storage}, "
                      f"default ef {ix.default_ef}{layers}")
            if args.delete:
                d = stub.Delete(pb.DeleteRequest(index=args.index, ids=ids(args.delete)),
                                timeout=args.timeout, metadata=metadata)
                print(f"deleted {d.deleted} from {args.index} ({d.live} live); "
                      f"no live copy: {list(d.unknown) or '-'}")
            indexes = ids(args.indexes)
            query = []
            if not (args.like or args.unlike):
                # The query is a stored item's vector.
                items = stub.GetItems(pb.GetItemsRequest(index=(indexes or [args.index])[0],
                                                         ids=[args.id]),
                                      timeout=args.timeout, metadata=metadata).items
                query = list(items[0].vector)
            request = pb.SearchRequest(
                index="" if indexes else args.index, indexes=indexes, vector=query,
                k=args.k, ef=args.ef, filter=args.filter,
                positive_ids=ids(args.like), negative_ids=ids(args.unlike),
                strategy=pb.Strategy.Value(args.strategy), exclude_ids=ids(args.exclude),
                min_per_index=args.min_per_index, diversity=args.diversity,
                group_by=args.group_by, group_size=args.group_size,
                with_attributes=args.with_attributes)
            start = time.perf_counter()
            resp = stub.Search(request, timeout=args.timeout, metadata=metadata)
            took_ms = (time.perf_counter() - start) * 1e3
        except grpc.RpcError as e:
            sys.exit(f"{e.code().name}: {e.details()}")
        finally:
            channel.close()

    where = f" where {args.filter}" if args.filter else ""
    like = f"like {args.like or '-'} unlike {args.unlike or '-'} ({args.strategy})"
    what = like if (args.like or args.unlike) else args.id
    print(f"\n{args.k} nearest to {what} in {args.indexes or args.index}{where} "
          f"({took_ms:.2f} ms round trip):")
    print(f"{'rank':>4}  {'id':<20} {'distance':>10}  {'index':<10} attributes")
    for rank, hit in enumerate(resp.hits, 1):
        print(f"{rank:>4}  {hit.id:<20} {hit.distance:>10.6f}  {hit.index:<10} "
              f"{hit.attributes_json}")


if __name__ == "__main__":
    main()
