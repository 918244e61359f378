"""Answerer.answer on the tiny KB with the fake encoder: decisions, reasons, shape, sessions."""

from __future__ import annotations

import dataclasses

import pytest

from kb.errors import InputError
from service.answerer import CLARIFY_PROMPT, Answerer, empty_reply, greeting_reply
from service.pipeline.respond import CLOSING_REPLY
from service.policy import Calibration
from tests.fakes import FAKE_CAL
from tests.service.conftest import assert_shape


@pytest.mark.parametrize(
    ("query", "expected_id"),
    [
        ("七天无理由退货需要满足什么条件？", "refund-seven-day"),
        ("退货运费谁出", "refund-shipping-fee"),
        ("怎么查物流", "logistics-track"),  # how-to; 我的快递到哪了 needs the order (test_order.py)
        ("七天無理由退貨需要滿足什麼條件？", "refund-seven-day"),  # Traditional → normalised
    ],
)
def test_in_kb_question_is_answered_with_the_right_entry(answerer: Answerer, query: str, expected_id: str):
    a = answerer.answer(query)
    data = assert_shape(a)
    assert a.decision == "answer"
    assert a.answers[0].id == expected_id
    assert a.answers[0].source.kind == "faq" and a.answers[0].source.doc_id == expected_id
    assert a.answers[0].text == answerer.index.entries[expected_id].answer
    assert data["trace"]["fired"] == "confidence→answer"
    assert a.trace["confidence"] >= answerer.calibration.answer_at


def test_answer_creates_no_ticket(answerer: Answerer):
    assert answerer.tickets is not None
    before = answerer.tickets.count()
    answerer.answer("退货运费谁出")
    assert answerer.tickets.count() == before


def test_rules_chunks_are_answer_items_with_their_document(answerer: Answerer):
    a = answerer.answer("退货运费谁出", top_k=5)
    rules = [i for i in a.answers if i.source.kind == "rules"]
    assert rules, a.answers
    assert all(i.source.doc_id == "rules-return" and i.id.startswith("rules-return.") for i in rules)
    for i in rules:  # a clause answers whole, named by its document and number
        assert i.source.clause == int(i.id.rsplit(".", 1)[1])
        assert i.title.startswith("《退货规范》第") and i.title.endswith("条")
        assert i.text.startswith("第") and i.cites == []


def test_user_requested_handoff_is_decided_before_any_search_and_opens_a_ticket(answerer: Answerer):
    a = answerer.answer("七天无理由退货怎么弄？转人工", session_id="S-handoff")
    assert_shape(a)
    assert (a.decision, a.reason) == ("handoff", "user_requested")
    assert a.handoff is not None and a.handoff.ticket_id.startswith("T")
    assert a.handoff.message == answerer.options.handoff_message
    assert a.answers == [] and "candidates" not in a.trace and "confidence" not in a.trace  # never searched
    assert answerer.tickets is not None
    [ticket] = answerer.tickets.list(reason="user_requested")
    assert ticket.id == a.handoff.ticket_id
    assert ticket.session_id == "S-handoff"
    assert ticket.candidates == []
    assert a.trace["fired"] == "user_requested"


def test_with_handoff_candidates_a_rule_handoff_shows_the_agent_its_candidates(answerer: Answerer):
    answerer.options = dataclasses.replace(answerer.options, handoff_candidates=True)
    a = answerer.answer("七天无理由退货怎么弄？转人工", session_id="S-handoff")
    assert_shape(a)
    assert (a.decision, a.reason) == ("handoff", "user_requested")
    assert 1 <= len(a.answers) <= 3  # context for the human agent
    assert [i.id for i in a.answers] == [c["id"] for c in a.trace["candidates"]][: len(a.answers)]
    assert answerer.tickets is not None
    [ticket] = answerer.tickets.list(reason="user_requested")
    assert a.handoff is not None and ticket.id == a.handoff.ticket_id
    assert ticket.candidates and ticket.candidates[0]["id"] == a.answers[0].id
    assert a.trace["fired"] == "user_requested"
    s = answerer.answer("退货运费谁出？充电宝都炸了", top_k=1)
    assert (s.reason, len(s.answers)) == ("sensitive", 1)  # at most top_k


def test_user_request_wins_over_a_confident_match(answerer: Answerer):
    a = answerer.answer("退货运费谁出，我要转人工")
    assert (a.decision, a.reason) == ("handoff", "user_requested")


def test_sensitive_handoff(answerer: Answerer):
    a = answerer.answer("退货运费谁出？充电宝都炸了")
    assert_shape(a)
    assert (a.decision, a.reason) == ("handoff", "sensitive")
    assert a.trace["fired"] == "sensitive:safety"
    assert a.answers == [] and a.suggestions == [] and "candidates" not in a.trace  # decided before any search
    assert a.handoff is not None and answerer.tickets is not None
    assert answerer.tickets.list(reason="sensitive")[0].id == a.handoff.ticket_id


def test_a_dispute_escalated_to_court_still_shows_what_to_read(answerer: Answerer):
    """Naming a lawsuit hands off as before, and the help center's answers ride along as
    suggestions (not as answers) while the shopper waits; the ticket records them."""
    a = answerer.answer("退货运费谁出？不给退我就去法院起诉")
    assert_shape(a)
    assert (a.decision, a.reason, a.trace["fired"]) == ("handoff", "sensitive", "sensitive:legal")
    assert a.answers == [] and 1 <= len(a.suggestions) <= 3
    assert [i.id for i in a.suggestions] == [c["id"] for c in a.trace["candidates"]][: len(a.suggestions)]
    assert answerer.tickets is not None and answerer.tickets.list(reason="sensitive")[0].candidates


@pytest.mark.parametrize("query", ["你好", "在吗？", "您好呀"])
def test_greeting_is_a_clarify_without_answers(answerer: Answerer, query: str):
    a = answerer.answer(query)
    assert_shape(a)
    assert (a.decision, a.reason) == ("clarify", "greeting")
    assert a.answers == [] and a.handoff is None
    # examples of what to ask, from the KB served: a question of each of its two categories
    assert a.message == greeting_reply(("退货的运费应该由谁来承担", "怎么查看订单的物流信息"))
    assert (
        a.message
        == "您好！我是智能客服，请直接描述您遇到的问题，例如“退货的运费应该由谁来承担”“怎么查看订单的物流信息”。"
    )


@pytest.mark.parametrize("query", ["谢谢", "好的谢谢", "没有了，谢谢", "嗯嗯", "好吧", "👌🏻", "谢谢您了"])
def test_thanks_and_the_end_of_a_chat_get_a_closing_reply_and_no_ticket(answerer: Answerer, query: str):
    a = answerer.answer(query)
    assert_shape(a)
    assert (a.decision, a.reason, a.trace["fired"]) == ("clarify", "greeting", "closing")
    assert a.answers == [] and a.handoff is None and a.message == CLOSING_REPLY
    assert answerer.tickets is not None and answerer.tickets.list() == []


def test_the_greeting_suggests_the_kbs_chosen_examples(answerer: Answerer):
    """greetings.yaml ``examples:`` (Resources.examples, passed by the runtime) replace the picked ones."""
    answerer.examples = ("怎么查物流", "运费谁出")
    assert answerer.welcome().examples == ["怎么查物流", "运费谁出"]
    assert answerer.answer("你好").message == greeting_reply(("怎么查物流", "运费谁出"))
    assert answerer.variant().welcome() == answerer.welcome()  # variants keep them


def test_greeting_prefix_is_stripped_before_retrieval(answerer: Answerer):
    a = answerer.answer("你好，退货运费谁出")
    assert a.decision == "answer" and a.answers[0].id == "refund-shipping-fee"
    assert a.trace["retrieval_text"] == "退货运费谁出"


@pytest.mark.parametrize("query", ["", "   ", "？？？", "!!!…", "\u200b\u200b"])
def test_empty_or_punctuation_only_is_an_empty_query_handoff(answerer: Answerer, query: str):
    a = answerer.answer(query)
    assert_shape(a)
    assert (a.decision, a.reason) == ("handoff", "empty_query")
    assert a.answers == []
    assert a.trace["fired"] == "empty_query"


def test_punctuation_only_gets_the_empty_reply(answerer: Answerer):
    handoff = answerer.answer("？？？").handoff
    assert handoff is not None
    assert handoff.message == empty_reply(("退货的运费应该由谁来承担",))


def test_out_of_scope_is_a_low_confidence_handoff(answerer: Answerer):
    a = answerer.answer("今天北京天气怎么样")
    assert_shape(a)
    assert (a.decision, a.reason) == ("handoff", "low_confidence")
    assert a.answers == []
    assert a.trace["confidence"] < answerer.calibration.clarify_at
    assert a.handoff is not None and answerer.tickets is not None
    assert answerer.tickets.list(reason="low_confidence")[0].id == a.handoff.ticket_id


def test_query_over_the_limit_is_an_input_error(answerer: Answerer):
    limit = answerer.options.max_query_chars
    answerer.answer("退" * limit)  # at the limit: fine
    with pytest.raises(InputError, match=str(limit)) as info:
        answerer.answer("退" * (limit + 1))
    assert "KEFU_MAX_QUERY_CHARS" in str(info.value)


def test_non_string_query_is_an_input_error(answerer: Answerer):
    with pytest.raises(InputError, match="string"):
        answerer.answer(123)  # type: ignore[arg-type]


def test_negative_top_k_is_an_input_error(answerer: Answerer):
    with pytest.raises(InputError, match="top_k"):
        answerer.answer("退货运费谁出", top_k=-1)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k_is_respected(answerer: Answerer, k: int):
    a = answerer.answer("七天无理由退货需要满足什么条件？", top_k=k)
    assert a.decision == "answer"
    assert len(a.answers) == k
    assert a.answers[0].id == "refund-seven-day"


def test_default_top_k(answerer: Answerer):
    a = answerer.answer("七天无理由退货需要满足什么条件？")
    assert len(a.answers) == answerer.options.top_k


def test_answers_follow_the_retrieval_ranking(answerer: Answerer):
    a = answerer.answer("退货的运费谁承担，七天内能退吗", top_k=6)
    assert len(a.answers) >= 2
    assert [i.id for i in a.answers] == [c["id"] for c in a.trace["candidates"]][: len(a.answers)]


def test_dense_answers_are_ordered_by_score(answerer: Answerer):
    answerer.options = dataclasses.replace(answerer.options, retrieval="dense")
    a = answerer.answer("退货的运费谁承担，七天内能退吗", top_k=6)
    scores = [i.score for i in a.answers]
    assert len(scores) >= 2 and scores == sorted(scores, reverse=True)


def test_session_follow_up_uses_the_previous_question(answerer: Answerer):
    first = answerer.answer("七天无理由退货需要满足什么条件？")
    assert first.decision == "answer"
    a = answerer.answer("那运费呢", session_id=first.session_id)
    assert a.session_id == first.session_id
    assert a.trace["used_context"] is True
    assert a.trace["retrieval_text"].startswith("七天无理由退货需要满足什么条件")
    assert a.trace["retrieval_text"].endswith("那运费呢")
    # the same message in a fresh session has no context to use
    fresh = answerer.answer("那运费呢")
    assert fresh.trace["used_context"] is False
    assert fresh.trace["retrieval_text"] == "那运费呢"
    assert a.trace["confidence"] > fresh.trace["confidence"]


def test_context_can_be_switched_off(answerer: Answerer):
    t = answerer
    off = Answerer(
        index=t.index,
        encode=t.encode,
        sensitive=t.sensitive,
        options=dataclasses.replace(t.options, use_context=False),
        sessions=t.sessions,
        tickets=t.tickets,
    )
    first = off.answer("七天无理由退货需要满足什么条件？")
    a = off.answer("那运费呢", session_id=first.session_id)
    assert a.trace["used_context"] is False


def test_long_message_does_not_pull_in_context(answerer: Answerer):
    first = answerer.answer("我的快递到哪了")
    a = answerer.answer("七天无理由退货需要满足什么条件？", session_id=first.session_id)
    assert a.trace["used_context"] is False
    assert a.answers[0].id == "refund-seven-day"


def test_session_id_is_generated_when_missing(answerer: Answerer):
    a, b = answerer.answer("退货运费谁出"), answerer.answer("退货运费谁出")
    assert a.session_id.startswith("S") and a.session_id != b.session_id


def test_clarify_band_shows_up_to_three_choices(answerer: Answerer):
    t = answerer
    conf = t.answer("七天无理由退货").trace["confidence"]  # a partial match: well below 1
    cal = Calibration(answer_at=min(1.0, conf + 0.01), clarify_at=max(0.0, conf - 0.01))
    clar = Answerer(t.index, t.encode, t.sensitive, t.options, tickets=t.tickets, calibration=cal)
    a = clar.answer("七天无理由退货", top_k=5)
    assert_shape(a)
    assert (a.decision, a.reason) == ("clarify", "ambiguous")
    assert a.message == CLARIFY_PROMPT
    assert 1 <= len(a.answers) <= 3
    assert a.handoff is None


@pytest.mark.parametrize(
    "query",
    [
        "七天无理由退货需要满足什么条件？",
        "转人工",
        "我要报警",
        "你好",
        "？",
        "天气",
        "那运费呢",
        "<script>alert(1)</script>",
        "\x00\x07退货",
        "😀😀",
        "Can I return it after 7 days?",
    ],
)
def test_every_query_gets_exactly_one_valid_decision(answerer: Answerer, query: str):
    a = answerer.answer(query)
    data = assert_shape(a)
    assert data["trace"]["build"] == answerer.index.manifest.build_id
    assert data["query"] == query


def test_a_new_short_question_after_another_topic_is_not_read_with_it(answerer: Answerer):
    """Read with the previous question, '运费谁出' is more confident but about tracking parcels:
    'higher confidence wins' answered it with logistics-track."""
    first = answerer.answer("怎么查看订单的物流信息？")
    a = answerer.answer("运费谁出", session_id=first.session_id)  # short: the gate fires
    assert a.trace["used_context"] is False
    assert a.answers[0].id == "refund-shipping-fee"


def test_variant_shares_the_heavy_parts_and_not_the_state(answerer: Answerer):
    v = answerer.variant(top_k=5)
    assert v.options.top_k == 5 and answerer.options.top_k != 5
    assert v.index is answerer.index and v.speller is answerer.speller and v.calibration is answerer.calibration
    assert v.sessions is not answerer.sessions and v.tickets is None
    other = answerer.variant(calibration=FAKE_CAL, use_context=False)
    assert other.calibration is FAKE_CAL and not other.options.use_context
