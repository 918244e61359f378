"""Searching per answer unit: unit scores and votes against the brute-force rule, anchors,
the fused retrieval modes, and a flat copy of some rows."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.index import Index
from indexer.units import ANSWER_WEIGHT
from kb.errors import (
    ConfigError,
)
from tests.indexer.conftest import _q
from tests.indexer.oracle import unit_rule


def _oracle_unit(index: Index, q: np.ndarray, unit: str, w: float) -> tuple[float, float, int]:
    """(score, question_score, best row) of one unit, computed by brute force over all its vectors."""
    rows = index.units[unit]
    return unit_rule(index, rows, index.vectors[rows] @ q, w)


def test_search_units_aggregates_per_unit(tiny_index, fake_encoder):
    q = _q(fake_encoder, "退货运费谁出")  # an alternative question of refund-shipping-fee, verbatim
    units = tiny_index.search_units(q, k_units=50)
    ids = [u.unit_id for u in units]
    assert len(ids) == len(set(ids)) == len(tiny_index.units)  # every unit once (all vectors retrieved)
    assert ids[0] == "refund-shipping-fee"
    assert units[0].question_score == pytest.approx(1.0, abs=1e-5)
    assert tiny_index.chunks[units[0].best_chunk].text == "退货运费谁出"
    assert [u.rank for u in units] == list(range(len(units)))
    scores = [u.score for u in units]
    assert scores == sorted(scores, reverse=True)
    for u in units:
        score, qs, best_row = _oracle_unit(tiny_index, q, u.unit_id, ANSWER_WEIGHT)
        assert u.score == pytest.approx(score, abs=1e-5)
        assert u.question_score == pytest.approx(qs, abs=1e-5)
        assert u.best_chunk == best_row
        assert u.votes == len(tiny_index.units[u.unit_id])  # every vector retrieved, every one votes


def test_search_units_scores_faq_on_question_and_answer(tiny_index, fake_encoder):
    entry = tiny_index.entries["logistics-track"]
    q = _q(fake_encoder, entry.answer)  # the answer text itself: the best vector is the answer
    top = tiny_index.search_units(q, k_units=1)[0]
    assert top.unit_id == "logistics-track"
    assert tiny_index.chunks[top.best_chunk].kind == "answer"
    assert top.question_score < 0.9
    expected, question_score, _ = _oracle_unit(tiny_index, q, "logistics-track", ANSWER_WEIGHT)
    assert top.question_score == pytest.approx(question_score, abs=1e-5)
    assert top.score == pytest.approx(expected, abs=1e-5)
    assert top.score < (top.question_score + ANSWER_WEIGHT * 1.0) / (1 + ANSWER_WEIGHT) + 1e-6


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_search_units_answer_weight(tiny_index, fake_encoder, w):
    q = _q(fake_encoder, "寄回去的运费谁出")
    units = tiny_index.search_units(q, k_units=50, answer_weight=w)
    for u in units:
        score, _, _ = _oracle_unit(tiny_index, q, u.unit_id, w)
        assert u.score == pytest.approx(score, abs=1e-5)
        if w == 0.0 and len(tiny_index.units[u.unit_id]) == 1:
            assert u.score == pytest.approx(u.question_score, abs=1e-6)


def test_search_units_limits_units_and_counts_votes(tiny_index, fake_encoder):
    q = _q(fake_encoder, "七天无理由退货")
    assert len(tiny_index.search_units(q, k_units=2)) == 2
    units = tiny_index.search_units(q, k_units=50, k_vectors=5)
    assert sum(u.votes for u in units) == 5
    assert len({u.unit_id for u in units}) == len(units) <= 5
    assert all(u.votes >= 1 for u in units)
    top5 = {tiny_index.chunks[h.chunk_id].unit_id for h in tiny_index.search(q, 5)[0]}
    assert {u.unit_id for u in units} == top5  # only units found among the nearest vectors
    assert units == tiny_index.search_units(q[None, :], k_units=50, k_vectors=5)  # 1-D or 1×d alike


def test_search_units_finds_a_rules_clause(tiny_index):
    rows = [i for i, c in enumerate(tiny_index.chunks) if c.kind == "rules"]
    row = rows[-1]
    top = tiny_index.search_units(tiny_index.vectors[row], k_units=1)[0]
    assert top.unit_id == tiny_index.chunks[row].unit_id == "rules-return.3"
    assert top.best_chunk == row
    assert top.score == pytest.approx(1.0, abs=1e-5) and top.question_score == top.score
    assert top.votes == 1


def test_anchor_scores(tiny_index):
    a = tiny_index.anchor_scores(tiny_index.anchors[3])
    assert a.shape == (tiny_index.anchors.shape[0],)
    np.testing.assert_allclose(a, tiny_index.anchors @ tiny_index.anchors[3], atol=1e-6)
    assert a[3] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("text", ["寄回去的运费谁出", "怎么查物流", "第三条 运费", "完全无关的内容"])
def test_vectorised_unit_scores_match_the_per_unit_rule(tiny_index, fake_encoder, text):
    q = _q(fake_encoder, text)
    cos = tiny_index.vectors @ q
    layout = tiny_index._layout
    scores, q_best, _ = layout.scores(np.append(cos, -np.inf).astype(np.float32), ANSWER_WEIGHT)
    for i, unit in enumerate(layout.ids):
        rows = tiny_index.units[unit]
        expected = unit_rule(tiny_index, rows, cos[rows], ANSWER_WEIGHT)
        assert scores[i] == pytest.approx(expected[0], abs=1e-6)
        assert q_best[i] == pytest.approx(expected[1], abs=1e-6)
        assert layout.max_per_unit(cos)[i] == pytest.approx(cos[rows].max(), abs=1e-6)


def test_fused_modes_rank_every_unit_once(tiny_index, fake_encoder):
    q = _q(fake_encoder, "退货运费谁出")
    for mode in ("lexical", "rrf", "weighted"):
        units = tiny_index.search_units_fused(q, "退货运费谁出", 50, mode)
        assert sorted(u.unit_id for u in units) == sorted(tiny_index.units)
        assert units[0].unit_id == "refund-shipping-fee"
    with pytest.raises(ConfigError, match="retrieval mode 'nope' is unknown; allowed: dense, lexical, rrf, weighted"):
        tiny_index.search_units_fused(q, "x", 5, "nope")


def test_with_rows_is_a_flat_copy_of_those_rows(tiny_index):
    keep = [i for i, c in enumerate(tiny_index.chunks) if c.kind != "alt"]
    sub = tiny_index.with_rows(keep)
    assert [c.text for c in sub.chunks] == [tiny_index.chunks[i].text for i in keep]
    assert sub.vectors.shape == (len(keep), tiny_index.vectors.shape[1])
    assert sub.manifest.counts["vectors"] == len(keep) and sub.dense_int8 == tiny_index.dense_int8
    assert len(tiny_index.chunks) > len(keep)  # the original is untouched
