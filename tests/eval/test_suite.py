"""The bare model's single-threshold oracle, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from eval.suite import oracle_coverage


def test_oracle_coverage_hand_computed():
    # scores, whether the top answer is right, whether the query is in scope (3 in scope)
    top1 = np.array([0.95, 0.90, 0.85, 0.80, 0.70])
    right = np.array([1, 0, 1, 0, 1], dtype=float)
    ins = np.array([1, 0, 1, 0, 1], dtype=float)
    # answer ≥0.95: 1/1 right, 1 of 3 covered; ≥0.85: 2/3 right, 2 covered; ≥0.70: 3/5, 3 covered
    assert oracle_coverage(top1, right, ins, 1.0) == pytest.approx(1 / 3)
    assert oracle_coverage(top1, right, ins, 0.6) == pytest.approx(1.0)
    assert oracle_coverage(top1, right, ins, 0.65) == pytest.approx(2 / 3)
    assert oracle_coverage(np.array([0.5]), np.array([0.0]), np.array([1.0]), 0.8) == 0.0


def test_oracle_never_cuts_between_equal_scores():
    top1 = np.array([0.9, 0.9, 0.8])
    right = np.array([1, 0, 1], dtype=float)
    ins = np.ones(3)
    # the threshold 0.9 answers both 0.9s (precision 0.5), it cannot take only the right one
    assert oracle_coverage(top1, right, ins, 0.9) == 0.0
    assert oracle_coverage(top1, right, ins, 0.5) == pytest.approx(1.0)


KEFU_KEYS = ("hit@1", "mrr@10", "recall@5", "answered_precision", "coverage", "oos_handoff_recall")


def _row(suite: str, test_in: int, test_out: int, bare: tuple[float, ...], kefu: tuple[float, ...], **more):
    """A SuiteResult.to_json row: bare hit@1, MRR, recall@5, oracle @0.8, @0.9; kefu by KEFU_KEYS."""
    keys = ("hit@1", "mrr@10", "recall@5", "oracle_coverage@0.8", "oracle_coverage@0.9")
    return {
        "suite": suite,
        "test_in": test_in,
        "test_out": test_out,
        "bare": dict(zip(keys, bare, strict=True)),
        "kefu": dict(zip(KEFU_KEYS, kefu, strict=True)),
        "calibration": "self",
        **more,
    }


def test_suites_markdown_row():
    from eval.suite import suites_markdown

    row = _row(
        "shop",
        3,
        1,
        (0.5, 0.6, 0.7, 0.25, 0.0),
        (0.75, 0.8, 0.9, 1.0, 0.5, 1.0),
        predicted={"answered_precision": 0.9, "coverage": 0.6},
    )
    lines = suites_markdown([row])
    assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|") == 11
    assert "0.500 → 0.750" in lines[2] and "0.90 / 0.60" in lines[2]
    assert suites_markdown([]) == []
    # a small KB's prior predicts nothing, and a calibration from elsewhere says where it came from
    assert suites_markdown([{**row, "predicted": {}}])[2].endswith("| – (prior only) |")
    assert suites_markdown([{**row, "predicted": {}, "calibration": "labelled"}])[2].endswith("| – (labelled) |")


def test_run_suite_builds_zero_label_and_measures_the_bare_model(tmp_path):
    import json

    from eval.suite import run_suite
    from indexer.encoder import FakeEncoder
    from kb.settings import Settings
    from service.runtime import Runtime
    from service.selfcal import build_calibrator
    from tests.service.test_selfcal import _shop_csv

    suite = tmp_path / "tea"
    _shop_csv(suite / "kb")
    rows = [
        {"id": "t1", "query": "花茶如何保存", "relevant": ["1010"], "expect": "answer", "category": "茶"},
        {"id": "t2", "query": "茶叶怎么保存", "relevant": ["1000"], "expect": "answer", "category": "茶"},
        {"id": "t3", "query": "今天股市怎么样", "expect": "handoff", "reason": "low_confidence", "category": "茶"},
    ]
    for split in ("dev", "test"):
        (suite / f"{split}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    settings = Settings(data_dir=tmp_path / "data", model="fake:hash-128")
    enc = FakeEncoder(dim=128)
    r = run_suite(suite, settings, lambda s: Runtime.create(s, encoder=enc), build_hook=build_calibrator(settings, enc))
    assert (r.name, r.n_in, r.n_out, r.calibration) == ("tea", 2, 1, "self")
    assert set(r.kefu) == set(KEFU_KEYS)
    assert 0.0 <= r.bare.hit1 <= 1.0 and set(r.bare.oracle_coverage) == {0.8, 0.9}
    assert set(r.predicted) == {"answered_precision", "coverage"}
    assert not (tmp_path / "data" / "index" / "builds").exists()  # the user's index home is left alone


def test_a_suite_without_out_of_scope_questions_shows_no_handoff_rate():
    from eval.suite import suites_markdown

    [_, _, line] = suites_markdown([_row("articles", 5, 0, (0.8, 0.9, 1.0, 1.0, 0.5), (0.0,) * 6)])
    assert "– (none asked)" in line and line.startswith("| articles | 5/0 | 0.800 → 0.000 |")
