"""The answerer on order requests: the needs_order handoff with suggestions, replies and order
conversations, what comes first, and switching detection off."""

from __future__ import annotations

import pytest

from kb.settings import Settings
from service.answerer import Answerer
from service.runtime import options_from
from service.schemas import HistoryTurn
from tests.service.conftest import assert_shape


@pytest.mark.parametrize(
    ("query", "article"),
    [("我的快递到哪了", "logistics-track"), ("订单123456789012帮我退款", None), ("帮我查一下物流", "logistics-track")],
)
def test_order_request_is_handed_off_with_the_article_as_a_suggestion(
    answerer: Answerer, query: str, article: str | None
) -> None:
    a = answerer.answer(query, session_id="S-order")
    assert_shape(a)  # suggestions are the three best candidates, in ranking order
    assert (a.decision, a.reason) == ("handoff", "needs_order")
    assert a.answers == []  # never a bare answer
    assert len(a.suggestions) == 3
    if article is not None:
        assert a.suggestions[0].id == article
    assert a.trace["fired"] == "needs_order" and a.trace["order_rule"]
    assert a.trace["candidates"]  # it still retrieved
    assert a.handoff is not None and answerer.tickets is not None
    [ticket] = answerer.tickets.list(reason="needs_order")
    assert (ticket.id, ticket.session_id) == (a.handoff.ticket_id, "S-order")
    assert ticket.candidates[0]["id"] == a.suggestions[0].id


@pytest.mark.parametrize(
    ("query", "expected_id"),
    [("怎么查物流", "logistics-track"), ("七天无理由退货需要满足什么条件？", "refund-seven-day")],
)
def test_how_to_questions_are_still_answered(answerer: Answerer, query: str, expected_id: str) -> None:
    a = answerer.answer(query)
    assert (a.decision, a.answers[0].id) == ("answer", expected_id)


@pytest.mark.parametrize("query", ["退款多久到账", "怎么修改收货地址", "怎么取消订单", "快递一般几天到"])
def test_general_questions_go_through_the_confidence_decision(answerer: Answerer, query: str) -> None:
    a = answerer.answer(query)
    assert a.reason != "needs_order"
    assert a.trace["fired"].startswith("confidence→")


def test_a_reply_is_handed_off_as_needing_the_order(answerer: Answerer) -> None:
    a = answerer.answer("是的 货已经发出了")
    assert (a.decision, a.reason, a.trace["order_rule"]) == ("handoff", "needs_order", "reply")
    assert a.answers == []


def test_a_statement_in_a_conversation_about_the_order_is_handed_off(answerer: Answerer) -> None:
    statement = "买的时候显示明天送的"
    card = HistoryTurn(role="customer", text="[订单编号:[订单x]，订单金额:[金额x]]")
    asked = HistoryTurn(role="agent", text="麻烦您提供一下订单号")
    for history in ([card], [HistoryTurn(role="customer", text="你好"), asked]):
        a = answerer.answer(statement, history=history)
        assert (a.decision, a.reason, a.trace["order_rule"]) == ("handoff", "needs_order", "order_conversation")
    # the same message with no order in the conversation goes to the confidence decision
    assert answerer.answer(statement).trace["fired"].startswith("confidence→")
    assert answerer.answer(statement, history=[HistoryTurn(role="customer", text="怎么开发票")]).reason != "needs_order"
    # and a question in an order conversation is still the help center's, unless it only follows up
    assert answerer.answer("怎么查物流", history=[card]).trace["fired"].startswith("confidence→")
    a = answerer.answer("查到了吗", history=[card])
    assert (a.reason, a.trace["order_rule"]) == ("needs_order", "order_followup")
    assert answerer.answer("查到了吗").reason != "needs_order"


def test_a_confident_answer_in_a_conversation_about_the_order_is_offered_as_options(answerer: Answerer) -> None:
    """能改下收货地址吗 after the order number: the article may or may not settle it, so the shopper
    gets it among 您是不是想问 options, not as the answer to their order."""
    card = HistoryTurn(role="customer", text="[订单编号:[订单x]，订单金额:[金额x]]")
    alone = answerer.answer("怎么查看订单的物流信息")
    assert (alone.decision, alone.answers[0].id) == ("answer", "logistics-track")
    a = answerer.answer("怎么查看订单的物流信息", history=[card])
    assert (a.decision, a.reason, a.trace["held"]) == ("clarify", "ambiguous", "order_context")
    assert a.answers[0].id == "logistics-track" and "转人工" in (a.message or "")  # how to reach a person too
    # with a conversation about something else it is answered as before
    other = answerer.answer("怎么查看订单的物流信息", history=[HistoryTurn(role="customer", text="怎么开发票")])
    assert (other.decision, "held" in other.trace) == ("answer", False)


def test_the_session_remembers_a_conversation_about_the_order(answerer: Answerer) -> None:
    assert answerer.answer("我的快递到哪了", session_id="S-conv").reason == "needs_order"
    a = answerer.answer("买的时候显示明天送的", session_id="S-conv")
    assert (a.reason, a.trace["order_rule"]) == ("needs_order", "order_conversation")
    assert answerer.answer("买的时候显示明天送的", session_id="S-other").reason != "needs_order"


def test_a_request_for_a_person_and_a_sensitive_message_come_first(answerer: Answerer) -> None:
    assert answerer.answer("我的快递到哪了，转人工").reason == "user_requested"
    assert answerer.answer("我的快递三天没动了，再不到我就报警").reason == "sensitive"


def test_order_detection_can_be_switched_off(answerer: Answerer, monkeypatch: pytest.MonkeyPatch) -> None:
    off = answerer.variant(order_detection=False)
    a = off.answer("我的快递到哪了")
    assert (a.decision, a.answers[0].id) == ("answer", "logistics-track")
    assert options_from(Settings()).order_detection is True
    monkeypatch.setenv("KEFU_ORDER_DETECTION", "false")
    assert options_from(Settings()).order_detection is False
