"""The candidate pool a learned ranker reads: POOL_FEATURES, the lexical evidence and the feature matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.units import UnitHit, UnitLayout

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


def pool_features(
    layout: UnitLayout,
    order: np.ndarray,
    units: list[UnitHit],
    dense: np.ndarray,
    q_best: np.ndarray,
    answer: np.ndarray,
    d_rank: np.ndarray,
    lexical: LexicalEvidence,
) -> np.ndarray:
    """The POOL_FEATURES of the pool units ``order`` (``units``, their hits in that order): one row a
    unit. ``dense``, ``q_best`` and ``answer`` are every unit's scores (``UnitLayout.scores``),
    ``d_rank`` their ranks by ``dense``; ``lexical`` is the query's ``LexicalEvidence``."""
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
        np.log1p(lexical.rank[order]),
        np.log1p(votes),
        np.where(np.isfinite(cover_q), cover_q, 0.0),
        cover_a,
        cover_unit,
    )
    # filled column by column: column_stack + astype built two temporaries (~30 µs a query)
    x = np.empty((len(units), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        x[:, j] = col
    return x
