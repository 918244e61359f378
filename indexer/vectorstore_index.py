"""An ``Index`` whose dense channel is a ``VectorStore`` search of one (shop, build).

A shop's build folder keeps what the answerer reads besides the vectors (chunks, entries,
anchors, manifest and calibration), and the lexical channel is built from those chunks, so the
words, the vectors and the calibration of a shop always come from the same build. The vectors are
read from the store: the FAISS files or the Milvus collection, the same cosines either way. The
process holds no copy of a shop's vector matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.chunking import Chunk, DocUnit
from indexer.index import EntryInfo, Index, Manifest, check_compatible, read_parts
from indexer.normalize import NORMALIZER_VERSION
from indexer.vectors import Hit, VectorIndex
from indexer.vectorstore import VectorStore
from kb.errors import IndexStateError
from kb.modes import IndexKind


class StoreVectors(VectorIndex):
    """``VectorIndex`` over the rows of one (shop, build) in a vector store."""

    def __init__(self, store: VectorStore, shop: str, build: str, rows: int) -> None:
        # No faiss index of its own: every call goes to the store.
        self.store = store
        self.shop = shop
        self.build_id = build
        self.kind = IndexKind.FLAT
        self.dim = store.dim
        self._rows = rows

    @property
    def size(self) -> int:
        return self._rows

    def save(self, path: Path) -> None:
        raise IndexStateError("a store-backed index is saved by its build, not by itself")

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        return [
            [Hit(h.row, h.score, h.rank) for h in hits]
            for hits in self.store.search(self.shop, self.build_id, queries, min(k, self._rows))
        ]


class StoreIndex(Index):
    """A shop build served from a vector store (see the module docstring)."""

    vindex: StoreVectors

    @classmethod
    def open(cls, folder: Path, store: VectorStore, shop: str, model_id: str | None = None) -> StoreIndex:
        """Load the build folder's chunks, entries, anchors and manifest (not its vectors). That the
        store holds every row of the build is checked by each search (no extra round trip)."""
        manifest = Index.read_manifest(folder)
        check_compatible(manifest, model_id, NORMALIZER_VERSION, folder)
        p = read_parts(folder)
        return cls(manifest, p.chunks, p.anchors, p.anchor_labels, p.entries, store, shop, folder, p.units)

    def __init__(
        self,
        manifest: Manifest,
        chunks: list[Chunk],
        anchors: np.ndarray,
        anchor_labels: list[str],
        entries: dict[str, EntryInfo],
        store: VectorStore,
        shop: str,
        folder: Path | None = None,
        units: dict[str, DocUnit] | None = None,
    ) -> None:
        n = len(chunks)
        vindex = StoreVectors(store, shop, manifest.build_id, n)
        # a zero-width matrix: the row count the base class checks, and no vectors in memory
        empty = np.zeros((n, 0), dtype=np.float32)
        super().__init__(manifest, empty, vindex, chunks, anchors, anchor_labels, entries, folder, units)
        self.shop = shop

    def set_dense_int8(self, on: bool) -> bool:
        """Never: the cosines come from the store in float32, the same on every backend."""
        return False

    def _cosines(self, qvec: np.ndarray) -> np.ndarray:
        """Cosine of the query with every row (from the store), plus the -inf padding slot."""
        n = len(self.chunks)
        cos = np.full(n + 1, -np.inf, dtype=np.float32)
        (hits,) = self.vindex.search(np.asarray(qvec, dtype=np.float32).reshape(1, -1), n)
        if len(hits) != n:
            raise IndexStateError(
                f"shop {self.shop}: the {self.vindex.store.kind} store returned {len(hits)} of the {n} vectors of "
                f"build {self.manifest.build_id}; run `kefu shops rebuild {self.shop}`"
            )
        if hits:
            cos[np.fromiter((h.chunk_id for h in hits), np.int64, len(hits))] = np.fromiter(
                (h.score for h in hits), np.float32, len(hits)
            )
        return cos
