"""Ablation variants run on the tiny KB, also when the calibration needs the learned ranker."""

from __future__ import annotations

from eval.ablations import run_ablations
from eval.dataset import EvalItem
from service.ranker import Ranker
from tests.fakes import ranked_calibration

ITEMS = [
    EvalItem("a", "退货运费谁出", ("refund-shipping-fee",), "answer", None, (), "退货退款"),
    EvalItem("b", "我的快递到哪了", ("logistics-track",), "answer", None, (), "物流配送"),
    EvalItem("c", "今天天气怎么样", (), "handoff", "low_confidence", (), "其他"),
]


def test_every_variant_runs_even_when_the_calibration_reads_the_ranker(tiny_answerer):
    ranker = Ranker(("dense",), (1.0,), (0.0,), (1.0,))
    tiny_answerer.calibration = ranked_calibration(ranker.to_json(), answer_at=0.5, clarify_at=0.3)
    tiny_answerer.ranker = ranker
    rows = run_ablations(tiny_answerer, ITEMS)
    by_name = {r["name"]: r for r in rows}
    assert "learned ranker" in by_name["default"]["note"]
    # variants the ranker cannot serve run with the uncalibrated confidence and say so
    for name in ("dense only", "lexical only (BM25, chars+bigrams)", "fusion: RRF(dense, lexical), no learned ranker"):
        assert "raw top-1" in by_name[name]["note"]
    assert all(0.0 <= r["hit@1"] <= 1.0 for r in rows)
