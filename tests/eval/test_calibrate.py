"""Calibration on synthetic evidence: targets met, thresholds ordered, errors on too little data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eval.calibrate import (
    calibrate,
    choose_thresholds,
    operating_point,
)
from eval.dataset import EvalItem
from eval.metrics import Ranked
from eval.runner import ItemResult
from kb.errors import ConfigError
from service.policy import FEATURES, Calibration, Features, decide
from service.ranker import Ranker


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


def test_the_out_of_scope_target_is_aimed_a_standard_error_above():
    # 45 out-of-scope queries: one standard error of a 0.9 recall is sqrt(0.9·0.1/45) ≈ 0.0447
    results = synthetic()
    _, report = calibrate(results, 0.95, 0.9, oos_margin_se=1.0)
    aimed = report["targets"]["oos_handoff_recall_aimed"]
    assert aimed == pytest.approx(0.9 + (0.9 * 0.1 / 45) ** 0.5, abs=1e-4)
    assert report["operating_point_cv"]["oos_handoff_recall"] >= aimed
    _, bare = calibrate(results, 0.95, 0.9, oos_margin_se=0.0)
    assert bare["targets"]["oos_handoff_recall_aimed"] == 0.9
    assert bare["operating_point_cv"]["oos_handoff_recall"] >= 0.9
    # never aimed above every out-of-scope query
    _, high = calibrate(results, 0.95, 0.99, oos_margin_se=5.0)
    assert high["targets"]["oos_handoff_recall_aimed"] == 1.0


@pytest.mark.parametrize("margin", [-0.5, 6.0])
def test_an_out_of_range_oos_margin_is_a_config_error(margin: float):
    with pytest.raises(ConfigError, match="oos_margin_se"):
        calibrate(synthetic(), oos_margin_se=margin)


def _ranked(n_right: int, n_wrong: int) -> list[ItemResult]:
    rng = np.random.default_rng(0)
    return [_result(i, "correct", 0.9, rng) for i in range(n_right)] + [
        _result(n_right + i, "wrong", 0.7, rng) for i in range(n_wrong)
    ]


@pytest.mark.parametrize(
    ("fitted_right", "shipped_right", "kept"),
    [(9, 6, "fitted"), (6, 9, "shipped"), (7, 7, "shipped")],  # a tie keeps the one fitted on many KBs
)
def test_a_ranker_fitted_on_dev_is_kept_only_where_it_ranks_dev_better_than_the_shipped_one(
    tiny_answerer, monkeypatch: pytest.MonkeyPatch, fitted_right: int, shipped_right: int, kept: str
):
    import eval.calibrate_cli as cli
    from eval.runner import RunResult
    from service.selfcal import general_ranker

    shipped, fitted = general_ranker(), Ranker(("question",), (1.0,), (0.0,), (1.0,))
    assert shipped is not None
    asked: list[Ranker | None] = []

    def evaluate_items(answerer, items, label, quiet):  # the shipped ranker's run over dev
        asked.append(answerer.ranker)
        return RunResult(_ranked(shipped_right, 10 - shipped_right), 0.1)

    monkeypatch.setattr(cli, "evaluate_items", evaluate_items)
    got, results, summary = cli._against_shipped(
        tiny_answerer, [], True, fitted, _ranked(fitted_right, 10 - fitted_right), {"dev_queries": 10}
    )
    assert asked == [shipped]  # dev asked once more, with the shipped ranker as served
    assert summary["kept"] == kept
    assert got == (fitted if kept == "fitted" else shipped)
    assert sum(r.top1_correct for r in results) == (fitted_right if kept == "fitted" else shipped_right)
    if kept == "shipped":
        assert summary["fitted_dev_hit@1"] == fitted_right / 10
    else:
        assert summary["shipped_dev_hit@1"] == shipped_right / 10
