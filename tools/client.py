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
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    ap.add_argument("--tls-ca", help="PEM of the CA of the server's certificate (turns on TLS)")
    ap.add_argument("--tls-client-cert", help="PEM client certificate, for mutual TLS")
    ap.add_argument("--tls-client-key", help="PEM key of --tls-client-cert")
    ap.add_argument("--token", default=os.environ.get("FATHOM_TOKEN"),
                    help="bearer token (default: $FATHOM_TOKEN)")
    args = ap.parse_args()
    if bool(args.tls_client_cert) != bool(args.tls_client_key):
        ap.error("--tls-client-cert and --tls-client-key go together")

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
                print(f"index {ix.name}: {ix.count} × {ix.dim} {ix.metric} {ix.storage}, "
                      f"default ef {ix.default_ef}")
            items = stub.GetItems(pb.GetItemsRequest(index=args.index, ids=[args.id]),
                                  timeout=args.timeout, metadata=metadata).items
            query = list(items[0].vector)
            start = time.perf_counter()
            resp = stub.Search(pb.SearchRequest(index=args.index, vector=query, k=args.k,
                                                ef=args.ef, filter=args.filter),
                               timeout=args.timeout, metadata=metadata)
            took_ms = (time.perf_counter() - start) * 1e3
        except grpc.RpcError as e:
            sys.exit(f"{e.code().name}: {e.details()}")
        finally:
            channel.close()

    where = f" where {args.filter}" if args.filter else ""
    print(f"\n{args.k} nearest to {args.id} in {args.index}{where} ({took_ms:.2f} ms round trip):")
    print(f"{'rank':>4}  {'id':<20} {'distance':>10}")
    for rank, hit in enumerate(resp.hits, 1):
        print(f"{rank:>4}  {hit.id:<20} {hit.distance:>10.6f}")


if __name__ == "__main__":
    main()
