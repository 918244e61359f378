"""The route stage alone (rules in order of precedence), and the promise it makes to the answerer:
a request for a person or a sensitive message is decided without an encoder call or a candidate pool."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import numpy as np
import pytest

from indexer.normalize import normalize
from service.answerer import Answerer
from service.pipeline.prepare import Prepared
from service.pipeline.route import Router
from service.sensitive import SensitiveDetector
from tests.fakes import FAKE_CAL

SENSITIVE = SensitiveDetector({"legal": ["起诉"], "police": ["报警"], "self_harm": ["不想活"]})


def _prepared(query: str) -> Prepared:
    norm = normalize(query)
    return Prepared(query, norm, norm, (), (), "S1")


@pytest.mark.parametrize(
    ("query", "reason", "decision", "fired", "search", "remember"),
    [
        ("？？", "empty_query", "handoff", "empty_query", False, False),
        ("", "empty_query", "handoff", "empty_query", False, False),
        ("你好", "greeting", "clarify", "greeting", False, False),
        ("转人工", "user_requested", "handoff", "user_requested", False, True),
        ("我要起诉你们，转人工", "user_requested", "handoff", "user_requested", False, True),  # person first
        ("看中商品 人工", "user_requested", "handoff", "user_requested", False, True),  # read as typed, in goes
        # sensitive comes before merchant, merchant before needs_order (a seller's 这单顾客没收到 is no shopper's order)
        ("入驻的店铺被人骗了要报警", "sensitive", "handoff", "sensitive:police", True, True),
        ("这单顾客说没收到货", "merchant", "handoff", "merchant:their_customer", False, True),
        # searched: what to read while a person comes (the police, a court: a dispute escalated)
        ("我的快递到哪了？再不到我就报警", "sensitive", "handoff", "sensitive:police", True, True),
        ("我的快递到哪了", "needs_order", "handoff", "needs_order", True, True),  # searched for suggestions
    ],
)
def test_rules_in_order_of_precedence(
    query: str, reason: str, decision: str, fired: str, search: bool, remember: bool
) -> None:
    rule = Router(sensitive=SENSITIVE).run(_prepared(query))
    assert rule is not None
    assert (rule.reason, rule.decision, rule.fired, rule.search, rule.remember) == (
        reason,
        decision,
        fired,
        search,
        remember,
    )
    assert (rule.order is not None) == (reason == "needs_order")
    assert (rule.merchant is not None) == (reason == "merchant")
    assert rule.suggest == (reason == "needs_order" or fired == "sensitive:police")  # its candidates ride along


def test_a_question_goes_on_to_retrieval() -> None:
    assert Router(sensitive=SENSITIVE).run(_prepared("退货运费谁出")) is None


def test_needs_order_names_its_wording_and_can_be_switched_off() -> None:
    rule = Router(sensitive=SENSITIVE).run(_prepared("订单123456789012帮我退款"))
    assert rule is not None and rule.order is not None and rule.order.rule == "order_id"
    assert Router(sensitive=SENSITIVE, order_detection=False).run(_prepared("我的快递到哪了")) is None


def test_merchant_names_its_wording_and_can_be_switched_off() -> None:
    rule = Router(sensitive=SENSITIVE).run(_prepared("客户要开发票，是平台开吗"))
    assert rule is not None and rule.merchant is not None and rule.merchant.text == "客户要"
    assert Router(sensitive=SENSITIVE, merchant_detection=False).run(_prepared("客户要开发票，是平台开吗")) is None


def test_the_bot_told_it_failed_asks_for_a_person_unless_the_kb_answers_small_talk() -> None:
    rule = Router(sensitive=SENSITIVE).run(_prepared("你都听不懂吗"))
    assert rule is not None and rule.reason == "user_requested"
    # a voice assistant whose FAQ holds 我说话你都听不懂 answers it from its entry
    assert Router(sensitive=SENSITIVE, greeting_detection=False).run(_prepared("你都听不懂吗")) is None


def test_configured_thanks_get_the_closing() -> None:
    """A thanks of the KB's greetings.yaml ends the chat like the built-in ones (its closing reply)."""
    router = Router(sensitive=SENSITIVE, greetings=["感激不尽"], thanks=["感激不尽"])
    rule = router.run(_prepared("感激不尽！"))
    assert rule is not None and (rule.reason, rule.fired) == ("greeting", "closing")
    only_greeting = Router(sensitive=SENSITIVE, greetings=["感激不尽"]).run(_prepared("感激不尽！"))
    assert only_greeting is not None and only_greeting.fired == "greeting"


def test_configured_greetings_count() -> None:
    assert Router(sensitive=SENSITIVE).run(_prepared("亲亲早安")) is None
    rule = Router(sensitive=SENSITIVE, greetings=["亲亲早安"]).run(_prepared("亲亲早安！"))
    assert rule is not None and rule.reason == "greeting"


def test_handoff_candidates_has_a_person_or_sensitive_handoff_searched() -> None:
    router = Router(sensitive=SENSITIVE, handoff_candidates=True)
    for query in ("转人工", "我要起诉"):
        rule = router.run(_prepared(query))
        assert rule is not None and rule.search
    empty = router.run(_prepared("？"))
    assert empty is not None and not empty.search


# --- what routing first buys the answerer -----------------------------------------------------------
PERSON = ["转人工", "人工", "你好，转人工", "七天无理由退货怎么弄？转人工"]
RULE_QUERIES = [*PERSON, "退货运费谁出？充电宝都炸了", "？", "你好", "怎么申请入驻"]


@pytest.fixture
def counted(tiny_answerer: Answerer) -> tuple[Answerer, list[Sequence[str]]]:
    """The tiny answerer with an encoder that counts its calls."""
    calls: list[Sequence[str]] = []
    encode = tiny_answerer.encode

    def counting(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        return encode(texts)

    tiny_answerer.calibration = FAKE_CAL
    tiny_answerer.encode = counting
    return tiny_answerer, calls


def test_a_rule_handoff_makes_no_encoder_call_and_no_candidate_pool(
    counted: tuple[Answerer, list[Sequence[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    answerer, calls = counted

    def searched(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rule decided before retrieval must not search")

    for name in ("candidate_pool", "lexical_evidence", "search_units", "search_units_fused", "anchor_scores"):
        monkeypatch.setattr(answerer.index, name, searched)
    for query in RULE_QUERIES:
        a = answerer.answer(query)
        assert a.reason in ("user_requested", "sensitive", "merchant", "empty_query", "greeting"), query
        assert answerer.explain(query).searched is None
    assert calls == []


def test_only_an_escalated_dispute_among_sensitive_messages_is_searched() -> None:
    router = Router(sensitive=SENSITIVE)
    legal, harm = router.run(_prepared("我要起诉")), router.run(_prepared("我不想活了"))
    assert legal is not None and legal.search and legal.suggest
    assert harm is not None and not harm.search and not harm.suggest


def test_a_question_and_a_needs_order_message_are_encoded_once(counted: tuple[Answerer, list[Sequence[str]]]) -> None:
    answerer, calls = counted
    assert answerer.answer("退货运费谁出").decision == "answer"
    assert answerer.answer("我的快递到哪了").reason == "needs_order"
    assert calls == [["退货运费谁出"], ["我的快递到哪了"]]
    answerer.options = dataclasses.replace(answerer.options, handoff_candidates=True)
    assert answerer.answer("转人工").answers  # the older behaviour: searched for the agent's context
    assert calls[-1] == ["转人工"]


def test_a_request_for_a_person_takes_well_under_a_millisecond(counted: tuple[Answerer, list[Sequence[str]]]) -> None:
    answerer, _ = counted
    answerer.tickets = None  # the pipeline's own time (a ticket is one SQLite insert more)
    times = [answerer.answer("转人工").elapsed_ms for _ in range(50)]
    assert statistics.median(times) < 1.0, times
