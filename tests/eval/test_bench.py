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


def test_a_full_run_leaves_the_shops_fleets_to_their_own_run(tmp_path, monkeypatch, capsys):
    recorded = json.loads(RECORDED.read_text("utf-8"))
    ran: list[str] = []

    def part(name: str):
        def measure(*args, **kwargs):
            ran.append(name)
            return recorded[name]

        return measure

    for name in ("in_process", "http_load", "builds", "scale"):
        monkeypatch.setattr(bench, name, part({"http_load": "http"}.get(name, name)))
    monkeypatch.setattr(bench.bench_shops, "run", part("shops"))
    monkeypatch.setattr("indexer.encoder.load_encoder", lambda s: type("E", (), {"model_id": "fake"})())
    monkeypatch.setattr(bench, "DOCS", tmp_path)
    (tmp_path / "benchmarks.md").write_text("# kefu benchmarks\n\n" + bench.bench_shops.SECTION + "\n\nkept\n", "utf-8")
    bench.main([])
    assert "shops" not in ran and {"in_process", "http", "builds", "scale"} <= set(ran)
    assert "kept" in (tmp_path / "benchmarks.md").read_text("utf-8")  # the shops section stays as measured
