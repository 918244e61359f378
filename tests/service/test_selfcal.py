"""Self-calibration from the KB alone: pseudo-queries, leave-entry-out, provenance, the build hook."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from indexer.build import build_and_swap
from indexer.encoder import FakeEncoder
from indexer.store import IndexStore
from kb.loader import load_kb
from kb.settings import Settings
from service.policy import Calibration
from service.ranker import Ranker
from service.runtime import Runtime
from service.selfcal import MIN_QUERIES, build_calibrator, self_calibrate
from service.selfcal_queries import perturb, pseudo_queries

GOODS = ["茶叶", "茶具", "礼盒", "花茶", "红茶", "绿茶", "乌龙", "普洱", "白茶", "抹茶"]
ASKS = ["怎么保存", "多久发货", "能退吗", "有发票吗", "怎么冲泡", "保质期多久"]


def _shop_csv(folder: Path, n: int = 60) -> Path:
    """A tea shop's export: n entries, no alternatives, short answers (fresh text, made here)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "faq.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "category"])
        for i in range(n):
            good, ask = GOODS[i % len(GOODS)], ASKS[(i // len(GOODS)) % len(ASKS)]
            w.writerow([str(1000 + i), f"{good}{ask}？", f"关于{good}{ask}：请查看商品详情页第{i}条说明。", "茶"])
    return folder


@pytest.fixture
def shop(tmp_path: Path):
    settings = Settings(kb_dir=_shop_csv(tmp_path / "shop"), data_dir=tmp_path / "data", model="fake:hash-128")
    enc = FakeEncoder(dim=128)
    store = IndexStore(settings.index_home, settings.keep_builds)
    return settings, enc, store


def _answerer(settings: Settings, enc: FakeEncoder, store: IndexStore):
    rt = Runtime.create(settings, encoder=enc)
    return rt.answerer(index=store.load_current(enc.model_id), calibration=Calibration())


def test_perturb_is_deterministic_and_never_the_question_itself():
    for text in ["七天无理由退货需要满足什么条件？", "发票怎么开", "运费险怎么理赔呢"]:
        a, b = perturb(text, random.Random(3)), perturb(text, random.Random(3))
        assert a == b
        assert a not in (text, text.rstrip("？"))
    assert perturb("退款", random.Random(1)) == "退款"  # too short to reword


def test_pseudo_queries_leave_each_entry_out(shop):
    settings, enc, store = shop
    build_and_swap(load_kb(settings.kb_dir), enc, store, settings.chunk_chars)
    index = store.load_current(enc.model_id)
    answerable, unanswerable = pseudo_queries(index, limit=1000)
    assert len(answerable) == len(unanswerable) == len(index.entries) == 60
    for q in unanswerable:
        assert q.unit is None and q.exclude_unit in index.entries
        assert q.row is not None and index.chunks[q.row].unit_id == q.exclude_unit  # its own question
    assert {q.unit for q in answerable} == set(index.entries)
    assert len(pseudo_queries(index, limit=10)[1]) == 10


def test_a_left_out_entry_is_never_a_candidate(shop):
    settings, enc, store = shop
    build_and_swap(load_kb(settings.kb_dir), enc, store, settings.chunk_chars)
    answerer = _answerer(settings, enc, store)
    index = answerer.index
    _, unanswerable = pseudo_queries(index)
    ranker = Ranker(("question",), (20.0,), (0.0,), (1.0,))
    for q in unanswerable[:20]:
        got = answerer.evidence(q.text, index.vectors[q.row], ranker=ranker, exclude_unit=q.exclude_unit)
        assert q.exclude_unit not in {u.unit_id for u in got.units}
        alone = answerer.evidence(q.text, index.vectors[q.row], ranker=ranker)
        assert alone.units[0].unit_id == q.exclude_unit  # without leaving it out, it finds itself


def test_self_calibration_records_where_it_came_from(shop):
    settings, enc, store = shop
    build_and_swap(load_kb(settings.kb_dir), enc, store, settings.chunk_chars)
    answerer = _answerer(settings, enc, store)
    got = self_calibrate(answerer, enc.encode_queries, precision=0.8)
    cal = got.calibration
    assert (cal.origin, cal.source, cal.kb_hash) == ("self", "self", answerer.index.manifest.kb_hash)
    assert cal.predicted is not None and 0.0 <= cal.predicted["coverage"] <= 1.0
    assert got.answerable == got.unanswerable == 60
    assert cal.ranker is not None and cal.scope_at is not None
    assert Calibration.from_json(cal.to_json()) == cal  # survives the manifest
    assert got.summary().startswith("self-calibrated from the KB")


def test_kefu_build_self_calibrates_a_kb_without_labels(shop):
    settings, enc, store = shop
    summary = build_and_swap(
        load_kb(settings.kb_dir), enc, store, settings.chunk_chars, calibrate=build_calibrator(settings, enc)
    )
    manifest = store.load_current(enc.model_id).manifest
    assert manifest.calibration is not None and manifest.calibration["origin"] == "self"
    assert manifest.calibration["kb_hash"] == manifest.kb_hash
    assert summary.calibration.startswith("calibration: self-calibrated")
    # a rebuild of the same KB keeps it; nothing is fitted again
    again = build_and_swap(load_kb(settings.kb_dir), enc, store, settings.chunk_chars, force=True)
    assert store.load_current(enc.model_id).manifest.calibration["origin"] == "self"
    assert "kept from build" in again.calibration


def _small_build(tmp_path: Path):
    settings = Settings(kb_dir=_shop_csv(tmp_path / "small", n=10), data_dir=tmp_path / "d")
    enc = FakeEncoder(dim=128)
    store = IndexStore(settings.index_home)
    summary = build_and_swap(
        load_kb(settings.kb_dir), enc, store, settings.chunk_chars, calibrate=build_calibrator(settings, enc)
    )
    return summary, store.load_current(enc.model_id).manifest


def test_a_ten_entry_kb_answers_with_the_shipped_prior(tmp_path: Path):
    summary, manifest = _small_build(tmp_path)
    cal = manifest.calibration
    assert cal is not None and cal["origin"] == "self" and cal["predicted"] is None and cal["ranker"]
    assert "prior alone" in summary.calibration and str(MIN_QUERIES) in summary.calibration


def test_without_a_prior_a_small_kb_is_left_uncalibrated_and_says_why(tmp_path: Path, monkeypatch):
    import service.selfcal as selfcal

    monkeypatch.setattr(selfcal, "general_confidence", lambda: None)
    summary, manifest = _small_build(tmp_path)
    assert manifest.calibration is None
    assert summary.calibration.startswith("calibration: none") and str(MIN_QUERIES) in summary.calibration


def test_candidate_pool_without_a_unit_matches_brute_force(shop):
    settings, enc, store = shop
    build_and_swap(load_kb(settings.kb_dir), enc, store, settings.chunk_chars)
    index = store.load_current(enc.model_id)
    q = enc.encode_queries(["花茶怎么保存"])[0]
    full = index.candidate_pool(q, "花茶怎么保存", 20)
    gone = full.units[0].unit_id
    less = index.candidate_pool(q, "花茶怎么保存", 20, exclude_unit=gone)
    assert gone not in [u.unit_id for u in less.units]
    # the other units keep their dense scores (question-side cosines do not depend on the left-out unit)
    before = {u.unit_id: u.score for u in full.units}
    for u in less.units:
        if u.unit_id in before:
            assert np.isclose(u.score, before[u.unit_id], atol=1e-6)


def test_a_plain_faq_table_lets_a_decisive_question_match_decide(shop):
    """One question per entry: the shipped ranker reorders only what the question match does not
    decide. A KB with alternatives (the bundled one) keeps the ranker's order."""
    from service.selfcal import QUESTION_LEAD, QUESTION_WITHIN, plain_faq

    settings, enc, store = shop
    build_and_swap(load_kb(settings.kb_dir), enc, store, settings.chunk_chars)
    answerer = _answerer(settings, enc, store)
    assert plain_faq(answerer.index)
    got = self_calibrate(answerer, enc.encode_queries, precision=0.8)
    ranker = Ranker.from_json(got.calibration.ranker or {})
    assert (ranker.question_lead, ranker.question_within) == (QUESTION_LEAD, QUESTION_WITHIN)


def test_a_kb_with_alternatives_or_documents_is_not_plain(tiny_index):
    from service.selfcal import plain_faq

    assert not plain_faq(tiny_index)
