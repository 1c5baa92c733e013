"""Write an .fvecs file (with its ids and .jsonl attributes) as Parquet:
an id column, a fixed-size list of float32 vectors, and one column per
attribute. Used to compare Parquet input with .fvecs in docs/scale.md.

    python tools/to_parquet.py BASE.fvecs IDS.txt ATTRS.jsonl OUT.parquet
"""

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main(base, ids, attrs, out):
    raw = np.fromfile(base, dtype=np.int32)
    dim = int(raw[0])
    vectors = raw.reshape(-1, dim + 1)[:, 1:].copy().view(np.float32)
    with open(ids) as f:
        names = [line.rstrip("\n") for line in f]
    rows = []
    with open(attrs) as f:
        for line in f:
            row = json.loads(line)
            row.pop("id", None)
            rows.append(row)
    fields = sorted({k for r in rows for k in r})
    columns = {
        "id": pa.array(names),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    }
    for k in fields:
        columns[k] = pa.array([r.get(k) for r in rows])
    pq.write_table(pa.table(columns), out, row_group_size=8192)
    print(f"wrote {len(names)} rows x {dim} and {len(fields)} attributes to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
