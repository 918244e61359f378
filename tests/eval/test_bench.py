"""eval.bench's report on a recorded run: the in-process ratio with its per-run spread."""

from __future__ import annotations

import json
from pathlib import Path

import eval.bench as bench

RECORDED = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.json"


def test_markdown_shows_the_ratio_of_each_run(tmp_path, monkeypatch):
    data = json.loads(RECORDED.read_text("utf-8"))
    data["in_process"]["ratio_p50_answer_to_encoder"] = 1.25
    data["in_process"]["ratio_p50_per_run"] = [1.21, 1.25, 1.34]
    monkeypatch.setattr(bench, "DOCS", tmp_path)
    text = bench.write_markdown(data).read_text("utf-8")
    assert "p50 ratio kefu / encoder-only: **1.25** (target ≤ 1.3; per run 1.21, 1.25, 1.34)" in text
    assert json.loads((tmp_path / "benchmarks.json").read_text("utf-8"))["in_process"]["ratio_p50_per_run"] == [
        1.21,
        1.25,
        1.34,
    ]
