"""The unit score written out per unit, as a brute-force oracle for ``indexer.units.UnitLayout.scores`` (the
one implementation the index uses)."""

from __future__ import annotations

import numpy as np

from indexer.index import Index
from indexer.units import QUESTION_TOPN


def unit_rule(index: Index, rows: list[int], cos: np.ndarray, w: float) -> tuple[float, float, int]:
    """(score, best question-side cosine, best row) of one unit from its rows' cosines ``cos``:
    an FAQ entry with question and answer rows scores (mean of its best QUESTION_TOPN question
    cosines + w · best answer cosine) / (1 + w); any other unit its best cosine."""
    is_q = np.array([index.chunks[r].kind in ("question", "alt") for r in rows])
    best_row = rows[int(np.argmax(cos))]
    if is_q.any() and (~is_q).any():
        q_sorted = sorted(cos[is_q].tolist(), reverse=True)
        agree = sum(q_sorted[:QUESTION_TOPN]) / len(q_sorted[:QUESTION_TOPN])
        return (agree + w * float(cos[~is_q].max())) / (1 + w), q_sorted[0], best_row
    return float(cos.max()), float(cos.max()), best_row
