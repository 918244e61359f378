"""The retrieve stage alone on the tiny index (fake encoder): candidates, readings with context,
the context rule, synonyms and the learned ranker's evidence."""

from __future__ import annotations

import dataclasses

import pytest

from indexer.units import UnitHit
from kb.errors import ConfigError
from service.pipeline.prepare import Prepared
from service.pipeline.retrieve import Retrieval, Retriever, blend, prefers_context
from service.ranker import Ranker
from service.synonyms import SynonymExpander
from tests.fakes import FAKE_CAL

FIRST = "七天无理由退货需要满足什么条件?"


def _prepared(text: str, *readings: str) -> Prepared:
    return Prepared(text, text, text, (), readings, "S1")


@pytest.fixture
def retriever(tiny_index, fake_encoder) -> Retriever:
    return Retriever(index=tiny_index, encode=fake_encoder.encode_queries, calibration=FAKE_CAL)


def test_candidates_are_the_readings_units_with_their_documents(retriever: Retriever):
    got = retriever.run(_prepared("退货运费谁出"))
    [alone] = retriever.retrieve(["退货运费谁出"])
    assert [c.id for c in got.candidates] == [u.unit_id for u in alone.units]
    assert [(c.score, c.row) for c in got.candidates] == [(u.score, u.best_chunk) for u in alone.units]
    chunks = retriever.index.chunks
    assert all(c.doc_id == chunks[c.row].doc_id for c in got.candidates)
    assert got.candidates[0].id == "refund-shipping-fee"
    assert (got.text, got.used_context, got.synonyms) == ("退货运费谁出", False, ())
    assert (got.features, got.confidence) == (alone.features, alone.confidence)


def test_a_follow_up_is_answered_from_its_reading_with_context_and_blends_the_other(retriever: Retriever):
    reading = f"{FIRST} 那运费呢"
    got = retriever.run(_prepared("那运费呢", reading))
    alone, contextual = retriever.retrieve(["那运费呢", reading])
    assert (got.text, got.used_context) == (reading, True)
    assert got.confidence == contextual.confidence > alone.confidence
    assert [c.id for c in got.candidates] == [u.unit_id for u in blend(contextual.units, alone.units)]
    retriever.blend_context = False
    assert [c.id for c in retriever.run(_prepared("那运费呢", reading)).candidates] == [
        u.unit_id for u in contextual.units
    ]


def test_a_whole_sentence_is_read_with_its_context_only_when_it_alone_is_not_confident(tiny_index, fake_encoder):
    seen: list[str] = []

    def spy(texts):
        seen.extend(texts)
        return fake_encoder.encode_queries(texts)

    r = Retriever(index=tiny_index, encode=spy, calibration=FAKE_CAL)
    sure = dataclasses.replace(_prepared("退货运费谁出"), late_readings=(f"{FIRST} 退货运费谁出",))
    got = r.run(sure)
    assert seen == ["退货运费谁出"]  # confident alone: the reading with context is never encoded
    assert (got.used_context, got.readings, got.guessed_context) == (False, (), False)
    seen.clear()
    reading = f"{FIRST} 那运费呢"
    got = r.run(dataclasses.replace(_prepared("那运费呢"), late_readings=(reading,)))
    assert seen == ["那运费呢", reading]
    # picked by the follow-up's rule, and marked as a guess (the decision offers it, never answers it)
    assert (got.text, got.used_context, got.readings, got.guessed_context) == (reading, True, (reading,), True)
    assert not r.run(_prepared("那运费呢", reading)).guessed_context  # a follow-up's context is no guess


def test_synonyms_widen_the_search_but_not_the_evidence(tiny_index, fake_encoder):
    seen: list[str] = []

    def spy(texts):
        seen.extend(texts)
        return fake_encoder.encode_queries(texts)

    table = SynonymExpander({"运费险": ["退货保险"]})
    on = Retriever(index=tiny_index, encode=spy, calibration=FAKE_CAL, synonyms=table, expand_synonyms=True)
    got = on.run(_prepared("退货保险怎么理赔"))
    assert (got.text, got.synonyms) == ("退货保险怎么理赔", ("运费险",))
    assert seen == ["退货保险怎么理赔 运费险"]
    off = Retriever(index=tiny_index, encode=spy, calibration=FAKE_CAL, synonyms=table)
    assert off.run(_prepared("退货保险怎么理赔")).synonyms == ()


def test_the_ranker_orders_the_pool_and_gives_its_probability(tiny_index, fake_encoder):
    ranker = Ranker(("dense",), (-5.0,), (0.0,), (1.0,))  # worst dense score first
    plain = Retriever(index=tiny_index, encode=fake_encoder.encode_queries, calibration=FAKE_CAL)
    with pytest.raises(ConfigError, match="no learned ranker"):
        plain.evidence("退货运费谁出", fake_encoder.encode_queries(["退货运费谁出"])[0])
    ranked = Retriever(index=tiny_index, encode=fake_encoder.encode_queries, calibration=FAKE_CAL, ranker=ranker)
    got = ranked.run(_prepared("退货运费谁出"))
    pool = tiny_index.candidate_pool(fake_encoder.encode_queries(["退货运费谁出"])[0], "退货运费谁出", ranker.pool)
    expected = ranker.rerank(pool)
    assert [c.id for c in got.candidates] == [u.unit_id for u in expected.units]
    assert got.features is not None and got.features.rank_prob == pytest.approx(expected.probs[0])


def test_candidate_pools_are_what_the_search_would_rerank(retriever: Retriever, fake_encoder):
    [pool] = retriever.candidate_pools(["退货运费谁出"], 5)
    same = retriever.index.candidate_pool(fake_encoder.encode_queries(["退货运费谁出"])[0], "退货运费谁出", 5)
    assert [u.unit_id for u in pool.units] == [u.unit_id for u in same.units]


def _retrieval(confidence: float, *unit_ids: str) -> Retrieval:
    units = [UnitHit(u, 0.5, i, 0, 0.5, 1) for i, u in enumerate(unit_ids)]
    return Retrieval("text", units, None, confidence, False)


@pytest.mark.parametrize(
    ("plain", "contextual", "used"),
    [
        (_retrieval(0.30, "a", "b", "c"), _retrieval(0.60, "b", "a"), True),  # helps, and agrees
        (_retrieval(0.30, "a", "b", "c"), _retrieval(0.60, "z", "a"), False),  # an entry of another topic
        (_retrieval(0.50, "a", "b"), _retrieval(0.90, "a", "b"), False),  # alone it already answers (≥ 0.42)
        (_retrieval(0.30, "a", "b"), _retrieval(0.30, "b", "a"), False),  # no more confident with context
        (_retrieval(0.30, "a", "b"), _retrieval(0.60), False),  # nothing found with context
    ],
)
def test_context_replaces_the_message_only_when_it_helps_and_stays_on_topic(
    plain: Retrieval, contextual: Retrieval, used: bool
):
    assert prefers_context(plain, contextual, FAKE_CAL.answer_at) is used
