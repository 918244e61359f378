"""The chat page in headless Chromium against a real `kefu serve`: answers, clarify, 转人工, votes,
safe rendering, a phone-sized screen and 长辈模式."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from service.tickets import AnswerLog, FeedbackStore, TicketStore
from tests.browser.conftest import Kefu, screenshot

pytestmark = pytest.mark.browser

# Every element's right edge, against the viewport: a phone must never scroll sideways.
OVERFLOW_JS = """() => {
  const d = document.documentElement, w = d.clientWidth, log = document.getElementById("log");
  const wide = [...document.querySelectorAll("body *")]
    .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > w + 0.5; })
    .map((e) => e.tagName.toLowerCase() + "." + e.className);
  return {doc: [d.scrollWidth, w], body: [document.body.scrollWidth, document.body.clientWidth],
          log: [log.scrollWidth, log.clientWidth], wide};
}"""


def ask(page: Page, text: str) -> None:
    """Type a question and send it; waits until kefu's reply (a new card or an error note) is shown."""
    before = page.locator("#log .card, #log .note.error").count()
    page.get_by_label("输入您的问题").fill(text)
    page.get_by_role("button", name="发送").click()
    expect(page.locator("#log .card, #log .note.error")).to_have_count(before + 1)


def last_card(page: Page):
    return page.locator("#log .card").last


def show_card(page: Page, n: int) -> None:
    """Scroll the conversation so that card ``n`` starts at the top (for a screenshot)."""
    page.locator("#log .card").nth(n).evaluate("e => e.scrollIntoView({block: 'start'})")


def assert_no_sideways_scroll(page: Page) -> None:
    m = page.evaluate(OVERFLOW_JS)
    assert m["doc"][0] <= m["doc"][1], m
    assert m["body"][0] <= m["body"][1], m
    assert m["log"][0] <= m["log"][1], m
    assert m["wide"] == [], m


def test_answer_card_shows_the_answer_and_its_source(open_tab, kefu: Kefu):
    page = open_tab().page
    page.goto(kefu.url)
    expect(page).to_have_title("在线客服")
    expect(page.locator("#log .card").first).to_contain_text("您好")  # the welcome

    ask(page, "退款多久能到账？")
    card = last_card(page)
    expect(card).to_have_attribute("data-decision", "answer")
    expect(card.locator(".q")).to_have_text("退款多久能到账？")
    text = card.locator(".text").first
    expect(text).to_contain_text("1. 余额支付：即时到账；")
    # the numbered list keeps its lines
    assert text.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
    lines = text.evaluate(
        "e => Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight))"
    )
    assert lines >= 4, lines
    expect(card.locator(".source").first).to_have_text("来源：常见问题「退款多久能到账？」 · 退货退款")
    expect(card.locator(".related summary")).not_to_have_count(0)  # the other answers, folded
    expect(card.get_by_role("button", name="有帮助")).to_be_visible()
    expect(card.get_by_role("button", name="没帮助")).to_be_visible()
    screenshot(page, "desktop-answer")

    ask(page, "你好")
    greeting = last_card(page)
    expect(greeting).to_have_attribute("data-reason", "greeting")
    expect(greeting.locator(".feedback")).to_have_count(0)  # nothing to vote on

    ask(page, "退货规范第三条")
    rules = last_card(page)
    expect(rules.locator(".source").first).to_contain_text("来源：《退货规范》第三条")

    ask(page, "退货的运费应该由谁来承担？")  # an FAQ answer names the clause it rests on
    expect(last_card(page).locator(".cites").first).to_have_text("依据：《退货规范》第三条")


def test_the_welcome_offers_the_kbs_own_questions(open_tab, kefu: Kefu):
    """The first card's examples come from the KB served (GET v1/welcome): a question of each
    category (the one nearest 8 characters), as buttons that ask them."""
    page = open_tab().page
    page.goto(kefu.url)
    welcome = page.locator("#log .msg.welcome .card")
    examples = welcome.locator("button.example")
    expect(examples).to_have_text(["退款多久能到账", "怎么查看订单的物流信息"])
    expect(welcome.locator(".text")).to_contain_text("例如“退款多久能到账”“怎么查看订单的物流信息”")
    examples.first.click()
    expect(page.locator("#log .msg.user .bubble").last).to_have_text("退款多久能到账")
    answer = last_card(page)
    expect(answer).to_have_attribute("data-decision", "answer")
    expect(answer.locator(".q")).to_have_text("退款多久能到账？")
    page.reload()  # the conversation comes back under the same welcome
    expect(page.locator("#log .card").first.locator("button.example")).to_have_count(2)
    expect(page.locator("#log .msg.user .bubble")).to_have_text(["退款多久能到账"])


def test_a_shops_chat_answers_from_its_own_kb(open_tab, kefu: Kefu):
    """?shop=tea (what the widget's data-kefu-shop opens): the shop's questions in the welcome, its
    answers, and a conversation kept apart from the platform's in the same browser."""
    page = open_tab().page
    page.goto(f"{kefu.url}/?shop=tea")
    examples = page.locator("#log .msg.welcome button.example")
    expect(examples).to_have_text(["茶叶有保质期吗", "下单后多久发货"])
    examples.first.click()
    answer = last_card(page)
    expect(answer).to_have_attribute("data-decision", "answer")
    expect(answer.locator(".q")).to_have_text("茶叶有保质期吗？")
    expect(answer.locator(".source").first).to_have_text("来源：常见问题「茶叶有保质期吗？」 · 保存")
    page.goto(kefu.url)  # the platform's own chat: its welcome, none of the shop's conversation
    expect(page.locator("#log .msg.welcome button.example")).to_have_text(["退款多久能到账", "怎么查看订单的物流信息"])
    expect(page.locator("#log .msg.user")).to_have_count(0)
    page.goto(f"{kefu.url}/?shop=tea")
    expect(page.locator("#log .msg.user .bubble")).to_have_text(["茶叶有保质期吗"])


def test_a_shop_that_is_not_there_is_said_so(open_tab, kefu: Kefu):
    tab = open_tab()
    page = tab.page
    tab.expected_console = ("404",)  # the browser logs the refused requests
    page.goto(f"{kefu.url}/?shop=ghost")  # a shop id no shop has
    ask(page, "茶叶怎么保存")
    expect(page.locator("#log .note.error").last).to_have_text("这家店铺的在线客服暂未开通，请稍后再试。")
    assert tab.failed == [f"404 {kefu.url}/v1/welcome?shop=ghost", f"404 {kefu.url}/v1/answer"]
    tab.failed.clear()  # both expected
    page.goto(f"{kefu.url}/?shop=Bad%20Shop")  # not a shop id at all: nothing is sent
    expect(page.locator("#log .note.error")).to_contain_text("这家店铺的客服地址不正确")
    expect(page.get_by_role("button", name="发送")).to_be_disabled()
    expect(page.get_by_label("输入您的问题")).to_be_disabled()


def test_clarify_options_send_the_chosen_question(open_tab, kefu: Kefu):
    page = open_tab().page
    page.goto(kefu.url)
    ask(page, "退款")
    card = last_card(page)
    expect(card).to_have_attribute("data-decision", "clarify")
    expect(card).to_contain_text("您是不是想问")
    options = card.locator("button.option")
    expect(options).to_have_count(3)
    options.filter(has_text="退款多久能到账？").click()
    expect(page.locator("#log .msg.user .bubble").last).to_have_text("退款多久能到账？")
    answer = last_card(page)
    expect(answer).to_have_attribute("data-decision", "answer")
    expect(answer.locator(".q")).to_have_text("退款多久能到账？")

    # 新对话 starts over (a new session); typing an option's number picks it, as the prompt says
    page.get_by_role("button", name="新对话").click()
    expect(page.locator("#log .card")).to_have_count(1)
    ask(page, "退款")
    second = last_card(page).locator("button.option").nth(1)
    expect(second).to_have_text("2. 退货的运费应该由谁来承担？")
    ask(page, "２")  # full-width, as a Chinese keyboard types it
    expect(page.locator("#log .msg.user .bubble").last).to_have_text("退货的运费应该由谁来承担？")
    expect(last_card(page).locator(".q")).to_have_text("退货的运费应该由谁来承担？")


def test_handoff_shows_the_ticket_and_suggestions(open_tab, kefu: Kefu):
    page = open_tab().page
    page.goto(kefu.url)
    human = page.get_by_role("button", name="转人工")
    expect(human).to_be_in_viewport()
    human.click()
    expect(page.locator("#log .card")).to_have_count(2)
    card = last_card(page)
    expect(card).to_have_attribute("data-decision", "handoff")
    expect(card.locator(".badge")).to_have_text("已转人工")
    expect(card).to_contain_text("已按您的要求转接人工客服")
    ticket = card.locator(".ticket-id").inner_text()
    assert re.fullmatch(r"T[0-9a-f]{16}", ticket), ticket
    assert ticket in {t.id for t in TicketStore(kefu.tickets_db).list(limit=500)}

    ask(page, "退钱")  # low confidence: handed off, with the nearest articles to read while waiting
    card = last_card(page)
    expect(card).to_have_attribute("data-reason", "low_confidence")
    expect(card).to_contain_text("等待期间，您可以先看看：")
    expect(card.locator(".related summary")).not_to_have_count(0)
    card.locator(".related summary").first.click()  # a suggestion opens in place
    expect(card.locator(".related details .text").first).to_be_visible()
    expect(human).to_be_in_viewport()  # still there after the conversation grew
    page.locator("#log").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    screenshot(page, "handoff")


def test_a_down_vote_is_stored_replaced_and_remembered(open_tab, kefu: Kefu):
    page = open_tab().page
    page.goto(kefu.url)
    ask(page, "退款多久能到账？")
    card = last_card(page)
    answer_id = card.get_attribute("data-answer-id")
    assert answer_id and re.fullmatch(r"A[0-9a-f]{16}", answer_id)
    down = card.get_by_role("button", name="没帮助")
    down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(card.locator(".thanks")).to_have_text("感谢您的反馈！")
    votes = FeedbackStore(kefu.tickets_db)
    stored = votes.get(answer_id)
    assert stored is not None and stored.vote == "down" and stored.comment is None

    card.get_by_label("补充说明（选填）").fill("没说信用卡，我电话13812345678")
    card.get_by_role("button", name="提交").click()
    expect(card.locator(".thanks")).to_have_text("已收到您的补充，谢谢！")
    stored = votes.get(answer_id)
    assert stored is not None and stored.comment == "没说信用卡，我电话[手机号]"

    # a reload restores the conversation and the vote; the session goes on
    page.reload()
    card = page.locator(f'#log .card[data-answer-id="{answer_id}"]')
    expect(card).to_be_visible()
    expect(card.get_by_role("button", name="没帮助")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#log .msg.user .bubble")).to_have_text(["退款多久能到账？"])
    ask(page, "退货运费谁出")
    follow_up = last_card(page).get_attribute("data-answer-id")
    log = AnswerLog(kefu.tickets_db)
    deadline = time.monotonic() + 5  # the server writes its answer log in batches (service/answer_writer.py)
    while (second := log.get(follow_up or "")) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first = log.get(answer_id)
    assert first is not None and second is not None and first.session_id == second.session_id

    # a second vote on the same answer replaces the first
    card.get_by_role("button", name="有帮助").click()
    expect(card.get_by_role("button", name="有帮助")).to_have_attribute("aria-pressed", "true")
    expect(card.get_by_role("button", name="没帮助")).to_have_attribute("aria-pressed", "false")
    stored = votes.get(answer_id)
    assert stored is not None and stored.vote == "up"
    assert [f.answer_id for f in votes.list(limit=1000)].count(answer_id) == 1


def test_markup_in_answers_and_queries_is_shown_as_text(open_tab, kefu: Kefu):
    page = open_tab().page
    page.goto(kefu.url)
    ask(page, "商品详情页里的代码怎么显示？")
    text = last_card(page).locator(".text").first
    expect(text).to_contain_text(
        '<script>window.__kefuPwned = 1</script> 和 <img src=x onerror="window.__kefuPwned = 2">'
    )
    query = '<img src=x onerror="window.__kefuPwned = 3"><b>粗体</b>'
    ask(page, query)
    expect(page.locator("#log .msg.user .bubble").last).to_have_text(query)
    assert page.locator("#log script, #log img, #log b").count() == 0
    page.reload()  # from localStorage, the same: text
    expect(page.locator("#log .msg.user .bubble").last).to_have_text(query)
    assert page.locator("#log script, #log img, #log b").count() == 0
    assert page.evaluate("window.__kefuPwned") is None


def test_phone_screen_has_no_sideways_scroll_and_elder_mode(open_tab, kefu: Kefu):
    page = open_tab(375, 740).page
    page.goto(kefu.url)
    ask(page, "退款")
    before = page.locator("#log .card").count()
    last_card(page).locator("button.option").first.click()
    expect(page.locator("#log .card")).to_have_count(before + 1)
    ask(page, "订单号ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789一直没有更新")
    assert_no_sideways_scroll(page)
    show_card(page, 1)
    screenshot(page, "phone")

    elder = page.get_by_role("button", name="长辈模式")
    expect(elder).to_have_attribute("aria-pressed", "false")
    small = page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    elder.click()
    expect(elder).to_have_attribute("aria-pressed", "true")
    big = page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert big >= small * 1.3, (small, big)
    handoffs = page.locator("#log .card.handoff").count()
    page.get_by_role("button", name="转人工").click()
    expect(page.locator("#log .card.handoff")).to_have_count(handoffs + 1)
    assert_no_sideways_scroll(page)
    for name in ("转人工", "发送", "长辈模式"):
        expect(page.get_by_role("button", name=name)).to_be_in_viewport()
    show_card(page, 1)
    screenshot(page, "elder")

    page.reload()  # remembered
    expect(page.get_by_role("button", name="长辈模式")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("document.documentElement.classList.contains('elder')")
    page.get_by_role("button", name="长辈模式").click()
    assert not page.evaluate("document.documentElement.classList.contains('elder')")
