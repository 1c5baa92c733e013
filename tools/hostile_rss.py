"""Peak memory of `fathom serve` under 24 concurrent 15 MB Search calls.

    tools/.venv/bin/python tools/hostile_rss.py target/release/fathom INDEX.fathom [serve flags...]

Starts the server on 127.0.0.1:50072 serving INDEX.fathom as `items`, sends
the calls (one connection each), and prints the status codes and the
server's VmHWM/VmRSS (kB) before and after. Uses tools/client.py's stubs.
"""
import sys, time, tempfile, threading, subprocess
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import client as c
import grpc
binary, index, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
p = subprocess.Popen([binary, "serve", "--index", f"items={index}", "--listen", "127.0.0.1:50072",
                      "--metrics-listen", "off", "--no-watch", *extra], stderr=subprocess.DEVNULL)
time.sleep(1.0)
def hwm():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith(("VmHWM", "VmRSS")):
            yield l.split()[1]
with tempfile.TemporaryDirectory() as d:
    pb, pbg = c.load_stubs(d)
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
