"""Messages that need the shopper's own order or account (``needs_order``): a rule of the route
stage (``service/pipeline/route.py``), read on normalised text after the request-for-a-person and
sensitive checks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.detect import MASKED, is_followup, strip_greeting
from service.kb_rules import KBRules

# An article can say how to track a parcel or change an address; only someone who can open the
# order can say where *this* parcel is or change *its* address. Precision comes first: a false
# alarm hands off a shopper who could have read an article, so a how-to question (怎么取消订单)
# never fires, and a request needs an order number, a possessive or demonstrative ("my parcel",
# 这单) or a verb aimed at us (帮我退款), not just a topic word.

# An order identifier. The chat card pastes placeholders ([订单x]) or real numbers; 单号 covers
# 订单号, 运单号, 快递单号. At least 6 digits after a label: "订单号是多少" is a how-to question.
_ORDER_ID = re.compile(
    r"[\[【]订单[0-9a-z]{1,24}[\]】]"  # [订单x], 【订单123】 (not 【订单】, a page name)
    # 订单号:123456, 运单号 sf1234567, 订单号:[数字x]
    rf"|(?:单号码?|订单编号|订单id)\s*[:：是为]?\s*(?:[a-z]{{0,4}}\d{{6,}}|{MASKED})"
    # The label of a pasted order card ([订单编号:[数字x],订单金额:…]) whatever the masking left
    # after it, even 订单编号:nan: a shopper asking types 订单编号在哪看, not a colon.
    r"|订单编号\s*[:：]"
    r"|订单\s*[:：]?\s*\d{10,}"  # 订单123456789012
)
# Any run of 10+ digits is an order or waybill number, except the numbers shoppers quote that
# are not orders: an 11-digit mobile number and a 400/800 hotline ("4008123123是你们的电话吗").
_LONG_NUMBER = re.compile(r"(?<![\d.])(?!(?:86)?1[3-9]\d{9}(?![\d.]))(?![48]00\d{7}(?![\d.]))\d{10,}(?![\d.])")

# A pasted link: a scheme or www., or a domain with a path (item.taobao.com/item.htm?id=6234567890)
_LINK = re.compile(r"(?:https?://|www\.)[!-~]+|(?<![!-~])[a-z0-9-]+(?:\.[a-z0-9-]+)+/[!-~]*")

# The shopper's own placed order, parcel or goods: 我的快递, 我买的东西, 这个订单, 这单.
# Bare 快递 is not enough: 快递一般几天到 asks about delivery in general.
_OWN = (
    r"(?:我(?:的|家的?)(?:快递|包裹|订单|单子|货|东西|宝贝|件|商品|物流)|我(?:那|这)(?:个|件|单|笔|台|双|套)"
    r"|我(?:刚才?|昨天|前天|上周)?(?:买|下|拍|订|网购)的(?:东西|商品|宝贝|货|单子?|订单|快递|包裹)?"
    r"|我(?:刚才?|昨天|前天|上周)?(?:买|拍|订)了(?:一|两|几|\d+)?(?:个|台|件|双|套|部|箱|瓶|盒)"  # 我订了一个冰箱
    r"|(?:这|那)(?:[两几]|\d+)?(?:个|笔)?(?:订单|单子|快递|包裹)"  # 这两个订单 too
    r"|(?:这|那)一?单(?!品|位|元|价|独|身|调|纯|据|词|车))"  # 这单 / 那单, not 单品 / 单价
)
# Where it is, or that it is late: a question only the order's tracking answers.
_STATUS = (
    # 到哪了, 去哪了; 在哪里 alone may ask for the page
    r"(?:到哪(?:了|里|儿|啦)|在哪(?:儿|里)?(?:了|啦)|去哪(?:了|啦|里了|儿了)"
    r"|(?:还|一直|迟迟|都|怎么还?|咋还?|为什么还?|为啥还?)(?:没有?|不|未)"
    r"(?:到|送到|收到|发货|发出|发|寄出|出库|揽收|揽件|派送|送|动|更新|物流|退款|退钱)"
    r"|(?:没有?|未)(?:发货|收到|到货)|不发货"
    r"|什么时候(?:能|可以|才能|会|才)?(?:到|发货|发|送到|送达|寄出|派送)|几时(?:能)?(?:到|发)|多久(?:能|才能|可以)?(?:到|发)"
    r"|(?:今天|明天|今日|几号)(?:能|会|可以)?(?:发货|发出|到货|送到|送达)"
    r"|(?:\d+|[一二两三四五六七八九十几]+|好几|半)个?(?:天|日|星期|周|礼拜|小时)了?(?:都|还|也)?(?:没有?|不)"
    r"(?:动|更新|到|发|送|变)"
    r"|(?:没|不)动(?:了|静)|(?:没|不)更新|卡(?:住|在)|停在|丢了|丢件|没拿到|(?<!会)被(?:退回|拒收)|显示(?:已)?签收"
    r"|还在(?:揽收|中转|派送|路上|运输)|显示(?:已)?(?:退回|派送成功|妥投))"
)
# ... or the parcel asked after with nothing else: 我的货呢, 我的快递呢? (我买的东西呢 may look for the order list)
_OWN_STATUS = re.compile(rf"{_OWN}.{{0,12}}?{_STATUS}|^我(?:的|买的|家的)(?:快递|包裹|货)呢(?=[\s!?~]*$)")
# When the courier or the installer comes (上门取件什么时候来, 师傅几点上门): an appointment of the
# shopper's own, which only the order shows; 一般几点来 asks about the service (_ASKS_ABOUT).
_VISIT_WHEN = re.compile(
    r"(?:上门取件|取件|快递员|快递小哥|师傅|安装人员|维修人员)[^,.!?;]{0,6}?"
    r"(?:什么时候|啥时候?|几点|几时|哪天|今天|明天)(?:能|会|可以|才|大概)?(?:来|上门|到)"
)
# When *this* one ships or arrives (这个多久能到啊, 那个几点能到, 这个货今天可以送到么): a pointing word
# stands for the order or the product in front of the shopper, and only its order or its page can
# say. No question of the bundled KB's 7,559 nor of its labelled dev split has this shape; 到账 is money.
_THIS_WHEN = re.compile(
    r"(?:这|那)(?:个|件|款|单|些|俩|两个|两件|批)?(?:东西|宝贝|货|商品|快递|包裹)?[^,.!?;]{0,6}?"
    r"(?:多久|几天|几点|什么时候|啥时候?|哪天|今天|明天|后天)(?:能|才能|可以|会|才|就|大概)?"
    r"(?:到(?!账)|送到|送达|发货|发出|寄出|发(?!票))"
)
# What the shopper's own account holds, owes or charged: 我的88VIP还剩几天到期, 我花呗这个月要还多少,
# 我今天付的那笔钱扣了多少. An article says where to look it up (在哪看花呗账单 asks that, and
# _ASKS_ABOUT keeps it quiet); only the account can say the figure. The thing and the figure asked
# must go together: 我的会员有多少权益 asks about a programme, 我的积分有多少 about a balance.
_OWNER = r"我(?:的|们的)?[^,.!?;我]{0,8}?"
_OWN_ACCOUNT = re.compile(
    _OWNER + r"(?:(?:余额|零钱|积分|京豆|淘金币|金币|购物金|礼金|额度|红包|优惠券)[^,.!?;]{0,6}?"
    r"(?:还剩|剩下?多少|剩几|还有多少|还有几|有多少|是多少)"
    r"|(?:花呗|白条|借呗|信用卡|账单)[^,.!?;]{0,6}?(?:(?:要|该|得|需要)?还多少|还?欠多少)"
    r"|(?:会员|88vip|vip|plus|优惠券|红包|礼金|积分|京豆)[^,.!?;]{0,6}?"
    r"(?:还剩几天|剩几天|(?:几号|哪天|什么时候|啥时候|几天|多久)(?:能|会|就)?到期|到期了?(?:没|吗|么))"
    r"|(?:那|这)笔钱?[^,.!?;]{0,6}?扣了?多少)"
)
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
# …or whom it goes to: the recipient's phone or name on an order the shopper placed
_CONTACT_EDIT = r"(?:改|修改|更改|换)(?:一下|下|个)?(?:联系方式|联系电话|收货电话|电话号码?|手机号码?|收货人|收件人)"
_OWN_EDIT = re.compile(
    rf"{_OWN}.{{0,10}}?(?:{_CANCEL}|{_INTERCEPT}|{_ADDRESS_EDIT}|{_CONTACT_EDIT})"
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
_OBJECT = (
    r"(?:把|将)?(?:这个|这笔|这单|我的|那个|那笔|刚才的|刚下的|刚买的)?"
    r"(?:订单|单子|钱|款|快递|包裹|货|收件人|收货人|地址|电话|手机号|发票)?的?"  # 帮我把收件人改成…
)
_ACT = (
    r"(?:退款|退钱|退(?:一下|下)款|退了|退掉|(?:办理|处理|申请)(?:一下)?退款"
    rf"|{_CANCEL}|催(?!眠|化|生|泪|肥|熟)|{_INTERCEPT}|{_ADDRESS_EDIT}"  # not 给我催眠
    r"|(?:查|看)(?:一下|下|看|查)?(?:我的|这个|那个|这[两几]个)?(?:物流|快递|订单|包裹|单号|到哪)"
    # an after-sale case opened for them (帮我申请售后, 给我换货); 帮我安装 alone may ask whether
    # the installer does it, so a visit needs the verb that books it (帮我预约上门安装)
    r"|(?:申请|办理|安排|预约)(?:一下|下)?(?:售后|换货|换新|维修|返修|上门取件|上门安装|安装)|售后|换货"
    # this order noted, withdrawn or reissued, or its courier or installer called (帮我备注一下周末送,
    # 麻烦帮我撤销退款申请, 帮我联系下快递员); 换成 and 补发 are asked of sellers in how-to questions too
    r"|备注|撤销|撤回|合并发货|重开|改(?:成|为|一下|下)|联系(?:一下|下)?(?:快递员?|师傅|配送员|骑手))"
)
_ACTOR_ACT = re.compile(rf"{_ACTOR}{_OBJECT}{_ACT}|地址.{{0,8}}?{_ACTOR}(?:改|修改|更改|换)|把钱退给我|退钱给我")
# Said by someone else (对方说我的快递丢了, 短信说…被退回, 客服说给我退款): scam calls and
# messages quote exactly these phrases, and the security articles answer them.
_REPORTED = r"(?:说|称|告诉我)(?:要|会|可以|能)?"
_REPORTED_BEFORE = re.compile(rf"{_REPORTED}$")
# …and the actor is not us when someone else is the subject or it is negated: 卖家不给我退款,
# 卖家会不会直接给我退款, 智能助手能帮我查快递吗 describe what others do or can do.
_NOT_OURS = re.compile(
    r"(?:(?:卖家|商家|店家|店铺|老板|对方|快递员|他们|她们|平台|智能助手|智能客服|助手|机器人|小秘|小蜜|阿里小秘)"
    r"(?:说|答应|同意|承诺|拒绝|拒不|不肯?|没有?|不愿意?|一直|还是|就是|都|也|已经|会不会|会|可能|能不能|能|可以|直接|主动|要|怎么)*"
    rf"|[不没]|不肯|不愿意?|电话|{_REPORTED})$"
)
# Bare imperatives (催单, 催一下发货, 拦截快递, 把快递拦下来) count only when they are not a
# question about the service (催单有用吗, 拦截快递要钱吗, 催发货按钮) and not a report of what the
# shopper already did (我去催卖家他不理我). After 帮 the actor rule judges it: 帮催单 asks us,
# 卖家不帮催单 does not.
_IMPERATIVE = re.compile(
    r"(?<![我去也都经帮])(?:催(?:一下|下|一哈)(?:单|发货|快递|物流|卖家|商家)?|催(?:单|发货|快递|物流|卖家|商家))"
    r"|拦截(?:一下|下)?(?:快递|包裹|物流|订单)|(?:快递|包裹)拦(?:截|下来|住|回来)"  # not 邮件拦截
    # 你帮我看看 / 麻烦查一下 with nothing after it: look at my case (让她帮我看看 is someone else)
    r"|(?<![她他让])(?:帮我|麻烦(?:你们?|您)?(?:帮我)?)(?:看|查)(?:看|一下|下)(?=$|[\s,.!?;~]|我)"
    # look my order up, said bare (查一下我的订单, 看下这个快递)
    r"|^(?:查|看)(?:一下|下|看|查)?(?:我的|这个|那个|这[两几]个)(?:订单|单子|物流|快递|包裹)(?=$|[\s,.!?;~吧呗])"
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
# 补 alone issues one too (麻烦补普通发票).
_INVOICE_ACT = r"(?:(?:补|重新?|换)?开|补)(?:一下|下|一?个|一?张)?(?:增值税)?(?:电子|纸质|专用|普通|专|普)?(?:发票|票)"
_INVOICE_REQUEST = re.compile(rf"{_ACTOR}{_OBJECT}{_INVOICE_ACT}")
# The buyer's invoice details handed over for the order: a tax number under its label (税号:9131…,
# masked 税号:[数字x]) or the buyer's name after a colon (单位全称:[组织机构x], 抬头:某某科技有限公司).
# Like an order number they count even beside a question. The label alone asks about the field
# (税号是什么, 单位抬头必须填税号吗, 抬头写公司还是个人), and a real tax number has 15–20 letters
# and digits, at least 6 of them digits.
_INVOICE_DETAILS = re.compile(
    rf"(?:税号|纳税人识别号|信用代码)\s*[:：是为]?\s*(?:(?=(?:[a-z]*\d){{6}})[0-9a-z]{{15,20}}(?![0-9a-z])|{MASKED})"
    r"|(?:(?:单位|公司|企业|购买方|购方)(?:全称|名称)|(?:发票)?抬头)\s*[:：]\s*"
    rf"(?:{MASKED}|(?:(?!还是)[\u4e00-\u9fff()]){{2,30}}?(?:公司|厂|店|中心|学校|医院|研究院|研究所|事务所|协会|银行|局))"
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
# …or the new value handed over (电话改为[电话x], 新地址是:湖北…, 收货地址改成朝阳路12号): a masked
# value, a mobile number, or a place name ending as addresses do; said, not asked (地址改成别的城市运费会变吗
# and 电话改成这个可以吗 ask).
_NEW_VALUE = (
    rf"(?:[\u4e00-\u9fff]{{0,8}}?{MASKED}|1[3-9]\d{{9}}(?!\d)"
    r"|(?!别|其他|其它|另|外地|外省)[\u4e00-\u9fff]{2,12}?(?:省|市|区|县|镇|路|街|号|小区|栋|单元|室))"
)
_NEW_DETAIL = re.compile(
    rf"(?:(?:新|现在的?)(?:收货|收件)?(?:地址|电话|手机号?|联系方式)(?:是|为)|{_DETAIL}(?:改|换|修改|更改)(?:为|成))"
    rf"\s*[:：]?\s*{_NEW_VALUE}"
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


# --- a reply inside a conversation kefu did not take part in ------------------------------------
# 是的，货已经发出了 / 没有。只有物流单号。/ 对 就收到两个小箱子: the shopper answers a question an
# agent asked about their case. No article answers a reply, and the nearest one read alone is
# confidently wrong (「没有」 lands on whatever entry says 没有). Read on the message as typed: the
# normaliser drops the space that separates 对 from the rest (对就收到 ≠ 对方说), so the opener
# must stand alone, ended by a space, a punctuation mark or the message's end. A reply that goes on
# to ask something (可以 多久能退款呢) is a question and is left to the confidence.
_REPLY = re.compile(
    r"^\s*(?:是的|是啊|是呀|是滴|对的|对啊|对呀|对|嗯+|恩+|没有|没|不是|不对|不用|有的)"
    r"(?:[\s,，.。!！~～、…]+|$)"
)
_ASKS = re.compile(rf"{_QUESTION.pattern}|问|请|咨询|吗|呢|么")
_CLOSING = re.compile(r"谢|感谢|拜拜|再见")  # 没有了，谢谢: the chat ends, nothing to hand over


# --- a conversation already about the shopper's order ------------------------------------------
# Once the chat is about one order (the shopper sent its number or asked us to act on it, or an
# agent asked for the number or said they are looking into it), what the shopper says next without
# asking anything (买的时候显示明天送的, 收到的就是两个小箱子) describes that order: no article
# answers it, however close one reads. A question still goes to the help center (那发票怎么开).
_AGENT_ON_ORDER = re.compile(
    r"订单号|订单编号|单号|(?:帮|为|给)您(?:查|看|核实|催|处理|申请|登记|反馈|联系|操作|取消|修改|备注)"
    r"|(?:查|看)(?:询|一下|到)?(?:您的|一下您的)?(?:订单|物流|快递|包裹)"
)


def agent_on_order(text: str) -> bool:
    """An agent's turn that asks for the order number or acts on the order."""
    return _AGENT_ON_ORDER.search(text) is not None


# …and a question about when it ships or arrives (不是明天送达么?, 能快点吗): about that order too,
# unless it asks how something is done.
_WHEN = re.compile(
    r"(?:什么时候|几点|几号|哪天|多久|今天|明天|后天|预计).{0,6}?(?:到|送|发|收|派)|送达|到货|发货|快点|尽快|加急"
)


# …and a follow-up (``is_followup``: very short, or short and pointing back) that asks neither how
# something is done nor who pays (查到了吗, 没有变呢, 哪些发了): it continues the order's case. 那发票怎么开
# and 那运费谁出 are still the help center's. Chosen on dev traffic with history: fewer order-specific
# and out-of-scope messages answered, no answerable message changed (docs/quality.md, "Real traffic").
_ASKS_HOW_OR_WHO = re.compile(rf"{_ASKS_HOW.pattern}|谁")


def match_order_statement(norm: str) -> OrderMatch | None:
    """In a conversation about the shopper's order: a message (normalised) that asks nothing,
    asks when the order ships or arrives, or is a follow-up that asks neither how nor who."""
    if not _ASKS.search(norm):
        return OrderMatch("order_conversation", norm)
    m = _WHEN.search(norm)
    if m is not None and not _ASKS_ABOUT.search(norm):
        return OrderMatch("order_conversation", m.group())
    if is_followup(norm) and not _ASKS_HOW_OR_WHO.search(norm):
        return OrderMatch("order_followup", norm)
    return None


@dataclass(frozen=True)
class OrderMatch:
    """Why a message needs the shopper's order: the rule and the text it matched."""

    # order_id | invoice_details | own_order_status | own_order_edit | own_account | act_on_order | invoice
    # | order_details | imperative | reply | order_conversation | order_followup
    rule: str
    text: str


def _first(pattern: re.Pattern[str], norm: str, unless: re.Pattern[str]) -> re.Match[str] | None:
    """The first match of ``pattern`` whose preceding text does not end in ``unless``."""
    return next((m for m in pattern.finditer(norm) if not unless.search(norm, 0, m.start())), None)


def match_reply(query: str) -> OrderMatch | None:
    """A reply to an agent's question (``query`` as typed): an answering word standing alone at the
    start, and no question after it."""
    m = _REPLY.match(query)
    if m is None or _ASKS.search(query[m.end() :]) or _CLOSING.search(query):
        return None
    return OrderMatch("reply", query.strip())


# The wording rules (not the order numbers and invoice details, which are the order itself): a KB
# whose own FAQ questions are worded so answers them (atec's 可以帮我取消花呗吗, a bank's 我的信用卡
# 额度是多少) has made that wording its topic, and the rule is off for it (``OrderRules.for_kb``).
WORDING_RULES = (
    "own_order_status",
    "own_order_edit",
    "own_account",
    "act_on_order",
    "invoice",
    "order_details",
    "imperative",
)


def match_order_request(norm: str, off: frozenset[str] = frozenset()) -> OrderMatch | None:
    """The first rule by which ``norm`` (normalised) needs the shopper's own order or account,
    or None; rules named in ``off`` are skipped. An order number, a pasted order card or invoice
    details always count; the wording rules are skipped for questions about how to do something
    or whether a message is genuine. A pasted link's digits are a product's, not an order's,
    unless the link is to an order."""
    norm = _LINK.sub(lambda m: m.group() if "order" in m.group() else " ", norm)
    for rule, pattern in (("order_id", _ORDER_ID), ("order_id", _LONG_NUMBER), ("invoice_details", _INVOICE_DETAILS)):
        m = pattern.search(norm)
        if m is not None:
            return OrderMatch(rule, m.group())
    if _ASKS_ABOUT.search(norm):
        return None
    for rule, pattern, unless in (
        ("own_order_status", _OWN_STATUS, _REPORTED_BEFORE),
        ("own_order_status", _THIS_WHEN, _REPORTED_BEFORE),
        ("own_order_status", _VISIT_WHEN, _REPORTED_BEFORE),
        ("own_order_edit", _OWN_EDIT, _REPORTED_BEFORE),
        ("own_account", _OWN_ACCOUNT, _REPORTED_BEFORE),
        ("act_on_order", _ACTOR_ACT, _NOT_OURS),
        ("invoice", _INVOICE_REQUEST, _NOT_OURS),
    ):
        if rule in off:
            continue
        m = _first(pattern, norm, unless)
        if m is not None:
            return OrderMatch(rule, m.group())
    if "order_details" not in off and not _ASKS_HOW.search(norm) and not _ACCOUNT.search(norm):
        m = (
            _first(_DETAILS_WRONG, norm, _REPORTED_BEFORE)
            or (None if _QUESTION.search(norm) else _first(_NEW_DETAIL, norm, _REPORTED_BEFORE))
            or _BARE_REPORT.match(strip_greeting(norm))
        )
        if m is not None:
            return OrderMatch("order_details", m.group())
    m = _IMPERATIVE.search(norm) if "imperative" not in off else None
    if m is not None and not _QUESTION.search(norm):
        return OrderMatch("imperative", m.group())
    return None


@dataclass(frozen=True)
class OrderRules(KBRules):
    """``match_order_request`` for one KB: the wording rules its own FAQ questions match are off."""

    def match(self, norm: str) -> OrderMatch | None:
        return match_order_request(norm, self.off)

    @staticmethod
    def first_rule(norm: str, off: frozenset[str]) -> str | None:
        m = match_order_request(norm, off)
        return m.rule if m is not None and m.rule in WORDING_RULES else None
