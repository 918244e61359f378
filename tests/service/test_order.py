"""Order-specific requests: the detector, the needs_order handoff, and the order webhook."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from indexer.index import Index
from indexer.normalize import normalize
from kb.errors import ConfigError
from kb.settings import Settings
from service.answerer import Answerer
from service.orders import agent_on_order, match_order_request, match_order_statement, match_reply
from service.runtime import Runtime, options_from
from service.schemas import HistoryTurn
from service.webhook import OrderEvent, OrderWebhook
from tests.fakes import FAKE_CAL
from tests.service.test_answerer import assert_shape

# --- the detector ------------------------------------------------------------------------------
NEEDS_ORDER = [
    # an order card or number
    "[订单编号:[订单x]，订单金额:[金额x]，下单时间:[日期x] [时间x]]",
    "订单号：123456789012",
    "[订单x]",
    "【订单x】",
    "订单123456789012帮我退款",
    "运单号SF1234567890",
    "1234567890123456 这个怎么样了",
    # my parcel / this order, where it is or that it is late
    "我的快递到哪了",
    "我的快递三天没动了",
    "我的包裹怎么还没到",
    "我的订单还没发货",
    "这个订单什么时候到",
    "这单到哪了",
    "我买的东西什么时候发货",
    "我的快递显示签收了但是我没收到",
    "我的快递三天没动了怎么办",  # 怎么办 is not a how-to verb
    "我的訂單怎麼還沒發貨",  # Traditional, after normalisation
    # acting on a placed order
    "帮我退款",
    "给我退款",
    "我不要了，帮我退款",
    "催单",
    "催一下发货",
    "帮我催一下发货",
    "拦截快递",
    "把快递拦下来",
    "帮我把快递拦下来",
    "帮我把这个订单的地址改一下",
    "帮我改一下收货地址",
    "已经下单了，地址写错了",
    "取消这个订单",
    "帮我取消订单",
    "我刚下的单能取消吗",
    "帮我查一下物流",
    "帮我查一下我的订单",
    # the order card's label, whatever the masking left after it
    "[订单编号：[数字x]，订单金额：[金额x]，下单时间：[日期x]]",
    "订单编号：NaN 你好，帮我看看",
    "订单编号:[数字x] 还没发货",
    "快递单号：[数字x]",
    # the details of a placed order entered wrong: mine / this one, or to be changed
    "我这个收货地址弄错了，可以改一下吗",
    "我下单的时候手机号填错了一位",
    "不好意思，我填错地址了",
    "这个订单的收件人写错了",
    "我的地址填错了还能改吗",  # like 我刚下的单能取消吗: only the order can say
    "收件电话留错了，麻烦帮忙改一下",
    "联系电话填错了要改",
    "门牌号写错了，改成3栋502",
    "收货人姓名写错了",  # the whole message is the report
    "亲，收件地址填错了！",
    "地址写错了怎么办，帮我改一下",  # asks how, then asks us to do it
    # 帮 without 我 is still aimed at us
    "帮催促下，都一个星期了",
    "帮忙催下卖家发货",
    "这个单子帮取消下吧",
    "帮查下快递到哪了",
    "能帮看下物流吗",
    "帮催单",
    # an invoice for the order, asked of us, or the buyer's details handed over
    "麻烦给开张电子发票",
    "帮我开张发票，抬头写个人就行",
    "给我开一张增值税专用发票",
    "请帮我补开个发票",
    "帮我把这个订单开个发票",
    "单位全称：[组织机构x] 税号：[数字x]",
    "抬头：杭州某某贸易有限公司，税号：91330106MA2H0XXX1Q",
    "发票抬头:[组织机构x]",
    "纳税人识别号 91310115MA1K4ABC2D",
]
HOW_TO = [
    # help-center questions: an article answers them
    "退款多久到账",
    "怎么修改收货地址",
    "怎么取消订单",
    "快递一般几天到",
    "七天无理由退货需要什么条件",
    "七天无理由退货需要满足什么条件？",
    "怎么查物流",
    "我的订单怎么取消",  # the order is theirs, the question is how
    "已经下单了怎么改地址",
    "订单号在哪里看",
    "订单号是多少",
    "怎么催单",
    "催单有用吗",
    "拦截快递要钱吗",
    "怎么拦截快递",
    "请问怎么退款",
    "我要退款怎么操作",
    "麻烦问一下退款多久到账",  # 麻烦 asks a question here, not for an act
    "如果我的快递丢了怎么赔",  # hypothetical
    # someone else acts, or says so (scam calls quote exactly these phrases)
    "卖家不给我退款怎么办",
    "商家说给我退款",
    "对方说我的快递丢了，按运费三倍赔我",
    "有人打电话说给我退钱 这是啥情况 真的假的",
    "智能助手能帮我查快递吗",
    # not orders
    "13812345678收不到验证码",  # a mobile number is not an order number
    "客服电话4008123123是真的吗",
    "邮件拦截",
    "点【订单】按钮没反应",  # a page name in brackets, not an order card
    "在我的订单里找不到退款按钮",
    "我的订单在哪里",  # the 我的订单 page
    "这个快递公司靠谱吗",
    "退货运费谁出",
    "我想问问快递",
    "人工客服几点下班",
    # the order card's label asked about, not pasted
    "订单编号在哪里看",
    "订单编号是什么意思",
    "订单编号和快递单号有什么区别",
    # wrong details asked about (how, or a case described), or not an order's
    "收件地址填错了怎么修改",
    "付款后怎么改收货人电话",
    "地址填错了咋办",
    "我的手机号填错了怎么办",  # how-to, even for "my" number
    "地址写错了快递还能送到吗",
    "收货地址填错了，现在还没发货",  # a case described, as the help center's questions are
    "地址写错了要改吗",
    "注册时手机号填错了",  # the account's number
    "我电话打错了，不好意思",  # a wrong number dialled
    "卖家给的退货地址写错了",
    "快递员打电话说我的地址写错了",
    "我把地址改成公司以后运费变贵了",  # what the shopper did, before ordering
    # 帮 for someone else, or someone else who does not
    "帮朋友买的东西怎么查物流",
    "帮家人查快递要提供什么",
    "卖家不帮催单",
    # invoices asked about
    "怎么开增值税专用发票",
    "你们能开专票吗",
    "我要开发票",  # no one asked to do it: the article says where to apply
    "发票抬头填个人还是单位",
    "抬头：个人还是公司？",
    "税号在哪里查",
    "单位抬头一定要填税号吗",
    "卖家不肯给我开发票怎么办",
    "商家说给我补开发票",
    "同事帮我开的票抬头打错了",  # an invoice already issued, by someone else
]


@pytest.mark.parametrize("query", NEEDS_ORDER)
def test_order_requests_are_detected(query: str) -> None:
    assert match_order_request(normalize(query)) is not None


@pytest.mark.parametrize("query", HOW_TO)
def test_how_to_and_other_questions_are_not(query: str) -> None:
    assert match_order_request(normalize(query)) is None


@pytest.mark.parametrize(
    ("query", "rule", "text"),
    [
        ("订单号：123456789012", "order_id", "单号:123456789012"),
        ("我的快递三天没动了", "own_order_status", "我的快递三天没动"),
        ("帮我把这个订单的地址改一下", "own_order_edit", "这个订单的地址改"),
        ("给我退款", "act_on_order", "给我退款"),
        ("催一下发货", "imperative", "催一下发货"),
        ("订单编号：NaN", "order_id", "订单编号:"),
        ("单位全称：[组织机构x] 税号：[数字x]", "invoice_details", "单位全称:[组织机构x]"),
        ("麻烦给开张电子发票", "invoice", "麻烦给开张电子发票"),
        ("我这个收货地址弄错了，可以改一下吗", "order_details", "我这个收货地址弄错"),
        ("联系电话填错了要改", "order_details", "联系电话填错了要改"),
        ("帮查下快递到哪了", "act_on_order", "帮查下快递"),
    ],
)
def test_the_match_names_its_rule_and_text(query: str, rule: str, text: str) -> None:
    m = match_order_request(normalize(query))
    assert m is not None and (m.rule, m.text) == (rule, text)


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("你好你帮我看看 我有几个快递搞错地址了", "imperative"),  # look at my case, nothing asked
        ("增值税发票开不了 麻烦补普通发票", "invoice"),
        ("看一下这两个订单到哪了", "own_order_status"),
    ],
)
def test_requests_in_chat_wording(query: str, rule: str) -> None:
    m = match_order_request(normalize(query))
    assert m is not None and m.rule == rule


@pytest.mark.parametrize(
    "query",
    ["麻烦看一下退款多久到账", "帮我看看这个衣服怎么洗", "想把一件衣服发给闺蜜让她帮我看看", "能补开发票吗"],
)
def test_questions_around_a_look_or_an_invoice_are_not(query: str) -> None:
    assert match_order_request(normalize(query)) is None


@pytest.mark.parametrize(
    "query",
    [
        "是的 我取消订单了，不过货已经发出了",
        "没有。只有物流单号。",
        "对 就收到两个小箱子",
        "没有",
        "对的",
        "是的 已经过了保修期了",
    ],
)
def test_a_reply_to_an_agent_is_detected(query: str) -> None:
    m = match_reply(query)
    assert m is not None and m.rule == "reply"


@pytest.mark.parametrize(
    "query",
    [
        "可以 多久能退款呢",  # a reply that goes on to ask
        "对，那运费谁出？",
        "不是 我问的是运费谁出",
        "没有了，谢谢",  # the chat ends
        "对方说我的快递丢了",  # 对方, not 对: the opener must stand alone
        "没有收到货怎么办",
        "是否支持七天无理由",
    ],
)
def test_questions_that_open_like_a_reply_are_not(query: str) -> None:
    assert match_reply(query) is None


def test_the_help_centers_own_questions_never_read_as_replies() -> None:
    from kb.loader import load_kb

    kb = load_kb(Settings().kb_dir)
    assert [q for e in kb.entries for q in (e.question, *e.alt_questions) if match_reply(q)] == []


@pytest.mark.parametrize(
    ("query", "fires"),
    [
        ("买的时候显示明天送的", True),  # it asks nothing: it describes the order
        ("收到的就是两个小箱子", True),
        ("不是明天送达么?", True),  # when it arrives
        ("能快点吗?等着用", True),
        ("那发票怎么开", False),  # a question the help center answers
        ("运费谁出呢", False),
        ("怎么查什么时候发货", False),  # how to look it up
    ],
)
def test_in_an_order_conversation(query: str, fires: bool) -> None:
    m = match_order_statement(normalize(query))
    assert (m is not None) == fires
    assert m is None or m.rule == "order_conversation"


@pytest.mark.parametrize(
    ("text", "on_order"),
    [
        ("麻烦您提供一下订单号", True),
        ("这边帮您催一下", True),
        ("我帮您查询一下物流", True),
        ("亲，七天无理由退货需要商品完好哦", False),
        ("还有其他可以帮您的吗", False),
    ],
)
def test_an_agent_turn_about_the_order(text: str, on_order: bool) -> None:
    assert agent_on_order(text) is on_order


def test_the_detector_is_fast_on_the_longest_message() -> None:
    text = normalize("我的东西" + "好" * 480 + "什么")  # no match: every rule scans the whole text
    t0 = time.perf_counter()
    for _ in range(20):
        assert match_order_request(text) is None
    assert (time.perf_counter() - t0) / 20 < 0.005


# --- the answerer --------------------------------------------------------------------------------
@pytest.fixture
def answerer(tiny_answerer: Answerer) -> Answerer:
    tiny_answerer.calibration = FAKE_CAL
    return tiny_answerer


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
    # and a question in an order conversation is still the help center's
    assert answerer.answer("怎么查物流", history=[card]).trace["fired"].startswith("confidence→")


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


# --- the webhook ---------------------------------------------------------------------------------
@dataclass
class Hook:
    """A local order system: records each POST, replies ``status`` after ``delay`` seconds."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.bodies.append(json.loads(body))
            state.headers.append(self.headers["Content-Type"])
            state.release.wait(state.delay)  # set at teardown: a sleeping handler ends at once
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, *args: Any) -> None:  # the client gave up first: expected here
            pass

    server = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/orders?token=s3cret"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _answerer(tiny_settings: Settings, tiny_index: Index, fake_encoder: Any, **overrides: Any) -> Answerer:
    """Built by the runtime from settings, as the service builds it; warmed up."""
    rt = Runtime.create(tiny_settings.with_overrides(**overrides), encoder=fake_encoder)
    a = rt.answerer(index=tiny_index)
    a.calibration = FAKE_CAL
    a.answer("退货运费谁出")  # first-use index work stays out of the timings
    return a


def test_needs_order_posts_the_payload(hook: Hook, tiny_settings: Settings, tiny_index: Index, fake_encoder: Any):
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url)
    assert answerer.webhook is not None
    a = answerer.answer("我的快递到哪了", session_id="S-hook")
    assert (a.decision, a.reason) == ("handoff", "needs_order") and a.handoff is not None
    assert hook.bodies == [
        {
            "query": "我的快递到哪了",
            "normalized_query": a.normalized_query,
            "session_id": "S-hook",
            "intent": "needs_order",
            "ticket_id": a.handoff.ticket_id,
            "suggestions": [s.id for s in a.suggestions],
        }
    ]
    assert hook.bodies[0]["suggestions"][0] == "logistics-track"
    assert hook.headers == ["application/json; charset=utf-8"]
    assert a.trace["webhook"] == "delivered (200)"


def test_other_decisions_post_nothing(hook: Hook, tiny_settings: Settings, tiny_index: Index, fake_encoder: Any):
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url)
    for query in ("怎么查物流", "转人工", "今天天气怎么样"):
        assert answerer.answer(query).reason != "needs_order"
    assert hook.bodies == []


def _assert_failure_is_harmless(answerer: Answerer, caplog: pytest.LogCaptureFixture, limit_s: float) -> str:
    """The answer is the one without a webhook, within ``limit_s``; the failure is one warning."""
    with caplog.at_level(logging.WARNING, logger="kefu.webhook"):
        t0 = time.perf_counter()
        a = answerer.answer("我的快递到哪了")
        took = time.perf_counter() - t0
    assert took < limit_s, took
    assert (a.decision, a.reason) == ("handoff", "needs_order")
    assert a.suggestions and a.suggestions[0].id == "logistics-track" and a.handoff is not None
    [record] = [r for r in caplog.records if r.name == "kefu.webhook"]
    assert record.levelno == logging.WARNING and a.handoff.ticket_id in record.getMessage()
    assert "s3cret" not in record.getMessage()  # the URL's query string stays out of the log
    assert a.trace["webhook"].startswith("failed: ")
    return record.getMessage()


MARGIN_S = 0.5  # answering itself on the fake encoder takes a few milliseconds


def test_a_slow_webhook_costs_at_most_its_timeout(
    hook: Hook, tiny_settings: Settings, tiny_index: Index, fake_encoder: Any, caplog: pytest.LogCaptureFixture
):
    hook.delay = 5.0
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url, order_webhook_timeout_s=0.3)
    t0 = time.perf_counter()
    message = _assert_failure_is_harmless(answerer, caplog, 0.3 + MARGIN_S)
    assert time.perf_counter() - t0 >= 0.3  # it did wait for the reply, up to the timeout
    # the caller's wait and urllib's socket timeout are both 0.3 s: either may report it first
    assert "no reply within 0.3 s" in message or "timed out" in message
    assert len(hook.bodies) == 1  # it was sent


def test_a_refused_connection_is_logged(
    tiny_settings: Settings, tiny_index: Index, fake_encoder: Any, caplog: pytest.LogCaptureFixture
):
    with socket.socket() as s:  # a port nobody listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/orders?token=s3cret"
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=url, order_webhook_timeout_s=1.0)
    message = _assert_failure_is_harmless(answerer, caplog, 1.0 + MARGIN_S)
    assert "Refused" in message or "refused" in message


@pytest.mark.parametrize("status", [500, 404, 302])
def test_a_non_2xx_reply_is_logged(
    hook: Hook,
    tiny_settings: Settings,
    tiny_index: Index,
    fake_encoder: Any,
    caplog: pytest.LogCaptureFixture,
    status: int,
):
    hook.status = status
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url)
    assert f"HTTP {status}" in _assert_failure_is_harmless(answerer, caplog, 1.0 + MARGIN_S)


def test_no_webhook_by_default(tiny_answerer: Answerer) -> None:
    assert Settings().order_webhook is None and tiny_answerer.webhook is None
    assert Settings().order_webhook_timeout_s == 1.0


@pytest.mark.parametrize(
    "env",
    [
        {"KEFU_ORDER_WEBHOOK": "ftp://orders.example/hook"},
        {"KEFU_ORDER_WEBHOOK": "file:///etc/passwd"},
        {"KEFU_ORDER_WEBHOOK": "http://"},
        {"KEFU_ORDER_WEBHOOK_TIMEOUT_S": "0"},
        {"KEFU_ORDER_WEBHOOK_TIMEOUT_S": "30"},
    ],
)
def test_bad_webhook_settings_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="order_webhook"):
        Settings()


def test_webhook_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_ORDER_WEBHOOK", " https://orders.internal/kefu ")
    monkeypatch.setenv("KEFU_ORDER_WEBHOOK_TIMEOUT_S", "0.5")
    s = Settings()
    assert (s.order_webhook, s.order_webhook_timeout_s) == ("https://orders.internal/kefu", 0.5)


@pytest.mark.parametrize(("url", "timeout"), [("file:///tmp/x", 1.0), ("http://h/x", 0.0), ("http://h/x", 60.0)])
def test_webhook_refuses_bad_arguments(url: str, timeout: float) -> None:
    with pytest.raises(ConfigError, match="KEFU_ORDER_WEBHOOK"):
        OrderWebhook(url, timeout)


def test_event_json_is_the_documented_payload() -> None:
    body = json.loads(OrderEvent("订单号:1", "订单号:1", "S1", "T1", ("a", "b")).to_json())
    assert body == {
        "query": "订单号:1",
        "normalized_query": "订单号:1",
        "session_id": "S1",
        "intent": "needs_order",
        "ticket_id": "T1",
        "suggestions": ["a", "b"],
    }
