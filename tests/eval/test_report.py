"""The eval report's rules slice (#22): a table of clause hits by split."""

from __future__ import annotations

from dataclasses import replace

from eval.dataset import EvalItem
from eval.report import rules_markdown, write_report
from eval.runner import evaluate


def _items(prefix: str) -> list[EvalItem]:
    return [
        EvalItem(f"{prefix}1", "无理由退货的运费由谁承担", ("rules-return.3",), "answer", None, (), "退货退款"),
        EvalItem(f"{prefix}2", "签收后几天内可以申请无理由退货", ("rules-return.2",), "answer", None, (), "退货退款"),
    ]


def test_rules_table_has_a_row_per_split_and_the_targets():
    m = {"retrieval": {"n": 88, "hit@1": 0.5, "hit@3": 0.75, "mrr@10": 0.6}, "decisions": {"coverage": 0.9}}
    table = "\n".join(rules_markdown({"dev": m}))
    assert "| dev | 88 | 0.500 | 0.750 | 0.600 | 0.900 | – |" in table
    assert "| target (test) |  | >= 0.80 | >= 0.95 |" in table


def test_report_shows_the_rules_slice_measured_by_the_runner(tiny_answerer, tmp_path):
    faq = [EvalItem("q1", "七天无理由退货", ("refund-seven-day",), "answer", None, (), "退货退款")]
    run = evaluate(tiny_answerer, faq).metrics
    rules = {"dev": evaluate(tiny_answerer, _items("d")).metrics, "test": evaluate(tiny_answerer, _items("t")).metrics}
    assert rules["dev"]["retrieval"]["n"] == 2
    manifest = tiny_answerer.index.manifest.model_dump()
    ind = {"in_scope": 1, "above_0.5": 0, "share_above_0.5": 0.0, "mean_max_jaccard": 0.1}
    text = write_report(run, run, {}, [], ind, manifest, tmp_path, rules=rules).read_text("utf-8")
    assert "## Rules slice: clauses as answers" in text
    rows = [line for line in text.splitlines() if line.startswith(("| dev | 2 |", "| test | 2 |"))]
    assert len(rows) == 2
    text = write_report(run, run, {}, [], ind, manifest, tmp_path).read_text("utf-8")
    assert "Not measured: no `rules_dev.jsonl`" in text
    assert "unseen split" not in text  # measured only where the eval data has it


def test_report_shows_the_unseen_split(tiny_answerer, tmp_path):
    faq = [EvalItem("q1", "七天无理由退货", ("refund-seven-day",), "answer", None, (), "退货退款")]
    run = evaluate(tiny_answerer, faq).metrics
    unseen = evaluate(tiny_answerer, [*faq, replace(faq[0], id="q2", query="运费谁出")]).metrics["headline"]
    ind = {"in_scope": 1, "above_0.5": 0, "share_above_0.5": 0.0, "mean_max_jaccard": 0.1}
    path = write_report(run, run, {}, [], ind, tiny_answerer.index.manifest.model_dump(), tmp_path, unseen=unseen)
    text = path.read_text("utf-8")
    assert "## Wording nobody here wrote (unseen split)" in text and "2 shoppers' questions" in text
    assert f"| {unseen['hit@1']:.3f} | {unseen['recall@5']:.3f} |" in text


def test_report_compares_the_clauses_questions_with_each_rules_split(tiny_answerer, tmp_path):
    from eval.dataset import phrasing_overlap

    faq = [EvalItem("q1", "七天无理由退货", ("refund-seven-day",), "answer", None, (), "退货退款")]
    run = evaluate(tiny_answerer, faq).metrics
    units = phrasing_overlap(
        ["签收后几天内可以申请无理由退货呢", "逾期了还能退吗"],
        {"rules_dev": ["签收后几天内可以申请无理由退货"], "rules_test": ["运费谁出"]},
    )
    assert units["rules_dev"]["above_0.5"] == 1 and units["rules_test"]["above_0.5"] == 0
    ind = {"in_scope": 1, "above_0.5": 0, "share_above_0.5": 0.0, "mean_max_jaccard": 0.1, "unit_phrasings": units}
    text = write_report(run, run, {}, [], ind, tiny_answerer.index.manifest.model_dump(), tmp_path).read_text("utf-8")
    assert "| split | clause and section questions | best Jaccard > 0.5 | mean best Jaccard |" in text
    assert "| rules_dev | 2 | 1 |" in text and "| rules_test | 2 | 0 |" in text


def test_the_calibration_line_gives_the_served_thresholds_and_says_when_the_curve_is_a_refit():
    from eval.report import calibration_line

    served = {"source": "dev-logistic", "answer_at": 0.75, "scope_at": 0.88}
    op = {"answer_at": 0.72, "coverage": 0.94}
    own = calibration_line(served, {"operating_point_cv": op})
    assert own.startswith(
        "Calibration: `dev-logistic`, served at answer ≥ 0.7500 (clarify below it when scope ≥ 0.8800);"
    )
    assert "its operating point on dev" in own and '"answer_at": 0.72' in own
    refit = calibration_line(served, {"operating_point_cv": op, "refit": True})
    assert "refit on dev for the curve below" in refit and "not what is served" in refit
    assert calibration_line({}, {}).startswith("Calibration: `default`; its operating point")
