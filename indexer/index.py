"""The search-time ``Index``: a loaded (or freshly built) build folder, searched per answer unit."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from indexer.chunking import QUESTION_KINDS, Chunk, DocUnit
from indexer.dense import DenseScorer, Int8Scorer, dense_scorer
from indexer.folder import (
    BuildParts,
    EntryInfo,
    Manifest,
    check_compatible,
    read_manifest,
    read_parts,
    read_vectors,
    write_parts,
)
from indexer.lexical import BigramPostings, LexicalIndex, char_bigrams
from indexer.normalize import NORMALIZER_VERSION, normalize
from indexer.pool import POOL_VOTE_VECTORS, CandidatePool, LexicalEvidence, lexical_columns, pool_features
from indexer.units import ANSWER_WEIGHT, UnitHit, UnitLayout, descending_ranks, rrf
from indexer.vectors import Hit, VectorIndex
from kb.clauses import cite_units
from kb.errors import IndexStateError
from kb.modes import RetrievalMode

LEXICAL_WEIGHT = 0.1  # weighted fusion: 0.9·dense + 0.1·lexical was the best mix in shared/notes


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
        self._layout = UnitLayout(self.units, self._is_question)
        # per unit of the layout: 1.0 for a document's unit (every unit not an FAQ entry), and the
        # document units each FAQ entry cites (``rules:``): the ranker's margin (``CandidatePool``)
        self._unit_is_document = np.array([u not in entries for u in self._layout.ids], dtype=np.float64)
        self._cites = {e: frozenset(cite_units(i.rules, self.units)) for e, i in entries.items() if i.rules}
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

    def document_question_rows(self) -> list[int]:
        """Rows of questions that documents' units were given (``alternatives.yaml``), not FAQ entries'."""
        return [r for r, c in enumerate(self.chunks) if c.kind == "alt" and c.unit_id not in self.entries]

    def with_rows(self, rows: list[int]) -> Index:
        """A flat copy holding only the vector rows ``rows`` (ablations, held-out folds), with the
        same dense pass; this index is untouched."""
        vectors = self.vectors[rows]
        counts = {**self.manifest.counts, "vectors": len(rows), "chunks": len(rows)}
        sub = Index(
            self.manifest.model_copy(update={"counts": counts}),
            vectors,
            VectorIndex.build(vectors, "flat"),
            [self.chunks[i] for i in rows],
            self.anchors,
            self.anchor_labels,
            self.entries,
            self.folder,
            self.doc_units,
        )
        sub.set_dense_int8(self.dense_int8)
        return sub

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
        """The other names of entries: every merged-away entry id → the entry that replaces it, and
        an imported row's original id (``退货-01``, ``FAQ_12``) → its slug (the first, for duplicates)."""
        out = {old: e.id for e in self.entries.values() for old in e.replaces}
        for e in self.entries.values():
            # never over an entry's own id: of two rows called 1024, the second (made 1024-2) keeps
            # 1024 as its original, which names the first
            if e.source_id is not None and e.source_id not in self.entries:
                out.setdefault(e.source_id, e.id)
        return out

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
        write_parts(folder, BuildParts(self.chunks, self.anchors, self.anchor_labels, self.entries, self.doc_units))
        # The manifest is written last: a folder without one is an unfinished build.
        (folder / "manifest.json").write_text(self.manifest.model_dump_json(indent=1), "utf-8")

    @classmethod
    def read_manifest(cls, folder: Path) -> Manifest:
        """The manifest of a build folder (``indexer.folder.read_manifest``)."""
        return read_manifest(folder)

    @classmethod
    def load(cls, folder: Path, model_id: str | None = None, normalizer_version: str = NORMALIZER_VERSION) -> Index:
        """Load a build folder; refuse loudly if it does not match the configured model/normaliser."""
        manifest = cls.read_manifest(folder)
        check_compatible(manifest, model_id, normalizer_version, folder)
        parts = read_parts(folder)
        vectors, vindex = read_vectors(folder, manifest)
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
        (``UnitLayout.scores``), best first: the ``dense`` retrieval mode.

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
        return self._layout.hits(order, cos, dense, q_best, k_vec)

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
            key = rrf(descending_ranks(dense), descending_ranks(lex))
        else:
            key = dense + LEXICAL_WEIGHT * lex / max(float(lex.max()), 1e-9)
        order = np.argsort(-key, kind="stable")[:k_units]
        k_vec = min(len(self.chunks), max(64, k_units * 12))
        return self._layout.hits(order, cos, dense, q_best, k_vec)

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
        rank = descending_ranks(unit)
        padded, cover_rows = layout.padded(bm25), layout.padded(in_row / n_grams)
        columns = lexical_columns(layout, padded, unit, rank, cover_rows, cover_unit)
        return LexicalEvidence(
            query, exclude_row, padded, unit, rank, cover_rows, cover_unit, jaccard, columns, exclude_unit
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

    def text_overlap(self, unit_id: str, query: str, row_jaccard: np.ndarray) -> float:
        """How much of ``query`` the unit shares, as decision evidence: the best of ``row_jaccard``
        over its question-side rows. A unit with none (a rules clause, an article section) is a
        passage, long beside any question, so its Jaccard is small however well it answers: the
        share of the query's bigrams its best row holds stands in."""
        questions = self._layout.question_rows.get(unit_id)
        if questions is not None and questions.size:
            return max(0.0, float(row_jaccard[questions].max()))
        rows = self.units.get(unit_id, [])
        grams = char_bigrams(query)
        if not rows or not grams:
            return 0.0
        return max(len(grams & self.norm_bigrams[r]) for r in rows) / len(grams)

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
        d_rank, l_rank = descending_ranks(dense), lexical.rank
        key = rrf(d_rank, l_rank)
        if exclude_unit is not None:
            key[layout.position[exclude_unit]] = -np.inf
        order = np.argsort(-key, kind="stable")[:size]
        units = self._layout.hits(order, cos, dense, q_best, min(len(self.chunks), POOL_VOTE_VECTORS))
        x = pool_features(layout, order, units, dense, q_best, answer, d_rank, lexical)
        return CandidatePool(units, x, self._unit_is_document[order], self._cited_in(units, exclude_unit))

    def _cited_in(self, units: list[UnitHit], exclude_unit: str | None) -> np.ndarray:
        """1.0 for each of ``units`` that an FAQ entry among ``units`` cites (a left-out unit cites nothing)."""
        cited = frozenset().union(*(self._cites.get(u.unit_id, ()) for u in units if u.unit_id != exclude_unit))
        return np.array([u.unit_id in cited for u in units], dtype=np.float64)

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
        """``UnitLayout.scores`` of the row cosines. After an approximate pass a unit the index
        did not reach (or reached only on one side) has no finite score; it counts as the farthest
        row that was reached, so ranks, features and confidence stay finite."""
        scores = self._layout.scores(cos, w)
        if self._scorer is None or self._scorer.exact:
            return scores
        reached = cos[:-1][np.isfinite(cos[:-1])]
        floor = np.float32(reached.min()) if reached.size else np.float32(0.0)
        return tuple(np.where(np.isfinite(x), x, floor) for x in scores)  # type: ignore[return-value]

    def anchor_scores(self, qvec: np.ndarray) -> np.ndarray:
        if self.anchors.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(np.dot(self.anchors, np.asarray(qvec, dtype=np.float32).reshape(-1)))
