"""The learned ranker and the calibration's models in Answerer.answer: reordering the pool, the rank
probability, a confidence model that needs the ranker, the scope model, and the overlap feature."""

from __future__ import annotations

import dataclasses

import pytest

from indexer.normalize import normalize
from kb.errors import ConfigError
from service.answerer import Answerer
from service.policy import Calibration
from service.ranker import Ranker
from tests.fakes import FAKE_CAL, ranked_calibration
from tests.service.conftest import assert_shape


def _reverse_ranker() -> Ranker:
    """Ranks by the lowest unit score first: an order the fused search never gives."""
    return Ranker(("dense",), (-1.0,), (0.0,), (1.0,), pool=5)


def test_a_ranker_reorders_the_pool_and_reports_its_probability(answerer: Answerer):
    answerer.ranker = _reverse_ranker()
    text = normalize("退货的运费谁承担")
    pool = answerer.index.candidate_pool(answerer.encode([text])[0], text, 5)
    expected = answerer.ranker.rerank(pool)
    a = answerer.answer("退货的运费谁承担", top_k=5)
    assert [c["id"] for c in a.trace["candidates"]] == [u.unit_id for u in expected.units]
    assert [c["id"] for c in a.trace["candidates"]] != [u.unit_id for u in pool.units]
    assert a.trace["features"]["rank_prob"] == pytest.approx(expected.probs[0], abs=1e-4)
    assert_shape(a)


def test_the_ranker_comes_with_the_calibration(tiny_index, fake_encoder, tiny_answerer: Answerer):
    cal = dataclasses.replace(FAKE_CAL, ranker=_reverse_ranker().to_json())
    on = Answerer(
        tiny_index, fake_encoder.encode_queries, tiny_answerer.sensitive, tiny_answerer.options, calibration=cal
    )
    assert on.ranker == _reverse_ranker()
    off_opts = dataclasses.replace(tiny_answerer.options, rerank=False)
    off = Answerer(tiny_index, fake_encoder.encode_queries, tiny_answerer.sensitive, off_opts, calibration=cal)
    assert off.ranker is None
    assert off.answer("退货的运费谁承担").trace["features"]["rank_prob"] == 0.0


@pytest.mark.parametrize("options", [{"retrieval": "dense"}, {"retrieval": "weighted"}, {"rerank": False}])
def test_a_confidence_model_that_reads_the_ranker_refuses_to_run_without_it(
    tiny_index, fake_encoder, tiny_answerer: Answerer, options
):
    cal = ranked_calibration(_reverse_ranker().to_json())
    opts = dataclasses.replace(tiny_answerer.options, **options)
    with pytest.raises(ConfigError, match="kefu eval calibrate --no-ranker"):
        Answerer(tiny_index, fake_encoder.encode_queries, tiny_answerer.sensitive, opts, calibration=cal)
    Answerer(tiny_index, fake_encoder.encode_queries, tiny_answerer.sensitive, tiny_answerer.options, calibration=cal)


@pytest.mark.parametrize(("scope_at", "expected"), [(0.0, "clarify"), (1.0, "handoff")])
def test_a_scope_model_decides_below_the_answer_threshold(answerer: Answerer, scope_at: float, expected: str):
    n = len(FAKE_CAL.names)
    # confidence is the logistic of 10·(top1 − 0.6): far below answer_at for an unrelated query
    answerer.calibration = Calibration(
        answer_at=0.9,
        clarify_at=0.5,
        weights=[10.0] + [0.0] * (n - 1),
        bias=-6.0,
        mean=[0.0] * n,
        scale=[1.0] * n,
        scope_weights=[0.0] * n,
        scope_bias=0.0,
        scope_at=scope_at,
    )
    a = answerer.answer("今天天气怎么样")
    assert a.decision == expected
    assert a.trace["scope"] == pytest.approx(0.5) and a.trace["scope_at"] == scope_at
    assert_shape(a)


@pytest.mark.parametrize("expand", [False, True])
def test_bigram_overlap_is_measured_on_the_text_itself_with_the_ranker(answerer: Answerer, expand: bool):
    """The ranker path reuses the search's lexical evidence for the overlap feature, but only
    when the search text is the query's own text, not its synonym expansion."""
    from indexer.chunking import QUESTION_KINDS
    from indexer.lexical import char_bigrams, jaccard

    answerer.ranker = _reverse_ranker()
    answerer.options = dataclasses.replace(answerer.options, expand_synonyms=expand)
    text = normalize("退货保险怎么理赔")  # the tiny KB's synonyms add 运费险 to it
    a = answerer.answer(text)
    assert ("synonyms" in a.trace) is expand
    top = a.trace["candidates"][0]["id"]
    rows = [r for r in answerer.index.units[top] if answerer.index.chunks[r].kind in QUESTION_KINDS]

    def best(query: str) -> float:
        return max(jaccard(char_bigrams(query), answerer.index.norm_bigrams[r]) for r in rows)

    assert a.trace["features"]["bigram_overlap"] == pytest.approx(best(text), abs=1e-4)
    if expand:  # and it would differ, had the expansion been used
        assert best(text) != pytest.approx(best(f"{text} 运费险"), abs=1e-4)
