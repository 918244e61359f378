"""A ticket's conversation and the answer log's shop: what a handoff keeps of the chat before it
(masked, bounded), an old tickets database migrated in place, the answer log's shop column and
its filters, and both through the pipeline, the shop desk, the HTTP API and the CLI."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import service.selfcal
from indexer.store import IndexStore, write_calibration
from kb.settings import Settings
from kefu_cli import app
from service.answerer import Answerer
from service.api import create_app
from service.runtime import Runtime
from service.schemas import MAX_HISTORY_TURNS, MAX_TURN_CHARS, Answer, HistoryTurn
from service.shops import Shops
from service.shops_answer import ShopDesk
from service.shops_tickets import ShopTickets
from service.tickets import AnswerLog, FeedbackStore, Prior, TicketStore, TicketTurn
from tests.fakes import FAKE_CAL
from tests.service.conftest import write_shop_kb
from tests.service.test_tickets import in_processes

PHONE = "13812345678"
TOKEN = "history-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# The tickets database as the first release created it: no tickets.history, no answers.shop.
OLD_SCHEMA = """
CREATE TABLE tickets (id TEXT PRIMARY KEY, created REAL NOT NULL, session_id TEXT, query TEXT NOT NULL,
    reason TEXT NOT NULL, candidates TEXT NOT NULL);
CREATE INDEX tickets_created ON tickets (created);
CREATE TABLE answers (answer_id TEXT PRIMARY KEY, created REAL NOT NULL, session_id TEXT, query TEXT NOT NULL,
    decision TEXT NOT NULL, reason TEXT, top_id TEXT, confidence REAL, elapsed_ms REAL NOT NULL, ticket_id TEXT);
CREATE INDEX answers_created ON answers (created);
CREATE TABLE feedback (answer_id TEXT PRIMARY KEY REFERENCES answers (answer_id), created REAL NOT NULL,
    updated REAL NOT NULL, session_id TEXT NOT NULL, vote TEXT NOT NULL CHECK (vote IN ('up', 'down')), comment TEXT);
INSERT INTO tickets VALUES ('Told', 1.0, 'S1', '转人工', 'user_requested', '[]');
INSERT INTO answers VALUES ('A0123456789abcdef', 2.0, 'S1', '转人工', 'handoff', 'user_requested', NULL, NULL, 3.0,
    'Told');
"""


def _answer(query: str, decision: str = "answer", reason: str | None = None) -> Answer:
    fields = {"query": query, "normalized_query": query, "decision": decision, "reason": reason}
    return Answer.model_validate({**fields, "session_id": "S1", "elapsed_ms": 1.0})


# --- the conversation a ticket keeps --------------------------------------------------------------------------------
def test_the_conversation_is_masked_and_each_source_bounded():
    earlier = (*[f"问题{i}" for i in range(MAX_HISTORY_TURNS + 3)], f"我的手机{PHONE}", "  ")
    history = (HistoryTurn(role="agent", text="请问订单号是多少"), HistoryTurn(role="customer", text=f"电话{PHONE}"))
    turns = Prior(earlier, history).turns()
    session = [t for t in turns if t.source == "session"]
    assert len(session) == MAX_HISTORY_TURNS - 1  # the last ten messages, the blank one dropped
    assert session[-1] == TicketTurn("customer", "我的手机[手机号]", "session")
    assert session[0].text == "问题5"  # the oldest of the last ten comes first
    assert [t for t in turns if t.source == "request"] == [
        TicketTurn("agent", "请问订单号是多少", "request"),
        TicketTurn("customer", "电话[手机号]", "request"),
    ]
    assert Prior().turns() == ()


def test_a_long_turn_is_cut_after_masking():
    # the phone number straddles the cut: masked first, so no digit of it is left
    text = "x" * (MAX_TURN_CHARS - 5) + PHONE + "y" * 50
    (turn,) = Prior((text,)).turns()
    assert len(turn.text) == MAX_TURN_CHARS and turn.text.endswith("…")
    assert not any(ch.isdigit() for ch in turn.text)


def test_a_ticket_stores_its_conversation_masked(tmp_path: Path):
    path = tmp_path / "t.db"
    store = TicketStore(path)
    history = (HistoryTurn(role="customer", text=f"手机{PHONE}"), HistoryTurn(role="agent", text="好的"))
    t = store.create("转人工", "user_requested", "S1", [], Prior((f"邮箱 a@b.com 我的手机{PHONE}",), history))
    [got] = store.list()
    assert got == t and got.history == t.history
    assert got.to_json()["history"] == [
        {"role": "customer", "text": "邮箱 [邮箱] 我的手机[手机号]", "source": "session"},
        {"role": "customer", "text": "手机[手机号]", "source": "request"},
        {"role": "agent", "text": "好的", "source": "request"},
    ]
    raw = sqlite3.connect(path).execute("SELECT history FROM tickets").fetchone()[0]
    assert PHONE not in raw and "a@b.com" not in raw


# --- an old database -------------------------------------------------------------------------------------------------
def _old_db(path: Path) -> Path:
    with sqlite3.connect(path) as c:
        c.executescript(OLD_SCHEMA)
    return path


def test_an_old_database_is_migrated_in_place(tmp_path: Path):
    path = _old_db(tmp_path / "t.db")
    tickets, log = TicketStore(path), AnswerLog(path)
    with sqlite3.connect(path) as c:
        assert "history" in {r[1] for r in c.execute("PRAGMA table_info(tickets)")}
        assert "shop" in {r[1] for r in c.execute("PRAGMA table_info(answers)")}
    [old] = tickets.list()
    assert (old.id, old.history, old.to_json()["history"]) == ("Told", (), [])  # an old row: no conversation
    assert log.get("A0123456789abcdef").shop is None  # type: ignore[union-attr]
    new = tickets.create("人工", "user_requested", "S2", [], Prior(("之前的问题",)))
    assert [t.id for t in tickets.list()] == [new.id, "Told"] and tickets.list()[0].history
    log.record(_answer("退款多久到账"), shop="acme")
    assert log.count() == 2 and {a.shop for a in log.list()} == {None, "acme"}
    TicketStore(path)  # opening it again adds nothing
    with sqlite3.connect(path) as c:
        assert [r[1] for r in c.execute("PRAGMA table_info(tickets)")].count("history") == 1


def _open_and_write(path: str, n: int) -> None:
    TicketStore(Path(path)).create(f"进程{n}", "sensitive", f"P{n}", [], Prior((f"之前{n}",)))
    AnswerLog(Path(path)).record(_answer(f"进程{n}"), shop=f"shop-{n}")


def test_processes_opening_one_old_database_at_once_migrate_it_once(tmp_path: Path):
    path = _old_db(tmp_path / "t.db")
    assert in_processes(_open_and_write, path) == [0, 0, 0, 0]
    assert TicketStore(path).count() == 5 and AnswerLog(path).count() == 5


# --- the answer log's shop --------------------------------------------------------------------------------------------
def test_the_answer_log_records_and_filters_by_shop(tmp_path: Path):
    path = tmp_path / "t.db"
    log, feedback = AnswerLog(path), FeedbackStore(path)
    mine = log.record(_answer("跑鞋多久发货", "handoff", "low_confidence"), shop="acme")
    log.record(_answer("茶叶多久发货", "handoff", "low_confidence"), shop="bobo")
    log.record(_answer("退款多久到账"))  # the platform's own
    feedback.vote(mine.answer_id, "S1", "down")
    now = time.time() + 1
    assert sum(n for *_, n in log.daily(None, now)) == 3
    assert [(d, r, n) for _, d, r, n in log.daily(None, now, "acme")] == [("handoff", "low_confidence", 1)]
    assert log.daily(None, now, "ghost") == []
    assert [(v, n) for _, v, n in feedback.daily(None, now, "acme")] == [("down", 1)]
    assert feedback.daily(None, now, "bobo") == []
    assert [a.query for a in log.gap_candidates(None, now, 100, "bobo")] == ["茶叶多久发货"]
    assert len(log.gap_candidates(None, now, 100)) == 2


# --- through the pipeline ---------------------------------------------------------------------------------------------
def test_a_handoff_ticket_keeps_the_sessions_earlier_messages_and_the_request_history(tiny_answerer: Answerer):
    tiny_answerer.answer("退货运费谁出", session_id="S1")
    tiny_answerer.answer(f"我的手机是{PHONE}，七天内可以无理由退吗", session_id="S1")
    history = [HistoryTurn(role="agent", text="您好，请问有什么可以帮您")]
    a = tiny_answerer.answer("转人工", session_id="S1", history=history)
    assert a.handoff is not None
    assert tiny_answerer.tickets is not None
    t = {x.id: x for x in tiny_answerer.tickets.list()}[a.handoff.ticket_id]
    assert [(x.role, x.text, x.source) for x in t.history] == [
        ("customer", "退货运费谁出", "session"),  # as typed, not normalised
        ("customer", "我的手机是[手机号]，七天内可以无理由退吗", "session"),
        ("agent", "您好，请问有什么可以帮您", "request"),
    ]
    tiny_answerer.answer("转人工", session_id="S2")  # a new session: nothing before it
    assert tiny_answerer.tickets.list()[0].history == ()


def test_a_greeting_is_not_part_of_the_conversation(tiny_answerer: Answerer):
    tiny_answerer.answer("你好", session_id="S1")
    tiny_answerer.answer("转人工", session_id="S1")
    assert tiny_answerer.tickets is not None and tiny_answerer.tickets.list()[0].history == ()


# --- over HTTP and the CLI --------------------------------------------------------------------------------------------
@pytest.fixture
def client(tiny_settings: Settings, tiny_index, fake_encoder):
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    with TestClient(create_app(tiny_settings.with_overrides(admin_token=TOKEN), encoder=fake_encoder)) as c:
        yield c


def test_admin_handoffs_show_the_conversation(client: TestClient):
    sid = client.post("/v1/answer", json={"query": f"退货运费谁出 {PHONE}"}).json()["session_id"]
    history = [{"role": "customer", "text": "昨天问过了"}, {"role": "agent", "text": "麻烦提供订单号"}]
    r = client.post("/v1/answer", json={"query": "转人工", "session_id": sid, "history": history})
    ticket = r.json()["handoff"]["ticket_id"]
    [t] = client.get("/admin/handoffs", headers=AUTH).json()["tickets"]
    assert t["id"] == ticket and t["history"] == [
        {"role": "customer", "text": "退货运费谁出 [手机号]", "source": "session"},
        {"role": "customer", "text": "昨天问过了", "source": "request"},
        {"role": "agent", "text": "麻烦提供订单号", "source": "request"},
    ]


def test_kefu_handoffs_list_json_shows_the_conversation(runner: CliRunner, env: Settings):
    TicketStore(env.tickets_path).create("转人工", "user_requested", "S1", [], Prior((f"手机{PHONE}",)))
    listed = runner.invoke(app, ["handoffs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [t] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert t["history"] == [{"role": "customer", "text": "手机[手机号]", "source": "session"}]


# --- shops ------------------------------------------------------------------------------------------------------------
@pytest.fixture
def shop_settings(tiny_settings: Settings, tiny_index, monkeypatch: pytest.MonkeyPatch) -> Settings:
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    monkeypatch.setattr(  # the fake encoder's thresholds instead of a self-calibration (as tests/service/test_shops.py)
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )
    return tiny_settings.with_overrides(admin_token=TOKEN)


def test_a_shops_ticket_keeps_the_conversation(shop_settings: Settings, fake_encoder, tmp_path: Path):
    shops = Shops(shop_settings, fake_encoder)
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    rt = Runtime.create(shop_settings, encoder=fake_encoder)
    tickets = ShopTickets(rt.tickets)
    desk = ShopDesk(shops, fake_encoder.encode_queries, tickets, model_id=fake_encoder.model_id, dim=fake_encoder.dim)
    try:
        platform = rt.answerer()
        desk.answer(platform, f"跑鞋5号有没有赠品？我电话{PHONE}", "acme", session_id="S1")
        history = [HistoryTurn(role="agent", text="亲，在的")]
        a = desk.answer(platform, "转人工", "acme", session_id="S1", history=history)
        assert a.handoff is not None
        [routed] = tickets.list(10, shop="acme")
        assert routed.ticket.id == a.handoff.ticket_id
        assert [(t.text, t.source) for t in routed.ticket.history] == [
            ("跑鞋5号有没有赠品？我电话[手机号]", "session"),
            ("亲，在的", "request"),
        ]
        assert routed.to_json()["history"][0]["role"] == "customer"
    finally:
        shops.close()


def test_answers_asked_in_a_shop_are_logged_with_it(shop_settings: Settings, fake_encoder, tmp_path: Path):
    shops = Shops(shop_settings, fake_encoder)
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    shops.close()
    with TestClient(create_app(shop_settings, encoder=fake_encoder)) as c:
        in_shop = c.post("/v1/answer", json={"query": "跑鞋5号有没有赠品？", "shop": "acme"}).json()["answer_id"]
        plain = c.post("/v1/answer", json={"query": "退货运费谁出"}).json()["answer_id"]
    log = AnswerLog(shop_settings.tickets_path)
    assert (log.get(in_shop).shop, log.get(plain).shop) == ("acme", None)  # type: ignore[union-attr]
