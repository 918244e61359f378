"""Answer ids, the answer log and 👍/👎 feedback: the stores and POST /v1/feedback."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.store import IndexStore, write_calibration
from kb.errors import ConfigError, NotFoundError
from kb.settings import Settings
from service.api import create_app
from service.schemas import ANSWER_ID_PATTERN, Answer, AnswerItem, HandoffInfo, SourceRef
from service.tickets import AnswerLog, FeedbackStore, TicketStore
from tests.fakes import FAKE_CAL

QUESTION = "七天无理由退货需要满足什么条件？"


@pytest.fixture
def settings(tiny_settings: Settings, tiny_index) -> Settings:
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    return tiny_settings


@pytest.fixture
def client(settings: Settings, fake_encoder):
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        yield c


def _answer(query: str = "退款多久到账", session_id: str = "S1", decision: str = "answer", **kw: object) -> Answer:
    item = AnswerItem(
        id="refund-time", title="退款多久到账？", text="一般三个工作日。", score=0.9,
        source=SourceRef(doc_id="refund-time", section="退货退款", kind="faq"),
    )  # fmt: skip
    fields: dict[str, object] = {
        "query": query,
        "normalized_query": query,
        "decision": decision,
        "answers": [item],
        "session_id": session_id,
        "elapsed_ms": 3.5,
        "trace": {"confidence": 0.91},
    }
    return Answer.model_validate({**fields, **kw})


def _metric(text: str, name: str, vote: str) -> float:
    m = re.search(rf'^{name}{{vote="{vote}"}} ([0-9.]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


# --- answer ids and the answer log -----------------------------------------------------------------------------
def test_every_answer_has_its_own_id():
    ids = {_answer().answer_id for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(ANSWER_ID_PATTERN, i) for i in ids)


def test_answer_log_records_masked_and_reads_back(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    a = _answer("我电话13812345678，退款多久到账")
    row = log.record(a)
    assert row.query == "我电话[手机号]，退款多久到账"
    assert (row.decision, row.reason, row.top_id, row.confidence, row.elapsed_ms) == (
        "answer",
        None,
        "refund-time",
        0.91,
        3.5,
    )
    assert log.get(a.answer_id) == row and log.get("A0000000000000000") is None
    raw = sqlite3.connect(tmp_path / "t.db").execute("SELECT query FROM answers").fetchone()[0]
    assert "13812345678" not in raw
    assert log.count() == 1


def test_answer_log_keeps_handoff_tickets_and_suggestions(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    sugg = _answer().answers
    h = _answer(decision="handoff", reason="low_confidence", answers=[], suggestions=sugg,
                handoff=HandoffInfo(ticket_id="T0123456789abcdef", message="转人工"), trace={})  # fmt: skip
    row = log.record(h)
    assert (row.top_id, row.ticket_id, row.confidence) == ("refund-time", "T0123456789abcdef", None)
    empty = log.record(_answer("", decision="handoff", reason="empty_query", answers=[],
                               handoff=HandoffInfo(ticket_id="-", message="请输入"), trace={}))  # fmt: skip
    assert empty.ticket_id is None and empty.top_id is None


def test_answer_log_list_since_and_limit(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    rows = [log.record(_answer(f"问题{i}")) for i in range(5)]
    assert [r.answer_id for r in log.list()] == [r.answer_id for r in reversed(rows)]  # newest first
    assert len(log.list(limit=2)) == 2
    since = log.list(since=rows[2].created)
    assert {r.answer_id for r in since} >= {r.answer_id for r in rows[3:]}
    assert all(r.created >= rows[2].created for r in since)
    assert log.list(since=time.time() + 60) == []
    with pytest.raises(ConfigError):
        log.list(limit=0)


def test_the_stores_share_the_tickets_database(tmp_path: Path):
    path = tmp_path / "t.db"
    tickets, log, votes = TicketStore(path), AnswerLog(path), FeedbackStore(path)
    tickets.create("转人工", "user_requested", "S1", [])
    a = log.record(_answer())
    votes.vote(a.answer_id, "S1", "up")
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tickets", "answers", "feedback"} <= tables
    assert tickets.count() == 1 and log.count() == 1 and votes.counts() == {"up": 1, "down": 0}


# --- the feedback store ------------------------------------------------------------------------------------------
def test_a_second_vote_replaces_the_first(tmp_path: Path):
    log, store = AnswerLog(tmp_path / "t.db"), FeedbackStore(tmp_path / "t.db")
    a = log.record(_answer())
    first = store.vote(a.answer_id, "S1", "up")
    assert first.previous is None and first.feedback.vote == "up"
    second = store.vote(a.answer_id, "S1", "down", "没说清楚，电话13812345678")
    assert second.previous == "up"
    got = store.get(a.answer_id)
    assert got is not None and got.vote == "down" and got.comment == "没说清楚，电话[手机号]"
    assert got.created == first.feedback.created and got.updated >= got.created
    assert store.counts() == {"up": 0, "down": 1}
    assert [f.answer_id for f in store.list()] == [a.answer_id]


def test_vote_on_unknown_or_foreign_answer_is_not_found(tmp_path: Path):
    log, store = AnswerLog(tmp_path / "t.db"), FeedbackStore(tmp_path / "t.db")
    a = log.record(_answer(session_id="S1"))
    with pytest.raises(NotFoundError, match="no answer"):
        store.vote("A0000000000000000", "S1", "up")
    with pytest.raises(NotFoundError):  # another session's answer looks the same as a missing one
        store.vote(a.answer_id, "S2", "up")
    assert store.counts() == {"up": 0, "down": 0}


def test_concurrent_votes_leave_one_row(tmp_path: Path):
    path = tmp_path / "t.db"
    a = AnswerLog(path).record(_answer())
    store = FeedbackStore(path)
    errors: list[BaseException] = []

    def voter(vote: str) -> None:
        try:
            for _ in range(20):
                store.vote(a.answer_id, "S1", vote)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=voter, args=(v,)) for v in ("up", "down", "up", "down")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(store.counts().values()) == 1


# --- over HTTP -------------------------------------------------------------------------------------------------
def test_answers_over_http_are_logged(client: TestClient, settings: Settings):
    r = client.post("/v1/answer", json={"query": QUESTION})
    data = r.json()
    assert re.fullmatch(ANSWER_ID_PATTERN, data["answer_id"])
    client.app.state.kefu.logged_answers()  # type: ignore[attr-defined]  # rows are written in batches
    row = AnswerLog(settings.tickets_path).get(data["answer_id"])
    assert row is not None
    assert (row.session_id, row.decision, row.top_id) == (data["session_id"], "answer", "refund-seven-day")
    assert row.confidence == data["trace"]["confidence"]
    h = client.post("/v1/answer", json={"query": "转人工，我电话13812345678", "session_id": data["session_id"]}).json()
    client.app.state.kefu.logged_answers()  # type: ignore[attr-defined]
    row = AnswerLog(settings.tickets_path).get(h["answer_id"])
    assert row is not None and row.ticket_id == h["handoff"]["ticket_id"] and "[手机号]" in row.query
    assert h["answer_id"] != data["answer_id"]


def test_feedback_over_http(client: TestClient, settings: Settings):
    a = client.post("/v1/answer", json={"query": QUESTION}).json()
    body = {"answer_id": a["answer_id"], "session_id": a["session_id"], "vote": "up"}
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"answer_id": a["answer_id"], "vote": "up", "replaced": None}
    r = client.post("/v1/feedback", json={**body, "vote": "down", "comment": "  答非所问  "})
    assert r.json() == {"answer_id": a["answer_id"], "vote": "down", "replaced": "up"}
    client.post("/v1/feedback", json={**body, "vote": "down", "comment": "还是不对"})  # same vote, new comment
    got = FeedbackStore(settings.tickets_path).get(a["answer_id"])
    assert got is not None and (got.vote, got.comment) == ("down", "还是不对")
    metrics = client.get("/metrics").text
    assert _metric(metrics, "kefu_feedback_total", "up") == 1.0  # the first vote, counted once
    assert _metric(metrics, "kefu_feedback_total", "down") == 0.0
    assert _metric(metrics, "kefu_feedback_changed_total", "down") == 1.0  # one change, not two
    assert 'kefu_requests_total{path="/v1/feedback",status="200"}' in metrics


def test_feedback_on_an_unknown_answer_is_404(client: TestClient):
    a = client.post("/v1/answer", json={"query": QUESTION}).json()
    for answer_id, session in [("A0123456789abcdef", a["session_id"]), (a["answer_id"], "Sother")]:
        r = client.post("/v1/feedback", json={"answer_id": answer_id, "session_id": session, "vote": "down"})
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "not_found"
        assert "answer_id" in r.json()["message"] and "/v1/answer" in r.json()["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"vote": "meh"},
        {"vote": None},
        {"comment": "长" * 501},
        {"comment": "\ud800"},
        {"answer_id": "not-an-id"},
        {"session_id": "bad id!"},
        {"extra": 1},
    ],
    ids=["vote", "no-vote", "long-comment", "surrogate", "answer-id", "session-id", "extra-field"],
)
def test_feedback_validation(client: TestClient, change: dict):
    body = {"answer_id": "A0123456789abcdef", "session_id": "S1", "vote": "up", **change}
    # json.dumps escapes a lone surrogate as \\ud800, as a browser's JSON.stringify does
    r = client.post("/v1/feedback", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error", "message"}


def test_feedback_preflight_follows_cors_settings(settings: Settings, fake_encoder):
    headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        assert "access-control-allow-origin" not in c.options("/v1/feedback", headers=headers).headers
    s = settings.with_overrides(cors_origins=["https://shop.example"])
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        r = c.options("/v1/feedback", headers=headers)
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
