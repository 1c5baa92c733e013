"""Peak memory of `fathom serve` under 24 concurrent 15 MB Search calls.

    tools/.venv/bin/python tools/hostile_rss.py target/release/fathom INDEX.fathom [serve flags...]

Starts the server on 127.0.0.1:50072 serving INDEX.fathom as `items`, sends
the calls (one connection each), and prints the status codes and the
server's VmHWM/VmRSS (kB) before and after. Raw grpcio stubs, generated
from proto/ at run time, send what no well-behaved client would: the venv
needs tools/requirements-grpc.txt (grpcio, grpcio-tools).
"""
import sys, time, tempfile, threading, subprocess
from pathlib import Path
import grpc

PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"
PROTO = "fathom/v1/retrieval.proto"


def load_stubs(out_dir):
    """Generate the Python stubs of the fathom.v1 contract into out_dir."""
    from grpc_tools import protoc
    import importlib.resources

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
                        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", PROTO])
    if code != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT / PROTO}")
    sys.path.insert(0, str(out_dir))
    from fathom.v1 import retrieval_pb2, retrieval_pb2_grpc
    return retrieval_pb2, retrieval_pb2_grpc

binary, index, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
p = subprocess.Popen([binary, "serve", "--index", f"items={index}", "--listen", "127.0.0.1:50072",
                      "--metrics-listen", "off", "--no-watch", *extra], stderr=subprocess.DEVNULL)
time.sleep(1.0)
def hwm():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith(("VmHWM", "VmRSS")):
            yield l.split()[1]
with tempfile.TemporaryDirectory() as d:
    pb, pbg = load_stubs(d)
    before = list(hwm())
    codes = {}
    lock = threading.Lock()
    vec = [0.5] * (15_000_000 // 4)
    req = pb.SearchRequest(index="items", vector=vec, k=10)
    def one():
        ch = grpc.insecure_channel("127.0.0.1:50072", options=[("grpc.max_send_message_length", -1)])
        try:
            pbg.RetrievalStub(ch).Search(req, timeout=60)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        with lock:
            codes[code] = codes.get(code, 0) + 1
        ch.close()
    ts = [threading.Thread(target=one) for _ in range(24)]
    t0 = time.time()
    for t in ts: t.start()
    for t in ts: t.join()
    print(binary, extra, "codes", codes, "VmHWM/VmRSS kB before", before, "after", list(hwm()), f"{time.time()-t0:.1f}s")
p.terminate(); p.wait()
