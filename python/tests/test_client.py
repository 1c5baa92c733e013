"""fathom.Client against a real `fathom serve`, with TLS and tokens."""

import os
import subprocess
import threading
import time

import numpy as np
import pytest

import fathom

from conftest import BIN
ADMIN = "admin-token-0123456789abcdef"
SEARCH = "search-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not os.path.exists(BIN), reason=f"no fathom binary at {BIN} (set FATHOM_BIN)"
)


class Server:
    """`fathom serve` on a free loopback port, stopped at the end."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--no-watch", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info"},
        )
        self.address = None
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                if self.address is None and "listening" in line:
                    for word in line.split():
                        if word.startswith("grpc="):
                            self.address = word[len("grpc="):]
                            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.stop()
            raise RuntimeError("fathom serve did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def served(data, tmp_path_factory):
    base, _, attrs = data
    root = tmp_path_factory.mktemp("served")
    fathom.build(str(root / "items.fathom"), base, attributes=attrs, threads=1)
    fathom.build(str(root / "layered") + "/", base[:500], attributes=attrs[:500], threads=2)
    subprocess.run([BIN, "tls", "init", str(root / "pki")], check=True, capture_output=True)
    tokens = root / "tokens"
    tokens.write_text(f"admin {ADMIN}\nsearch {SEARCH}\n")
    tokens.chmod(0o600)
    server = Server(
        [
            "--index", f"items={root / 'items.fathom'}",
            "--index", f"layered={root / 'layered'}",
            "--tls-cert", str(root / "pki" / "server.pem"),
            "--tls-key", str(root / "pki" / "server.key"),
            "--tokens", str(tokens),
        ]
    )
    yield server, root
    server.stop()


def client(served, token=SEARCH):
    server, root = served
    return fathom.Client(server.address, token=token, tls_ca=str(root / "pki" / "ca.pem"), timeout=10)


def test_search_matches_in_process(served, index, data):
    _, queries, _ = data
    c = client(served)
    for kwargs in ({}, {"filter": 'genre = "jazz"'}, {"exclude_ids": ["0", "1"]}):
        want_ids, want_d = index.search(queries[:20], k=10, ef=64, **kwargs)
        ids, d = c.search("items", queries[:20], k=10, ef=64, **kwargs)
        assert (ids == want_ids).all()
        np.testing.assert_allclose(d, want_d, rtol=1e-5, atol=1e-6)
        one, d1 = c.search("items", queries[0], k=10, ef=64, **kwargs)
        assert one == list(want_ids[0])


def test_recommend_get_and_list(served, index):
    c = client(served, ADMIN)
    want, _ = index.recommend(positive=["3", "8"], negative=["13"], k=10)
    got, _ = c.recommend("items", positive=["3", "8"], negative=["13"], k=10)
    assert got == want
    vectors, attributes = c.get("items", ["0", "41"])
    want_v, want_a = index.get(["0", "41"])
    np.testing.assert_allclose(vectors, want_v, rtol=1e-6)
    assert attributes == want_a
    names = [i["name"] for i in c.list_indexes()]
    assert names == ["items", "layered"]


def test_federated_names_indexes(served, data):
    _, queries, _ = data
    ids, d, where = client(served).search(["items", "layered"], queries[:3], k=6, min_per_index=2)
    assert ids.shape == where.shape == (3, 6)
    assert {w for row in where for w in row} == {"items", "layered"}


def test_delete_needs_admin(served, data):
    base, _, _ = data
    with pytest.raises(PermissionError):
        client(served).delete("layered", ["5"])
    c = client(served, ADMIN)
    assert c.delete("layered", ["5", "no-such-id"]) == 1
    found, _ = c.search("layered", base[5], k=3)
    assert "5" not in found


def test_set_alias_needs_admin_and_switches(served, data):
    _, queries, _ = data
    with pytest.raises(PermissionError):
        client(served).set_alias("current", "items")
    admin = client(served, ADMIN)
    assert admin.set_alias("current", "items") is None
    want, _ = admin.search("items", queries[:5], k=5)
    got, _ = admin.search("current", queries[:5], k=5)
    assert (got == want).all()
    assert admin.set_alias("current", "layered") == "items"
    with pytest.raises(ValueError, match="the name of an index"):
        admin.set_alias("items", "layered")
    assert admin.set_alias("current", None) == "layered"
    with pytest.raises(fathom.UnknownItemError):
        admin.search("current", queries[0], k=5)


def test_errors_keep_the_server_message(served, data):
    _, queries, _ = data
    c = client(served)
    with pytest.raises(ValueError, match="position"):
        c.search("items", queries[:2], filter="genre = ")
    with pytest.raises(fathom.UnknownItemError):
        c.recommend("items", positive=["nope"])
    with pytest.raises(PermissionError):
        client(served, "wrong-token-0123456789abcdef").search("items", queries[0])
    server, _ = served
    with pytest.raises(ConnectionError):
        # Plaintext to a TLS server.
        fathom.Client(server.address, token=SEARCH, timeout=5).search("items", queries[0])
    with pytest.raises(ConnectionError):
        fathom.Client("127.0.0.1:1", connect_timeout=2)


def test_experiment_keys_pick_stable_variants_and_recall_is_listed(data, tmp_path):
    base, queries, _ = data
    fathom.build(str(tmp_path / "a.fathom"), base, threads=2)
    # The same vectors in reverse order: the same query finds other ids.
    fathom.build(str(tmp_path / "b.fathom"), base[::-1].copy(), threads=2)
    server = Server(
        [
            "--index", f"a={tmp_path / 'a.fathom'}",
            "--index", f"b={tmp_path / 'b.fathom'}",
            "--variant", "a=b:50%",
            "--recall-sample", "1", "--recall-budget", "1",
        ]
    )
    try:
        c = fathom.Client(server.address, timeout=10)
        base_ids, _ = c.search("a", queries[0], k=5)
        answers = set()
        for key in (f"listener:{i}" for i in range(40)):
            ids, _ = c.search("a", queries[0], k=5, experiment_key=key)
            again, _ = c.search("a", queries[0], k=5, experiment_key=key)
            assert list(ids) == list(again)
            answers.add(tuple(ids))
        assert len(answers) == 2 and tuple(base_ids) in answers
        deadline = time.time() + 30
        while True:
            info = {i["name"]: i for i in c.list_indexes()}
            plain = [e for e in info["a"]["recall"] if e["kind"] == "plain"]
            if plain and plain[0]["samples"] > 0:
                break
            assert time.time() < deadline, info["a"]
            time.sleep(0.05)
        assert 0.0 <= plain[0]["low"] <= plain[0]["estimate"] <= plain[0]["high"] <= 1.0
    finally:
        server.stop()
