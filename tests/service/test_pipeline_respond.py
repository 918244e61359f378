"""The respond stage alone: a Decision rendered as the API's Answer, with its session turn, ticket
and webhook."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from indexer.chunking import DocUnit
from indexer.folder import EntryInfo
from kb.clauses import PATH_SEP
from kb.schema import Replies
from service.merchant import MerchantMatch
from service.orders import OrderMatch
from service.pipeline.decide import Decision, Thresholds
from service.pipeline.prepare import Prepared
from service.pipeline.respond import (
    CLARIFY_PROMPT,
    CLOSING_REPLY,
    MERCHANT_MESSAGE,
    ORDER_CLARIFY_PROMPT,
    WELCOME_MAX_CHARS,
    Responder,
    empty_reply,
    greeting_reply,
    welcome_examples,
)
from service.pipeline.retrieve import Candidate, Searched
from service.pipeline.route import Rule
from service.policy import Features
from service.schemas import Decision as Outcome
from service.schemas import HistoryTurn, Reason
from service.sessions import SessionStore, Turn
from service.tickets import TicketStore
from service.webhook import Delivery, OrderEvent, OrderWebhook

ENTRIES = ("refund-shipping-fee", "refund-seven-day", "logistics-track")
EXAMPLES = ("退货的运费应该由谁来承担", "怎么查看订单的物流信息")  # the tiny KB's, by welcome_examples


class RecordingWebhook(OrderWebhook):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/hook")
        self.events: list[OrderEvent] = []

    def send(self, event: OrderEvent) -> Delivery:
        self.events.append(event)
        return Delivery(True, 204, None, 0.1)


@pytest.fixture
def responder(tiny_index, tmp_path: Path) -> Responder:
    return Responder(
        index=tiny_index,
        sessions=SessionStore(),
        tickets=TicketStore(tmp_path / "tickets.db"),
        webhook=RecordingWebhook(),
        handoff_message="请稍候",
    )


def _candidates(index) -> tuple[Candidate, ...]:
    """The three FAQ entries, then a rules-document chunk."""
    rules = next(r for r, c in enumerate(index.chunks) if c.kind == "rules")
    out = [Candidate(e, e, 0.9 - 0.1 * i + 1e-5, index.units[e][0]) for i, e in enumerate(ENTRIES)]
    return (*out, Candidate(index.chunks[rules].unit_id, index.chunks[rules].doc_id, 0.5, rules))


def _decision(
    index,
    outcome: Outcome,
    reason: Reason | None,
    rule: Rule | None = None,
    searched: bool = True,
    norm: str = "退货运费谁出",
) -> Decision:
    p = Prepared(norm, norm, norm, (), (), "S1")
    s = Searched(norm, False, (), _candidates(index), None, 0.5) if searched else None
    return Decision(p, outcome, reason, rule, s, None, Thresholds(0.42, 0.25), "test", "B1")


def test_an_answer_shows_top_k_candidates_and_remembers_the_question(responder: Responder):
    started = time.perf_counter()
    a = responder.run(_decision(responder.index, "answer", None), 2, started)
    assert [i.id for i in a.answers] == list(ENTRIES[:2])
    assert a.answers[0].text == responder.index.entries[ENTRIES[0]].answer and a.answers[0].score == 0.9
    assert (a.handoff, a.message, a.suggestions, a.session_id) == (None, None, [], "S1")
    assert responder.sessions.last("S1") == Turn("退货运费谁出", message="退货运费谁出")
    assert 0 <= a.elapsed_ms <= (time.perf_counter() - started) * 1000 + 0.01
    assert a.trace["fired"] == "confidence→answer"


def test_a_document_chunk_is_shown_with_its_document(responder: Responder):
    a = responder.run(_decision(responder.index, "answer", None), 4, time.perf_counter())
    rules = a.answers[3]
    assert (rules.source.kind, rules.source.doc_id) == ("rules", "rules-return")
    numerals = "一二三四五六七八九十"  # the tiny KB's clauses are 第一条 to 第三条
    assert rules.source.clause is not None and rules.title == f"《退货规范》第{numerals[rules.source.clause - 1]}条"


def test_a_clarify_offers_three_choices(responder: Responder):
    a = responder.run(_decision(responder.index, "clarify", "ambiguous"), 10, time.perf_counter())
    assert (len(a.answers), a.message) == (3, CLARIFY_PROMPT)


def test_options_offered_in_a_chat_about_the_order_say_how_to_reach_a_person(responder: Responder):
    held = dataclasses.replace(_decision(responder.index, "clarify", "ambiguous"), held="order_context")
    a = responder.run(held, 10, time.perf_counter())
    assert (len(a.answers), a.message) == (3, ORDER_CLARIFY_PROMPT) and "转人工" in ORDER_CLARIFY_PROMPT
    # a guessed context is asked the plain way; a KB words either in greetings.yaml
    guessed = dataclasses.replace(held, held="guessed_context")
    assert responder.run(guessed, 10, time.perf_counter()).message == CLARIFY_PROMPT
    responder.replies = Replies(clarify="Did you mean", clarify_order="For this order say 人工; or did you mean")
    assert responder.run(held, 10, time.perf_counter()).message == "For this order say 人工; or did you mean"
    assert responder.run(guessed, 10, time.perf_counter()).message == "Did you mean"


def test_a_greeting_is_answered_and_not_remembered(responder: Responder):
    rule = Rule("greeting", "clarify", "greeting", search=False, remember=False)
    a = responder.run(_decision(responder.index, "clarify", "greeting", rule, searched=False), 3, time.perf_counter())
    assert (a.answers, a.message, a.handoff) == ([], greeting_reply(EXAMPLES), None)
    assert all(f"“{q}”" in (a.message or "") for q in EXAMPLES)
    assert responder.sessions.last("S1") is None


@pytest.mark.parametrize("norm", ["?", ""])
def test_an_empty_message_is_handed_off_without_a_ticket(responder: Responder, norm: str):
    """No ticket is opened, so the reply asks for the question instead of promising a person
    (blank or punctuation alike; the handoff message, 请稍候 here, is for real handoffs)."""
    rule = Rule("empty_query", "handoff", "empty_query", search=False, remember=False)
    d = _decision(responder.index, "handoff", "empty_query", rule, searched=False, norm=norm)
    a = responder.run(d, 3, time.perf_counter())
    said = empty_reply(EXAMPLES[:1])
    assert a.handoff is not None and (a.handoff.ticket_id, a.handoff.message) == ("-", said)
    assert responder.tickets is not None and responder.tickets.count() == 0
    assert "人工" not in said and "客服接入" not in said and "问题" in said and EXAMPLES[0] in said


def test_a_kb_words_its_greeting_empty_and_clarify_replies(responder: Responder):
    """greetings.yaml ``replies:``: {examples} is filled (the empty reply suggests one), the
    clarify prompt is the KB's; a brace the KB wrote is kept as written."""
    kb = Replies(greeting="Hi {name}! Try {examples}", empty="Type a question, e.g. {examples}", clarify="Did you mean")
    r = responder
    r.replies = kb
    greet = Rule("greeting", "clarify", "greeting", search=False, remember=False)
    said = r.run(_decision(r.index, "clarify", "greeting", greet, searched=False), 3, time.perf_counter()).message
    assert said == f"Hi {{name}}! Try “{EXAMPLES[0]}”“{EXAMPLES[1]}”" == greeting_reply(EXAMPLES, kb.greeting)
    empty = Rule("empty_query", "handoff", "empty_query", search=False, remember=False)
    a = r.run(_decision(r.index, "handoff", "empty_query", empty, searched=False, norm=""), 3, time.perf_counter())
    assert a.handoff is not None and a.handoff.message == f"Type a question, e.g. “{EXAMPLES[0]}”"
    assert r.run(_decision(r.index, "clarify", "ambiguous"), 10, time.perf_counter()).message == "Did you mean"
    plain = "您好，请问有什么可以帮您？"
    assert greeting_reply(EXAMPLES, plain) == plain  # no {examples}: none said
    closing = Rule("greeting", "clarify", "closing", search=False, remember=False)
    closed = _decision(r.index, "clarify", "greeting", closing, searched=False)
    assert r.run(closed, 3, time.perf_counter()).message == CLOSING_REPLY  # the KB words none
    r.replies = Replies(closing="不客气，祝您购物愉快！")
    assert r.run(closed, 3, time.perf_counter()).message == "不客气，祝您购物愉快！"


def _entry(question: str, category: str) -> EntryInfo:
    return EntryInfo(id=question, question=question, answer="…", category=category)


def test_welcome_examples_are_a_question_of_each_largest_category_nearest_the_width():
    entries = [
        _entry("茶叶有保质期吗？", "保存"),
        _entry("可以开发票吗", "发票"),
        _entry("下单后多久发货？", "物流"),
        _entry("茶叶怎么保存", "保存"),
        _entry("包邮吗？", "物流"),
        _entry("普洱茶要怎么存放才能越陈越香，放多少年最好喝呢", "保存"),
    ]
    # 保存 (3) before 物流 (2); 发票 (1) is not reached; the question mark is dropped; the one nearest
    # 8 wide: 茶叶有保质期吗 (7) before 茶叶怎么保存 (6), 下单后多久发货 (7) before 包邮吗 (3); none over 16
    assert welcome_examples(entries) == ("茶叶有保质期吗", "下单后多久发货")
    assert welcome_examples(entries, n=3) == ("茶叶有保质期吗", "下单后多久发货", "可以开发票吗")


def test_welcome_examples_of_one_category_and_of_none():
    one = [_entry("运费", "茶"), _entry("有没有小包装的试饮装", "茶"), _entry("茶叶怎么保存？", "茶")]
    # its two nearest 8 wide (6 and 10: as near, the shorter first), not the keyword 运费
    assert welcome_examples(one) == ("茶叶怎么保存", "有没有小包装的试饮装")
    long = "这个问题写得很长很长，超过了一句问候里能举的例子该有的长度吗"
    assert len(long) > WELCOME_MAX_CHARS and welcome_examples([_entry(long, "x")]) == ()
    assert welcome_examples([]) == ()
    english = [_entry("How long does shipping take?", "Shipping"), _entry("Can I return an item?", "Returns")]
    assert welcome_examples(english) == ("How long does shipping take", "Can I return an item")  # letters count half
    # a KB without FAQ questions or article sections to suggest: the replies name no example
    assert greeting_reply(()) == "您好！我是智能客服，请直接描述您遇到的问题。"
    assert empty_reply(()) == "没有看到您的问题内容，请直接输入您想咨询的问题。"


def test_a_low_confidence_handoff_suggests_and_records_the_candidates(responder: Responder):
    a = responder.run(_decision(responder.index, "handoff", "low_confidence"), 3, time.perf_counter())
    assert a.answers == [] and [i.id for i in a.suggestions] == list(ENTRIES)
    assert a.handoff is not None and a.handoff.message == "请稍候"
    assert responder.tickets is not None
    [ticket] = responder.tickets.list()
    assert ticket.id == a.handoff.ticket_id and ticket.reason == "low_confidence" and ticket.session_id == "S1"
    assert ticket.candidates[0] == {"id": ENTRIES[0], "score": 0.9} and len(ticket.candidates) == 4


def test_a_sellers_handoff_says_who_takes_it_and_suggests_no_shoppers_article(responder: Responder):
    rule = Rule(
        "merchant", "handoff", "merchant:onboarding", False, True, merchant=MerchantMatch("onboarding", "申请入驻")
    )
    d = _decision(responder.index, "handoff", "merchant", rule, searched=False, norm="怎么申请入驻")
    a = responder.run(d, 3, time.perf_counter())
    assert a.handoff is not None and a.handoff.message == MERCHANT_MESSAGE and "商家" in MERCHANT_MESSAGE
    assert (a.answers, a.suggestions, a.trace["fired"], a.trace["merchant_match"]) == (
        [],
        [],
        "merchant:onboarding",
        "申请入驻",
    )
    assert responder.tickets is not None and responder.tickets.list()[0].reason == "merchant"
    responder.replies = Replies(merchant="商家请联系商家客服")  # greetings.yaml words it for a KB
    assert responder.run(d, 3, time.perf_counter()).handoff.message == "商家请联系商家客服"  # type: ignore[union-attr]


@pytest.mark.parametrize(("anchor_gap", "suggested"), [(-0.08, False), (-0.03, True), (-0.01, True), (0.05, True)])
def test_a_low_confidence_handoff_plainly_off_topic_suggests_nothing(
    responder: Responder, anchor_gap: float, suggested: bool
):
    """今天股市怎么样 asked of a tea shop: nearer the general out-of-scope examples than anything in
    the KB, so no 'while you wait' links; the agent's ticket keeps the candidates."""
    f = Features(0.85, 0.85, 0.01, anchor_gap, 0.1, 0.0, 2.0, 0.3)
    d = _decision(responder.index, "handoff", "low_confidence")
    assert d.searched is not None
    d = dataclasses.replace(d, searched=dataclasses.replace(d.searched, features=f))
    a = responder.run(d, 3, time.perf_counter())
    assert [i.id for i in a.suggestions] == (list(ENTRIES) if suggested else [])
    assert responder.tickets is not None and len(responder.tickets.list()[0].candidates) == 4


def test_a_person_requested_shows_its_candidates_only_when_searched(responder: Responder):
    rule = Rule("user_requested", "handoff", "user_requested", search=True, remember=True)
    a = responder.run(_decision(responder.index, "handoff", "user_requested", rule), 2, time.perf_counter())
    assert [i.id for i in a.answers] == list(ENTRIES[:2]) and a.suggestions == []  # at most top_k
    unsearched = _decision(responder.index, "handoff", "user_requested", rule, searched=False)
    b = responder.run(unsearched, 3, time.perf_counter())
    assert b.answers == [] and responder.sessions.last("S1") == Turn("退货运费谁出", message="退货运费谁出")


def test_a_needs_order_handoff_tells_the_webhook(responder: Responder):
    order = OrderMatch("order_id", "x")
    rule = Rule("needs_order", "handoff", "needs_order", search=True, remember=True, order=order, suggest=True)
    a = responder.run(_decision(responder.index, "handoff", "needs_order", rule), 3, time.perf_counter())
    assert isinstance(responder.webhook, RecordingWebhook)
    [event] = responder.webhook.events
    assert a.handoff is not None and event.ticket_id == a.handoff.ticket_id
    assert event.suggestions == tuple(ENTRIES) == tuple(i.id for i in a.suggestions)
    assert a.trace["webhook"] == "delivered (204)" and list(a.trace)[-1] == "webhook"


def test_a_ticket_keeps_the_messages_before_it_and_the_callers_history(responder: Responder):
    responder.sessions.add("S1", Turn("退货运费谁出", message="退货运费谁出？"))
    history = [HistoryTurn(role="agent", text="请问是哪个订单")]
    a = responder.run(_decision(responder.index, "handoff", "low_confidence"), 3, time.perf_counter(), history)
    assert responder.tickets is not None and a.handoff is not None
    [ticket] = responder.tickets.list()
    assert [(t.role, t.text, t.source) for t in ticket.history] == [
        ("customer", "退货运费谁出？", "session"),  # the earlier message as typed; not this one
        ("agent", "请问是哪个订单", "request"),
    ]
    assert [t.message for t in responder.sessions.turns("S1")] == ["退货运费谁出？", "退货运费谁出"]


def _section(doc: str, heading: str, kind: str = "doc", clause: int | None = None) -> DocUnit:
    path = PATH_SEP.join(["配送说明", heading]) if heading else "配送说明"
    return DocUnit(f"{doc}.{heading}", doc, kind, "配送说明", "文档", path, clause, "…")  # type: ignore[arg-type]


def test_a_kb_of_articles_suggests_their_section_headings():
    units = [
        _section("shipping", "一、发货时间"),
        _section("shipping", "2. 配送范围与运费"),
        _section("shipping", ""),  # the part before the first heading: the title, not a topic
        _section("returns", "（一）退货条件"),
        _section("rules", "第五条", kind="rules", clause=5),  # a clause is not a topic to ask about
    ]
    assert welcome_examples([], doc_units=units) == ("配送范围与运费", "退货条件")
    assert welcome_examples([], n=3, doc_units=units) == ("配送范围与运费", "退货条件", "发货时间")
    assert welcome_examples([], doc_units=[_section("x", "1.5倍运费的地区")]) == ("1.5倍运费的地区",)  # a number
    # FAQ questions come first where a KB has them
    assert welcome_examples([_entry("包邮吗", "物流")], doc_units=units) == ("包邮吗",)
