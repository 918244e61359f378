"""Order-specific requests: the detector of requests that need the order, replies to an agent,
statements in an order conversation, and agent turns about the order."""

from __future__ import annotations

import time

import pytest

from indexer.normalize import normalize
from kb.settings import Settings
from service.orders import OrderRules, agent_on_order, match_order_request, match_order_statement, match_reply

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
    "机器人客服说可以给我退款，这话算数吗",  # 说可以…: what was said, not asked of us
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


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("https://item.taobao.com/item.htm?id=6234567890", None),  # a product's id, not an order's
        ("这个 item.jd.com/1000120439780 还有货吗", None),
        ("www.example.com/p/1234567890 这个能用券吗", None),
        ("https://details.jd.com/normal/item.action?orderid=123456789012", "order_id"),  # a link to an order
        ("链接 https://item.jd.com/100012043978.html 我的订单 1234567890123 没发货", "order_id"),
    ],
)
def test_a_links_digits_are_no_order_number_unless_it_links_an_order(query: str, rule: str | None) -> None:
    m = match_order_request(normalize(query))
    assert (m.rule if m else None) == rule


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
        # when *this* one arrives or ships: only its order or its page can say
        ("这件多久能送到呀", "own_order_status"),
        ("那个包裹明天能到吗", "own_order_status"),
        ("这个几点能送到", "own_order_status"),
        ("这款啥时候发货", "own_order_status"),
        # the parcel asked after bare, or looked up on command
        ("我的货呢", "own_order_status"),
        ("我的快递呢？", "own_order_status"),
        ("我的快递去哪了", "own_order_status"),
        ("查一下我的订单", "imperative"),
        ("看下这个快递吧", "imperative"),
        ("看下这两个订单", "imperative"),
        # words nobody here had read (a helper's messages): possessives, statuses, acts on the order
        ("你好 我那件羽绒服怎么还在揽收", "own_order_status"),
        ("驿站说没有我的件 可你们显示派送成功", "own_order_status"),
        ("帮我备注一下 周末再送", "act_on_order"),
        ("麻烦帮我撤销那个退款申请", "act_on_order"),
        ("帮我联系下快递员让他放门卫", "act_on_order"),
        ("能不能帮我把收件人改成我妈的名字", "act_on_order"),
    ],
)
def test_requests_in_chat_wording(query: str, rule: str) -> None:
    m = match_order_request(normalize(query))
    assert m is not None and m.rule == rule


@pytest.mark.parametrize(
    "query",
    [
        "麻烦看一下退款多久到账",
        "帮我看看这个衣服怎么洗",
        "想把一件衣服发给闺蜜让她帮我看看",
        "能补开发票吗",
        "这个运费险的钱多久能到账",  # money, not a parcel: the help center's
        "这个发票什么时候开",  # 发票, not 发货
        "这种情况一般多久能退款",
        "我买的东西呢",  # may look for the order list (the bundled KB's own alternative)
        "查一下订单怎么查",
        "查看我的订单在哪里",
    ],
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
        ("怎么取消", False),
        ("查到了吗", True),  # a follow-up on the order's case
        ("没有变呢", True),
        ("哪些发了?", True),
        ("那这个订单的发票是开给谁的呢", False),  # a long question: not a follow-up
    ],
)
def test_in_an_order_conversation(query: str, fires: bool) -> None:
    m = match_order_statement(normalize(query))
    assert (m is not None) == fires
    assert m is None or m.rule in ("order_conversation", "order_followup")


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


# --- what the shopper's own account holds, owes or charged --------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "我的淘金币还剩多少",
        "我白条下个月要还多少钱",
        "我的优惠券哪天到期啊",
        "我昨天充的那笔钱扣了多少",
        "我这个账户余额是多少",
        "我的plus会员到期了没",
    ],
)
def test_own_account_figures_need_the_account(query: str) -> None:
    m = match_order_request(normalize(query))
    assert m is not None and m.rule == "own_account"


@pytest.mark.parametrize(
    "query",
    [
        "在哪里看我的花呗账单还要还多少",  # where to look it up: an article says
        "花呗分6期每期还多少",  # no owner: the fee rule answers it
        "我的会员有多少种权益",  # a programme, not a balance
        "优惠券一般多久到期",
        "对方说我的余额还剩五块",  # someone else said it
        "给我催眠的音乐",  # 催眠 is not 催 (a chase)
    ],
)
def test_account_questions_an_article_answers_are_not(query: str) -> None:
    assert match_order_request(normalize(query)) is None


# --- a KB that answers such wording itself ------------------------------------------------------
def test_rules_the_kbs_own_questions_match_are_off_for_it() -> None:
    kb = [normalize(q) for q in ("我的积分还剩多少", "怎么修改收货地址", "可以帮我取消花呗吗")]
    rules = OrderRules.for_kb(kb)
    assert rules.off == {"own_account", "act_on_order"}
    assert dict(rules.kb_topics) == {"own_account": 1, "act_on_order": 1}
    assert rules.match(normalize("我的京豆还剩多少")) is None
    assert match_order_request(normalize("我的京豆还剩多少")) is not None  # on for other KBs
    # the other rules and the order itself still count
    assert rules.match(normalize("我的快递三天没动了")) is not None
    assert rules.match(normalize("订单号：123456789012")) is not None


def test_a_rule_hidden_behind_the_first_is_found_too() -> None:
    # this question matches own_order_status first and act_on_order behind it: both are the KB's
    q = normalize("我的快递怎么还没到帮我催一下")
    first = match_order_request(q)
    assert first is not None and first.rule == "own_order_status"
    assert OrderRules.for_kb([q]).off == {"own_order_status", "act_on_order"}


def test_a_kb_without_such_questions_keeps_every_rule() -> None:
    rules = OrderRules.for_kb([normalize("七天无理由退货怎么申请"), normalize("运费险怎么理赔")])
    assert rules == OrderRules()
    assert rules.match(normalize("我的淘金币还剩多少")) is not None


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("东西收到了，麻烦帮我申请售后", "act_on_order"),
        ("给我换货吧", "act_on_order"),
        ("帮我预约一下上门安装", "act_on_order"),
        ("我要出远门，收件电话改为[电话x]", "order_details"),  # the new value handed over
        ("新地址是：浙江[地址x]", "order_details"),
        ("收货地址改成人民路8号", "order_details"),
        ("现在的手机号是13912345678", "order_details"),
    ],
)
def test_after_sale_acts_and_new_details_need_the_order(query: str, rule: str) -> None:
    m = match_order_request(normalize(query))
    assert m is not None and m.rule == rule


@pytest.mark.parametrize(
    "query",
    [
        "卖家拒绝给我换货，平台能管吗",  # what the seller refuses: a dispute the help center explains
        "商家拒不给我退款怎么投诉",
        "师傅能帮我安装吗",  # whether the installer does it
        "地址改成别的城市运费会变吗",  # no new value, and a question
        "电话改成[电话x]可以吗",  # asks whether it can be done
    ],
)
def test_disputes_and_questions_about_changes_are_not(query: str) -> None:
    assert match_order_request(normalize(query)) is None


@pytest.mark.parametrize(
    ("query", "fires"),
    [
        ("上门取件的师傅什么时候来", True),  # the shopper's own appointment
        ("快递员今天能来取件吗", True),
        ("上门取件一般几点来", False),  # the service in general
        ("上门取件要收费吗", False),
    ],
)
def test_when_the_courier_or_installer_comes(query: str, fires: bool) -> None:
    m = match_order_request(normalize(query))
    assert (m is not None and m.rule == "own_order_status") == fires


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("我的物流一直不更新", "own_order_status"),
        ("我的物流没更新，说好今天到的", "own_order_status"),
        ("我买了一台洗衣机，能改一下收货人吗", "own_order_edit"),
        ("我昨天订了两箱牛奶，想换个手机号", "own_order_edit"),
    ],
)
def test_my_parcels_tracking_and_my_orders_recipient(query: str, rule: str) -> None:
    m = match_order_request(normalize(query))
    assert m is not None and m.rule == rule


@pytest.mark.parametrize("query", ["物流信息一般多久更新一次", "下单后还能改收货人吗", "怎么修改我的收货电话"])
def test_how_tracking_updates_and_how_to_change_a_recipient_are_not(query: str) -> None:
    assert match_order_request(normalize(query)) is None
