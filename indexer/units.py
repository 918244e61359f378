"""Answer units: their vector rows laid out for vectorised scoring, the unit score, ranks and RRF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al. (2009); damps the top ranks
ANSWER_WEIGHT = 0.5  # weight of the answer-text cosine in an FAQ entry's score; best on dev (hit@1 0.59 → 0.66)
QUESTION_TOPN = 2  # question-side matches averaged per entry; dev hit@1 0.723 (best one) → 0.744


@dataclass(frozen=True)
class UnitHit:
    """One answer unit (an FAQ entry or a document chunk) with the evidence that found it."""

    unit_id: str
    score: float  # FAQ: (mean best-2 question cosines + w·answer cosine)/(1+w); documents: chunk cosine
    rank: int
    best_chunk: int  # row of the best-matching vector
    question_score: float  # best cosine over question/alternative vectors (FAQ only; else score)
    votes: int  # how many of the unit's vectors are in the retrieved list


class UnitLayout:
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


def rrf(*ranks: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of 0-based ranks: the key both the fused search and the pool order by."""
    return np.asarray(sum(1.0 / (RRF_K + r) for r in ranks))


def descending_ranks(values: np.ndarray) -> np.ndarray:
    """0-based rank of every value, largest first."""
    ranks = np.empty(values.shape[0])
    ranks[np.argsort(-values)] = np.arange(values.shape[0])
    return ranks
