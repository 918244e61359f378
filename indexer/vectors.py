"""FAISS vector search over L2-normalised vectors (inner product = cosine)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from kb.errors import ConfigError, IndexStateError
from kb.modes import IndexKind

KINDS: tuple[str, ...] = tuple(IndexKind)
HNSW_M = 32  # graph degree: faiss's usual default, good recall/memory balance at 384 dims
HNSW_EF_CONSTRUCTION = 200  # build-time beam; higher costs build time only
# Query-time beam. At 100k clustered synthetic vectors (make bench) efSearch 128 gave recall@10
# 0.72, 512 gave 0.96 and 1024 gave 0.998 in 2.6 ms per query: the target is recall ≥ 0.98.
HNSW_EF_SEARCH = 1024
IVF_MIN_VECTORS = 4096  # below this an IVF index is no faster than exact search
IVF_NPROBE_FRACTION = 0.06  # share of lists probed per query; see `make bench` for recall


@dataclass(frozen=True)
class Hit:
    """One search result: row of the vector matrix, cosine score, 0-based rank."""

    chunk_id: int
    score: float
    rank: int


class VectorIndex:
    """``build`` / ``save`` / ``load`` / ``search`` over a float32 matrix of unit vectors."""

    def __init__(self, index: faiss.Index, kind: IndexKind, dim: int) -> None:
        self._index = index
        self.kind = kind
        self.dim = dim

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, kind: IndexKind | str = IndexKind.FLAT) -> VectorIndex:
        kind = IndexKind.parse(kind)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ConfigError(f"cannot index an empty or non-2-D matrix (shape {vectors.shape})")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        index: faiss.Index
        if kind is IndexKind.HNSW:
            index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        elif kind is IndexKind.IVF and n >= IVF_MIN_VECTORS:
            nlist = int(4 * math.sqrt(n))  # faiss guideline: 4·√n to 16·√n lists
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = max(1, int(nlist * IVF_NPROBE_FRACTION))
        else:
            index = faiss.IndexFlatIP(d)
        index.add(x)
        built = IndexKind.IVF if isinstance(index, faiss.IndexIVFFlat) else kind
        if built is IndexKind.IVF and not isinstance(index, faiss.IndexIVFFlat):
            built = IndexKind.FLAT  # too few vectors for IVF: a flat index was built
        return cls(index, built, d)

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexStateError(f"cannot read vector index {path}: it is truncated or corrupt") from exc
        kind = IndexKind.FLAT
        if isinstance(index, faiss.IndexHNSWFlat) or "HNSW" in type(index).__name__:
            kind = IndexKind.HNSW
            faiss.downcast_index(index).hnsw.efSearch = HNSW_EF_SEARCH  # type: ignore[attr-defined]
        elif "IVF" in type(index).__name__:
            kind = IndexKind.IVF
        return cls(index, kind, int(index.d))

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query row, best first; ``k`` larger than the index is clamped."""
        scores, ids = self.search_arrays(queries, k)
        return [
            [Hit(int(i), float(s), r) for r, (i, s) in enumerate(zip(row_ids, row_scores, strict=True)) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def search_arrays(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) as FAISS returns them, ``[n_queries, k]`` each; an id of -1 is a slot
        an approximate index could not fill. No Hit objects: the dense pass reads these arrays."""
        if k < 1:
            raise ConfigError(f"k={k} must be ≥ 1")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.shape[0] == 0:
            return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.int64)
        if q.shape[1] != self.dim:
            raise ConfigError(f"query dimension {q.shape[1]} does not match the index dimension {self.dim}")
        scores, ids = self._index.search(q, min(k, self.size))
        return scores, ids
