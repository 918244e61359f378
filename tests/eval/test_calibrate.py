"""Calibration on synthetic evidence: targets met, thresholds ordered, errors on too little data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval.calibrate import (
    ASK_ENDINGS,
    ASK_OPENINGS,
    FOLDS,
    UNIT_WEIGHT,
    _fold,
    calibrate,
    choose_thresholds,
    cross_fit_ranker,
    dev_groups,
    dev_weight,
    kb_groups,
    operating_point,
    shopper_queries,
    unit_groups,
)
from eval.dataset import EvalItem
from eval.metrics import Ranked
from eval.runner import ItemResult
from indexer.pool import POOL_FEATURES
from indexer.pseudo import UnitQuery, unit_queries
from kb.errors import ConfigError
from service.policy import FEATURES, Calibration, Features, decide
from service.ranker import Group, Ranker


def _result(i: int, kind: str, top1: float, rng: np.random.Generator, rule: str | None = None) -> ItemResult:
    """kind: 'correct' (in scope, top-1 right), 'wrong' (in scope, top-1 wrong) or 'oos'."""
    if kind == "oos":
        item = EvalItem(f"oos-{i}", f"无关问题{i}", (), "handoff", "low_confidence", (), "其他")
        ranking = [Ranked("e1", "e1")]
    else:
        item = EvalItem(f"in-{i}", f"问题{i}", ("e1",), "answer", None, (), "退货退款")
        ranking = [Ranked("e1", "e1")] if kind == "correct" else [Ranked("e2", "e2"), Ranked("e1", "e1")]
    feats = {f: float(rng.normal(0.5, 0.1)) for f in FEATURES}  # noise
    feats["top1"] = top1
    return ItemResult(item, "answer", None, ranking, None, top1, Features(**feats), rule, 1.0)


def synthetic(n_correct: int = 80, n_wrong: int = 15, n_oos: int = 45, seed: int = 3) -> list[ItemResult]:
    rng = np.random.default_rng(seed)
    out = [_result(i, "correct", float(rng.uniform(0.82, 0.97)), rng) for i in range(n_correct)]
    out += [_result(i, "wrong", float(rng.uniform(0.60, 0.80)), rng) for i in range(n_wrong)]
    out += [_result(i, "oos", float(rng.uniform(0.30, 0.62)), rng) for i in range(n_oos)]
    return out


def _features(r: ItemResult) -> Features:
    assert r.features is not None, r.item
    return r.features


def _apply(cal: Calibration, results: list[ItemResult]) -> tuple[float, float, float]:
    """Answered precision, OOS handoff recall and coverage of ``cal`` on ``results``."""
    dec = [decide(cal.confidence(_features(r)), cal) for r in results]
    answered = [r for r, d in zip(results, dec, strict=True) if d == "answer"]
    precision = sum(r.item.in_scope and r.top1_correct for r in answered) / max(1, len(answered))
    oos = [d for r, d in zip(results, dec, strict=True) if r.item.reason == "low_confidence"]
    ins = [d for r, d in zip(results, dec, strict=True) if r.item.in_scope]
    return precision, sum(d == "handoff" for d in oos) / len(oos), sum(d == "answer" for d in ins) / len(ins)


@pytest.mark.parametrize(("precision", "oos_recall"), [(0.95, 0.95), (0.9, 0.99), (0.99, 0.9)])
def test_calibration_meets_the_targets_on_its_input(precision: float, oos_recall: float):
    results = synthetic()
    cal, report = calibrate(results, precision, oos_recall)
    assert 0.0 <= cal.clarify_at <= cal.answer_at <= 1.0
    assert cal.weights is not None and len(cal.weights) == len(FEATURES)
    assert cal.source == "dev-logistic"
    op = report["operating_point_cv"]
    assert op["answered_precision"] >= precision
    assert op["oos_handoff_recall"] >= oos_recall
    assert op["coverage"] > 0.5  # separable data: most in-scope queries are answered
    assert report["n_items"] == len(results)
    # the refitted model with the chosen thresholds meets the targets on the input too
    got_precision, got_oos, coverage = _apply(cal, results)
    assert got_precision >= precision
    assert got_oos >= oos_recall
    assert coverage > 0.5


def test_calibration_is_deterministic_and_round_trips():
    a, _ = calibrate(synthetic())
    b, _ = calibrate(synthetic())
    assert a.to_json() == b.to_json()
    assert Calibration.from_json(a.to_json()) == a


def test_fewer_than_20_items_is_a_config_error():
    with pytest.raises(ConfigError, match="19"):
        calibrate(synthetic(10, 4, 5))


def test_only_confidence_stage_items_count():
    rng = np.random.default_rng(0)
    results = synthetic(10, 4, 5)
    results += [_result(100 + i, "correct", 0.9, rng, rule="user_requested") for i in range(10)]
    with pytest.raises(ConfigError, match="19"):
        calibrate(results)


@pytest.mark.parametrize(("precision", "oos_recall"), [(0.4, 0.95), (0.95, 1.2)])
def test_targets_out_of_range_are_config_errors(precision: float, oos_recall: float):
    with pytest.raises(ConfigError, match="targets"):
        calibrate(synthetic(), precision, oos_recall)


def test_choose_thresholds_hand_computed():
    #             oos  oos  oos  wrong correct ×3
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 0, 1, 1, 1], dtype=float)
    ins = np.array([False, False, False, True, True, True, True])
    oos = ~ins
    op = choose_thresholds(p, y, ins, oos, 4, 0.95, 0.95)
    # clarify: lowest grid value with every OOS below it → 0.6; answer: 0.6 gives 3/4 precision, 0.7 gives 1
    assert op.clarify_at == pytest.approx(0.6)
    assert op.answer_at == pytest.approx(0.7)
    assert op.answered_precision == 1.0
    assert op.oos_handoff_recall == 1.0
    assert op.coverage == pytest.approx(3 / 4)
    assert op.clarify_rate == pytest.approx(1 / 7)


def test_choose_thresholds_respects_the_precision_margin():
    # Answering from 0.6 gives precision 24/25 = 0.96, which meets a 0.95 target, but not
    # 0.95 + one standard error (sqrt(0.95·0.05/25) ≈ 0.044): the threshold must stay at 0.9.
    p = np.concatenate([np.full(24, 0.9), [0.6], np.full(5, 0.1)])
    y = np.concatenate([np.ones(24), [0.0], np.zeros(5)])
    ins = np.concatenate([np.ones(25, dtype=bool), np.zeros(5, dtype=bool)])
    op = choose_thresholds(p, y, ins, ~ins, 25, 0.95, 0.95, margin_se=1.0)
    assert op.answer_at == pytest.approx(0.9)
    assert op.answered_precision == 1.0
    # without a margin the same data answers from 0.6: 24/25 = 0.96 meets the bare target
    bare = choose_thresholds(p, y, ins, ~ins, 25, 0.95, 0.95)
    assert bare.answer_at == pytest.approx(0.6)
    assert bare.coverage == pytest.approx(1.0)


def test_precision_margin_shrinks_with_more_answered_queries():
    # 960 right and 40 wrong at one confidence: precision 0.96 over 1,000 answers clears
    # 0.95 + sqrt(0.95·0.05/1000) ≈ 0.957, so that confidence is a valid answer threshold.
    p = np.concatenate([np.full(1000, 0.8), np.full(10, 0.1)])
    y = np.concatenate([np.ones(960), np.zeros(50)])
    ins = np.concatenate([np.ones(1000, dtype=bool), np.zeros(10, dtype=bool)])
    op = choose_thresholds(p, y, ins, ~ins, 1000, 0.95, 0.95, margin_se=1.0)
    assert op.answer_at == pytest.approx(0.8)


def test_operating_point_without_answers_has_vacuous_precision():
    p = np.array([0.2, 0.4])
    op = operating_point(p, np.array([1.0, 0.0]), np.array([True, False]), np.array([False, True]), 1, 1.0, 0.3)
    assert op.answered_precision == 1.0 and op.coverage == 0.0
    assert op.oos_handoff_recall == 0.0  # the OOS item (0.4) is above clarify_at
    assert op.clarify_rate == 0.5


# --- the ranker, fitted with cross-fitting on dev ------------------------------------------------
def _dev_items() -> list[EvalItem]:
    asks = [
        ("不想要了七天内能退吗", "refund-seven-day"),
        ("退回去的邮费谁来付", "refund-shipping-fee"),
        ("快递现在到哪里了", "logistics-track"),
        ("怎么查我的包裹", "logistics-track"),
        ("寄回去运费要我出吗", "refund-shipping-fee"),
        ("买错了可以无理由退吗", "refund-seven-day"),
    ]
    items = [
        EvalItem(f"dev-{i}", f"{q}（第{i}问）", (rel,), "answer", None, (), "退货退款")
        for i, (q, rel) in enumerate(asks * 3)
    ]
    items.append(
        EvalItem("dev-ctx", "那运费呢", ("refund-shipping-fee",), "answer", None, (), "退货退款", "七天能退吗")
    )
    items.append(EvalItem("dev-oos", "今天天气怎么样", (), "handoff", "low_confidence", (), "其他"))
    return items


def test_kb_groups_are_alternatives_searched_without_themselves(tiny_answerer):
    index = tiny_answerer.index
    groups = kb_groups(index, size=5)
    alts = [c for c in index.chunks if c.kind == "alt"]
    assert len(groups) == len(alts) > 0
    for g in groups:
        assert g.x.shape == (5, len(POOL_FEATURES)) and g.weight == 1.0
        assert g.relevant.sum() <= 1


def test_a_clauses_questions_hold_it_back_by_a_margin_instead_of_training_the_ranker(
    tiny_kb_dir, tiny_settings, fake_encoder
):
    from eval.calibrate import faq_alt_rows, ranker_view
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from service.ranker import DOC_MARGIN, with_doc_margin

    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    plain = store.load_current(fake_encoder.model_id)
    assert ranker_view(plain) is plain  # nothing to leave out
    sidecar = "alternatives:\n  rules-return.2: [签收第八天还能退吗, 过了七天能退吗]\n"
    (tiny_kb_dir / "alternatives.yaml").write_text(sidecar, "utf-8")
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    index = store.load_current(fake_encoder.model_id)
    asked = [r for r, c in enumerate(index.chunks) if c.unit_id == "rules-return.2" and c.kind == "alt"]
    assert len(asked) == 2 and not set(asked) & set(faq_alt_rows(index))
    groups = kb_groups(index, size=5)
    assert len(groups) == len(faq_alt_rows(index)) == len(faq_alt_rows(plain))
    view = ranker_view(index)
    assert len(view.chunks) == len(index.chunks) - 2
    assert [c.chunk_id for c in view.chunks] == [c.chunk_id for c in plain.chunks]
    r = Ranker(("dense",), (1.0,), (0.0,), (1.0,))
    assert with_doc_margin(r, plain).doc_margin == 0.0
    assert with_doc_margin(r, index).doc_margin == DOC_MARGIN > 0


def test_cross_fitting_never_ranks_an_item_with_a_ranker_that_saw_it(tiny_answerer, monkeypatch):
    import eval.calibrate as cal_module
    from service.answerer import Answerer

    fits: list[list[Group]] = []

    def fake_fit(groups):
        fits.append(list(groups))
        return Ranker(("dense",), (float(len(fits)),), (0.0,), (1.0,))

    monkeypatch.setattr(cal_module, "fit_ranker", fake_fit)
    before = tiny_answerer.ranker
    seen: dict[str, float] = {}
    original = Answerer.explain

    def spy(self, query, session_id=None, history=None):
        # a variant ranks each fold; the live answerer's ranker is never swapped
        assert self is not tiny_answerer and tiny_answerer.ranker is before
        seen[query] = self.ranker.weights[0] if self.ranker else 0.0
        return original(self, query, session_id=session_id, history=history)

    monkeypatch.setattr(Answerer, "explain", spy)
    items = _dev_items()
    kb = kb_groups(tiny_answerer.index, size=5)
    final, results, summary = cross_fit_ranker(tiny_answerer, items, kb)
    assert tiny_answerer.ranker is before
    assert [r.item.id for r in results] == [it.id for it in items]
    dev = dev_groups(tiny_answerer, items)
    assert set(dev) == {it.id for it in items if it.in_scope and not it.context}
    assert summary["dev_queries"] == len(dev) and summary["kb_queries"] == len(kb)
    assert len(fits) == FOLDS + 1 and final.weights == (float(FOLDS + 1),)
    for k in range(FOLDS):
        # fold k's ranker was fitted on the KB and the dev items of the other folds only …
        n_dev = sum(1 for i in dev if _fold(i) != k)
        assert len(fits[k]) == len(kb) + n_dev
        assert all(g.weight == dev_weight(len(kb), len(dev)) for g in fits[k][len(kb) :])
        # … and ranked exactly fold k's items
        for it in items:
            if _fold(it.id) == k:
                assert seen[it.query] == float(k + 1)
    assert len(fits[-1]) == len(kb) + len(dev)


def test_calibration_with_a_ranker_names_rank_prob_and_carries_it():
    results = synthetic()
    for r in results:
        assert r.features is not None
        r.features = dataclasses.replace(r.features, rank_prob=0.9 if r.top1_correct else 0.3)
    ranker = Ranker(("dense",), (1.0,), (0.0,), (1.0,))
    cal, _ = calibrate(results, 0.95, 0.95, ranker=ranker)
    assert cal.names == (*FEATURES, "rank_prob")
    assert cal.ranker == ranker.to_json()
    assert Calibration.from_json(cal.to_json()) == cal


def test_scope_model_clarifies_in_scope_queries_it_would_have_handed_off():
    """In-scope queries whose top-1 is wrong look like out-of-scope ones on confidence, but not on
    the scope feature: the scope model clarifies them and still hands off enough OOS queries."""
    rng = np.random.default_rng(5)
    results = synthetic(n_correct=80, n_wrong=40, n_oos=60)
    for r in results:
        assert r.features is not None
        r.features = dataclasses.replace(r.features, length=float(rng.normal(1.0 if r.item.in_scope else -1.0, 0.3)))
    plain, rp = calibrate(results, 0.9, 0.95)
    scoped, rs = calibrate(results, 0.9, 0.95, scope=True)
    assert plain.scope_at is None and scoped.scope_at is not None and scoped.scope_weights is not None
    assert scoped.answer_at == plain.answer_at  # the answer threshold does not move
    ops, opp = rs["operating_point_cv"], rp["operating_point_cv"]
    assert ops["oos_handoff_recall"] >= 0.95
    assert ops["in_scope_handoff_rate"] < opp["in_scope_handoff_rate"]
    # and the fitted model keeps the target on its own input
    oos = [r for r in results if r.item.reason == "low_confidence"]
    handed = [decide(scoped.confidence(_features(r)), scoped, scoped.scope(_features(r))) == "handoff" for r in oos]
    assert sum(handed) / len(oos) >= 0.9


def test_no_scope_model_without_enough_out_of_scope_examples():
    results = synthetic(n_oos=5)
    cal, report = calibrate(results, 0.95, 0.95, scope=True)
    assert cal.scope_at is None and report["operating_point_cv"]["scope_at"] is None


@pytest.mark.parametrize(
    ("n_kb", "n_dev", "share", "expected"),
    [
        (5275, 332, 1.0, 5275 / 332),  # the bundled set: dev together weighs as much as the KB
        (3169, 332, 1.0, 3169 / 332),
        (1000, 100, 2.0, 20.0),
        (10, 50, 1.0, 1.0),  # more dev queries than alternatives: never below 1
        (0, 5, 1.0, 1.0),
    ],
)
def test_dev_weight_balances_dev_against_the_kb(n_kb: int, n_dev: int, share: float, expected: float) -> None:
    assert dev_weight(n_kb, n_dev, share) == pytest.approx(expected)


def test_dev_weight_refuses_an_empty_dev_set() -> None:
    with pytest.raises(ValueError, match="n_dev"):
        dev_weight(100, 0)


# --- document units: pseudo-queries as training signal (#22) -----------------------------------------
@pytest.mark.parametrize("how", ["first", "fragment", "shopper"])
def test_unit_groups_search_each_clause_pseudo_query(tiny_answerer, how):
    index = tiny_answerer.index
    assert set(index.doc_units) == {"rules-return.1", "rules-return.2", "rules-return.3"}
    groups = unit_groups(tiny_answerer, how, per_unit=2, weight=7.0, size=5)
    n = len(unit_queries(index, "first" if how == "first" else "fragment", 2))
    assert len(groups) == n >= len(index.doc_units)
    for g in groups:
        assert g.x.shape[1] == len(POOL_FEATURES) and g.weight == 7.0
        assert g.relevant.sum() <= 1  # its own clause, if the pool holds it
    assert sum(bool(g.relevant.any()) for g in groups) >= n // 2
    assert unit_groups(tiny_answerer, how, per_unit=2, size=5)[0].weight == UNIT_WEIGHT


def test_unit_groups_of_a_kb_without_documents_are_none(tiny_answerer):
    tiny_answerer.index.doc_units = {}  # this test's own build (the fixture is per test)
    assert unit_groups(tiny_answerer) == []


def test_shopper_queries_reword_shorten_and_ask():
    base = [UnitQuery("运费险赔付上限按退货实际运费计算", f"d.{i}") for i in range(60)]
    got = shopper_queries(base, {"运费险": ["退运险"], "不存在": ["别的"]})
    assert got == shopper_queries(base, {"运费险": ["退运险"], "不存在": ["别的"]})  # deterministic
    assert [q.unit for q in got] == [q.unit for q in base]
    assert any("退运险" in q.text for q in got) and any("运费险" in q.text for q in got)  # 70 %, not always
    for q in got:
        assert any(q.text.startswith(o) for o in ASK_OPENINGS) and any(q.text.endswith(e) for e in ASK_ENDINGS)
    # never the whole fragment: a window of it, so some of its bigrams are missing
    assert all("运费险赔付上限按退货实际运费计算" not in q.text for q in got)
    assert shopper_queries(base, {}, seed=1) != shopper_queries(base, {}, seed=2)


def test_cross_fitting_adds_the_units_to_every_fit_and_leaves_the_dev_weight(tiny_answerer, monkeypatch):
    import eval.calibrate as cal_module

    fits: list[list[Group]] = []

    def fake_fit(groups):
        fits.append(list(groups))
        return Ranker(("dense",), (1.0,), (0.0,), (1.0,))

    monkeypatch.setattr(cal_module, "fit_ranker", fake_fit)
    items = _dev_items()
    kb = kb_groups(tiny_answerer.index, size=5)
    units = unit_groups(tiny_answerer, "fragment", per_unit=2, weight=9.0, size=5)
    _, _, summary = cross_fit_ranker(tiny_answerer, items, kb, units=units)
    dev = dev_groups(tiny_answerer, items)
    assert summary["unit_queries"] == len(units) > 0 and summary["unit_weight"] == 9.0
    assert summary["dev_weight"] == round(dev_weight(len(kb), len(dev)), 2)  # alternatives alone set it
    assert len(fits) == FOLDS + 1
    for fit in fits:
        assert sum(g.weight == 9.0 and any(g is u for u in units) for g in fit) == len(units)
    assert len(fits[-1]) == len(kb) + len(units) + len(dev)
