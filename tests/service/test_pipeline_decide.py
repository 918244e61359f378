"""The decide stage alone (rule or calibrated confidence → Decision), the trace as a view of the
Decision, and ``Answerer.explain`` against ``Answerer.answer``."""

from __future__ import annotations

import dataclasses

import pytest

from service.answerer import Answerer
from service.orders import OrderMatch
from service.pipeline.decide import Decider, Decision
from service.pipeline.prepare import Prepared
from service.pipeline.retrieve import Candidate, Searched
from service.pipeline.route import Rule
from service.policy import FEATURES, Calibration, Features
from service.speller import Correction
from tests.fakes import FAKE_CAL

FEATS = Features(0.512345678, 0.5, 0.1, 0.2, 0.5, 0.3, 2.0)
CANDS = (Candidate("e1", "e1", 0.512345678, 0), Candidate("rules#1", "rules", 0.4, 7))
PREPARED = Prepared("你好，发漂怎么开", "你好,发漂怎么开", "发票怎么开", (Correction(1, "漂", "票", "发票"),), (), "S1")
PERSON = Rule("user_requested", "handoff", "user_requested", search=False, remember=True)
GREETING = Rule("greeting", "clarify", "greeting", search=False, remember=False)
MATCH = OrderMatch("order_id", "单号123")
ORDER = Rule("needs_order", "handoff", "needs_order", search=True, remember=True, order=MATCH, suggest=True)


def _searched(confidence: float, text: str = "发票怎么开", synonyms: tuple[str, ...] = ()) -> Searched:
    return Searched(text, False, synonyms, CANDS, FEATS, confidence)


def _decide(rule: Rule | None, searched: Searched | None, cal: Calibration = FAKE_CAL) -> Decision:
    return Decider(calibration=cal, build="B1").run(PREPARED, rule, searched)


@pytest.mark.parametrize(
    ("confidence", "outcome", "reason"),
    [(0.9, "answer", None), (0.42, "answer", None), (0.3, "clarify", "ambiguous"), (0.1, "handoff", "low_confidence")],
)
def test_the_confidence_decides_when_no_rule_fired(confidence: float, outcome: str, reason: str | None):
    d = _decide(None, _searched(confidence))
    assert (d.outcome, d.reason, d.rule, d.fired) == (outcome, reason, None, f"confidence→{outcome}")
    assert (d.confidence, d.features, d.candidates) == (confidence, FEATS, CANDS)
    assert (d.thresholds.answer_at, d.thresholds.clarify_at, d.thresholds.scope_at) == (0.42, 0.25, None)
    assert (d.calibration, d.build, d.query, d.session_id) == ("fake-encoder-test", "B1", PREPARED.query, "S1")
    assert d.remembered == "发票怎么开" and d.scope is None


def test_an_answer_from_a_guessed_context_is_offered_as_options():
    guessed = dataclasses.replace(_searched(0.9, text="上一句 发票怎么开"), used_context=True, guessed_context=True)
    d = _decide(None, guessed)
    assert (d.outcome, d.reason, d.fired, d.held) == ("clarify", "ambiguous", "confidence→clarify", "guessed_context")
    assert d.trace()["held"] == "guessed_context"
    assert _decide(None, dataclasses.replace(guessed, confidence=0.1)).outcome == "handoff"  # never raised
    plain = _decide(None, dataclasses.replace(guessed, guessed_context=False))
    assert (plain.outcome, plain.held) == ("answer", None) and "held" not in plain.trace()


def test_a_question_asked_in_a_chat_about_the_order_is_offered_as_options():
    in_order_chat = dataclasses.replace(PREPARED, order_context=True)
    decider = Decider(calibration=FAKE_CAL, build="B1")
    d = decider.run(in_order_chat, None, _searched(0.9))
    assert (d.outcome, d.reason, d.held, d.candidates) == ("clarify", "ambiguous", "order_context", CANDS)
    # only a confident answer is held back; a rule or a low confidence decides as before
    assert decider.run(in_order_chat, None, _searched(0.3)).held is None
    assert decider.run(in_order_chat, None, _searched(0.1)).outcome == "handoff"
    assert decider.run(in_order_chat, ORDER, _searched(0.99)).outcome == "handoff"


def test_a_rule_decides_whatever_the_confidence():
    d = _decide(PERSON, None)
    assert (d.outcome, d.reason, d.fired) == ("handoff", "user_requested", "user_requested")
    assert (d.searched, d.candidates, d.features, d.confidence, d.used_context) == (None, (), None, None, False)
    assert d.remembered == PREPARED.text  # the session still remembers the question
    assert _decide(GREETING, None).remembered is None
    searched = _decide(ORDER, _searched(0.99, text="上一句 发票怎么开"))
    assert (searched.outcome, searched.reason) == ("handoff", "needs_order")
    assert searched.remembered == "上一句 发票怎么开"  # the reading searched


def test_a_message_no_rule_decided_must_have_been_searched():
    with pytest.raises(ValueError, match="searched"):
        _decide(None, None)


def test_a_scope_model_decides_between_clarify_and_handoff():
    n = len(FEATURES)
    cal = Calibration(
        answer_at=0.9,
        clarify_at=0.5,
        weights=[0.0] * n,
        mean=[0.0] * n,
        scale=[1.0] * n,
        scope_weights=[0.0] * n,
        scope_bias=0.0,  # scope 0.5 for every query
        scope_at=0.4,
    )
    d = _decide(None, _searched(0.0), cal)
    assert (d.outcome, d.scope, d.thresholds.scope_at) == ("clarify", 0.5, 0.4)
    assert list(d.trace())[-3:] == ["scope", "scope_at", "fired"]


def test_the_trace_is_a_rounded_view_in_a_fixed_order():
    d = _decide(None, _searched(0.512345678, synonyms=("运费险",)))
    t = d.trace()
    assert list(t) == [
        "calibration",
        "build",
        "spelling",
        "retrieval_text",
        "used_context",
        "synonyms",
        "confidence",
        "answer_at",
        "clarify_at",
        "features",
        "candidates",
        "fired",
    ]
    assert t["spelling"] == ["漂→票 (发票)"] and t["synonyms"] == ["运费险"]
    assert t["confidence"] == 0.5123 and d.confidence == 0.512345678  # the Decision keeps the exact value
    assert t["features"] == {k: round(v, 4) for k, v in dataclasses.asdict(FEATS).items()}
    assert t["candidates"] == [
        {"id": "e1", "doc_id": "e1", "score": 0.5123},
        {"id": "rules#1", "doc_id": "rules", "score": 0.4},
    ]


def test_a_rule_decided_before_any_search_traces_only_what_fired():
    expected = {"calibration": "fake-encoder-test", "build": "B1", "fired": "user_requested"}
    assert _decide(PERSON, None).trace() == expected
    t = _decide(ORDER, _searched(0.2)).trace()
    assert list(t)[-3:] == ["fired", "order_rule", "order_match"] and "candidates" in t
    assert (t["order_rule"], t["order_match"]) == ("order_id", "单号123")


# --- explain: the decision without its effects -------------------------------------------------------
@pytest.mark.parametrize("query", ["退货运费谁出", "今天天气怎么样", "转人工", "我的快递到哪了", "你好", "？"])
def test_explain_is_the_decision_answer_renders(tiny_answerer: Answerer, query: str):
    tiny_answerer.calibration = FAKE_CAL
    assert tiny_answerer.tickets is not None
    tickets = tiny_answerer.tickets.count()
    d = tiny_answerer.explain(query, session_id="S-explain")
    assert tiny_answerer.sessions.last("S-explain") is None and tiny_answerer.tickets.count() == tickets
    a = tiny_answerer.answer(query, session_id="S-explain", top_k=10)
    assert (a.decision, a.reason, a.trace) == (d.outcome, d.reason, d.trace())
    shown = a.answers or a.suggestions
    assert [i.id for i in shown] == [c.id for c in d.candidates][: len(shown)]


def test_explain_reads_the_session_and_history_like_answer(tiny_answerer: Answerer):
    tiny_answerer.calibration = FAKE_CAL
    first = tiny_answerer.answer("七天无理由退货需要满足什么条件？")
    d = tiny_answerer.explain("那运费呢", session_id=first.session_id)
    assert d.used_context and d.readings == ("七天无理由退货需要满足什么条件? 那运费呢",)
    with pytest.raises(Exception, match="history"):
        tiny_answerer.explain("那运费呢", history=[{"role": "customer", "text": "x"}])  # type: ignore[list-item]
