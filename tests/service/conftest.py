"""Fixtures and helpers of the service tests: the CLI with the fake encoder patched in for the real model,
the answerer on the fake-encoder thresholds and the shape of its answers, the HTTP API with an admin token,
shop knowledge bases, and a phone number that logs and reports must mask."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import indexer.encoder
import service.runtime
from indexer.store import IndexStore, write_calibration
from kb.settings import Settings
from service.answerer import Answerer
from service.api import create_app
from service.pipeline.respond import SUGGEST_MIN_ANCHOR_GAP
from service.schemas import Answer
from service.sensitive import SUGGESTING_GROUPS
from tests.fakes import FAKE_CAL


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, fake_encoder):
    """Every place the CLI may load the model gets the fake encoder instead."""
    monkeypatch.setattr(indexer.encoder, "load_encoder", lambda settings: fake_encoder)
    monkeypatch.setattr(service.runtime, "load_encoder", lambda settings: fake_encoder)
    return fake_encoder


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tiny_settings: Settings, tiny_index, fake_model) -> Settings:
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    monkeypatch.setenv("KEFU_DATA_DIR", str(tiny_settings.data_dir))
    monkeypatch.setenv("KEFU_KB_DIR", str(tiny_settings.kb_dir))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    return tiny_settings


# --- the answerer and the shape of its answers -----------------------------------------------------
TOP_KEYS = {
    "query",
    "normalized_query",
    "decision",
    "reason",
    "answers",
    "handoff",
    "suggestions",
    "message",
    "session_id",
    "elapsed_ms",
    "trace",
}
DOCUMENTED_KEYS = {"query", "normalized_query", "decision", "reason", "answers", "handoff", "session_id", "elapsed_ms"}
ITEM_KEYS = {"id", "title", "text", "score", "source", "cites"}
SOURCE_KEYS = {"doc_id", "section", "kind", "owner", "clause"}  # owner: platform, or shop for a shop KB


# The documented defaults (0.90 / 0.865) are cut-offs for the real model's cosines. The fake encoder
# scores an exact question match ≈ 0.72–0.85, a partial one ≈ 0.6 and an unrelated one < 0.3, so the
# decision tests run with thresholds placed for it.
@pytest.fixture
def answerer(tiny_answerer: Answerer) -> Answerer:
    tiny_answerer.calibration = FAKE_CAL
    return tiny_answerer


def assert_shape(a: Answer) -> dict:
    """The documented JSON shape, and the decision invariants every response satisfies."""
    data = json.loads(a.model_dump_json())
    assert set(data) >= DOCUMENTED_KEYS
    assert set(data) - {"answer_id"} == TOP_KEYS  # answer_id: for POST /v1/feedback, where the schema has it
    assert data["decision"] in {"answer", "clarify", "handoff"}
    assert isinstance(data["elapsed_ms"], float) and data["elapsed_ms"] >= 0
    for item in data["answers"]:
        assert set(item) == ITEM_KEYS
        assert set(item["source"]) == SOURCE_KEYS
        assert item["source"]["kind"] in {"faq", "rules", "doc"}
        assert isinstance(item["score"], float)
    if data["decision"] == "handoff":
        assert set(data["handoff"]) == {"ticket_id", "message", "route"} and data["handoff"]["message"]
    else:
        assert data["handoff"] is None
    fired = str(data["trace"].get("fired", ""))
    # a low-confidence message plainly about something else suggests nothing (respond.py)
    off_topic = (data["trace"].get("features") or {}).get("anchor_gap", 0.0) < SUGGEST_MIN_ANCHOR_GAP
    suggesting = (data["reason"] == "low_confidence" and not off_topic) or data["reason"] == "needs_order"
    suggesting = suggesting or (
        fired.startswith("sensitive:") and fired.removeprefix("sensitive:") in SUGGESTING_GROUPS
    )
    if suggesting:  # the best candidates, best first, ride along
        ranked_ids = [c["id"] for c in data["trace"].get("candidates", [])]
        assert [i["id"] for i in data["suggestions"]] == ranked_ids[: len(data["suggestions"])]
        assert len(data["suggestions"]) == min(3, len(ranked_ids))
    else:
        assert data["suggestions"] == []
    if data["decision"] == "answer":
        assert data["reason"] is None and data["answers"]
    ranked = [c["id"] for c in data["trace"].get("candidates", [])]
    if data["decision"] in ("answer", "clarify") and data["reason"] != "greeting":
        assert [i["id"] for i in data["answers"]] == ranked[: len(data["answers"])]  # best first, by the ranking
    return data


# --- the HTTP API with an admin token, on thresholds placed for the fake encoder's cosines ----------
TOKEN = "s3cret-token"


def _calibrate(settings: Settings) -> None:
    store = IndexStore(settings.index_home, settings.keep_builds)
    write_calibration(store.current_path(), FAKE_CAL.to_json())


@pytest.fixture
def settings(tiny_settings: Settings, tiny_index) -> Settings:
    _calibrate(tiny_settings)
    return tiny_settings.with_overrides(admin_token=TOKEN)


@pytest.fixture
def client(settings: Settings, fake_encoder):
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        yield c


def _assert_error(r, status: int, *fragments: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "message"}
    for f in fragments:
        assert f in body["message"], body
    assert "Traceback" not in r.text
    return body


# --- shops ----------------------------------------------------------------------------------------
# One product word per shop: the shops' questions share their wording and differ in the product,
# so another shop's entry is often the nearest one overall (what isolation must withstand).
GOODS = ["跑鞋", "茶叶", "手机壳", "台灯", "背包", "毛衣", "耳机", "花盆", "水杯", "围巾", "帐篷", "口红"]
TOPICS = ["怎么保养", "多久发货", "尺码怎么选", "能不能开发票", "坏了怎么保修", "有没有赠品", "怎么清洗", "支持定制吗"]
ENTRIES = 24


def write_shop_kb(folder: Path, shop: str, goods: str, entries: int = ENTRIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "faq.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "alt_questions"])
        for i in range(entries):
            topic = TOPICS[i % len(TOPICS)]
            w.writerow(
                [
                    f"{shop}-{i}",
                    f"{goods}{i}号{topic}？",
                    f"{goods}{i}号：{topic}的说明，本店{goods}统一按店铺规则处理，详情咨询店铺客服。",
                    f"{goods}{i}号{topic}呢|请问{goods}{i}号{topic}",
                ]
            )
    return folder


# --- answer logs and tickets ----------------------------------------------------------------------
PHONE = "13812345678"
