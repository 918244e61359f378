"""kefu stats: per-day rates and votes against hand-computed values, the calibration's provenance,
the Prometheus gauges, and the `kefu stats` / `kefu gaps` commands."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from indexer.folder import Manifest
from kb.errors import ConfigError
from kb.learn_journal import states
from kb.settings import Settings
from kefu_cli import app
from service.stats import (
    CalibrationInfo,
    StatsCollector,
    StatsSource,
    local_days,
    parse_since,
    stats_report,
    traffic,
)
from service.tickets import AnswerLog, FeedbackStore, TicketStore
from tests.fakes import FAKE_CAL
from tests.service.conftest import PHONE
from tests.service.test_gaps import insert, row


def noon(day: dt.date, minutes: int = 0) -> float:
    """Local noon of ``day`` (the stats count local calendar days)."""
    return time.mktime((day.year, day.month, day.day, 12, minutes, 0, 0, 0, -1))


D1 = dt.date(2026, 12, 1)
D2 = dt.date(2026, 12, 2)
D3 = dt.date(2026, 12, 3)
D4 = dt.date(2026, 12, 4)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Three days of traffic: D1 busy, D2 quiet, D3 none; D4 is 'now'."""
    path = tmp_path / "tickets.db"
    rows = [
        # D1: 10 answers — 5 answer, 1 clarify, 4 handoff (2 low_confidence, 1 needs_order, 1 user_requested)
        *(row(f"A1{i}", noon(D1, i), "answer") for i in range(5)),
        row("C10", noon(D1, 10), "clarify", "ambiguous"),
        row("H10", noon(D1, 11), "handoff", "low_confidence"),
        row("H11", noon(D1, 12), "handoff", "low_confidence"),
        row("H12", noon(D1, 13), "handoff", "needs_order"),
        row("H13", noon(D1, 14), "handoff", "user_requested"),
        # D2: 6 answers — 3 answer, 1 sensitive handoff, 2 greetings or closings (没有了，谢谢)
        *(row(f"A2{i}", noon(D2, i), "answer") for i in range(3)),
        row("H20", noon(D2, 5), "handoff", "sensitive"),
        row("G20", noon(D2, 6), "clarify", "greeting"),
        row("G21", noon(D2, 7), "clarify", "greeting"),
    ]
    # D1: 3 up and 1 down (on an answer); D2: 1 down
    votes = {"A10": "up", "A11": "up", "A12": "up", "A13": "down", "A20": "down"}
    insert(path, rows, votes)
    return path


def test_per_day_rates_and_votes_match_the_hand_computed_figures(db: Path):
    total, days = traffic(AnswerLog(db), FeedbackStore(db), noon(D1) - 6 * 3600, noon(D4))
    assert [d.day for d in days] == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    d1, d2, d3, _ = (d.counts for d in days)
    assert (d1.answers, d1.answer, d1.clarify, d1.handoff) == (10, 5, 1, 4)
    assert d1.handoff_reasons == {"low_confidence": 2, "needs_order": 1, "user_requested": 1}
    assert d1.rates() == {
        "answer": 0.5,
        "clarify": 0.1,
        "handoff": 0.4,
        "greeting": 0.0,
        "vote": 0.4,
        "up": 0.75,
        "down": 0.25,
    }
    assert d1.handoff_rates() == {"low_confidence": 0.2, "needs_order": 0.1, "user_requested": 0.1}
    assert sum(v for v in d1.handoff_rates().values() if v) == pytest.approx(d1.rates()["handoff"])
    # a greeting's or closing's reply is no clarification: counted apart, the rates still add up to 1
    assert (d2.answers, d2.clarify, d2.greeting) == (6, 0, 2)
    assert d2.rates() == {
        "answer": 0.5,
        "clarify": 0.0,
        "handoff": round(1 / 6, 4),
        "greeting": round(2 / 6, 4),
        "vote": round(1 / 6, 4),
        "up": 0.0,
        "down": 1.0,
    }
    assert (d3.answers, d3.up, d3.down) == (0, 0, 0)
    assert all(v is None for v in d3.rates().values())  # no traffic: no rate, not 0 %
    assert (total.answers, total.answer, total.clarify, total.handoff, total.greeting) == (16, 8, 1, 5, 2)
    assert (total.up, total.down) == (3, 2)
    assert total.rates() == {
        "answer": 0.5,
        "clarify": 0.0625,
        "handoff": 0.3125,
        "greeting": 0.125,
        "vote": 0.3125,
        "up": 0.6,
        "down": 0.4,
    }


def test_the_window_is_half_open_and_counts_votes_on_the_answers_day(db: Path):
    total, days = traffic(AnswerLog(db), FeedbackStore(db), noon(D2), noon(D3))
    assert [d.day for d in days] == ["2026-12-02", "2026-12-03"]  # noon to noon touches two days
    assert (total.answers, total.down) == (6, 1) and days[1].counts.answers == 0
    total, _ = traffic(AnswerLog(db), FeedbackStore(db), noon(D1, 11), noon(D1, 13))  # H10, H11 only
    assert (total.answers, total.handoff_reasons) == (2, {"low_confidence": 2})


def test_report_counts_unserved_messages_by_kind(db: Path):
    r = stats_report(AnswerLog(db), FeedbackStore(db), None, noon(D1) - 3600, noon(D4))
    # H10, H11 low confidence; C10 never answered in its session after (A1x came before it); A13, A20 voted down
    assert r.unserved == {"low_confidence": 2, "abandoned_clarify": 1, "voted_down": 2}
    blob = json.dumps(r.to_json(), ensure_ascii=False)
    assert json.loads(blob)["total"]["answers"] == 16  # the greetings are not unserved (abandoned clarifies)


def test_a_shops_report_counts_its_own_answers_and_votes(tmp_path: Path):
    path = tmp_path / "tickets.db"
    rows = [
        row("S1", noon(D1), "answer", shop="acme"),
        row("S2", noon(D1, 1), "handoff", "low_confidence", shop="acme"),
        row("S3", noon(D1, 2), "answer", shop="bobo"),
        row("P1", noon(D1, 3), "handoff", "low_confidence"),  # the platform's own
    ]
    insert(path, rows, {"S1": "down", "S3": "up", "P1": "up"})
    log, feedback = AnswerLog(path), FeedbackStore(path)
    r = stats_report(log, feedback, None, noon(D1) - 3600, noon(D2), shop="acme")
    assert (r.total.answers, r.total.answer, r.total.handoff, r.total.up, r.total.down) == (2, 1, 1, 0, 1)
    assert r.unserved == {"low_confidence": 1, "abandoned_clarify": 0, "voted_down": 1}
    assert r.to_json()["shop"] == "acme" and [d.counts.answers for d in r.days] == [2, 0]
    every = stats_report(log, feedback, None, noon(D1) - 3600, noon(D2))
    assert every.shop is None and (every.total.answers, every.total.up) == (4, 2)


def test_parse_since():
    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("24h", now) == now - 86400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("2026-12-01", now) == time.mktime((2026, 12, 1, 0, 0, 0, 0, 0, -1))
    for bad in ("7", "yesterday", "-3d", "", "99999999999d", "1e9d", "0001-01-01", "2099-01-01", "4000d"):
        with pytest.raises(ConfigError, match="--since"):
            parse_since(bad, now)


def test_local_days_are_contiguous():
    assert local_days(noon(D1), noon(D3)) == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert local_days(noon(D1), noon(D1, 5)) == ["2026-12-01"]


def _manifest(calibration: dict | None, kb_hash: str = "k1") -> Manifest:
    return Manifest(
        build_id="B1", model_id="m", dim=8, query_prompt="", doc_prompt="", kb_hash=kb_hash, kb_root="/kb",
        counts={}, index_kind="flat", chunk_chars=60, built_at="2026-12-01T00:00:00", build_seconds=1.0,
        calibration=calibration,
    )  # fmt: skip


def test_calibration_provenance_and_promised_precision():
    selfcal = CalibrationInfo.of(
        _manifest({"origin": "self", "kb_hash": "k1", "predicted": {"answered_precision": 0.87, "coverage": 0.65}})
    )
    assert (selfcal.origin, selfcal.precision, selfcal.coverage, selfcal.basis) == ("self", 0.87, 0.65, "predicted")
    assert selfcal.fitted_for_this_kb and "predicts answered precision 0.87" in selfcal.line
    dev = {"answered_precision": 0.96, "coverage": 0.93}
    shipped = CalibrationInfo.of(_manifest({"inherited_from": "shipped calibration.json", "metrics": dev}))
    assert (shipped.origin, shipped.precision, shipped.basis) == ("shipped", 0.96, "dev")
    stale = CalibrationInfo.of(_manifest({"origin": "labelled", "kb_hash": "other"}))
    assert not stale.fitted_for_this_kb and stale.precision is None
    none = CalibrationInfo.of(_manifest(None))
    assert (none.origin, none.basis, none.fitted_for_this_kb) == ("default", None, False)


def test_prometheus_gauges(db: Path, monkeypatch: pytest.MonkeyPatch):
    registry = CollectorRegistry()
    manifest = _manifest({"origin": "self", "predicted": {"answered_precision": 0.87, "coverage": 0.65}})
    registry.register(StatsCollector(lambda: StatsSource(AnswerLog(db), FeedbackStore(db), manifest)))
    monkeypatch.setattr(time, "time", lambda: noon(D1, 30))  # the last day: D1's traffic
    text = generate_latest(registry).decode()
    assert 'kefu_window_answers{decision="handoff",reason="low_confidence",window="1d"} 2.0' in text
    assert 'kefu_window_decision_rate{decision="answer",window="1d"} 0.5' in text
    assert 'kefu_window_handoff_rate{reason="needs_order",window="1d"} 0.1' in text
    assert 'kefu_window_handoff_rate{reason="sensitive",window="1d"} 0.0' in text
    assert 'kefu_window_vote_share{vote="up",window="1d"} 0.75' in text
    assert 'kefu_window_unserved_messages{kind="low_confidence",window="1d"} 2.0' in text
    assert 'kefu_calibration_answered_precision{basis="predicted",build="B1",origin="self"} 0.87' in text


def test_prometheus_gauges_before_start():
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: None))
    assert b"kefu_window_answers" in generate_latest(registry)  # declared, without samples


# --- the commands ---------------------------------------------------------------------------------------------------
def _seed_today(s: Settings) -> None:
    now = time.time()
    insert(
        s.tickets_path,
        [
            row("H1", now - 700, "handoff", "low_confidence", "能开专票吗", session="S1"),
            row("H2", now - 600, "handoff", "low_confidence", "能开专票吗？", session="S2"),
            row("H4", now - 500, "handoff", "low_confidence", f"手机{PHONE}收不到验证码", session="S5"),
            row("H3", now - 400, "handoff", "needs_order", "帮我查一下订单", session="S3"),
            row("A1", now - 300, "answer", None, "退款多久到账", session="S4"),
        ],
    )


def test_kefu_stats_json(runner: CliRunner, env: Settings):
    _seed_today(env)
    r = runner.invoke(app, ["stats", "--since", "1d", "--json", "--gaps", "0"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["total"]["answers"] == 5 and got["total"]["handoff_reasons"] == {"low_confidence": 3, "needs_order": 1}
    assert got["unserved"]["low_confidence"] == 3
    assert got["calibration"]["build"] and got["top_gaps"] is None


def test_kefu_stats_table_and_top_gaps(runner: CliRunner, env: Settings):
    _seed_today(env)
    r = runner.invoke(app, ["stats", "--since", "1d"])
    assert r.exit_code == 0, r.output
    assert "per day" in r.stdout and "top gaps" in r.stdout and "low_confidence" in r.stdout
    assert PHONE not in r.stdout


def test_kefu_stats_of_one_shop(runner: CliRunner, env: Settings, fake_encoder, tmp_path: Path, monkeypatch):
    import service.selfcal
    from service.shops import Shops
    from tests.service.conftest import write_shop_kb

    monkeypatch.setattr(  # the fake encoder's thresholds instead of a self-calibration (as tests/service/test_shops.py)
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )
    shops = Shops(env, fake_encoder)
    build = shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋")).build_id
    shops.close()
    _seed_today(env)
    now = time.time()
    insert(env.tickets_path, [row("S1", now - 100, "handoff", "low_confidence", "跑鞋有赠品吗", "S9", shop="acme")])
    r = runner.invoke(app, ["stats", "--since", "1d", "--json", "--shop", "acme"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["shop"] == "acme" and got["total"]["answers"] == 1 and got["unserved"]["low_confidence"] == 1
    assert got["calibration"]["build"] == build and got["top_gaps"] is None  # the shop's build; no gaps
    table = runner.invoke(app, ["stats", "--since", "1d", "--shop", "acme"])
    assert table.exit_code == 0 and f"shop acme, build {build}" in table.stdout and "in shop acme" in table.stdout
    gone = runner.invoke(app, ["stats", "--since", "1d", "--shop", "ghost"])
    assert gone.exit_code == 0 and "0 answers" in gone.stdout and "no calibration" in gone.output
    assert runner.invoke(app, ["stats", "--shop", "../acme"]).exit_code == 2


def test_kefu_gaps_lists_and_resolves(runner: CliRunner, env: Settings):
    _seed_today(env)
    r = runner.invoke(app, ["gaps", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["messages"] == 3  # the needs_order handoff is not a gap
    gap, other = report["gaps"]
    assert (gap["size"], gap["texts"], other["size"]) == (2, 1, 1)  # 能开专票吗 twice, largest first
    assert PHONE not in r.stdout and "[手机号]" in r.stdout
    table = runner.invoke(app, ["gaps"])
    assert table.exit_code == 0 and gap["id"] in table.stdout
    bad = runner.invoke(app, ["gaps", "resolve", gap["id"], "--dismiss", "--out-of-scope"])
    assert bad.exit_code == 2 and "exactly one" in bad.output
    ok = runner.invoke(app, ["gaps", "resolve", gap["id"], "--attach", "refund-seven-day", "--who", "小王"])
    assert ok.exit_code == 0, ok.output
    assert "attach → refund-seven-day" in ok.stdout
    (s,) = states(env.kb_dir).values()
    assert (s.decision.action, s.decision.entry, s.decision.who, len(s.decision.messages)) == (
        "attach", "refund-seven-day", "小王", 1,
    )  # fmt: skip
    again = runner.invoke(app, ["gaps", "resolve", gap["id"], "--dismiss"])
    assert again.exit_code == 6 and "no open gap" in again.output  # it left the list
    assert [g["id"] for g in json.loads(runner.invoke(app, ["gaps", "--json"]).stdout)["gaps"]] == [other["id"]]


def test_kefu_gaps_resolves_a_ticket_without_the_model(runner: CliRunner, env: Settings, monkeypatch):
    import indexer.encoder

    t = TicketStore(env.tickets_path).create(f"手机{PHONE}能开专票吗", "low_confidence", "S1", [])
    monkeypatch.setattr(indexer.encoder, "load_encoder", lambda s: pytest.fail("a ticket needs no model"))
    ok = runner.invoke(app, ["gaps", "resolve", t.id, "--out-of-scope", "--who", "小王"])
    assert ok.exit_code == 0, ok.output
    assert f"ticket {t.id}: decision" in ok.stdout and "out_of_scope" in ok.stdout
    (s,) = states(env.kb_dir).values()
    assert s.decision.item == f"ticket:{t.id}" and PHONE not in s.decision.messages[0]
    again = runner.invoke(app, ["gaps", "resolve", t.id, "--dismiss"])
    assert again.exit_code == 2 and "already resolved" in again.output
