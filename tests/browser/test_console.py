"""The operators' console in headless Chromium against a real `kefu serve` with an admin token: log
in (the token stays in the tab's sessionStorage and travels only as a header), the handoff queue, a
gap attached to an entry leaving the list, a ticket resolved, and the dashboard's plots; then a
ticket's conversation (collapsed until opened), a decision undone from the decisions list, and a
shop's token refused at login."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from kb.learn_journal import append_journal, states
from service.shops_registry import ShopRecord, ShopRegistry
from service.tickets import AnswerLog, FeedbackStore
from tests.browser.conftest import REPO, _build_index, fake_serve, free_port, screenshot

pytestmark = pytest.mark.browser

TOKEN = "browser-console-token"
PHONE = "13812345678"
# Low-confidence handoffs on the browser KB with the fake encoder (asserted when seeding): the 专票
# question three times (once with a phone number), the 数字人民币 one twice.
GAP_QUERIES = [
    "能开增值税专票吗",
    "能开增值税专票吗？",
    f"能开增值税专票吗 我的手机{PHONE}",
    "数字人民币能付款吗",
    "数字人民币能付款吗?",
]


@dataclass(frozen=True)
class Console:
    url: str
    kb: Path
    tickets_db: Path


def _post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _history(db: Path) -> None:
    """Six earlier days of traffic, written as the service logs it, so the dashboard has a time axis."""
    AnswerLog(db), FeedbackStore(db)
    now = time.time()
    with sqlite3.connect(db) as c:
        for day in range(1, 7):
            for i in range(8 + 3 * day):
                decision, reason = ("answer", None) if i % 5 else ("handoff", "needs_order")
                if i % 7 == 3:
                    decision, reason = "clarify", "ambiguous"
                if i % 11 == 10:  # 没有了，谢谢: a closing, counted apart from clarifications
                    decision, reason = "clarify", "greeting"
                aid = f"A{day:02d}{i:014d}"
                t, session = now - day * 86400 - i * 60, f"H{day}{i}"
                c.execute(
                    "INSERT INTO answers (answer_id, created, session_id, query, decision, reason, top_id, "
                    "confidence, elapsed_ms, ticket_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (aid, t, session, "退款多久到账", decision, reason, None, 0.9, 5.0, None),
                )
                if i % 3 == 0:
                    vote = "down" if i % 2 else "up"
                    c.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)", (aid, now, now, session, vote, None))


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """`kefu serve` (fake encoder) with an admin token and seeded traffic; its own KB folder, since
    resolutions write the KB's journal."""
    root = tmp_path_factory.mktemp("kefu-console")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    env.update(_build_index(root))
    env["KEFU_ADMIN_TOKEN"] = TOKEN
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with fake_serve(root, env, free_port()) as url:
        for i, q in enumerate(GAP_QUERIES):
            a = _post(f"{url}/v1/answer", {"query": q, "session_id": f"G{i}"})
            assert (a["decision"], a["reason"]) == ("handoff", "low_confidence"), (q, a["decision"], a["reason"])
        a = _post(f"{url}/v1/answer", {"query": "退款多久能到账？", "session_id": "V1"})
        _post(f"{url}/v1/feedback", {"answer_id": a["answer_id"], "session_id": "V1", "vote": "up"})
        _history(root / "data" / "tickets.db")
        yield Console(url, root / "kb", root / "data" / "tickets.db")


def login(page: Page, server: Console) -> list[Request]:
    """Open the console and log in; returns the list the page's requests are recorded into."""
    seen: list[Request] = []
    page.on("request", lambda r: seen.append(r))
    page.goto(f"{server.url}/console")
    expect(page).to_have_title("kefu 运营台")
    page.get_by_label("管理令牌").fill(TOKEN)
    page.get_by_label("您的名字").fill("小王")
    page.get_by_role("button", name="登录").click()
    expect(page.locator("#queue-view")).to_be_visible()
    return seen


def assert_token_only_in_headers(page: Page, seen: list[Request]) -> None:
    admin = [r for r in seen if "/admin/" in r.url]
    assert admin, "no admin call was made"
    for r in admin:
        assert r.headers.get("authorization") == f"Bearer {TOKEN}", r.url
    assert all(TOKEN not in r.url for r in seen)
    assert TOKEN not in page.url
    assert page.evaluate("() => sessionStorage.getItem('kefu.console.token')") == TOKEN
    assert page.evaluate("() => localStorage.length") == 0


def test_login_keeps_the_token_in_the_session_and_shows_the_queue(open_tab, console_server: Console):
    tab = open_tab()
    page = tab.page
    page.goto(f"{console_server.url}/console")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#queue-view")).to_be_hidden()

    page.get_by_label("管理令牌").fill("wrong-token")
    page.get_by_role("button", name="登录").click()
    expect(page.locator("#login-error")).to_have_text("令牌不对")
    assert page.evaluate("() => sessionStorage.getItem('kefu.console.token')") is None
    tab.expected_console = ("401",)  # Chromium logs the refused call
    assert all(f.startswith("401 ") for f in tab.failed)
    tab.failed.clear()

    seen = login(page, console_server)
    rows = page.locator("#queue tr.ticket")
    expect(rows.first).to_be_visible()
    masked = rows.filter(has_text="能开增值税专票吗 我的手机[手机号]")
    expect(masked).to_have_count(1)
    expect(masked.locator(".badge")).to_have_text("置信度低")
    expect(masked.locator(".cands code").first).not_to_be_empty()
    assert PHONE not in page.content()
    assert_token_only_in_headers(page, seen)

    page.reload()  # the tab's session logs straight back in
    expect(page.locator("#queue-view")).to_be_visible()
    page.get_by_role("button", name="退出").click()
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('kefu.console.token')") is None


def test_a_gap_attached_to_an_entry_leaves_the_list(open_tab, console_server: Console):
    page = open_tab(width=1280, height=660).page  # the three gaps, for docs/screenshots/console.png
    seen = login(page, console_server)
    page.get_by_role("button", name="未解决问题").click()
    gap = page.locator("#gaps li.gap").filter(has_text="能开增值税专票吗")
    expect(gap).to_have_count(1)
    expect(gap.locator(".size")).to_have_text("3 条")
    expect(gap.locator(".examples li")).to_have_count(2)  # 3 messages, 2 distinct texts
    expect(gap.locator(".nearest code")).not_to_have_count(0)
    assert PHONE not in page.content()
    # with 数字人民币's, and the history's 👎 answers and abandoned clarifies
    expect(page.locator("#gaps li.gap")).to_have_count(3)
    screenshot(page, "console")

    gap_id = gap.get_attribute("data-gap")
    gap.get_by_label("条目 id").fill("refund-shipping-fee")
    gap.get_by_role("button", name="归入条目").click()
    expect(page.locator("#status")).to_contain_text("已记录决定")
    expect(page.locator("#status")).to_contain_text("refund-shipping-fee")
    expect(page.locator(f'#gaps li.gap[data-gap="{gap_id}"]')).to_have_count(0)
    (s,) = [x for x in states(console_server.kb).values() if x.decision.action == "attach"]
    assert (s.decision.entry, s.decision.who, s.status) == ("refund-shipping-fee", "小王", "pending")
    assert all(PHONE not in m for m in s.decision.messages)

    page.get_by_role("button", name="刷新").click()  # from the server again: still gone
    expect(page.locator("#gaps li.gap")).to_have_count(2)
    expect(page.locator(f'#gaps li.gap[data-gap="{gap_id}"]')).to_have_count(0)
    assert_token_only_in_headers(page, seen)


def test_a_ticket_is_resolved_from_the_queue(open_tab, console_server: Console):
    page = open_tab().page
    login(page, console_server)
    row = page.locator("#queue tr.ticket").filter(has_text="数字人民币能付款吗?")
    expect(row).to_have_count(1)
    row.get_by_role("button", name="超出范围").click()
    expect(row.locator(".done")).to_contain_text("已处理：超出范围（小王）")
    page.reload()
    row = page.locator("#queue tr.ticket").filter(has_text="数字人民币能付款吗?")
    expect(row.locator(".done")).to_contain_text("超出范围")
    expect(row.get_by_role("button", name="超出范围")).to_have_count(0)


def test_dashboard_draws_the_days(open_tab, console_server: Console):
    page = open_tab(width=1280, height=740).page
    login(page, console_server)
    page.get_by_role("button", name="数据").click()
    expect(page.locator("#tiles .tile")).to_have_count(7)
    expect(page.locator("#tiles .tile").filter(has_text="问候与结束语")).not_to_contain_text("–")
    expect(page.locator("#calibration")).to_contain_text("calibration")
    bars = page.locator("#chart-decisions svg rect")
    expect(bars.first).to_be_visible()
    assert bars.count() >= 7 * 2  # seven days, most with more than one decision
    expect(page.locator("#chart-decisions svg text").filter(has_text="-")).not_to_have_count(0)  # day labels
    expect(page.locator("#chart-votes svg rect")).not_to_have_count(0)
    expect(page.locator("#reasons tbody tr").filter(has_text="需查订单")).to_have_count(1)
    expect(page.locator("#top-gaps li")).not_to_have_count(0)
    screenshot(page, "console-dashboard")
    page.get_by_label("时间范围").select_option("30d")  # a longer axis, the same bars
    # 31 days, labelled every 4th counted back from today: today - 28 days is on the axis
    label = (dt.date.today() - dt.timedelta(days=28)).strftime("%m-%d")
    expect(page.locator("#chart-decisions svg text").filter(has_text=label)).to_have_count(1)
    assert page.locator("#chart-decisions svg rect").count() == bars.count()


# --- after the tests above: these add traffic, decisions and a shop of their own --------------------------------------
def test_a_tickets_conversation_opens_on_demand(open_tab, console_server: Console):
    url = console_server.url
    first = _post(f"{url}/v1/answer", {"query": f"怎么查看订单的物流信息？我的手机{PHONE}", "session_id": "C1"})
    assert first["decision"] != "handoff", first
    history = [{"role": "agent", "text": "亲，请问还有什么问题"}]
    a = _post(f"{url}/v1/answer", {"query": "转人工", "session_id": "C1", "history": history})
    ticket = a["handoff"]["ticket_id"]  # type: ignore[index]
    page = open_tab().page
    login(page, console_server)
    row = page.locator(f'#queue tr.ticket[data-ticket="{ticket}"]')
    expect(row.locator(".query .text")).to_have_text("转人工")
    box = row.locator("details.history")
    expect(box.locator("summary")).to_have_text("之前的对话（2 条）")
    turns = box.locator(".turn")
    expect(turns.first).to_be_hidden()  # collapsed by default
    box.locator("summary").click()
    expect(turns).to_have_count(2)
    expect(turns.nth(0)).to_have_text("顾客怎么查看订单的物流信息？我的手机[手机号]")
    expect(turns.nth(1)).to_have_text("客服亲，请问还有什么问题")
    expect(turns.nth(1)).to_have_class("turn agent")
    assert PHONE not in page.content()
    others = page.locator("#queue tr.ticket").filter(has_text="数字人民币能付款吗?")
    expect(others.locator("details.history")).to_have_count(0)  # a ticket with nothing before it


def _ticket_decided(url: str, query: str, session: str, decision: dict[str, object]) -> tuple[str, str]:
    """A handoff ticket for ``query`` and the id of ``decision`` made on it."""
    a = _post(f"{url}/v1/answer", {"query": query, "session_id": session})
    ticket = str(a["handoff"]["ticket_id"])  # type: ignore[index]
    r = _post(f"{url}/admin/handoffs/{ticket}/resolve", decision, TOKEN)
    return ticket, str(r["decision"]["id"])  # type: ignore[index]


def test_a_pending_decision_is_undone_from_the_decisions_list(open_tab, console_server: Console):
    ticket, decision = _ticket_decided(
        console_server.url, "转人工 我要撤销这个", "U1", {"action": "dismiss", "who": "小张"}
    )
    page = open_tab().page
    login(page, console_server)
    page.get_by_role("button", name="处理记录").click()
    row = page.locator(f'#decisions tr.decision[data-decision="{decision}"]')
    expect(row.locator(".state")).to_have_text("待生效")
    expect(row).to_contain_text("忽略")
    expect(row).to_contain_text(f"工单 {ticket}")
    row.get_by_role("button", name="撤销").click()
    expect(page.locator("#status")).to_contain_text(f"已撤销决定 {decision}")
    expect(row.locator(".state")).to_have_text("已撤销")
    expect(row.get_by_role("button", name="撤销")).to_have_count(0)
    assert states(console_server.kb)[decision].status == "undone"
    page.get_by_role("button", name="工单").click()  # the ticket is open again in the queue
    queue_row = page.locator(f'#queue tr.ticket[data-ticket="{ticket}"]')
    expect(queue_row.get_by_role("button", name="忽略")).to_have_count(1)
    page.get_by_role("button", name="处理记录").click()
    row = page.locator(f'#decisions tr.decision[data-decision="{decision}"]')
    expect(row.locator(".state")).to_have_text("已撤销")  # from the server again
    expect(row.get_by_role("button", name="撤销")).to_have_count(0)


def test_a_refused_learn_run_is_shown_with_the_decisions_that_pull(open_tab, console_server: Console):
    _, decision = _ticket_decided(
        console_server.url, "转人工 这条会抢别人的问题", "P1", {"action": "attach", "entry": "refund-shipping-fee"}
    )
    loss = "learned dev, held out from the new rows: hit@1 0.636 → 0.576"
    refusal = {"event": "refused", "who": "ops", "at": "2026-12-07T10:00:00Z", "losses": [loss], "pulling": [decision]}
    append_journal(console_server.kb, refusal)
    page = open_tab().page
    login(page, console_server)
    page.get_by_role("button", name="处理记录").click()
    notice = page.locator("#learn-refused")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("上次 kefu learn")
    expect(notice).to_contain_text("学习样例（开发集，每条不含自身相似问）: hit@1 0.636 → 0.576")
    row = page.locator(f'#decisions tr.decision[data-decision="{decision}"]')
    expect(row.locator(".badge.pulls")).to_have_text("相似问会抢走其他条目的问题")
    expect(page.locator("#decisions .badge.pulls")).to_have_count(1)  # only the decision named
    append_journal(console_server.kb, {"event": "learned", "who": "ops", "at": "2026-12-07T11:00:00Z", "build": "B1"})
    page.get_by_role("button", name="工单").click()
    page.get_by_role("button", name="处理记录").click()
    expect(page.locator("#decisions .badge.pulls")).to_have_count(0)
    expect(notice).to_be_hidden()  # a later run shipped


def test_a_shops_token_cannot_log_in(open_tab, console_server: Console):
    registry = ShopRegistry(console_server.tickets_db.parent / "index" / "shops" / "registry.sqlite")
    now = time.time()
    registry.put(ShopRecord("acme", "/nowhere", "B0", "faiss", 128, 0, 0, "none", now, now, False))
    token = registry.new_token("acme")
    page = open_tab().page
    page.goto(f"{console_server.url}/console")
    page.get_by_label("管理令牌").fill(token)
    page.get_by_role("button", name="登录").click()
    expect(page.locator("#login-error")).to_contain_text("店铺 acme 的令牌")
    expect(page.locator("#queue-view")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.getItem('kefu.console.token')") is None
