"""Rule detectors run on normalised text before retrieval: human requests, sensitive topics,
greetings, and short follow-ups that need the session's previous question."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from indexer.normalize import normalize
from kb.errors import ConfigError

# Words for "a person" (with the typos and homophones shoppers type: 仁工, 人共, 人宫).
_HUMAN_WORD = r"(?:人工|仁工|人共|人宫|真人|活人|人工坐席|坐席|人类)"
# What follows such a word when it names a thing or a process, not a person: 人工费, 人工智能,
# 人工草坪, 人工审核, 真人秀, 真人图, 真人发 (wigs of human hair). Every pattern uses it.
_NOT_A_PERSON = (
    r"(?!费|智能|成本|审核|审批|复核|草|湖|降雨|增雨|授粉|繁育|养殖|种植|培育|合成|晶体|关节|耳蜗|心脏|骨|牙|"
    r"呼吸|皮|钻|宝石|水晶|花|造|制|染|秀|版|图|照|实拍|拍摄|试穿|上身|模特|cs|尺寸|比例|大小|头?发|娃娃|手办|视频)"
)
_HUMAN = rf"{_HUMAN_WORD}{_NOT_A_PERSON}"
# What follows "人工" when a shopper asks *about* the queue or opening hours, not for a person.
_NOT_A_REQUEST_AFTER = r"(?!服务费|客服?(?:排|要等|等多久|几点|什么时候|上班|下班|时间))"
# Particles and punctuation up to the end of the message: 人工? / 人工？？ / 人工吗 / 真人呢~
_TO_END = r"[\s!！?？。，,.~～…呢吗嘛么啊呀吧哦啦]*$"
# After a leading 人工: a pause, the end, or the order number / order card pasted right after it
# (人工 [订单x], 人工订单号123456789: normalisation removes the space between Han characters).
_AFTER_OPENING = r"(?:[!！?？。，,.:：;；~～…\s\[【(（]|$|\d|订单(?:编?号)?[:：是]?\s*[\[【\d]|单号)"
_REQUEST_PATTERNS = [
    rf"(?:转|專|专|传|接|找|要|叫|换|给我|帮我|请|麻烦|让|来个?)\s*(?:个|一下|到|一个|给)?\s*{_HUMAN}{_NOT_A_REQUEST_AFTER}",
    rf"^{_HUMAN}(?:客服|服务)?{_AFTER_OPENING}",
    rf"^(?:{_HUMAN})+{_TO_END}",
    rf"(?:有没有|有无|还有没有|喂喂?有没有|在不在)\s*(?:个)?\s*{_HUMAN}",
    # anchored: 早上七点有人工没 asks about opening hours
    rf"^(?:现在)?有\s*{_HUMAN}(?:客服|服务)?\s*(?:吗|么|没有?){_TO_END}",
    rf"{_HUMAN}(?:客服|服务)?\s*(?:呢|在哪|在吗|在么|在不在|快来|来|出来)",
    # the whole message: 人工客服帮我把快递查回来了 is praise, not a request
    rf"^{_HUMAN}(?:客服|服务)?\s*(?:介入|帮忙|帮帮我)(?:一下)?{_TO_END}",
    # 客服 alone (客服在吗, 客服你好) is how shoppers open any chat, with the bot too, so it is a
    # greeting; it asks for a person only with a verb that hands the chat over: 转客服, 我要找客服.
    r"转接?\s*(?:一下|个|到|给)?\s*(?:你们的?)?客服(?!电话|热线|号码|邮箱|时间|几点|上班|下班|排)",
    rf"^我?(?:(?:要|想要|需要)找?|想?找)(?:个|一下)?客服{_TO_END}",
    r"(?:别|不要|不想|不跟|不和|不用)\s*(?:让)?\s*(?:你|这个)?\s*(?:机器人?|智能客服|自动回复|小蜜|ai)",
    r"(?:换|找|叫)\s*(?:个|一个)?\s*(?:人|客服)\s*(?:来|跟我|和我|出来)",
    r"(?:找|叫|让)\s*(?:你们|你们的)?\s*(?:客服)?\s*(?:主管|经理|领导|负责人|值班的?客服)",
    r"\b(?:human|real person|live agent|real human|talk to (?:a |an )?(?:person|agent|human)|agent please)\b",
    r"^(?:rg|zrg|转rg)$",
]
_REQUEST = re.compile("|".join(f"(?:{p})" for p in _REQUEST_PATTERNS))

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
# Particles and filler that carry no request: stripped before matching greetings.
_PARTICLES = re.compile(r"[呀啊哈呢吧嘛哦喔噢哇啦滴的亲了嗯~～]+")
_GREETING_CORE = re.compile(
    r"^(?:你好|您好|hi|hello|hey|there|哈喽|哈啰|哈罗|嗨|午安|晚安|在吗|在么|在不在|有人吗|有人在吗|早|早上好|上午好|中午好|下午好|晚上好|"
    r"谢谢|多谢|感谢|谢了|thx|thanks|thankyou|好的|好|明白了|明白|知道了|ok|okay|收到|懂了|辛苦了|辛苦|拜拜|再见|bye)+$"
)
_GREETING_WORDS = r"你好|您好|hi|hello|哈喽|嗨|在吗|在么|在不在|请问一下|请问|问一下|问下|打扰一下|麻烦问下"
_GREETING_TAIL = r"[呀啊哈呢~～,，。!！?？\s]"
# Greetings go with whatever follows them; a form of address (亲, 客服, 小蜜, 小二) only when a
# pause or another greeting follows it. Otherwise it is the subject of the question: 客服电话多少,
# 小蜜是啥, 客服说价格挂错了 must keep it.
_GREETING_PREFIX = re.compile(
    rf"^(?:(?:{_GREETING_WORDS}){_GREETING_TAIL}*|(?:亲|客服|小蜜|小二)(?:{_GREETING_TAIL}+|(?={_GREETING_WORDS})))"
)
_FOLLOWUP = re.compile(r"^(?:那|那么|那要是|要是|如果|还有|另外|然后|其他的?|可是|但是|那如果)")
# Pronouns and demonstratives that point back at the previous message ('这样改的话要另外掏钱吗').
_ANAPHORA = re.compile(r"这样|这个|那个|这种|那种|这笔|那笔|这单|那单|他|她|它")
# Longer messages carry their own context. 12 missed dev follow-ups of 13–16 characters; at 20,
# with the anaphora above, the gate fires for 12 of dev's 15 follow-ups (4 before).
FOLLOWUP_MAX_CHARS = 20


def is_user_request(norm: str) -> bool:
    """Does the shopper ask for a human agent? ``norm`` must already be normalised.

    A greeting in front is looked past (你好人工, 在吗 人工): the answerer asks before stripping it."""
    return bool(_REQUEST.search(norm) or _REQUEST.search(strip_greeting(norm)))


@functools.lru_cache(maxsize=8)
def _greeting_keys(extra: tuple[str, ...]) -> frozenset[str]:
    """The configured greetings, reduced like a message is (computed once per list)."""
    return frozenset(_PARTICLES.sub("", _PUNCT.sub("", normalize(x))) for x in extra)


def is_greeting(norm: str, extra: Iterable[str] = ()) -> bool:
    """A message that is only a greeting or thanks (no question in it)."""
    bare = _PUNCT.sub("", norm)
    core = _PARTICLES.sub("", bare)
    if not bare:
        return False
    # Match before and after dropping particles: 哈 is a particle in 好哈 but part of 哈喽.
    if _GREETING_CORE.match(bare) or (core and _GREETING_CORE.match(core)):
        return True
    return bool(core) and core in _greeting_keys(tuple(extra))


def strip_greeting(norm: str) -> str:
    """Drop a leading greeting/politeness prefix so retrieval sees the question ('你好，怎么退款')."""
    out = norm
    for _ in range(3):
        new = _GREETING_PREFIX.sub("", out)
        if new == out:
            break
        out = new
    return out or norm


def is_followup(norm: str) -> bool:
    """A message that may continue the previous question: very short ('运费呢'), or short and
    opening like a follow-up ('那运费呢') or pointing back ('这样改的话要另外掏钱吗'). Only a gate:
    the answerer still checks that the context helps (``Answerer._use_context``)."""
    if len(norm) <= 6:
        return True
    return len(norm) <= FOLLOWUP_MAX_CHARS and bool(_FOLLOWUP.match(norm) or _ANAPHORA.search(norm))


# --- requests that need the shopper's own order ------------------------------------------------
# An article can say how to track a parcel or change an address; only someone who can open the
# order can say where *this* parcel is or change *its* address. Precision comes first: a false
# alarm hands off a shopper who could have read an article, so a how-to question (怎么取消订单)
# never fires, and a request needs an order number, a possessive or demonstrative ("my parcel",
# 这单) or a verb aimed at us (帮我退款), not just a topic word.

# A value the platform masked before the chat reached us: [数字x], [金额x], [组织机构x].
_MASKED = r"[\[【][^\[\]【】\s]{1,12}[\]】]"
# An order identifier. The chat card pastes placeholders ([订单x]) or real numbers; 单号 covers
# 订单号, 运单号, 快递单号. At least 6 digits after a label: "订单号是多少" is a how-to question.
_ORDER_ID = re.compile(
    r"[\[【]订单[0-9a-z]{1,24}[\]】]"  # [订单x], 【订单123】 (not 【订单】, a page name)
    # 订单号:123456, 运单号 sf1234567, 订单号:[数字x]
    rf"|(?:单号码?|订单编号|订单id)\s*[:：是为]?\s*(?:[a-z]{{0,4}}\d{{6,}}|{_MASKED})"
    # The label of a pasted order card ([订单编号:[数字x],订单金额:…]) whatever the masking left
    # after it, even 订单编号:nan: a shopper asking types 订单编号在哪看, not a colon.
    r"|订单编号\s*[:：]"
    r"|订单\s*[:：]?\s*\d{10,}"  # 订单123456789012
)
# Any run of 10+ digits is an order or waybill number, except the numbers shoppers quote that
# are not orders: an 11-digit mobile number and a 400/800 hotline ("4008123123是你们的电话吗").
_LONG_NUMBER = re.compile(r"(?<![\d.])(?!(?:86)?1[3-9]\d{9}(?![\d.]))(?![48]00\d{7}(?![\d.]))\d{10,}(?![\d.])")

# The shopper's own placed order, parcel or goods: 我的快递, 我买的东西, 这个订单, 这单.
# Bare 快递 is not enough: 快递一般几天到 asks about delivery in general.
_OWN = (
    r"(?:我(?:的|家的?)(?:快递|包裹|订单|单子|货|东西|宝贝|件|商品)"
    r"|我(?:刚才?|昨天|前天|上周)?(?:买|下|拍|订|网购)的(?:东西|商品|宝贝|货|单子?|订单|快递|包裹)?"
    r"|(?:这|那)(?:个|笔)?(?:订单|单子|快递|包裹)"
    r"|(?:这|那)一?单(?!品|位|元|价|独|身|调|纯|据|词|车))"  # 这单 / 那单, not 单品 / 单价
)
# Where it is, or that it is late: a question only the order's tracking answers.
_STATUS = (
    r"(?:到哪(?:了|里|儿|啦)|在哪(?:儿|里)?(?:了|啦)"  # 到哪了; 在哪里 alone may ask for the page
    r"|(?:还|一直|迟迟|都|怎么还?|咋还?|为什么还?|为啥还?)(?:没有?|不|未)"
    r"(?:到|送到|收到|发货|发出|发|寄出|出库|揽收|揽件|派送|送|动|更新|物流|退款|退钱)"
    r"|(?:没有?|未)(?:发货|收到|到货)|不发货"
    r"|什么时候(?:能|可以|才能|会|才)?(?:到|发货|发|送到|送达|寄出|派送)|几时(?:能)?(?:到|发)|多久(?:能|才能|可以)?(?:到|发)"
    r"|(?:\d+|[一二两三四五六七八九十几]+|好几|半)个?(?:天|日|星期|周|礼拜|小时)了?(?:都|还|也)?(?:没有?|不)"
    r"(?:动|更新|到|发|送|变)"
    r"|(?:没|不)动(?:了|静)|卡(?:住|在)|停在|丢了|丢件|没拿到|(?<!会)被(?:退回|拒收)|显示(?:已)?签收)"
)
_OWN_STATUS = re.compile(rf"{_OWN}.{{0,12}}?{_STATUS}")
# An order already placed and paid: changing its address is then an act on that order.
_PLACED = r"(?:(?:已经|已|刚|刚刚|才)(?:下单|下了单|付款|付了款|支付了?|买了)|下完单|付完款)"
_ADDRESS_EDIT = (
    r"(?:地址(?:填|写|选)?错|(?:改|修改|更改|换)(?:一下|下)?(?:收货|收件)?地址"
    r"|地址.{0,4}(?:改|修改|更改|换))"  # 地址写错了, 改一下收货地址, 地址帮我改
)
# Cancelling a membership, an authorisation or 免密支付 is an account setting an article explains.
_CANCEL = r"取消(?!会员|自动|扣费|授权|订阅|关注|收藏|绑定|免密|实名|预约)"
# Intercepting a parcel, not a scammer or a spam call (平台怎么帮我拦截骗子).
_INTERCEPT = r"拦(?:截|下|住|回)(?!.{0,2}(?:骗|诈|广告|电话|短信|垃圾|骚扰))"
_OWN_EDIT = re.compile(
    rf"{_OWN}.{{0,10}}?(?:{_CANCEL}|{_INTERCEPT}|{_ADDRESS_EDIT})"
    rf"|{_PLACED}.{{0,10}}?{_ADDRESS_EDIT}"
    r"|(?:取消|拦截|退掉)(?:一下|掉)?(?:这个|这笔|那个|我的|刚下的|刚买的)(?:订单|单子?|快递|包裹)"
)
# A verb aimed at us: 帮我 / 给我 / 麻烦你 … then an act on the order. What may stand between them
# is an object (把这个订单的), never another verb: 麻烦问一下退款多久到账 asks, it does not request.
# Chat drops the 我 after 帮 (帮催促下, 帮看下物流, 麻烦给开张发票): 帮 right before the act is
# still aimed at us, while 帮朋友查快递 keeps someone else between them and does not match.
_ACTOR = (
    r"(?:帮(?:我|忙)?|给我|替我|麻烦(?:你们?|您)?(?:帮(?:我|忙)?|给我?)?"
    r"|请(?:你们?|您)(?:帮我|给我)?|请帮我|请给我)"
)
_OBJECT = r"(?:把|将)?(?:这个|这笔|这单|我的|那个|那笔|刚才的|刚下的|刚买的)?(?:订单|单子|钱|款|快递|包裹|货)?的?"
_ACT = (
    r"(?:退款|退钱|退(?:一下|下)款|退了|退掉|(?:办理|处理|申请)(?:一下)?退款"
    rf"|{_CANCEL}|催|{_INTERCEPT}|{_ADDRESS_EDIT}"
    r"|(?:查|看)(?:一下|下|看|查)?(?:我的|这个|那个)?(?:物流|快递|订单|包裹|单号|到哪))"
)
_ACTOR_ACT = re.compile(rf"{_ACTOR}{_OBJECT}{_ACT}|地址.{{0,8}}?{_ACTOR}(?:改|修改|更改|换)|把钱退给我|退钱给我")
# Said by someone else (对方说我的快递丢了, 短信说…被退回, 客服说给我退款): scam calls and
# messages quote exactly these phrases, and the security articles answer them.
_REPORTED = r"(?:说|称|告诉我)(?:要|会)?"
_REPORTED_BEFORE = re.compile(rf"{_REPORTED}$")
# …and the actor is not us when someone else is the subject or it is negated: 卖家不给我退款,
# 卖家会不会直接给我退款, 智能助手能帮我查快递吗 describe what others do or can do.
_NOT_OURS = re.compile(
    r"(?:(?:卖家|商家|店家|店铺|老板|对方|快递员|他们|她们|平台|智能助手|智能客服|助手|机器人|小秘|小蜜|阿里小秘)"
    r"(?:说|答应|同意|承诺|不肯?|没有?|不愿意?|一直|还是|就是|都|也|已经|会不会|会|可能|能不能|能|可以|直接|主动|要|怎么)*"
    rf"|[不没]|不肯|不愿意?|电话|{_REPORTED})$"
)
# Bare imperatives (催单, 催一下发货, 拦截快递, 把快递拦下来) count only when they are not a
# question about the service (催单有用吗, 拦截快递要钱吗, 催发货按钮) and not a report of what the
# shopper already did (我去催卖家他不理我). After 帮 the actor rule judges it: 帮催单 asks us,
# 卖家不帮催单 does not.
_IMPERATIVE = re.compile(
    r"(?<![我去也都经帮])(?:催(?:一下|下|一哈)(?:单|发货|快递|物流|卖家|商家)?|催(?:单|发货|快递|物流|卖家|商家))"
    r"|拦截(?:一下|下)?(?:快递|包裹|物流|订单)|(?:快递|包裹)拦(?:截|下来|住|回来)"  # not 邮件拦截
)
_QUESTION = re.compile(
    r"多久|多长时间|几天|多少钱|要钱|收费|费用|有用|管用|有效|怎么|怎样|如何|能不能|可不可以|可以|能否|是不是|什么|哪|规则|条件"
    r"|有没有|办法|按钮|功能|入口|[吗么嘛][?？]?$|[?？]$"
)
# Asking *about* something, which an article answers even when the order is the shopper's own:
# how or where to do it (我的订单怎么取消, 从哪个菜单点进去), whether a call or message is genuine
# (有人说给我退钱，真的假的), or a case that has not happened. 怎么还没到 / 怎么办 are not how-to: no such verb follows.
_ASKS_ABOUT = re.compile(
    r"(?:怎么|怎样|如何|咋|在哪里?|去哪里?|哪里|哪儿)(?:才能|才可以|可以|能|样|去|才)?"
    r"(?:查|看|查看|查询|找|修改|改|更改|取消|申请|操作|设置|联系|催|拦截|退|填|帮)"
    r"|(?:哪个|什么)(?:菜单|页面|入口|按钮)|从哪"
    r"|真的假的|是真的吗|是不是真的|骗子|诈骗|上当"
    r"|如果|假如|假设|要是|万一|一般"  # a hypothetical or general case: 如果我的快递丢了怎么赔
)

# --- invoices for a placed order ----------------------------------------------------------------
# Issuing one, asked of us (麻烦开个票, 帮我开张增值税发票, 给我重开一张发票). Whether or how
# invoices are issued (能开发票吗, 怎么开发票, 我要开发票) names no actor: an article answers it.
_INVOICE_ACT = r"(?:补|重新?|换)?开(?:一下|下|一?个|一?张)?(?:增值税)?(?:电子|纸质|专用|普通|专|普)?(?:发票|票)"
_INVOICE_REQUEST = re.compile(rf"{_ACTOR}{_OBJECT}{_INVOICE_ACT}")
# The buyer's invoice details handed over for the order: a tax number under its label (税号:9131…,
# masked 税号:[数字x]) or the buyer's name after a colon (单位全称:[组织机构x], 抬头:某某科技有限公司).
# Like an order number they count even beside a question. The label alone asks about the field
# (税号是什么, 单位抬头必须填税号吗, 抬头写公司还是个人), and a real tax number has 15–20 letters
# and digits, at least 6 of them digits.
_INVOICE_DETAILS = re.compile(
    rf"(?:税号|纳税人识别号|信用代码)\s*[:：是为]?\s*(?:(?=(?:[a-z]*\d){{6}})[0-9a-z]{{15,20}}(?![0-9a-z])|{_MASKED})"
    r"|(?:(?:单位|公司|企业|购买方|购方)(?:全称|名称)|(?:发票)?抬头)\s*[:：]\s*"
    rf"(?:{_MASKED}|(?:(?!还是)[\u4e00-\u9fff()]){{2,30}}?(?:公司|厂|店|中心|学校|医院|研究院|研究所|事务所|协会|银行|局))"
)

# --- details of a placed order entered wrong, to be changed -------------------------------------
# What the shopper fills in when ordering: the address, the phone, the recipient (a bare 名字 may
# be an account's or a review's). The seller's return address (退货地址) is another matter.
_DETAIL = (
    r"(?:(?:收货|收件)(?:人(?:的)?(?:名字|姓名|电话|手机号?)?|地址|电话|信息)"
    r"|(?<!退货)(?<!退回)(?<!寄回)地址|电话(?:号码?)?|手机号码?|联系(?:电话|方式)|门牌号?)"
)
# Entered wrong: 填错, 写错了, 留错, 搞错; not 电话打错了 (a wrong number dialled).
_WRONG = r"(?:(?:填|写|留|输|选|搞|弄|(?<!电话)打)错|(?<!打)错了)"
# A change asked of us or meant to be made: 帮忙改, 麻烦改, 要改, 想修改; or the act itself,
# 改一下, 能不能改下, 改成…. 能改吗 / 可以更改吗 ask whether it can be done: an article answers.
_CHANGE_ASKED = (
    r"(?:(?:帮(?:我|忙)?|麻烦(?:你们?|您)?(?:帮(?:我|忙)?)?|给我|替我)(?:改|修改|更改|换)"
    r"|(?:要|想|得|需要)(?:改|修改|更改)(?![吗么])|(?:改|修改|更改)(?:一下|下|过来))"
)
# …and after a detail said to be wrong, the new value too (地址写错了，改成朝阳路12号). Without
# that, 我把地址换成和田以后运费变了 only tells what the shopper did.
_CHANGE = rf"(?:{_CHANGE_ASKED}|(?:改|修改|更改|换)(?:成|为))"
# The shopper's own order's details wrong: with 我 / 这个 pointing at them (我这个地址搞错了,
# 我下单时电话留错了, 我填错地址了), or wrong and to be changed (电话留错了要改, 收货人写错了麻烦改一下).
# 地址填错了还没发货 says neither and reads as the help center's question; see _BARE_REPORT.
_BETWEEN = r"(?:的|这边|这个|那个|这单|订单|下单(?:时|的时候)?|刚才?|之前|把|填的|写的|留的){0,3}"
_DETAILS_WRONG = re.compile(
    rf"(?<![给发跟和])(?:我|这个){_BETWEEN}{_DETAIL}[^,.!?;]{{0,4}}?(?:{_WRONG}|{_CHANGE_ASKED})"
    rf"|(?<![给发跟和])我[^,.!?;]{{0,2}}?{_WRONG}了?{_DETAIL}"
    rf"|{_DETAIL}.{{0,6}}?{_WRONG}.{{0,8}}?{_CHANGE}"
)
# The whole message is the report (收货人名字写错了, 电话留错了!): in a chat, that is how a shopper
# asks us to fix it. Once it describes the case (地址填错了还没发货, …货已经发了), as the help
# center's questions do, it needs 我 / 这个 or a change asked for, as above.
_BARE_REPORT = re.compile(rf"^{_DETAIL}{_WRONG}[了啦呀啊哦~～!！。.,，…\s]*$")
# How to fix it: 地址写错了怎么办, 我的地址填错了咋整, 收货人写错了有什么办法. After a late parcel
# 怎么办 asks us to look at it; after a wrong detail it asks how to change it, which the shopper
# does in the order page until it ships and the article explains, even for "my" address. So a
# how-to word anywhere keeps these two rules quiet (an address asked to be changed for the
# shopper, 地址写错了怎么办，帮我改一下, is still act_on_order).
_ASKS_HOW = re.compile(r"怎|如何|咋|办法|流程|步骤|入口|在哪|哪里|哪儿|什么|啥|多久|要钱|收费|费用|万一|是不是|还是")
# The account's phone number, not an order's: 注册时手机号填错了, 绑定的手机号要改一下.
_ACCOUNT = re.compile(r"注册|绑定|换绑|改绑|登录|登陆|账号|账户|帐号|实名|验证码|身份证|密码|支付宝|银行卡")


@dataclass(frozen=True)
class OrderMatch:
    """Why a message needs the shopper's order: the rule and the text it matched."""

    # order_id | invoice_details | own_order_status | own_order_edit | act_on_order | invoice
    # | order_details | imperative
    rule: str
    text: str


def _first(pattern: re.Pattern[str], norm: str, unless: re.Pattern[str]) -> re.Match[str] | None:
    """The first match of ``pattern`` whose preceding text does not end in ``unless``."""
    return next((m for m in pattern.finditer(norm) if not unless.search(norm, 0, m.start())), None)


def match_order_request(norm: str) -> OrderMatch | None:
    """The first rule by which ``norm`` (normalised) needs the shopper's own order or account,
    or None. An order number, a pasted order card or invoice details always count; the wording
    rules are skipped for questions about how to do something or whether a message is genuine."""
    for rule, pattern in (("order_id", _ORDER_ID), ("order_id", _LONG_NUMBER), ("invoice_details", _INVOICE_DETAILS)):
        m = pattern.search(norm)
        if m is not None:
            return OrderMatch(rule, m.group())
    if _ASKS_ABOUT.search(norm):
        return None
    for rule, pattern, unless in (
        ("own_order_status", _OWN_STATUS, _REPORTED_BEFORE),
        ("own_order_edit", _OWN_EDIT, _REPORTED_BEFORE),
        ("act_on_order", _ACTOR_ACT, _NOT_OURS),
        ("invoice", _INVOICE_REQUEST, _NOT_OURS),
    ):
        m = _first(pattern, norm, unless)
        if m is not None:
            return OrderMatch(rule, m.group())
    if not _ASKS_HOW.search(norm) and not _ACCOUNT.search(norm):
        m = _first(_DETAILS_WRONG, norm, _REPORTED_BEFORE) or _BARE_REPORT.match(strip_greeting(norm))
        if m is not None:
            return OrderMatch("order_details", m.group())
    m = _IMPERATIVE.search(norm)
    if m is not None and not _QUESTION.search(norm):
        return OrderMatch("imperative", m.group())
    return None


def is_order_request(norm: str) -> bool:
    """Does the message need the shopper's own order (an order number, "my parcel … 到哪了",
    帮我退款)? ``norm`` must already be normalised. See :func:`match_order_request`."""
    return match_order_request(norm) is not None


@dataclass(frozen=True)
class SensitiveMatch:
    group: str
    term: str


@dataclass(frozen=True)
class TermSpec:
    """One configured term: a regex, the wider phrases (``except:`` in sensitive.yaml) that make
    an occurrence of it harmless, and where it was written (``file:line``) for error messages."""

    term: str
    exceptions: tuple[str, ...] = ()
    where: str = ""


@dataclass(frozen=True)
class _Term:
    group: str
    term: str
    pattern: re.Pattern[str]
    exceptions: tuple[re.Pattern[str], ...]

    def hits(self, norm: str) -> bool:
        """Does the term occur somewhere no exception covers? Each occurrence is judged on its
        own: 电脑中毒了，孩子也食物中毒了 still hits."""
        return any(not self._excused(norm, m) for m in self.pattern.finditer(norm))

    def _excused(self, norm: str, occurrence: re.Match[str]) -> bool:
        """An exception covers the occurrence: a match of it starts at or before the occurrence
        and ends at or after it (服务器炸了 covers 炸了; 要炸了你们公司 is covered by nothing)."""
        start, end = occurrence.span()
        for exc in self.exceptions:
            for at in range(start + 1):
                m = exc.match(norm, at)
                if m is not None and m.end() >= end:
                    return True
        return False


class SensitiveDetector:
    """Configurable list of regular expressions, grouped (legal, police, media, safety …); a term
    may carry exceptions, the everyday phrases it occurs in (电脑中毒, 服务器炸了, 秒杀了)."""

    def __init__(self, groups: Mapping[str, Sequence[str | TermSpec]], where: str = "") -> None:
        self._terms: list[_Term] = []
        for group, specs in groups.items():
            for raw in specs:
                spec = raw if isinstance(raw, TermSpec) else TermSpec(str(raw))
                self._terms.append(_compile_term(group, spec))
        if not self._terms:
            at = f"{where}: " if where else ""
            raise ConfigError(f"{at}the sensitive-term list is empty; give at least one term")
        self._any = _union([t.pattern for t in self._terms])

    @classmethod
    def from_file(cls, path: Path) -> SensitiveDetector:
        """Read ``sensitive.yaml``: group name → list of terms, each a regex or a mapping
        ``{term: regex, except: [regex, …]}``. Errors name the file and line."""
        return cls(_read_groups(path), where=str(path))

    @classmethod
    def from_terms(cls, terms: list[str]) -> SensitiveDetector:
        return cls({"configured": terms})

    def match(self, norm: str) -> SensitiveMatch | None:
        if self._any is not None and not self._any.search(norm):
            return None  # the common case, in one search instead of one per term (about 40 → 3 µs)
        for t in self._terms:
            if t.hits(norm):
                return SensitiveMatch(t.group, t.term)
        return None


def _pattern(text: str) -> str:
    # Plain terms are normalised like the text they match (Traditional → Simplified, width,
    # case); a term with regex escapes is kept as written (\D must stay \D).
    return text if "\\" in text else normalize(text)


def _compile_term(group: str, spec: TermSpec) -> _Term:
    """Compile one term and its exceptions; a ConfigError says which, and where, on bad input."""
    at = f"{spec.where}: " if spec.where else ""
    what = f"sensitive term {spec.term!r} in group {group!r}"
    if not spec.term.strip():
        raise ConfigError(f"{at}empty sensitive term in group {group!r}: it would match every message")
    try:
        pattern = re.compile(_pattern(spec.term))
    except re.error as exc:
        raise ConfigError(f"{at}{what} is not a valid regex: {exc}") from exc
    exceptions = []
    for text in spec.exceptions:
        if not text.strip():
            raise ConfigError(f"{at}{what} has an empty exception")
        source = _pattern(text)
        try:
            exceptions.append(re.compile(source))
        except re.error as exc:
            raise ConfigError(f"{at}exception {text!r} of {what} is not a valid regex: {exc}") from exc
        # An exception works only by covering an occurrence of the term; between two plain
        # strings that is checkable, and a typo would otherwise silently do nothing.
        if _is_literal(source) and _is_literal(pattern.pattern) and pattern.pattern not in source:
            raise ConfigError(f"{at}exception {text!r} of {what} does not contain the term, so it never applies")
    return _Term(group, spec.term, pattern, tuple(exceptions))


def _is_literal(pattern: str) -> bool:
    return re.escape(pattern) == pattern


_TERM_KEYS = ("term", "except")


def _read_groups(path: Path) -> dict[str, list[TermSpec]]:
    """Parse sensitive.yaml from its node tree, so every error can give ``file:line``."""
    try:
        root = yaml.compose(path.read_text("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if root is None or _is_null(root):
        return {}

    def at(node: yaml.Node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{at(root)}: expected a mapping of group names to lists of terms")
    groups: dict[str, list[TermSpec]] = {}
    first_line: dict[str, str] = {}
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode) or not key.value.strip():
            raise ConfigError(f"{at(key)}: a group name must be a non-empty string")
        group = key.value
        if group in groups:
            raise ConfigError(f"{at(key)}: group {group!r} is given twice (first at {first_line[group]})")
        first_line[group] = at(key)
        if _is_null(value):
            groups[group] = []
        elif isinstance(value, yaml.SequenceNode):
            groups[group] = [_read_term(item, group, at) for item in value.value]
        else:
            raise ConfigError(f"{at(value)}: group {group!r} must be a list of terms")
    return groups


def _read_term(node: yaml.Node, group: str, at: Callable[[yaml.Node], str]) -> TermSpec:
    """One list item: a plain term, or ``{term: …, except: [… ]}``."""
    if isinstance(node, yaml.ScalarNode) and not _is_null(node):
        return TermSpec(node.value, where=at(node))
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{at(node)}: a term in group {group!r} must be a string or {{term: …, except: […]}}")
    fields = {}
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name not in _TERM_KEYS:
            raise ConfigError(f"{at(key)}: unknown key {name!r} in a term of group {group!r}; use term and except")
        fields[name] = value
    term = fields.get("term")
    if not isinstance(term, yaml.ScalarNode) or _is_null(term):
        raise ConfigError(f"{at(node)}: a term in group {group!r} needs `term:` with a string")
    exc = fields.get("except")
    items: list[yaml.Node] = []
    if exc is not None and not _is_null(exc):
        if not isinstance(exc, yaml.SequenceNode):
            raise ConfigError(f"{at(exc)}: `except:` of term {term.value!r} must be a list of strings")
        items = list(exc.value)
    for item in items:
        if not isinstance(item, yaml.ScalarNode) or _is_null(item):
            raise ConfigError(f"{at(item)}: `except:` of term {term.value!r} must be a list of strings")
    return TermSpec(term.value, tuple(i.value for i in items), where=at(term))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _union(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern that matches wherever any of ``patterns`` does, or None where joining could
    change a pattern's meaning (group references are renumbered; inline flags must lead)."""
    if any(re.search(r"\\\d|\(\?P=|\(\?[aiLmsux]", p.pattern) for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
    except re.error:
        return None
