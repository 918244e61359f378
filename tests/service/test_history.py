"""Conversation history from the caller: validation at every edge, and follow-ups read with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from indexer.normalize import normalize
from kb.errors import InputError
from service.answerer import Answerer
from service.schemas import MAX_HISTORY_TURNS, MAX_TURN_CHARS, HistoryTurn
from tests.fakes import FAKE_CAL

FIRST = "七天无理由退货需要满足什么条件？"


@pytest.fixture
def answerer(tiny_answerer: Answerer) -> Answerer:
    tiny_answerer.calibration = FAKE_CAL
    return tiny_answerer


def test_a_follow_up_is_read_with_the_previous_customer_turn(answerer: Answerer):
    history = [HistoryTurn(role="customer", text=FIRST), HistoryTurn(role="agent", text="可以的，签收七天内都能申请。")]
    a = answerer.answer("那运费呢", history=history)
    alone = answerer.answer("那运费呢")
    assert a.trace["used_context"] is True and FIRST.rstrip("？") in a.trace["retrieval_text"]
    assert a.trace["confidence"] > alone.trace["confidence"]
    # the caller's history replaces kefu's own memory of the session
    other = answerer.answer("怎么查看订单的物流信息？")
    b = answerer.answer("那运费呢", session_id=other.session_id, history=history)
    assert FIRST.rstrip("？") in b.trace["retrieval_text"]


def test_the_agents_reply_can_name_the_topic(answerer: Answerer):
    history = [
        HistoryTurn(role="customer", text="你好"),
        HistoryTurn(role="agent", text="退货的运费应该由谁来承担？这个问题我来解答"),
    ]
    a = answerer.answer("那呢", history=history)
    assert a.trace["retrieval_text"].startswith("退货的运费")


def test_history_without_a_follow_up_changes_nothing(answerer: Answerer):
    history = [HistoryTurn(role="customer", text="怎么查看订单的物流信息？")]
    a = answerer.answer(FIRST, history=history)
    assert a.trace["used_context"] is False and a.trace["retrieval_text"] == normalize(FIRST)


def test_a_whole_sentence_understood_only_with_its_context_is_offered_not_answered(answerer: Answerer):
    """邮费要我自己付吗 is no follow-up; alone kefu hands it off, read after a question about returns
    it finds the shipping-fee entry, as a 您是不是想问 option: the context is kefu's guess."""
    history = [HistoryTurn(role="customer", text=FIRST)]
    alone = answerer.explain("邮费要我自己付吗")
    assert alone.outcome == "handoff" and not alone.used_context
    d = answerer.explain("邮费要我自己付吗", history=history)
    assert d.used_context and d.searched is not None and d.searched.guessed_context
    assert d.readings == (f"{normalize(FIRST)} 邮费要我自己付吗",)
    a = answerer.answer("邮费要我自己付吗", history=history)
    assert (a.decision, a.reason, a.trace["used_context"]) == ("clarify", "ambiguous", True)
    assert "refund-seven-day" in [i.id for i in a.answers]


def test_library_callers_get_the_same_limits(answerer: Answerer):
    with pytest.raises(InputError, match=f"at most the last {MAX_HISTORY_TURNS}"):
        answerer.answer("那运费呢", history=[HistoryTurn(role="customer", text="退货")] * (MAX_HISTORY_TURNS + 1))
    with pytest.raises(InputError, match="role"):
        answerer.answer("那运费呢", history=[{"role": "customer", "text": "退货"}])  # type: ignore[list-item]


@pytest.fixture
def client(tiny_settings, tiny_index, fake_encoder):
    from service.api import create_app

    with TestClient(create_app(tiny_settings, encoder=fake_encoder)) as c:
        yield c


@pytest.mark.parametrize(
    ("history", "fragment"),
    [
        ([{"role": "customer", "text": "退货"}] * (MAX_HISTORY_TURNS + 1), "history"),
        ([{"role": "customer", "text": "退" * (MAX_TURN_CHARS + 1)}], str(MAX_TURN_CHARS)),
        ([{"role": "seller", "text": "退货"}], "customer"),
        ([{"role": "customer"}], "text"),
        ([{"role": "customer", "text": ""}], "text"),
        ([{"role": "agent", "text": "退货", "time": 1}], "Extra"),
        ("退货", "list"),
    ],
)
def test_bad_history_is_a_422_that_says_what_is_wrong(client: TestClient, history, fragment: str):
    r = client.post("/v1/answer", json={"query": "那运费呢", "history": history})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error", "message"} and fragment in body["message"] and "history" in body["message"]


def test_history_over_http(client: TestClient):
    r = client.post("/v1/answer", json={"query": "那运费呢", "history": [{"role": "customer", "text": FIRST}]})
    assert r.status_code == 200 and r.json()["trace"]["used_context"] is True


def test_cli_history_file_and_json_lines(env, tmp_path: Path):
    from kefu_cli import app

    runner = CliRunner()
    good = tmp_path / "h.json"
    good.write_text(json.dumps([{"role": "customer", "text": FIRST}], ensure_ascii=False), "utf-8")
    r = runner.invoke(app, ["ask", "--json", "--history", str(good), "那运费呢"])
    assert r.exit_code == 0, r.output
    assert FIRST.rstrip("？") in json.loads(r.stdout)["trace"]["retrieval_text"]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"role": "seller", "text": "x"}]', "utf-8")
    r = runner.invoke(app, ["ask", "--history", str(bad), "那运费呢"])
    assert r.exit_code != 0 and "history" in r.output and "customer" in r.output
    line = json.dumps({"query": "那运费呢", "history": [{"role": "customer", "text": FIRST}]}, ensure_ascii=False)
    r = runner.invoke(app, ["ask", "--json", "-"], input=line + '\n{"query": "x", "history": "no"}\n')
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0]["trace"]["used_context"] is True
    assert "error" in rows[1] and "history" in rows[1]["error"]
