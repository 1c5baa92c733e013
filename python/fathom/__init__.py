"""fathom: approximate-nearest-neighbour retrieval over memory-mapped HNSW
snapshots, in process or against a ``fathom serve`` server.

    import fathom
    index = fathom.build("words.fathom", vectors, ids=ids, metric="cosine")
    ids, distances = index.search(queries, k=10, filter='lang = "en"')

Every call into the engine releases the GIL, and an ``Index`` may be shared
between threads. Bad arguments raise ``ValueError`` with the engine's
message; files that cannot be read raise ``fathom.SnapshotError``.
"""

from ._errors import ServerError, SnapshotError, UnknownItemError
from ._fathom import Client, Index, Layered, __version__, build, search

__all__ = [
    "Client",
    "Index",
    "Layered",
    "ServerError",
    "SnapshotError",
    "UnknownItemError",
    "__version__",
    "build",
    "search",
]
