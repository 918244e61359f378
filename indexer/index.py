"""A self-describing index folder: vectors, vector→chunk map, chunks, anchors and a manifest.

Layout of one build folder::

    manifest.json   format, model id, dimension, prompts, normaliser version, KB hash, counts,
                    build time, calibration (written by ``kefu eval calibrate``)
    vectors.npy     float32 [n, dim], unit length, row i ↔ chunks.jsonl line i
    index.faiss     the FAISS index over vectors.npy
    chunks.jsonl    one Chunk per line (text, unit id, document id, heading path …)
    anchors.npy     out-of-scope example vectors (negative anchors) + anchors.json labels
    entries.json    the FAQ entries (id → question, answer, category, cited clauses) for answers
    units.json      the documents' answer units (id → document, title, heading path, clause
                    number, whole text): a clause is answered and cited whole, not by its rows
    resources/      the KB's resource files as built (greetings, synonyms, out-of-scope, sensitive
                    terms, jieba userdict): the service reads them here, not from the KB's path
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from indexer.chunking import QUESTION_KINDS, Chunk, DocUnit
from indexer.dense import DenseScorer, Int8Scorer, dense_scorer
from indexer.lexical import BigramPostings, LexicalIndex, char_bigrams
from indexer.normalize import NORMALIZER_VERSION, normalize
from indexer.vectors import Hit, VectorIndex
from kb.errors import IndexMismatchError, IndexMissingError, IndexStateError
from kb.modes import RetrievalMode

# 2: documents answer by clause or section (units ``doc-id.5`` / ``doc-id.s1`` of several rows,
# units.json), not row by row (``doc-id#3``); FAQ entries carry their cited clauses.
FORMAT_VERSION = 2
RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al. (2009); damps the top ranks
ANSWER_WEIGHT = 0.5  # weight of the answer-text cosine in an FAQ entry's score; best on dev (hit@1 0.59 → 0.66)
QUESTION_TOPN = 2  # question-side matches averaged per entry; dev hit@1 0.723 (best one) → 0.744
LEXICAL_WEIGHT = 0.1  # weighted fusion: 0.9·dense + 0.1·lexical was the best mix in shared/notes
# Votes count a unit's vectors among the k nearest. The fused search of CANDIDATE_UNITS = 10 units
# uses k = max(64, 10·12) = 120; a candidate pool uses the same k, so a reranked top unit carries the
# votes the confidence model was fitted on.
POOL_VOTE_VECTORS = 120

# Columns of CandidatePool.x: what a learned ranker (service/ranker.py) sees of each candidate.
# Ratios and log-ranks keep them on one scale across queries and knowledge bases. Coverage
# columns count the query's character bigrams (as in BM25's channel) that a text contains.
POOL_FEATURES = (
    "dense",  # the unit score the fused search ranks by (question-side mean + answer, cosine scale)
    "question",  # best cosine over the unit's question and alternative-question vectors
    "answer",  # best cosine over its answer / document rows (the unit score where it has none)
    "lexical",  # unit BM25 / the best unit BM25 for this query
    "lexical_question",  # BM25 of its best question row / the best unit BM25
    "dense_rank",  # log(1 + 0-based rank by dense score among all units)
    "lexical_rank",  # log(1 + rank by BM25)
    "votes",  # log(1 + its vectors among the POOL_VOTE_VECTORS nearest); a document unit: 0 or 1
    "cover_question",  # largest share of the query's bigrams found in one of its questions
    "cover_answer",  # largest share found in one of its answer / document rows
    "cover_unit",  # share of the query's bigrams found anywhere in the unit (a document unit: in one row)
)


class Manifest(BaseModel):
    """What an index folder says about itself."""

    format_version: int = FORMAT_VERSION
    build_id: str
    model_id: str
    dim: int
    query_prompt: str
    doc_prompt: str
    question_side: str = Field("query", description="prompt used for stored questions (query-to-query)")
    question_path: str | None = Field(
        None, description="how stored questions were encoded (``question_path``); an index without it predates it"
    )
    normalizer_version: str = NORMALIZER_VERSION
    kb_hash: str
    kb_root: str
    counts: dict[str, int]
    index_kind: str
    chunk_chars: int
    built_at: str
    build_seconds: float
    cache_hits: int = 0
    calibration: dict[str, Any] | None = None


@dataclass(frozen=True)
class EntryInfo:
    id: str
    question: str
    answer: str
    category: str
    related: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()  # ids of entries merged into this one (``FAQEntry.replaces``)
    rules: tuple[str, ...] = ()  # clauses the answer cites, as ``doc-id#5`` (``FAQEntry.rules``)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryInfo:
        seqs = {k: tuple(data.get(k, ())) for k in ("related", "replaces", "rules")}
        return cls(**{**data, **seqs})


@dataclass(frozen=True)
class UnitHit:
    """One answer unit (an FAQ entry or a document chunk) with the evidence that found it."""

    unit_id: str
    score: float  # FAQ: (mean best-2 question cosines + w·answer cosine)/(1+w); documents: chunk cosine
    rank: int
    best_chunk: int  # row of the best-matching vector
    question_score: float  # best cosine over question/alternative vectors (FAQ only; else score)
    votes: int  # how many of the unit's vectors are in the retrieved list


@dataclass(frozen=True)
class CandidatePool:
    """The best units by reciprocal-rank fusion, each described by POOL_FEATURES (row i ↔ units[i])."""

    units: list[UnitHit]
    x: np.ndarray  # float64 [len(units), len(POOL_FEATURES)]


@dataclass(frozen=True)
class LexicalEvidence:
    """What the candidate pool reads of the query text alone (``Index.lexical_evidence``)."""

    query: str
    exclude_row: int | None
    bm25: np.ndarray  # BM25 per vector row, with the layout's -inf padding slot
    unit: np.ndarray  # each unit's best row BM25
    rank: np.ndarray  # 0-based rank of each unit by that score
    cover_rows: np.ndarray  # share of the query's bigrams in each row, with the padding slot
    cover_unit: np.ndarray  # share of the query's bigrams anywhere in each unit
    jaccard: np.ndarray  # bigram Jaccard of the query with each row (``Index.bigram_jaccard``)
    exclude_unit: str | None = None


@dataclass(frozen=True)
class BuildParts:
    """What a build folder holds besides its vectors (a vector store may hold those)."""

    chunks: list[Chunk]
    anchors: np.ndarray
    anchor_labels: list[str]
    entries: dict[str, EntryInfo]
    units: dict[str, DocUnit]


def read_parts(folder: Path) -> BuildParts:
    """Chunks, anchors, entries and document units of a build folder; IndexStateError if damaged."""
    try:
        chunks = [
            Chunk.from_json(json.loads(line))
            for line in (folder / "chunks.jsonl").read_text("utf-8").splitlines()
            if line.strip()
        ]
        anchors = np.load(folder / "anchors.npy", allow_pickle=False)
        labels = json.loads((folder / "anchors.json").read_text("utf-8"))
        entries = {
            k: EntryInfo.from_json(v) for k, v in json.loads((folder / "entries.json").read_text("utf-8")).items()
        }
        units = {k: DocUnit.from_json(v) for k, v in json.loads((folder / "units.json").read_text("utf-8")).items()}
    except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise IndexStateError(f"index at {folder} is truncated or corrupt ({exc}); run `kefu build`") from exc
    return BuildParts(chunks, anchors, labels, entries, units)


class Index:
    """A loaded (or freshly built) index: search by vectors, aggregate per answer unit."""

    def __init__(
        self,
        manifest: Manifest,
        vectors: np.ndarray,
        vindex: VectorIndex,
        chunks: list[Chunk],
        anchors: np.ndarray,
        anchor_labels: list[str],
        entries: dict[str, EntryInfo],
        folder: Path | None = None,
        doc_units: dict[str, DocUnit] | None = None,
    ) -> None:
        if len(chunks) != vectors.shape[0] or vindex.size != vectors.shape[0]:
            raise IndexStateError(
                f"index is inconsistent: {len(chunks)} chunks, {vectors.shape[0]} vectors, "
                f"{vindex.size} in FAISS; rebuild with `kefu build`"
            )
        self.manifest = manifest
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # float32 rows, as saved and as faiss takes them
        # The dense pass (indexer.dense): chosen by set_dense_int8 / set_scorer, else on the first
        # search (a float32 full scan, or the FAISS index when it is approximate).
        self._scorer: DenseScorer | None = None
        self.vindex = vindex
        self.chunks = chunks
        self.anchors = anchors
        self.anchor_labels = anchor_labels
        self.entries = entries
        self.folder = folder
        # A document unit's whole text and place (units.json); an index copied without it (eval's
        # subsets) answers with the unit's best row instead.
        self.doc_units = doc_units or {}
        self._is_question = np.array([c.kind in QUESTION_KINDS for c in chunks], dtype=bool)
        self._lexical: LexicalIndex | None = None
        self.units: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            self.units.setdefault(c.unit_id, []).append(i)
        self._layout = _UnitLayout(self.units, self._is_question)
        self._norm_texts: list[str] | None = None
        self._bigrams: list[frozenset[str]] | None = None
        self._postings: tuple[BigramPostings, BigramPostings] | None = None
        self._bigram_sizes: np.ndarray | None = None

    def set_dense_int8(self, on: bool) -> bool:
        """The served dense pass (``indexer.dense.dense_scorer``): for a flat index a full scan on
        an int8 copy of the vectors or on the float32 rows; for an hnsw or ivf index its FAISS
        search whatever ``on`` says. Returns whether the int8 pass is on (it needs ONNX Runtime)."""
        if on != self.dense_int8 or self._scorer is None:
            self._scorer = dense_scorer(self.vectors, self.vindex, int8=on)
        return self.dense_int8

    def set_scorer(self, scorer: DenseScorer) -> None:
        """Score the dense pass with ``scorer`` (one cosine per row; tests and measurements)."""
        if scorer.rows != len(self.chunks):
            raise IndexStateError(f"the scorer covers {scorer.rows} rows, the index has {len(self.chunks)}")
        self._scorer = scorer

    @property
    def scorer(self) -> DenseScorer:
        """The dense pass every search reads its cosines from."""
        if self._scorer is None:
            self._scorer = dense_scorer(self.vectors, self.vindex, int8=False)
        return self._scorer

    @property
    def dense_int8(self) -> bool:
        return isinstance(self._scorer, Int8Scorer)

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Every merged-away entry id → the entry that replaces it (old ids stay valid names)."""
        return {old: e.id for e in self.entries.values() for old in e.replaces}

    def resolve(self, entry_id: str) -> str:
        """``entry_id``, or the id of the entry it was merged into."""
        return self.aliases.get(entry_id, entry_id)

    @property
    def norm_texts(self) -> list[str]:
        """Normalised chunk texts, computed once (the answerer compares queries with them)."""
        if self._norm_texts is None:
            self._norm_texts = [normalize(c.text) for c in self.chunks]
        return self._norm_texts

    @property
    def norm_bigrams(self) -> list[frozenset[str]]:
        """Character bigrams of each normalised chunk text, computed once (see ``char_bigrams``)."""
        if self._bigrams is None:
            self._bigrams = [frozenset(char_bigrams(t)) for t in self.norm_texts]
        return self._bigrams

    @property
    def bigram_postings(self) -> tuple[BigramPostings, BigramPostings]:
        """Bigram postings of every row and of every unit (the union of its rows), built once."""
        if self._postings is None:
            grams = self.norm_bigrams
            per_unit = [frozenset().union(*(grams[r] for r in self.units[u])) for u in self._layout.ids]
            self._postings = (BigramPostings(grams), BigramPostings(per_unit))
        return self._postings

    # --- persistence ---------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        self.vindex.save(folder / "index.faiss")
        with (folder / "chunks.jsonl").open("w", encoding="utf-8") as f:
            for c in self.chunks:
                f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        np.save(folder / "anchors.npy", self.anchors)
        (folder / "anchors.json").write_text(json.dumps(self.anchor_labels, ensure_ascii=False), "utf-8")
        (folder / "entries.json").write_text(
            json.dumps({k: vars(v) for k, v in self.entries.items()}, ensure_ascii=False), "utf-8"
        )
        (folder / "units.json").write_text(
            json.dumps({k: u.to_json() for k, u in self.doc_units.items()}, ensure_ascii=False), "utf-8"
        )
        # The manifest is written last: a folder without one is an unfinished build.
        (folder / "manifest.json").write_text(self.manifest.model_dump_json(indent=1), "utf-8")

    @classmethod
    def read_manifest(cls, folder: Path) -> Manifest:
        path = folder / "manifest.json"
        if not path.is_file():
            raise IndexMissingError(f"no index at {folder} (no manifest.json); run `kefu build`")
        try:
            return Manifest.model_validate_json(path.read_text("utf-8"))
        except ValueError as exc:
            raise IndexStateError(f"index manifest {path} is unreadable ({exc}); run `kefu build`") from exc

    @classmethod
    def load(cls, folder: Path, model_id: str | None = None, normalizer_version: str = NORMALIZER_VERSION) -> Index:
        """Load a build folder; refuse loudly if it does not match the configured model/normaliser."""
        manifest = cls.read_manifest(folder)
        check_compatible(manifest, model_id, normalizer_version, folder)
        parts = read_parts(folder)
        try:
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            vindex = VectorIndex.load(folder / "index.faiss")
        except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
            raise IndexStateError(f"index at {folder} is truncated or corrupt ({exc}); run `kefu build`") from exc
        if vectors.ndim != 2 or vectors.shape[1] != manifest.dim or vectors.shape[0] != manifest.counts.get("vectors"):
            raise IndexStateError(
                f"index at {folder} has vectors of shape {vectors.shape}, manifest says "
                f"{manifest.counts.get('vectors')}×{manifest.dim}; run `kefu build`"
            )
        return cls(
            manifest,
            vectors,
            vindex,
            parts.chunks,
            parts.anchors,
            parts.anchor_labels,
            parts.entries,
            folder,
            parts.units,
        )

    # --- search --------------------------------------------------------------------------------------
    def search(self, qvecs: np.ndarray, k: int) -> list[list[Hit]]:
        return self.vindex.search(qvecs, k)

    def search_units(
        self, qvec: np.ndarray, k_units: int, k_vectors: int | None = None, answer_weight: float | None = None
    ) -> list[UnitHit]:
        """Answer units with a vector among the ``k_vectors`` nearest, scored on all their vectors
        (``_UnitLayout.scores``), best first: the ``dense`` retrieval mode.

        An FAQ entry scores (mean of its best two question/alternative cosines + w · answer
        cosine) / (1 + w): the question match is the strongest evidence, agreement of two
        phrasings beats one lucky match, and the answer text adds what the shopper describes
        (symptoms, details) that no question mentions. A document chunk scores its
        own cosine. The convex combination keeps scores on the cosine scale.
        """
        w = ANSWER_WEIGHT if answer_weight is None else answer_weight
        cos = self._cosines(qvec)
        dense, q_best, _ = self._unit_scores(cos, w)
        n = len(self.chunks)
        k_vec = min(n, k_vectors or max(64, k_units * 12))
        nearest_kth = np.partition(cos[:n], n - k_vec)[n - k_vec]
        best_row = self._layout.max_per_unit(cos[:n])
        found = np.flatnonzero((best_row >= nearest_kth) & np.isfinite(best_row))
        order = found[np.argsort(-dense[found], kind="stable")][:k_units]
        return self._hits(order, cos, dense, q_best, k_vec)

    @property
    def lexical(self) -> LexicalIndex:
        """BM25 over the chunks, built on first use (milliseconds for a help center)."""
        if self._lexical is None:
            self._lexical = LexicalIndex([c.embed_text for c in self.chunks])
        return self._lexical

    def lexical_unit_scores(self, query: str) -> np.ndarray:
        """Each unit's best BM25 score for ``query``."""
        return self._layout.max_per_unit(self.lexical.scores(query))

    def search_units_fused(
        self, qvec: np.ndarray, query: str, k_units: int, mode: RetrievalMode | str
    ) -> list[UnitHit]:
        """The ``k_units`` best units in any retrieval mode: ``dense`` (``search_units``), ``lexical``
        BM25 alone, ``rrf`` of dense and lexical ranks, or ``weighted`` (cosine + LEXICAL_WEIGHT ·
        BM25 scaled to [0, 1]). UnitHit.score stays the dense cosine so the decision evidence
        means the same in every mode; every mode reads the same dense pass (``scorer``)."""
        mode = RetrievalMode.parse(mode)
        if mode is RetrievalMode.DENSE:
            return self.search_units(qvec, k_units)
        cos = self._cosines(qvec)
        dense, q_best, _ = self._unit_scores(cos, ANSWER_WEIGHT)
        lex = self.lexical_unit_scores(query)
        if mode is RetrievalMode.LEXICAL:
            key = lex
        elif mode is RetrievalMode.RRF:
            key = _rrf(_ranks(dense), _ranks(lex))
        else:
            key = dense + LEXICAL_WEIGHT * lex / max(float(lex.max()), 1e-9)
        order = np.argsort(-key, kind="stable")[:k_units]
        k_vec = min(len(self.chunks), max(64, k_units * 12))
        return self._hits(order, cos, dense, q_best, k_vec)

    def lexical_evidence(
        self, query: str, exclude_row: int | None = None, exclude_unit: str | None = None
    ) -> LexicalEvidence:
        """The text-only half of ``candidate_pool``: BM25 and bigram coverage of ``query``. It
        does not need the query vector, so ``Answerer`` computes it while the query encodes.
        ``exclude_unit`` takes a whole unit out of every channel (a KB without that entry)."""
        layout = self._layout
        bm25 = self.lexical.scores(query)
        rows_postings, unit_postings = self.bigram_postings
        grams = char_bigrams(query)
        n_grams = max(1, len(grams))
        shared = rows_postings.counts(grams)
        in_row = shared.astype(np.float32)
        cover_unit = unit_postings.counts(grams) / n_grams
        jaccard = self._jaccard(grams, shared)
        if exclude_row is not None:
            bm25[exclude_row] = 0.0
            in_row[exclude_row] = 0.0
            jaccard[exclude_row] = 0.0
            # the left-out row's own bigrams must not count for its unit
            unit_id = self.chunks[exclude_row].unit_id
            others = [self.norm_bigrams[r] for r in self.units[unit_id] if r != exclude_row]
            cover_unit[layout.position[unit_id]] = len(grams & frozenset().union(*others)) / n_grams
        if exclude_unit is not None:
            gone = self.units[exclude_unit]
            bm25[gone] = 0.0
            in_row[gone] = 0.0
            jaccard[gone] = 0.0
            cover_unit[layout.position[exclude_unit]] = 0.0
        unit = layout.max_per_unit(bm25)
        cover_rows = layout.padded(in_row / n_grams)
        return LexicalEvidence(
            query, exclude_row, layout.padded(bm25), unit, _ranks(unit), cover_rows, cover_unit, jaccard, exclude_unit
        )

    def bigram_jaccard(self, query: str) -> np.ndarray:
        """``jaccard(char_bigrams(query), bigrams of the row)`` for every row, in one pass."""
        grams = char_bigrams(query)
        return self._jaccard(grams, self.bigram_postings[0].counts(grams))

    def _jaccard(self, grams: set[str], shared: np.ndarray) -> np.ndarray:
        if self._bigram_sizes is None:
            self._bigram_sizes = np.array([len(g) for g in self.norm_bigrams], dtype=np.int64)
        union = len(grams) + self._bigram_sizes - shared
        # nothing shared (which covers an empty set on either side) scores 0, as lexical.jaccard does
        return np.divide(shared, union, out=np.zeros(len(shared)), where=shared > 0)

    def question_overlap(self, unit_id: str, row_jaccard: np.ndarray) -> float:
        """The best of ``row_jaccard`` over the unit's question-side rows (0 when it has none)."""
        rows = [r for r in self.units.get(unit_id, []) if self._is_question[r]]
        return max(0.0, float(row_jaccard[rows].max())) if rows else 0.0

    def candidate_pool(
        self,
        qvec: np.ndarray,
        query: str,
        size: int,
        exclude_row: int | None = None,
        lexical: LexicalEvidence | None = None,
        exclude_unit: str | None = None,
    ) -> CandidatePool:
        """The ``size`` best units by RRF of dense and lexical ranks (the ``rrf`` order), with
        POOL_FEATURES for a learned ranker. ``exclude_row`` leaves one vector row out of every
        channel, so a stored alternative question can stand in for an unseen query (training).
        ``exclude_unit`` leaves a whole unit out, so its question stands in for an in-domain query
        the KB has no answer for (self-calibration). ``lexical`` is ``lexical_evidence(query,
        exclude_row, exclude_unit)`` when the caller already has it."""
        if size < 1:
            raise ValueError(f"pool size must be ≥ 1, got {size}")
        if lexical is None:
            lexical = self.lexical_evidence(query, exclude_row, exclude_unit)
        elif (lexical.query, lexical.exclude_row, lexical.exclude_unit) != (query, exclude_row, exclude_unit):
            raise ValueError(
                f"lexical evidence is for query {lexical.query!r} (exclude_row={lexical.exclude_row}), "
                f"not {query!r} (exclude_row={exclude_row})"
            )
        layout = self._layout
        cos = self._cosines(qvec)
        if exclude_row is not None:
            cos[exclude_row] = -np.inf
        if exclude_unit is not None:
            cos[self.units[exclude_unit]] = -np.inf
        dense, q_best, answer = self._unit_scores(cos, ANSWER_WEIGHT)
        d_rank, l_rank = _ranks(dense), lexical.rank
        key = _rrf(d_rank, l_rank)
        if exclude_unit is not None:
            key[layout.position[exclude_unit]] = -np.inf
        order = np.argsort(-key, kind="stable")[:size]
        units = self._hits(order, cos, dense, q_best, min(len(self.chunks), POOL_VOTE_VECTORS))
        cover_q = np.take(lexical.cover_rows, layout.q[order]).max(axis=1)
        cover_a = np.take(lexical.cover_rows, layout.other[order]).max(axis=1)
        lex = lexical.unit
        lex_max = max(float(lex.max()), 1e-9)
        lex_q = np.take(lexical.bm25, layout.q[order]).max(axis=1)
        cover_a = np.where(np.isfinite(cover_a), cover_a, 0.0)
        votes = np.array([u.votes for u in units], dtype=np.float64)
        cover_unit = lexical.cover_unit[order]
        doc = layout.document[order]
        if doc.any():
            # A document unit counts as its best row: a long section's rows must not add up into
            # bigram coverage and votes no single passage has (drcd dev, general ranker: hit@1
            # 0.927 → 0.959; a clause of one row is unchanged, and FAQ entries are never touched).
            cover_unit = np.where(doc, cover_a, cover_unit)
            votes = np.where(doc, np.minimum(votes, 1.0), votes)
        columns = (
            dense[order],
            q_best[order],
            answer[order],
            lex[order] / lex_max,
            np.where(np.isfinite(lex_q), lex_q, 0.0) / lex_max,
            np.log1p(d_rank[order]),
            np.log1p(l_rank[order]),
            np.log1p(votes),
            np.where(np.isfinite(cover_q), cover_q, 0.0),
            cover_a,
            cover_unit,
        )
        # filled column by column: column_stack + astype built two temporaries (~30 µs a query)
        x = np.empty((len(units), len(columns)), dtype=np.float64)
        for j, col in enumerate(columns):
            x[:, j] = col
        return CandidatePool(units, x)

    def _cosines(self, qvec: np.ndarray) -> np.ndarray:
        """Cosine of the query with every row (``scorer``; -inf where an approximate index did
        not reach a row), plus the -inf padding slot the layout points at. A subclass whose
        vectors live elsewhere overrides this one hook (``StoreIndex``)."""
        n = len(self.chunks)
        cos = np.empty(n + 1, dtype=np.float32)
        cos[n] = -np.inf
        self.scorer.cosines(qvec, out=cos[:n])
        return cos

    def _unit_scores(self, cos: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``_UnitLayout.scores`` of the row cosines. After an approximate pass a unit the index
        did not reach (or reached only on one side) has no finite score; it counts as the farthest
        row that was reached, so ranks, features and confidence stay finite."""
        scores = self._layout.scores(cos, w)
        if self._scorer is None or self._scorer.exact:
            return scores
        reached = cos[:-1][np.isfinite(cos[:-1])]
        floor = np.float32(reached.min()) if reached.size else np.float32(0.0)
        return tuple(np.where(np.isfinite(x), x, floor) for x in scores)  # type: ignore[return-value]

    def _hits(
        self,
        order: np.ndarray,
        cos: np.ndarray,
        dense: np.ndarray,
        q_best: np.ndarray,
        k_vec: int,
    ) -> list[UnitHit]:
        """UnitHits for the units ``order`` (ranked in that order) with best rows and votes."""
        layout = self._layout
        n = len(self.chunks)
        # Votes as in dense search: how many of a unit's vectors are among the k_vec nearest ones
        # (at least as close as the k_vec-th nearest; only exact ties can add one).
        nearest_kth = np.partition(cos[:n], n - k_vec)[n - k_vec]
        rows = np.take(cos, layout.all[order])  # the units' row cosines, -inf in the padding
        best = layout.all[order, rows.argmax(axis=1)].tolist()
        votes = ((rows >= nearest_kth) & np.isfinite(rows)).sum(axis=1).tolist()
        return [
            UnitHit(layout.ids[i], d, r, b, qb, v)
            for r, (i, d, b, qb, v) in enumerate(
                zip(order.tolist(), dense[order].tolist(), best, q_best[order].tolist(), votes, strict=True)
            )
        ]

    def anchor_scores(self, qvec: np.ndarray) -> np.ndarray:
        if self.anchors.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(np.dot(self.anchors, np.asarray(qvec, dtype=np.float32).reshape(-1)))

    def chunk(self, row: int) -> Chunk:
        return self.chunks[row]


class _UnitLayout:
    """Every unit's vector rows, laid out so all units score in a few numpy ops.

    Scores come from segment reductions (``np.maximum.reduceat``) over the rows gathered unit by
    unit, so the cost follows the number of rows and not the longest unit: a padded matrix would
    be as wide as the largest entry (51 rows against a mean of 13 in the bundled KB, where merged
    entries hold the alternatives of two). The padded matrices remain for the few pool units.
    Padding points at an extra slot that holds -inf, which never wins a max.
    """

    def __init__(self, units: dict[str, list[int]], is_question: np.ndarray) -> None:
        self.ids = list(units)
        self.position = {u: i for i, u in enumerate(self.ids)}
        n_rows = int(is_question.shape[0])
        pad = n_rows  # index of the -inf slot appended to every score vector

        def matrix(lists: list[list[int]]) -> np.ndarray:
            width = max(1, max((len(x) for x in lists), default=1))
            m = np.full((len(lists), width), pad, dtype=np.int32)  # int32: half the cache lines of int64
            for i, x in enumerate(lists):
                m[i, : len(x)] = x
            return m

        rows = [units[u] for u in self.ids]
        q_rows = [[r for r in rs if is_question[r]] for rs in rows]
        other = [[r for r in rs if not is_question[r]] for rs in rows]
        self.all = matrix(rows)
        self.q = matrix(q_rows)
        self.other = matrix(other)
        self.all_seg = _Segments(rows)
        self.q_seg = _Segments(q_rows)
        self.other_seg = _Segments(other)
        self.has_q = self.q_seg.nonempty
        self.document = ~self.has_q  # a document unit: no question rows
        self.mixed = self.has_q & self.other_seg.nonempty
        self.n_top = np.array([min(len(q), QUESTION_TOPN) for q in q_rows])  # matches averaged per unit

    @staticmethod
    def padded(values: np.ndarray) -> np.ndarray:
        """``values`` (one per row) as float32 with the -inf padding slot appended."""
        out = np.empty(values.shape[0] + 1, dtype=np.float32)
        out[:-1] = values
        out[-1] = -np.inf
        return out

    def max_per_unit(self, values: np.ndarray) -> np.ndarray:
        """Each unit's largest value over its rows (``values`` has one entry per vector row)."""
        return self.all_seg.max(np.asarray(values, dtype=np.float32))  # float32, as the scores are

    def scores(self, cos: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit score, best question-side cosine, best answer-side cosine) for every unit: the one
        implementation of the unit score (``Index.search_units`` documents the rule). ``cos``
        holds one cosine per row (a trailing padding slot is ignored); the third result is the
        unit score where a unit has no answer row."""
        q_top, q_agree = self.q_seg.top_mean(cos, self.n_top)
        other = self.other_seg.max(cos)
        overall = np.maximum(q_top, other)  # a unit's rows are its question rows and its others
        q_best = np.where(self.has_q, q_top, overall)
        mixed = (q_agree + w * other) / (1.0 + w)
        score = np.where(self.mixed, mixed, overall)
        return score, q_best, np.where(np.isfinite(other), other, score)


class _Segments:
    """One list of rows per unit, concatenated, with where each unit starts: per-unit maxima are
    segment reductions. A unit with no rows gets -inf."""

    def __init__(self, lists: list[list[int]]) -> None:
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        self.rows = np.array([r for x in lists for r in x], dtype=np.int64)
        self.nonempty = lengths > 0
        self.lengths = lengths[self.nonempty]
        # reduceat reads an empty segment as its first element: only non-empty units reduce
        self.starts = (np.cumsum(lengths) - lengths)[self.nonempty]
        self._n = len(lists)
        self._all = bool(self.nonempty.all())

    def _spread(self, per_segment: np.ndarray, fill: float) -> np.ndarray:
        if self._all:
            return per_segment
        out = np.full(self._n, fill, dtype=per_segment.dtype)
        out[self.nonempty] = per_segment
        return out

    def max(self, values: np.ndarray) -> np.ndarray:
        """Each unit's largest of ``values`` over its rows."""
        if self.rows.size == 0:
            return np.full(self._n, -np.inf, dtype=np.float32)
        return self._spread(np.maximum.reduceat(values[self.rows], self.starts), -np.inf)

    def top_mean(self, values: np.ndarray, n_top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each unit's largest value, -inf where it has none; the mean of its ``n_top`` largest,
        0 where it has none). Each round takes the current maximum as many times as it occurs
        (ties count once each, as in a sort) and knocks those out."""
        out = np.zeros(self._n)
        if self.rows.size == 0:
            return np.full(self._n, -np.inf, dtype=np.float32), out
        v = values[self.rows]  # a copy (fancy indexing): knocking values out changes nothing else
        need = n_top[self.nonempty]
        taken = np.zeros_like(need)
        total = np.zeros(len(need), dtype=v.dtype)  # summed in the scores' own precision
        rounds = int(n_top.max(initial=0))
        top = np.maximum.reduceat(v, self.starts)
        m = top
        for i in range(rounds):
            hit = v == np.repeat(m, self.lengths)
            take = np.minimum(np.add.reduceat(hit, self.starts), need - taken)
            total += np.where(np.isfinite(m), m, 0) * take.astype(v.dtype)  # a knocked-out row adds 0
            taken += take
            if i + 1 < rounds:
                v[hit] = -np.inf
                m = np.maximum.reduceat(v, self.starts)
        out[self.nonempty] = total / np.maximum(need, 1)
        return self._spread(top, -np.inf), out


def _rrf(*ranks: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of 0-based ranks: the key both the fused search and the pool order by."""
    return np.asarray(sum(1.0 / (RRF_K + r) for r in ranks))


def _ranks(values: np.ndarray) -> np.ndarray:
    """0-based rank of every value, largest first."""
    ranks = np.empty(values.shape[0])
    ranks[np.argsort(-values)] = np.arange(values.shape[0])
    return ranks


def check_compatible(manifest: Manifest, model_id: str | None, normalizer_version: str, folder: Path) -> None:
    if manifest.format_version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"index at {folder} has format {manifest.format_version}, this kefu reads {FORMAT_VERSION}; "
            "run `kefu build` to rebuild it"
        )
    if model_id is not None and manifest.model_id != model_id:
        raise IndexMismatchError(
            f"index at {folder} was built with model {manifest.model_id!r} but the configured model is "
            f"{model_id!r}; run `kefu build` to rebuild for this model, or set KEFU_MODEL back"
        )
    if manifest.normalizer_version != normalizer_version:
        raise IndexMismatchError(
            f"index at {folder} was built with normaliser v{manifest.normalizer_version}, this kefu uses "
            f"v{normalizer_version}; run `kefu build` to rebuild"
        )


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
