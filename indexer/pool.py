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
    # 1.0 where the unit is a document's (a clause, a section), 0.0 for an FAQ entry; None: not known
    document: np.ndarray | None = None
    # 1.0 where the unit is a document's that an FAQ entry in this pool cites, else 0.0; None: not known.
    # The ranker's ``doc_margin`` holds these back from the first place, and every document unit after it.
    cited: np.ndarray | None = None


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
    columns: np.ndarray  # every unit's LEXICAL features (``lexical_columns``)
    exclude_unit: str | None = None


def _column(name: str) -> int:
    return POOL_FEATURES.index(name)


# The POOL_FEATURES that read the query text alone. ``Index.lexical_evidence`` computes them for
# every unit, beside the encoder in an answer (``Retriever.retrieve``), so that once the query
# vector is there only the dense columns remain to fill in for the pool.
LEXICAL = ("lexical", "lexical_question", "lexical_rank", "cover_question", "cover_answer", "cover_unit")
LEXICAL_COLUMNS = np.array([_column(f) for f in LEXICAL])
DENSE, QUESTION, ANSWER, DENSE_RANK, VOTES = map(_column, ("dense", "question", "answer", "dense_rank", "votes"))


def lexical_columns(
    layout: UnitLayout,
    bm25: np.ndarray,
    unit: np.ndarray,
    rank: np.ndarray,
    cover_rows: np.ndarray,
    cover_unit: np.ndarray,
) -> np.ndarray:
    """The LEXICAL features of every unit (float64, one row a unit, in LEXICAL order), from the
    ``LexicalEvidence`` fields of the same names."""
    cover_q = np.take(cover_rows, layout.q).max(axis=1)
    cover_a = np.take(cover_rows, layout.other).max(axis=1)
    lex_max = max(float(unit.max()), 1e-9)
    lex_q = np.take(bm25, layout.q).max(axis=1)
    cover_a = np.where(np.isfinite(cover_a), cover_a, 0.0)
    # A document unit counts as its best row: a long section's rows must not add up into bigram
    # coverage and votes no single passage has (drcd dev, general ranker: hit@1 0.927 → 0.959; a
    # clause of one row is unchanged, and FAQ entries are never touched). Votes: ``pool_features``.
    cover_unit = np.where(layout.document, cover_a, cover_unit)
    columns = {
        "lexical": unit / lex_max,
        "lexical_question": np.where(np.isfinite(lex_q), lex_q, 0.0) / lex_max,
        "lexical_rank": np.log1p(rank),
        "cover_question": np.where(np.isfinite(cover_q), cover_q, 0.0),
        "cover_answer": cover_a,
        "cover_unit": cover_unit,
    }
    out = np.empty((len(layout.ids), len(LEXICAL)))
    for j, name in enumerate(LEXICAL):
        out[:, j] = columns[name]
    return out


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
    votes = np.array([u.votes for u in units], dtype=np.float64)
    doc = layout.document[order]
    if doc.any():  # a document unit counts as its best row (``lexical_columns``): one vote at most
        votes = np.where(doc, np.minimum(votes, 1.0), votes)
    x = np.empty((len(units), len(POOL_FEATURES)), dtype=np.float64)
    x[:, DENSE] = dense[order]
    x[:, QUESTION] = q_best[order]
    x[:, ANSWER] = answer[order]
    x[:, DENSE_RANK] = np.log1p(d_rank[order])
    x[:, VOTES] = np.log1p(votes)
    x[:, LEXICAL_COLUMNS] = lexical.columns[order]
    return x
