"""The vectorised unit score (``UnitLayout.scores``, its two-best partition ``_TopTwo``) and the
pool's lexical columns against brute force on random layouts: equal to the bit, ties and rows left
out (-inf) included."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.pool import LEXICAL, lexical_columns
from indexer.units import QUESTION_TOPN, UnitLayout, _TopTwo


def _layout(
    rng: np.random.Generator, n_units: int, long_ones: int = 0
) -> tuple[UnitLayout, list[list[int]], np.ndarray]:
    """Units of 0–40 question rows and 0–2 other rows (some ``long_ones`` with 300), the rows
    shuffled so that a unit's rows are not contiguous."""
    sizes = [(int(rng.integers(0, 41)), int(rng.integers(0, 3))) for _ in range(n_units)]
    sizes += [(300, 1)] * long_ones
    sizes = [(q, o) if q + o else (0, 1) for q, o in sizes]  # every unit has a row
    order = rng.permutation(sum(q + o for q, o in sizes)).tolist()
    is_question = np.zeros(len(order), dtype=bool)
    units: dict[str, list[int]] = {}
    for i, (q, o) in enumerate(sizes):
        rows = [order.pop() for _ in range(q + o)]
        is_question[rows[:q]] = True
        units[f"u{i}"] = sorted(rows)
    return UnitLayout(units, is_question), list(units.values()), is_question


def _cosines(rng: np.random.Generator, n: int, left_out: float) -> np.ndarray:
    """Cosines on a coarse grid (many exact ties), some rows -inf, and the -inf padding slot."""
    cos = (rng.integers(-20, 21, size=n) / 20).astype(np.float32)
    cos[rng.random(n) < left_out] = -np.inf
    return UnitLayout.padded(cos)


def _unit_rule(cos: np.ndarray, q_rows: list[int], other_rows: list[int], w: float) -> tuple[float, float, float]:
    """(score, best question-side cosine, answer-side cosine) of one unit, one value at a time in
    the vectorised code's precisions: the QUESTION_TOPN best question cosines summed in float32
    from 0, best first, a non-finite one adding 0; the mean and the mix in float64."""
    q = sorted(cos[q_rows].tolist(), reverse=True)
    other = np.float32(max(cos[other_rows].tolist(), default=-np.inf))
    q_top = np.float32(q[0]) if q else np.float32(-np.inf)
    overall = max(q_top, other)
    if not q or not other_rows:
        score = float(overall)
    else:
        total = np.float32(0)
        for v in q[:QUESTION_TOPN]:
            total = np.float32(total + np.float32(v if np.isfinite(v) else 0))
        agree = float(total) / min(len(q), QUESTION_TOPN)
        score = (agree + float(np.float32(w) * other)) / (1.0 + w)
    answer = float(other) if np.isfinite(other) else score
    return score, float(q_top if q else overall), answer


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("left_out", [0.0, 0.3])
def test_unit_scores_are_the_per_unit_rule_to_the_bit(seed: int, left_out: float):
    rng = np.random.default_rng(seed)
    layout, rows, is_question = _layout(rng, 60, long_ones=seed % 2)  # odd seeds: a few long units, cut into pieces
    cos = _cosines(rng, layout.all_seg.rows.size, left_out)
    scores, q_best, answer = layout.scores(cos, 0.5)
    assert scores.dtype == answer.dtype == np.float64 and q_best.dtype == np.float32
    for i, unit_rows in enumerate(rows):
        q_rows = [r for r in unit_rows if is_question[r]]
        other_rows = [r for r in unit_rows if not is_question[r]]
        assert layout.question_rows[f"u{i}"].tolist() == q_rows
        want = _unit_rule(cos, q_rows, other_rows, 0.5)
        got = (float(scores[i]), float(q_best[i]), float(answer[i]))
        assert got == want and [np.signbit(x) for x in got] == [np.signbit(x) for x in want], (i, got, want)


@pytest.mark.parametrize("seed", range(4))
def test_top_two_is_the_two_largest_of_a_sort(seed: int):
    """Ties count twice; a list of one has -inf second; lists much longer than the rest are cut
    into pieces and merged."""
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(1, 12, size=50)] + [int(x) for x in rng.integers(40, 200, size=seed)]
    n = sum(lengths)
    rows = rng.permutation(n).tolist()
    lists = [[rows.pop() for _ in range(k)] for k in lengths]
    top = _TopTwo(lists, n)
    assert (top._merge is not None) == (seed > 0)
    values = np.append(rng.integers(-5, 6, size=n).astype(np.float32), -np.inf)
    values[rng.random(n + 1) < 0.1] = -np.inf
    best, second = top.top_two(values)
    for i, x in enumerate(lists):
        ranked = [*sorted(values[x].tolist(), reverse=True), -np.inf]
        assert (best[i], second[i]) == (ranked[0], ranked[1])


def test_a_layout_without_questions_scores_its_best_rows():
    layout = UnitLayout({"a": [0, 1], "b": [2]}, np.zeros(3, dtype=bool))
    scores, q_best, answer = layout.scores(UnitLayout.padded(np.array([0.1, 0.3, 0.2])), 0.5)
    assert scores.tolist() == q_best.tolist() == answer.tolist() == pytest.approx([0.3, 0.2])
    with pytest.raises(ValueError, match="padding slot"):
        layout.scores(np.zeros(3, dtype=np.float32), 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_lexical_columns_are_the_pool_units_own(seed: int):
    """Every unit's lexical features, computed once for all units, are what the pool computed
    for its own units (the formulas before they moved beside the encoder)."""
    rng = np.random.default_rng(seed)
    layout, _, _ = _layout(rng, 40)
    n = layout.all_seg.rows.size
    bm25 = layout.padded(rng.integers(0, 8, size=n) * 0.37)
    cover_rows = layout.padded(rng.integers(0, 5, size=n) / 4)
    unit = layout.max_per_unit(bm25[:-1])
    rank = np.argsort(np.argsort(-unit)).astype(np.float64)
    cover_unit = rng.integers(0, 5, size=len(layout.ids)) / 4
    got = lexical_columns(layout, bm25, unit, rank, cover_rows, cover_unit)
    order = rng.permutation(len(layout.ids))[:15]
    cover_q = np.take(cover_rows, layout.q[order]).max(axis=1)
    cover_a = np.take(cover_rows, layout.other[order]).max(axis=1)
    lex_max = max(float(unit.max()), 1e-9)
    lex_q = np.take(bm25, layout.q[order]).max(axis=1)
    cover_a = np.where(np.isfinite(cover_a), cover_a, 0.0)
    want = {
        "lexical": unit[order] / lex_max,
        "lexical_question": np.where(np.isfinite(lex_q), lex_q, 0.0) / lex_max,
        "lexical_rank": np.log1p(rank[order]),
        "cover_question": np.where(np.isfinite(cover_q), cover_q, 0.0),
        "cover_answer": cover_a,
        "cover_unit": np.where(layout.document[order], cover_a, cover_unit[order]),
    }
    for j, name in enumerate(LEXICAL):
        np.testing.assert_array_equal(got[order, j], want[name].astype(np.float64), err_msg=name)
