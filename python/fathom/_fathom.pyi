"""Type stubs of fathom's compiled module (re-exported by ``fathom``)."""

from os import PathLike
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, PathLike]
_Vector = npt.ArrayLike
_Ids = Sequence[Union[str, int]]
_Example = Union[str, _Vector]
Metric = Literal["cosine", "dot", "l2", "angular", "ip", "inner_product", "euclidean"]
Storage = Literal["f32", "bf16", "i8"]
Strategy = Literal["average_vector", "best_score", "sum_scores"]

class Index:
    """An open fathom index: a snapshot file or a layered folder. Safe to
    share between threads; searches run without the GIL."""

    def __init__(self, path: _Path, load: Literal["mmap", "memory"] = "mmap") -> None:
        """Open a snapshot file or a layered folder: O(1) with
        ``load="mmap"``; ``load="memory"`` copies the file into memory.
        Raises ``fathom.SnapshotError`` when it cannot be read."""
    def __len__(self) -> int:
        """Items a search can return."""
    @property
    def dim(self) -> int:
        """The dimension of the vectors."""
    @property
    def metric(self) -> str:
        """``"cosine"``, ``"dot"`` or ``"l2"``."""
    @property
    def storage(self) -> str:
        """``"f32"``, ``"bf16"`` or ``"i8"``."""
    @property
    def fields(self) -> Dict[str, str]:
        """Attribute fields and their kinds."""
    @property
    def path(self) -> str:
        """The path the index was opened from."""
    @overload
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        ef: Optional[int] = None,
        filter: Optional[str] = None,
        exclude_ids: Optional[_Ids] = None,
        threads: Optional[int] = None,
        probe: int = 0,
    ) -> Tuple[Any, np.ndarray]: ...
    @overload
    def search(
        self,
        queries: Sequence[float],
        k: int = 10,
        ef: Optional[int] = None,
        filter: Optional[str] = None,
        exclude_ids: Optional[_Ids] = None,
        threads: Optional[int] = None,
        probe: int = 0,
    ) -> Tuple[List[str], np.ndarray]:
        """The ``k`` nearest items of each query. 2-D queries give an
        ``(n, k)`` object array of ids (``None`` where padded) and an
        ``(n, k)`` float32 array of distances (``inf`` where padded); a 1-D
        query gives a list of ids and a 1-D array. ``filter`` keeps only
        matching items (``min(k, matching)`` come back); ``exclude_ids`` are
        never returned; ``threads=None`` uses every core."""
    def get(self, ids: _Ids) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
        """Stored vectors ``(n, dim)`` and attribute dicts of ``ids``.
        Raises ``fathom.UnknownItemError`` for an id the index lacks."""
    def recommend(
        self,
        positive: Optional[Sequence[_Example]] = None,
        negative: Optional[Sequence[_Example]] = None,
        strategy: Strategy = "average_vector",
        exclude_ids: Optional[_Ids] = None,
        filter: Optional[str] = None,
        diversity: Optional[float] = None,
        candidates: Optional[int] = None,
        group_by: Optional[str] = None,
        group_size: Optional[int] = None,
        k: int = 10,
        ef: Optional[int] = None,
    ) -> Tuple[List[str], np.ndarray]:
        """Items like ``positive`` and unlike ``negative`` (stored ids or
        vectors), never the examples themselves; with diversity (MMR) and
        per-group caps."""

class Layered(Index):
    """A layered index folder, searchable as an ``Index`` and changed by
    ``add``, ``delete`` and ``compact``; each change is durable and visible
    when its call returns."""

    def __init__(self, path: _Path, load: Literal["mmap", "memory"] = "mmap") -> None:
        """Open the layered folder at ``path``."""
    def add(
        self,
        vectors: npt.ArrayLike,
        ids: _Ids,
        attributes: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
        threads: Optional[int] = None,
    ) -> str:
        """Add items as a delta layer (replacing ids already held); returns
        the layer's file name."""
    def delete(self, ids: _Ids) -> int:
        """Delete ``ids`` durably; returns how many were deleted."""
    def compact(self, threads: Optional[int] = None) -> None:
        """Fold every live item into one new base."""
    @property
    def layers(self) -> List[str]:
        """The layer files, base first."""

def build(
    path: _Path,
    vectors: Union[npt.ArrayLike, _Path, Any],
    ids: Optional[_Ids] = None,
    metric: Metric = "cosine",
    storage: Storage = "f32",
    m: int = 16,
    ef_construction: int = 200,
    attributes: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
    threads: Optional[int] = None,
    seed: int = 42,
    vector_column: Optional[str] = None,
    id_column: Optional[str] = None,
    attribute_columns: Optional[Sequence[str]] = None,
    value_graphs: Optional[Sequence[str]] = None,
) -> Index:
    """Build an index of ``vectors`` at ``path`` and return it open: a
    snapshot file, or, for a path ending in ``/``, a new layered folder
    (returned as a ``Layered``). ``vectors`` may also be an Arrow table
    (``__arrow_c_stream__``) or an input file's path (``.parquet``,
    ``.fvecs``, ``.npy``, ``.jsonl``), whose columns carry the ids and
    attributes."""

def search(
    indexes: Sequence[Index],
    queries: npt.ArrayLike,
    k: int = 10,
    ef: Optional[int] = None,
    filter: Optional[str] = None,
    exclude_ids: Optional[_Ids] = None,
    min_per_index: int = 0,
    threads: Optional[int] = None,
) -> Tuple[Any, np.ndarray, np.ndarray]:
    """Search several indexes as one: ``(ids, distances, indexes)``, where
    ``indexes`` is each hit's index as its position in ``indexes`` (-1
    where padded)."""

class Client:
    """A connection to a ``fathom serve`` server, with the shapes of
    ``Index``."""

    def __init__(
        self,
        target: str,
        token: Optional[str] = None,
        tls_ca: Optional[_Path] = None,
        tls_cert: Optional[_Path] = None,
        tls_key: Optional[_Path] = None,
        timeout: Optional[float] = None,
        connect_timeout: float = 5.0,
    ) -> None:
        """Connect to ``host:port`` (``https://`` or a ``tls_ca`` for TLS);
        ``token`` is sent as a bearer token."""
    def search(
        self,
        index: Union[str, Sequence[str]],
        queries: npt.ArrayLike,
        k: int = 10,
        ef: Optional[int] = None,
        filter: Optional[str] = None,
        exclude_ids: Optional[_Ids] = None,
        min_per_index: Optional[int] = None,
        experiment_key: Optional[str] = None,
    ) -> Tuple[Any, ...]:
        """As ``Index.search`` on the server's ``index``; with a list of
        names, federated, and a third value names each hit's index.
        ``experiment_key`` picks the variant of a name with variants."""
    def recommend(
        self,
        index: str,
        positive: Optional[Sequence[_Example]] = None,
        negative: Optional[Sequence[_Example]] = None,
        strategy: Strategy = "average_vector",
        exclude_ids: Optional[_Ids] = None,
        filter: Optional[str] = None,
        diversity: Optional[float] = None,
        candidates: Optional[int] = None,
        group_by: Optional[str] = None,
        group_size: Optional[int] = None,
        k: int = 10,
        ef: Optional[int] = None,
    ) -> Tuple[List[str], np.ndarray]:
        """As ``Index.recommend`` on the server's ``index``."""
    def get(self, index: str, ids: _Ids) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
        """As ``Index.get`` on the server's ``index``."""
    def list_indexes(self) -> List[Dict[str, Any]]:
        """Every index the server serves, with its aliases and its online
        recall estimates (``recall``: kind, estimate, low, high, samples)."""
    def delete(self, index: str, ids: _Ids) -> int:
        """Delete ``ids`` from a layered index on the server."""
    def set_alias(self, alias: str, index: Optional[str]) -> Optional[str]:
        """Point ``alias`` at ``index`` (``None`` removes it); returns the
        index it stood for before."""
