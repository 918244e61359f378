"""An ``Index`` whose vectors live in a ``VectorStore``, and the one-file pack a shop loads from.

A shop's build folder keeps what the answerer reads besides the vectors (chunks, entries,
anchors, manifest and calibration), so the words, the vectors and the calibration of a shop always
come from the same build. The vectors are read from the store (the FAISS files or the Milvus
collection) once, when the shop is loaded, and scored in process: the same float32 cosines on
either backend.

**The pack** (``shop.pack`` in the build folder, written with the build): everything a shop's
answerer needs, read with one file read and one JSON parse, with nothing rebuilt at load:

- the manifest, the chunks (one list per row), entries and document units;
- the lexical channel as built: BM25 postings with the idf folded in, the bigram postings of the
  rows and of the units and each row's bigram count (``Index.lexical``, ``Index.bigram_postings``);
  their vocabularies are sorted arrays of 1-2 character terms looked up with ``searchsorted``
  instead of dicts of Python strings (a shop's three vocabularies took ~150 KB as dicts);
- the out-of-scope anchors by digest only: every shop built with the bundled resources has the
  same anchors, so a process keeps one copy of each distinct set (``shared_anchors``) where each
  loaded shop held its own 270 KB;
- arrays the service adds (``extras``: the speller's character-pair counts).

A missing or stale pack (another format, normaliser or build) is never an error: the shop loads
from its JSON files as before and the caller may write the pack then.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.chunking import Chunk, DocUnit
from indexer.folder import EntryInfo, Manifest, check_compatible, read_parts
from indexer.index import Index
from indexer.lexical import BigramPostings, LexicalIndex, _posting_positions, char_terms
from indexer.normalize import NORMALIZER_VERSION
from indexer.vectors import Hit, VectorIndex
from indexer.vectorstore import VectorStore
from kb.errors import IndexStateError
from kb.modes import IndexKind

PACK_FILE = "shop.pack"
PACK_MAGIC = b"KEFUPACK"
PACK_FORMAT = 1
_ALIGN = 8
_CHUNK_FIELDS = [f.name for f in dataclasses.fields(Chunk)]
TERM_DTYPE = np.dtype("<U2")  # lexical terms are one character or a bigram (``char_terms``)
UNPACKED_BYTES = 1 << 20  # what a shop loaded from its JSON files holds besides its vectors, at most


class StoreVectors(VectorIndex):
    """``VectorIndex`` over the rows of one (shop, build) in a vector store (``Index.search``)."""

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


# --- sorted term arrays: a vocabulary without a dict --------------------------------------------------
def sorted_terms(vocab: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(terms sorted, their ids) of a term → id vocabulary; ValueError for a term of over 2 characters."""
    if any(len(t) > TERM_DTYPE.itemsize // 4 for t in vocab):
        raise ValueError("a vocabulary term is longer than two characters")
    terms = np.array(list(vocab), dtype=TERM_DTYPE)
    ids = np.fromiter(vocab.values(), dtype=np.int32, count=len(vocab))
    order = np.argsort(terms, kind="stable")
    return terms[order], ids[order]


def lookup_terms(terms: np.ndarray, ids: np.ndarray, query: Iterable[str]) -> np.ndarray:
    """The ids of those ``query`` terms that are in the sorted ``terms`` (a dict's ``get`` for each)."""
    wanted = [t for t in query if len(t) <= 2]
    if not wanted or terms.size == 0:
        return np.zeros(0, dtype=np.int32)
    q = np.array(wanted, dtype=TERM_DTYPE)
    pos = np.minimum(np.searchsorted(terms, q), terms.size - 1)
    return ids[pos[terms[pos] == q]]


class PackedLexical(LexicalIndex):
    """``LexicalIndex`` from its arrays (``scores`` is the same sum over the same postings)."""

    def __init__(  # the parent's constructor builds from texts: not called
        self, terms: np.ndarray, ids: np.ndarray, ptr: np.ndarray, rows: np.ndarray, weights: np.ndarray, n: int
    ) -> None:
        self._terms, self._ids = terms, ids
        self._ptr, self._rows, self._weights, self._n = ptr, rows, weights, n

    def scores(self, query: str) -> np.ndarray:
        terms = lookup_terms(self._terms, self._ids, set(char_terms(query)))
        if not terms.size:
            return np.zeros(self._n)
        pos = _posting_positions(self._ptr, terms)
        return np.bincount(self._rows[pos], weights=self._weights[pos], minlength=self._n)


class PackedPostings(BigramPostings):
    """``BigramPostings`` from its arrays."""

    def __init__(self, terms: np.ndarray, ids: np.ndarray, ptr: np.ndarray, rows: np.ndarray, n: int) -> None:
        self._terms, self._ids = terms, ids
        self._ptr, self._rows, self._n = ptr, rows, n

    def counts(self, grams: Iterable[str]) -> np.ndarray:
        ids = lookup_terms(self._terms, self._ids, grams)
        if not ids.size:
            return np.zeros(self._n, dtype=np.int64)
        return np.bincount(self._rows[_posting_positions(self._ptr, ids)], minlength=self._n)


# --- anchors shared by digest ------------------------------------------------------------------------
_ANCHORS: OrderedDict[str, tuple[np.ndarray, list[str]]] = OrderedDict()
_ANCHORS_LOCK = threading.Lock()
ANCHOR_SETS = 32  # distinct anchor sets kept (one per distinct out_of_scope.yaml; usually one or two)


def anchors_digest(anchors: np.ndarray, labels: list[str]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(anchors, dtype=np.float32).tobytes())
    h.update(json.dumps([list(anchors.shape), labels], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def shared_anchors(folder: Path, digest: str) -> tuple[np.ndarray, list[str]]:
    """The anchors with this digest: the copy already in the process, or the build folder's
    (``anchors.npy``, ``anchors.json``) checked against the digest. Read-only: shared by shops."""
    with _ANCHORS_LOCK:
        got = _ANCHORS.get(digest)
        if got is not None:
            _ANCHORS.move_to_end(digest)
            return got
    try:
        anchors = np.load(folder / "anchors.npy", allow_pickle=False)
        labels = json.loads((folder / "anchors.json").read_text("utf-8"))
    except (OSError, EOFError, ValueError) as exc:
        raise IndexStateError(f"index at {folder} has unreadable anchors ({exc}); rebuild the shop") from exc
    if anchors_digest(anchors, labels) != digest:
        raise IndexStateError(f"index at {folder}: its anchors are not the ones its pack names; rebuild the shop")
    anchors.setflags(write=False)
    with _ANCHORS_LOCK:
        _ANCHORS[digest] = (anchors, labels)
        while len(_ANCHORS) > ANCHOR_SETS:
            _ANCHORS.popitem(last=False)
    return anchors, labels


# --- the pack file -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pack:
    """A read pack: its JSON header and its arrays (views into one buffer)."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    nbytes: int  # the file's size

    @property
    def extras(self) -> dict[str, np.ndarray]:
        return {k.removeprefix("x:"): v for k, v in self.arrays.items() if k.startswith("x:")}


def _i32(a: np.ndarray) -> np.ndarray:
    """Row numbers and offsets as int32 (half the memory; a shop has at most 16,384 rows)."""
    if a.size and int(a.max()) >= 2**31:
        raise ValueError("an offset does not fit in int32")
    return a.astype(np.int32)


def write_pack(index: Index, folder: Path, extras: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``folder/shop.pack`` for ``index`` (loaded from that folder), atomically. ``extras``
    are arrays of the caller's, returned by ``Pack.extras``."""
    lex = index.lexical
    rows_p, units_p = index.bigram_postings
    arrays: dict[str, np.ndarray] = {}
    lex_terms, lex_ids = sorted_terms(lex.vocab)
    arrays.update(lex_terms=lex_terms, lex_ids=lex_ids, lex_ptr=_i32(lex._ptr), lex_rows=_i32(lex._rows))
    arrays["lex_w"] = lex._weights  # float64, as built: the same BM25 to the last bit
    for name, p in (("rows", rows_p), ("units", units_p)):
        terms, ids = sorted_terms(p.vocab)
        arrays.update({f"{name}_terms": terms, f"{name}_ids": ids, f"{name}_ptr": _i32(p._ptr)})
        arrays[f"{name}_rows"] = _i32(p._rows)
    arrays["bigram_sizes"] = np.array([len(g) for g in index.norm_bigrams], dtype=np.int32)
    for k, v in (extras or {}).items():
        arrays[f"x:{k}"] = np.ascontiguousarray(v)
    layout: dict[str, list[Any]] = {}
    offset = 0
    for name, a in arrays.items():
        layout[name] = [a.dtype.str, list(a.shape), offset, int(a.nbytes)]
        offset += -(-int(a.nbytes) // _ALIGN) * _ALIGN
    header = {
        "pack_format": PACK_FORMAT,
        "build_id": index.manifest.build_id,
        "normalizer_version": NORMALIZER_VERSION,
        "manifest": index.manifest.model_dump(mode="json"),
        "chunk_fields": _CHUNK_FIELDS,
        "chunks": [[getattr(c, f) for f in _CHUNK_FIELDS] for c in index.chunks],
        "entries": {k: v.to_json() for k, v in index.entries.items()},
        "units": {k: u.to_json() for k, u in index.doc_units.items()},
        "anchors": anchors_digest(index.anchors, index.anchor_labels),
        "lexical_rows": int(lex._n),
        "arrays": layout,
    }
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    start = len(PACK_MAGIC) + 8 + len(head)
    pad = -start % _ALIGN
    path = folder / PACK_FILE
    tmp = folder / f".{PACK_FILE}.{os.getpid()}.{threading.get_ident()}"
    try:
        with tmp.open("wb") as f:
            f.write(PACK_MAGIC + len(head).to_bytes(8, "little") + head + b"\0" * pad)
            for a in arrays.values():
                f.write(a.tobytes())
                f.write(b"\0" * (-a.nbytes % _ALIGN))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_pack(folder: Path) -> Pack | None:
    """The folder's pack, or None when it has none, one of another format or normaliser, or one
    that does not read (truncated): the caller loads the JSON files and may write it again."""
    try:
        data = (folder / PACK_FILE).read_bytes()
    except OSError:
        return None
    try:
        if data[: len(PACK_MAGIC)] != PACK_MAGIC:
            return None
        n = int.from_bytes(data[len(PACK_MAGIC) : len(PACK_MAGIC) + 8], "little")
        start = len(PACK_MAGIC) + 8 + n
        header = json.loads(data[len(PACK_MAGIC) + 8 : start])
        if header.get("pack_format") != PACK_FORMAT or header.get("normalizer_version") != NORMALIZER_VERSION:
            return None
        start += -start % _ALIGN
        region = np.frombuffer(data, dtype=np.uint8, offset=start).copy()  # one copy; the arrays view it
        arrays = {
            name: region[off : off + nbytes].view(np.dtype(dt)).reshape(shape)
            for name, (dt, shape, off, nbytes) in header.pop("arrays").items()
        }
    except (ValueError, TypeError, KeyError):
        return None
    return Pack(header, arrays, len(data))


class StoreIndex(Index):
    """A shop build whose vectors are read from a vector store (see the module docstring)."""

    vindex: StoreVectors

    @classmethod
    def open(cls, folder: Path, store: VectorStore, shop: str, model_id: str | None = None) -> StoreIndex:
        """Load the build folder's JSON files (chunks, entries, anchors, manifest) and the build's
        vectors from the store; the lexical channel is built on first use."""
        manifest = Index.read_manifest(folder)
        check_compatible(manifest, model_id, NORMALIZER_VERSION, folder)
        p = read_parts(folder)
        return cls(manifest, p.chunks, p.anchors, p.anchor_labels, p.entries, store, shop, folder, p.units)

    @classmethod
    def from_pack(
        cls, pack: Pack, folder: Path, store: VectorStore, shop: str, model_id: str | None = None
    ) -> StoreIndex:
        """The same index from the folder's pack: nothing parsed but one JSON header, nothing
        rebuilt; the anchors shared with every shop that has the same."""
        h, a = pack.header, pack.arrays
        try:
            manifest = Manifest.model_validate(h["manifest"])
            if manifest.build_id != h["build_id"] or h["chunk_fields"] != _CHUNK_FIELDS:
                raise ValueError("the pack is not this build's")
            same: dict[Any, Any] = {}  # one object per distinct string (an entry's rows repeat its title …)
            chunks = [Chunk(*[same.setdefault(v, v) for v in row]) for row in h["chunks"]]
            entries = {k: EntryInfo.from_json(v) for k, v in h["entries"].items()}
            units = {k: DocUnit.from_json(v) for k, v in h["units"].items()}
        except (ValueError, TypeError, KeyError) as exc:
            raise IndexStateError(f"shop pack in {folder} is unreadable ({exc}); rebuild the shop") from exc
        check_compatible(manifest, model_id, NORMALIZER_VERSION, folder)
        anchors, labels = shared_anchors(folder, h["anchors"])
        index = cls(manifest, chunks, anchors, labels, entries, store, shop, folder, units)
        n = len(chunks)
        index._lexical = PackedLexical(a["lex_terms"], a["lex_ids"], a["lex_ptr"], a["lex_rows"], a["lex_w"], n)
        index._postings = (
            PackedPostings(a["rows_terms"], a["rows_ids"], a["rows_ptr"], a["rows_rows"], n),
            PackedPostings(a["units_terms"], a["units_ids"], a["units_ptr"], a["units_rows"], len(index.units)),
        )
        index._bigram_sizes = a["bigram_sizes"]
        index.pack_bytes = pack.nbytes
        return index

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
        # a zero-width matrix: the row count the base class checks; the rows are in ``_columns``
        empty = np.zeros((n, 0), dtype=np.float32)
        super().__init__(manifest, empty, vindex, chunks, anchors, anchor_labels, entries, folder, units)
        self.shop = shop
        self.pack_bytes = 0
        self._columns: np.ndarray | None = None  # [dim, n]: the build's vectors as columns, read once

    def fetch_vectors(self) -> None:
        """Read the build's vectors from the store (one read; done by the first search otherwise)."""
        if self._columns is None:
            rows = self.vindex.store.fetch(self.shop, self.manifest.build_id, len(self.chunks))
            # as columns: numpy's matrix·vector product reads them fastest (see Index._cosines)
            self._columns = np.ascontiguousarray(rows.T)

    @property
    def nbytes(self) -> int:
        """Memory this index holds of its own, roughly: its vectors plus the size of its pack (the
        arrays as read, the texts as Python objects; resident memory grew by less than that over
        600 loaded shops, see docs/scaling.md), or UNPACKED_BYTES more without a pack."""
        own = 0 if self._columns is None else self._columns.nbytes
        return own + (self.pack_bytes or UNPACKED_BYTES)

    def set_dense_int8(self, on: bool) -> bool:
        """Never: the cosines are float32 from the stored vectors, the same on every backend."""
        return False

    def _cosines(self, qvec: np.ndarray) -> np.ndarray:
        """Cosine of the query with every row, plus the -inf padding slot: the hook every search
        of ``Index`` reads its cosines from (exact float32, as on every backend)."""
        self.fetch_vectors()
        assert self._columns is not None
        n = len(self.chunks)
        cos = np.empty(n + 1, dtype=np.float32)
        cos[n] = -np.inf
        np.dot(np.asarray(qvec, dtype=np.float32).reshape(-1), self._columns, out=cos[:n])
        return cos
