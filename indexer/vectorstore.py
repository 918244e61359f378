"""Vector stores for many small indexes (one per shop): a small protocol and its FAISS backend.

A shop's vectors are stored under (shop, build): a rebuild writes the new build's rows next to the
old ones, the shop registry then points at the new build, and only after that are the old rows
dropped. A reader therefore always finds every row of the build it was told to serve.

Backends (``VectorStoreKind``):

- ``faiss`` (default, embedded): one small exact index file per (shop, build) under ``root``,
  loaded on first use and kept in a bounded LRU, so memory follows the shops being asked about
  and not the number of shops.
- ``milvus`` (``indexer.vectorstore_milvus``): one collection, the shop as partition key; a local
  file path runs Milvus Lite embedded, ``http://host:19530`` a Milvus server or cluster.

Both return exact inner products of unit vectors (cosines) in float32, so a shop answers the same
on either (the store tests check the same hits and scores on both).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from kb.errors import ConfigError, IndexStateError

# Shop ids name folders, URL paths and Milvus filter values: lowercase ASCII letters, digits and
# inner hyphens or underscores only, so none of them needs escaping anywhere.
SHOP_ID = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")  # indexer.build.new_build_id's shape
MAX_SHOP_ROWS = 16_384  # Milvus's largest search limit: the dense pass asks for every row of a shop
# (shop, build) row sets kept by the FAISS backend for ``search`` and ``count``; a serving process
# reads a shop's rows once with ``fetch`` and keeps them with the shop (service/shops_answer.py)
DEFAULT_FAISS_CACHE = 32


class VectorStoreKind(StrEnum):
    FAISS = "faiss"
    MILVUS = "milvus"


@dataclass(frozen=True)
class VectorHit:
    """One search result: row of the shop build's vector matrix, cosine, 0-based rank."""

    row: int
    score: float
    rank: int


def check_shop_id(shop: str) -> str:
    """``shop`` when it is a safe slug, else a ConfigError saying what one looks like."""
    if not isinstance(shop, str) or not SHOP_ID.match(shop):
        raise ConfigError(
            f"shop id {shop!r} is not a safe slug: use 1-64 lowercase letters, digits, '-' or '_' "
            "(starting and ending with a letter or digit), e.g. 'acme-shoes'"
        )
    return shop


def check_build_id(build: str) -> str:
    if not isinstance(build, str) or not BUILD_ID.match(build):
        raise ConfigError(f"build id {build!r} is not valid (letters, digits, '-' and '_', up to 80)")
    return build


def in_row_order(shop: str, build: str, kind: str, ids: np.ndarray, vectors: np.ndarray, rows: int) -> np.ndarray:
    """``vectors[i]`` (row ``ids[i]``) placed at index ``ids[i]``: every row 0..rows-1 exactly once, or an
    IndexStateError saying to rebuild the shop."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape != (rows,) or (rows and not np.array_equal(np.sort(ids), np.arange(rows))):
        raise IndexStateError(
            f"shop {shop}: the {kind} store holds {ids.size} rows of build {build}, the build has {rows}; "
            f"run `kefu shops rebuild {shop}`"
        )
    if rows and np.array_equal(ids, np.arange(rows)):
        return np.ascontiguousarray(vectors, dtype=np.float32)
    out = np.empty((rows, vectors.shape[1]), dtype=np.float32)
    out[ids] = vectors
    return out


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [n, dim] matrix (one row is promoted), or a ConfigError."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ConfigError(f"vectors of shape {vectors.shape} do not match the store's dimension {dim}")
    return x


@runtime_checkable
class VectorStore(Protocol):
    """Vectors of many shops, each under the build that wrote them."""

    kind: VectorStoreKind
    dim: int

    def warm_up(self) -> None:
        """Open connections and create what is missing (never done in a constructor)."""

    def upsert(self, shop: str, build: str, rows: Sequence[int], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` as row ``rows[i]`` of (shop, build), replacing a row that exists."""

    def search(self, shop: str, build: str, queries: np.ndarray, k: int) -> list[list[VectorHit]]:
        """The ``k`` nearest rows of (shop, build) to each query row, best first (only that build's rows)."""

    def fetch(self, shop: str, build: str, rows: int) -> np.ndarray:
        """Every row of (shop, build) as a float32 [rows, dim] matrix, row i at index i, in one read;
        IndexStateError when the store does not hold exactly rows 0..rows-1 of that build."""

    def holds(self, shop: str, build: str, rows: int) -> bool:
        """Whether the store holds every row 0..rows-1 of (shop, build) (point reads on Milvus: a
        count there is a filtered scan of the whole collection)."""

    def flush(self) -> None:
        """Make what was written fast to search (Milvus seals its growing segments; FAISS: nothing)."""

    def count(self, shop: str, build: str | None = None) -> int:
        """Rows stored for the shop (one build, or all of them)."""

    def delete(self, shop: str, keep: Sequence[str] = ()) -> None:
        """Drop the shop's rows of every build not in ``keep`` (all of them by default)."""

    def drop(self, shop: str, build: str, rows: int) -> None:
        """Drop rows 0..rows-1 of (shop, build), by key: what a rebuild does with the build it no
        longer keeps (``delete`` filters on the shop, a scan of the whole collection on Milvus Lite)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Rows:
    """One (shop, build) in memory: its row ids and unit vectors (float32, C order)."""

    ids: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of(cls, index: Any) -> _Rows:  # an IndexIDMap2 over an IndexFlatIP, as read or built
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        flat = faiss.downcast_index(index.index)
        vectors = flat.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, flat.d), dtype=np.float32)
        return cls(ids, np.ascontiguousarray(vectors, dtype=np.float32))


class FaissVectorStore:
    """One exact inner-product index per (shop, build) in ``root/<shop>/<build>.faiss``.

    Writes go to a temporary file renamed into place, so a crash never leaves a half-written
    index. Reads are served from a bounded LRU (``cache`` builds) of the rows as numpy arrays: a
    shop holds a few hundred vectors, and one matrix-vector product over them takes microseconds,
    where faiss's own search of such a small index paid its thread pool's start-up (4 ms a call
    measured on 2 busy cores, 2026-12-06). The products are the same float32 inner products.
    """

    kind = VectorStoreKind.FAISS

    def __init__(self, root: Path, dim: int, cache: int = DEFAULT_FAISS_CACHE) -> None:
        if cache < 1:
            raise ConfigError(f"the FAISS store's cache must hold at least 1 index, got {cache}")
        self.root = Path(root).expanduser()
        self.dim = dim
        self.cache_size = cache
        self._open: OrderedDict[tuple[str, str], _Rows] = OrderedDict()
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexStateError(f"cannot create the vector store folder {self.root}: {exc}") from exc

    def _path(self, shop: str, build: str) -> Path:
        return self.root / check_shop_id(shop) / f"{check_build_id(build)}.faiss"

    def _read(self, shop: str, build: str) -> faiss.Index | None:
        path = self._path(shop, build)
        if not path.is_file():
            return None
        try:
            return faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexStateError(
                f"vector file {path} is truncated or corrupt; run `kefu shops rebuild {shop}`"
            ) from exc

    def _remember(self, key: tuple[str, str], rows: _Rows) -> None:
        with self._lock:
            self._open[key] = rows
            self._open.move_to_end(key)
            while len(self._open) > self.cache_size:
                self._open.popitem(last=False)

    def _rows(self, shop: str, build: str) -> _Rows | None:
        key = (shop, build)
        with self._lock:
            rows = self._open.get(key)
            if rows is not None:
                self._open.move_to_end(key)
                return rows
        index = self._read(shop, build)
        if index is None:
            return None
        rows = _Rows.of(index)
        self._remember(key, rows)
        return rows

    def upsert(self, shop: str, build: str, rows: Sequence[int], vectors: np.ndarray) -> None:
        x = as_matrix(vectors, self.dim)
        ids = np.asarray(rows, dtype=np.int64)
        if ids.shape != (x.shape[0],):
            raise ConfigError(f"{len(ids)} row ids for {x.shape[0]} vectors")
        path = self._path(shop, build)
        index = self._read(shop, build) or faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        index.remove_ids(ids)  # type: ignore[arg-type]  # faiss's Python wrapper takes an array too
        if ids.size and not (int(ids.min()) >= 0 and int(ids.max()) < MAX_SHOP_ROWS):
            raise ConfigError(f"row ids of shop {shop} must be in [0, {MAX_SHOP_ROWS}): a shop holds at most that many")
        index.add_with_ids(x, ids)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
        self._remember((shop, build), _Rows.of(index))

    def search(self, shop: str, build: str, queries: np.ndarray, k: int) -> list[list[VectorHit]]:
        if k < 1:
            raise ConfigError(f"k={k} must be ≥ 1")
        q = as_matrix(queries, self.dim)
        rows = self._rows(shop, build)
        if rows is None or rows.ids.size == 0 or q.shape[0] == 0:
            return [[] for _ in range(q.shape[0])]
        scores = q @ rows.vectors.T
        k = min(k, rows.ids.size)
        out = []
        for row_scores in scores:
            top = np.argpartition(-row_scores, k - 1)[:k] if k < row_scores.size else np.arange(row_scores.size)
            top = top[np.argsort(-row_scores[top], kind="stable")]
            out.append([VectorHit(int(rows.ids[j]), float(row_scores[j]), r) for r, j in enumerate(top.tolist())])
        return out

    def fetch(self, shop: str, build: str, rows: int) -> np.ndarray:
        """The build's rows from the LRU or its file; a file read here is not added to the LRU (the
        caller keeps the matrix as long as it needs it)."""
        with self._lock:
            cached = self._open.get((shop, build))
        if cached is None:
            index = self._read(shop, build)
            cached = _Rows.of(index) if index is not None else _Rows(np.zeros(0, np.int64), np.zeros((0, self.dim)))
        return in_row_order(shop, build, self.kind.value, cached.ids, cached.vectors, rows)

    def holds(self, shop: str, build: str, rows: int) -> bool:
        got = self._rows(shop, build)
        if got is None:
            return rows == 0
        return bool(np.array_equal(np.sort(got.ids), np.arange(rows)))

    def flush(self) -> None:
        """Nothing to do: each upsert wrote its file."""

    def count(self, shop: str, build: str | None = None) -> int:
        if build is not None:
            rows = self._rows(shop, build)
            return 0 if rows is None else int(rows.ids.size)
        return sum(self.count(shop, p.stem) for p in self._builds(shop))

    def _builds(self, shop: str) -> list[Path]:
        folder = self.root / check_shop_id(shop)
        return sorted(folder.glob("*.faiss")) if folder.is_dir() else []

    def delete(self, shop: str, keep: Sequence[str] = ()) -> None:
        kept = set(keep)
        for path in self._builds(shop):
            if path.stem not in kept:
                path.unlink(missing_ok=True)
                with self._lock:
                    self._open.pop((shop, path.stem), None)
        folder = self.root / shop
        if not kept and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)

    def drop(self, shop: str, build: str, rows: int) -> None:
        self._path(shop, build).unlink(missing_ok=True)
        with self._lock:
            self._open.pop((shop, build), None)

    def close(self) -> None:
        with self._lock:
            self._open.clear()


def open_vector_store(
    kind: VectorStoreKind | str,
    dim: int,
    *,
    root: Path,
    milvus_uri: str | None = None,
    cache: int = DEFAULT_FAISS_CACHE,
) -> VectorStore:
    """The configured backend (not yet warmed up). ``root`` holds the FAISS files; ``milvus_uri``
    defaults to a Milvus Lite file in ``root``."""
    try:
        chosen = VectorStoreKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in VectorStoreKind)
        raise ConfigError(f"vector store {kind!r} is unknown; allowed: {allowed} (KEFU_VECTOR_STORE)") from None
    if chosen is VectorStoreKind.FAISS:
        return FaissVectorStore(root, dim, cache)
    from indexer.vectorstore_milvus import MilvusVectorStore

    return MilvusVectorStore(milvus_uri or str(Path(root).expanduser() / "milvus.db"), dim)
