"""Answer units: their vector rows laid out for vectorised scoring, the unit score, ranks and RRF."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al. (2009); damps the top ranks
ANSWER_WEIGHT = 0.5  # weight of the answer-text cosine in an FAQ entry's score; best on dev (hit@1 0.59 → 0.66)
# question-side matches averaged per entry; dev hit@1 0.723 (best one) → 0.744. At most 2: the
# scoring keeps each unit's two best question cosines (``_TopTwo``).
QUESTION_TOPN = 2


@dataclass(frozen=True, init=False)
class UnitHit:
    """One answer unit (an FAQ entry or a document chunk) with the evidence that found it."""

    unit_id: str
    score: float  # FAQ: (mean best-2 question cosines + w·answer cosine)/(1+w); documents: chunk cosine
    rank: int
    best_chunk: int  # row of the best-matching vector
    question_score: float  # best cosine over question/alternative vectors (FAQ only; else score)
    votes: int  # how many of the unit's vectors are in the retrieved list

    def __init__(
        self, unit_id: str, score: float, rank: int, best_chunk: int, question_score: float, votes: int
    ) -> None:
        # One __dict__ update instead of the frozen dataclass's object.__setattr__ per field: 0.7 →
        # 0.4 µs a hit, and a query builds 40 (the pool and its reranked order).
        self.__dict__.update(
            unit_id=unit_id, score=score, rank=rank, best_chunk=best_chunk, question_score=question_score, votes=votes
        )


class UnitLayout:
    """Every unit's vector rows, laid out so all units score in a few numpy ops.

    Per-unit maxima come from segment reductions (``np.maximum.reduceat``) over the rows gathered
    unit by unit, so the cost follows the number of rows and not the longest unit: a padded
    matrix of every unit would be as wide as the largest entry (51 rows against a mean of 13 in
    the bundled KB, where merged entries hold the alternatives of two). The padded matrices remain
    for the few pool units, and the question rows of FAQ entries, which are alike in number, are
    padded for their two best (``_TopTwo``). Padding points at an extra slot that holds -inf,
    which never wins a max.
    """

    def __init__(self, units: dict[str, list[int]], is_question: np.ndarray) -> None:
        self.ids = list(units)
        self.position = {u: i for i, u in enumerate(self.ids)}
        n_rows = int(is_question.shape[0])
        pad = n_rows  # index of the -inf slot appended to every score vector

        def matrix(lists: list[list[int]]) -> np.ndarray:
            width = max(1, max((len(x) for x in lists), default=1))
            return _matrix(lists, width, pad, np.int32)  # int32: half the cache lines of int64

        rows = [units[u] for u in self.ids]
        q_rows = [[r for r in rs if is_question[r]] for rs in rows]
        other = [[r for r in rs if not is_question[r]] for rs in rows]
        self.all = matrix(rows)
        self.q = matrix(q_rows)
        self.other = matrix(other)
        self.all_seg = _Segments(rows)
        self.other_seg = _Segments(other)
        self.has_q = np.array([bool(x) for x in q_rows], dtype=bool)
        self.document = ~self.has_q  # a document unit: no question rows
        self.mixed = self.has_q & self.other_seg.nonempty
        self._n_rows = n_rows
        self._q_units = np.flatnonzero(self.has_q)
        self._q_top = _TopTwo([x for x in q_rows if x], pad)
        # how many question cosines a unit averages (QUESTION_TOPN, fewer where it has fewer)
        self._q_need = np.array([min(len(x), QUESTION_TOPN) for x in q_rows if x], dtype=np.int64)
        self._q_pair = self._q_need > 1  # the second best counts

    @cached_property
    def question_rows(self) -> dict[str, np.ndarray]:
        """Each unit's question-side rows, listed once (``Index.text_overlap`` reads them in
        every answer)."""
        return {u: q[q != self._n_rows].astype(np.intp) for u, q in zip(self.ids, self.q, strict=True)}

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
        holds one cosine per row and the -inf padding slot after them (``padded``); the third
        result is the unit score where a unit has no answer row."""
        if cos.shape[0] != self._n_rows + 1:
            raise ValueError(f"expected {self._n_rows} row cosines and the padding slot, got {cos.shape[0]} values")
        best, second = self._q_top.top_two(cos)
        # The mean of the QUESTION_TOPN best summed in the cosines' precision, from 0, best first;
        # a non-finite cosine (a row left out) adds nothing but still counts in the mean.
        total = np.zeros(best.shape[0], dtype=best.dtype)
        np.add(total, best, out=total, where=np.isfinite(best))
        np.add(total, second, out=total, where=np.isfinite(second) & self._q_pair)
        q_top = np.full(len(self.ids), -np.inf, dtype=best.dtype)
        q_top[self._q_units] = best
        q_agree = np.zeros(len(self.ids))
        q_agree[self._q_units] = total / self._q_need
        other = self.other_seg.max(cos)
        overall = np.maximum(q_top, other)  # a unit's rows are its question rows and its others
        q_best = np.where(self.has_q, q_top, overall)
        mixed = (q_agree + w * other) / (1.0 + w)
        score = np.where(self.mixed, mixed, overall)
        return score, q_best, np.where(np.isfinite(other), other, score)

    def hits(
        self, order: np.ndarray, cos: np.ndarray, dense: np.ndarray, q_best: np.ndarray, k_vec: int
    ) -> list[UnitHit]:
        """UnitHits for the units ``order`` (ranked in that order) with best rows and votes; ``cos``
        is the padded row cosines, ``dense`` and ``q_best`` every unit's scores (``scores``)."""
        n = self._n_rows
        # Votes as in dense search: how many of a unit's vectors are among the k_vec nearest ones
        # (at least as close as the k_vec-th nearest; only exact ties can add one).
        nearest_kth = np.partition(cos[:n], n - k_vec)[n - k_vec]
        rows = np.take(cos, self.all[order])  # the units' row cosines, -inf in the padding
        best = self.all[order, rows.argmax(axis=1)].tolist()
        near = rows >= nearest_kth
        if not math.isfinite(nearest_kth):  # fewer rows reached than k_vec: -inf is no vote
            near &= np.isfinite(rows)
        votes = np.count_nonzero(near, axis=1).tolist()
        return [
            UnitHit(self.ids[i], d, r, b, qb, v)
            for r, (i, d, b, qb, v) in enumerate(
                zip(order.tolist(), dense[order].tolist(), best, q_best[order].tolist(), votes, strict=True)
            )
        ]


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


class _TopTwo:
    """The two largest values over each of many row lists, ties counted as a sort counts them
    (both are the maximum when it occurs twice). The lists are the rows of a matrix padded to the
    longest (with the -inf slot) and one ``partition`` puts each row's two largest last: two
    numpy calls where segment reductions and tie counting took about 25, and after the encoder
    and the dense pass have cooled the caches each call costs a few µs (the unit score in an
    answer, bundled KB: 0.18 → 0.13 ms, median). Where a few lists are much longer than the rest
    they are cut into pieces, and a second partition merges each list's pieces' two best."""

    def __init__(self, lists: list[list[int]], pad: int) -> None:
        """``lists``: non-empty lists of rows; ``pad``: the -inf slot's index."""
        lengths = [len(x) for x in lists]
        width = max([2, *lengths])
        if len(lists) * width > 2 * sum(lengths):  # padding to the longest would more than double the rows
            width = max(2, int(np.percentile(lengths, 90)))
        pieces = [x[i : i + width] for x in lists for i in range(0, len(x), width)]
        self._rows = _matrix(pieces, width, pad)
        per_list = [-(-n // width) for n in lengths]  # pieces each list is cut into
        self._merge: np.ndarray | None = None
        if any(k > 1 for k in per_list):
            # each list's pieces' best and second, as positions in [best..., second..., -inf]
            n, first = len(pieces), np.cumsum([0, *per_list[:-1]]).tolist()
            both = [[*range(f, f + k), *range(n + f, n + f + k)] for f, k in zip(first, per_list, strict=True)]
            self._merge = _matrix(both, 2 * max(per_list), 2 * n)

    def top_two(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(largest, second largest) of ``values`` over each list; ``values`` ends with the -inf
        padding slot. A list of one value has -inf as its second."""
        best, second = _two_largest(values.take(self._rows))
        if self._merge is not None:
            both = np.concatenate((best, second, [-np.inf])).astype(values.dtype, copy=False)
            best, second = _two_largest(both.take(self._merge))
        return best, second


def _two_largest(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's largest and second largest value (rows of at least two values; ``m`` is reordered)."""
    width = m.shape[1]
    m.partition(width - 2, axis=1)
    return m[:, width - 1], m[:, width - 2]


def _matrix(lists: list[list[int]], width: int, pad: int, dtype: type[np.integer] = np.intp) -> np.ndarray:
    """``lists`` as the rows of a len(lists) × ``width`` index matrix, padded with ``pad``."""
    m: np.ndarray = np.full((len(lists), width), pad, dtype=dtype)
    for i, x in enumerate(lists):
        m[i, : len(x)] = x
    return m


def rrf(*ranks: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of 0-based ranks: the key both the fused search and the pool order by."""
    return np.asarray(sum(1.0 / (RRF_K + r) for r in ranks))


def descending_ranks(values: np.ndarray) -> np.ndarray:
    """0-based rank of every value, largest first."""
    ranks = np.empty(values.shape[0])
    ranks[np.argsort(-values)] = np.arange(values.shape[0])
    return ranks
