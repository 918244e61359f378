"""The prepare stage alone: the text the rules read, the text searched, a follow-up's readings."""

from __future__ import annotations

import pytest

from kb.errors import InputError
from service.pipeline.prepare import Preparer, check_request
from service.schemas import MAX_HISTORY_TURNS, HistoryTurn
from service.sessions import SessionStore, Turn
from service.speller import Speller

INVOICE_TEXTS = ["发票怎么开", "电子发票在哪下载", "发票抬头", "补开发票", "发票丢了"] * 2
FIRST = "七天无理由退货需要满足什么条件?"  # normalised, as the session keeps it


def _preparer(**kw: object) -> Preparer:
    return Preparer(sessions=kw.pop("sessions", SessionStore()), speller=Speller(INVOICE_TEXTS), **kw)  # type: ignore[arg-type]


def test_the_rules_read_the_normalised_message_and_the_search_reads_it_cleaned():
    p = _preparer().run("你好，發漂怎么开", "S1")
    assert (p.query, p.session_id) == ("你好，發漂怎么开", "S1")
    assert p.norm == "你好,发漂怎么开"  # Traditional → Simplified, full-width punctuation; the greeting stays
    assert p.text == "发票怎么开"  # greeting stripped, the pinyin typo put back
    assert [(c.typed, c.corrected, c.word) for c in p.corrections] == [("漂", "票", "发票")]
    assert p.readings == ()  # no session, no history


@pytest.mark.parametrize(
    ("option", "norm", "text"),
    [
        ({}, "你好,发漂怎么开", "发票怎么开"),
        ({"correct_typos": False}, "你好,发漂怎么开", "发漂怎么开"),
        ({"strip_greetings": False}, "你好,发漂怎么开", "你好,发票怎么开"),
        ({"normalize_queries": False}, "你好，發漂怎么开", "發漂怎么开"),  # 發漂 is no typo of a KB word
    ],
)
def test_each_step_can_be_switched_off(option: dict[str, bool], norm: str, text: str):
    prep = _preparer(**option)
    p = prep.run("你好，發漂怎么开", "S1")
    assert (p.norm, p.text) == (norm, text)
    assert prep.text("你好，發漂怎么开") == text  # what eval and ranker training search


def test_a_follow_up_is_read_with_the_sessions_previous_question_and_the_session_is_not_written():
    sessions = SessionStore()
    sessions.add("S1", Turn(FIRST))
    prep = _preparer(sessions=sessions)
    assert prep.run("那运费呢", "S1").readings == (f"{FIRST} 那运费呢",)
    assert prep.run("那运费呢", "S2").readings == ()  # another session
    whole = prep.run("退货的运费应该由谁来承担呢，七天之内可以退吗", "S1")
    assert whole.readings == ()  # not a follow-up: its reading with context waits (``late_readings``)
    assert whole.late_readings == (f"{FIRST} 退货的运费应该由谁来承担呢,七天之内可以退吗",)
    assert prep.run("那运费呢", "S1").late_readings == ()  # a follow-up's are searched at once
    assert _preparer(sessions=sessions, use_context=False).run("那运费呢", "S1").readings == ()
    assert _preparer(sessions=sessions, use_context=False).run(whole.query, "S1").late_readings == ()
    assert sessions.last("S1") == Turn(FIRST) and len(sessions) == 1  # reading never writes


def test_history_stands_in_for_the_session_with_the_customer_and_the_agent_turn():
    sessions = SessionStore()
    sessions.add("S1", Turn("怎么查看订单的物流信息?"))
    history = [
        HistoryTurn(role="customer", text="你好，七天无理由退货需要满足什么条件？"),
        HistoryTurn(role="agent", text="签收七天内都能申请"),
    ]
    p = _preparer(sessions=sessions).run("那运费呢", "S1", history)
    assert p.readings == (f"{FIRST} 那运费呢", "签收七天内都能申请 那运费呢")  # greeting stripped, normalised
    only_agent = [HistoryTurn(role="agent", text="退货的运费一般由买家承担")]
    assert _preparer().run("那呢", "S1", only_agent).readings == ("退货的运费一般由买家承担 那呢",)


@pytest.mark.parametrize(
    ("query", "top_k", "history", "message"),
    [
        (123, 3, None, "must be a string"),
        (123, 0, None, "must be a string"),  # the query is checked first
        ("a\ud800", 3, None, "lone surrogate"),
        ("退" * 11, 3, None, "11 characters; the limit is 10"),
        ("退货", 0, None, "top_k=0"),
        ("退货", 0, [{"role": "customer", "text": "x"}], "top_k=0"),  # top_k before history
        ("退货", 3, [HistoryTurn(role="customer", text="x")] * (MAX_HISTORY_TURNS + 1), "at most the last"),
        ("退货", 3, [{"role": "customer", "text": "x"}], "history\\[0\\]"),
    ],
)
def test_request_limits(query: object, top_k: int, history: list, message: str):
    with pytest.raises(InputError, match=message):
        check_request(query, top_k, history, max_query_chars=10)


def test_request_limits_pass_and_top_k_none_is_not_checked():
    check_request("退" * 10, 1, [HistoryTurn(role="agent", text="x")], max_query_chars=10)
    check_request("退货", None, None, max_query_chars=10)
