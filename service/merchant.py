"""Messages from the other side of the counter (``merchant``): a seller writing to the shoppers' help
center about joining the platform, their shop, their tools or *their* customer's order. A rule of the
route stage (``service/pipeline/route.py``), read on normalised text before the order rules: a
shoppers' article read to a seller answers the wrong person (我想问下客户要开发票，是平台开吗 got the
shopper's invoice article), so the message goes to a person, and the ticket says it is a seller's.

Precision comes first, as for the order rules. Shoppers name sellers (卖家, 商家, 店家) and rules
about buyers (卖家能不能把买家的电话…) all the time; what gives a seller away is speaking *as* one:
joining or opening a shop (申请入驻, 想开个网店), "our shop", its listings and what running it costs
(我们店铺, 我上架的, 链接被限流, 技术服务费), the seller's back office and apps (我们后台, 电子面单, 千牛, a
vendor code VC…), or a customer of theirs in the third person (这单顾客反应没收到, 让客户签收, 买家恶意退款).
A shopper calling themselves a customer (我是老客户, 作为顾客) does not count, nor does the app (客户端),
nor 我是卖家 alone: a help center may answer people selling second-hand (the bundled KB's 闲鱼
anti-fraud questions are asked so). Words of running a shop that shoppers use too stay out: 关店,
保证金 (商家关店了保证金能赔给我吗), 延迟发货, 虚假发货, 类目 (哪些类目不能无理由退), 账期 (花呗账期).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.kb_rules import KBRules

_PARTY = r"(?:客户|顾客)"  # not 买家: shoppers' rule questions name buyers (卖家能不能把买家的电话…)
_NOT_PARTY = r"(?!端|服务|中心|经理|信息|资料|满意|体验|的?权益)"  # 客户端 is the app
# the writer is the customer: 我是老客户, 作为顾客, 企业客户申请… (checked just before a match)
_SELF = re.compile(rf"(?:我是|我们是|作为|身为|我也是|老|新|大|vip|会员|普通|尊贵的?|忠实的?|你们的|企业|个人){_PARTY}")
_SELF_BEFORE = 4  # characters before a match that may hold _SELF's opening
# JD's chat widget prefixes a shopper's pasted order card with this line of its own
_WIDGET = re.compile(r"顾客通过点击web咚咚")

_RULES = (
    (
        "onboarding",
        r"(?:申请|怎么|怎样|如何|想|要|能|可以|个人|企业|公司|商家)入驻"
        r"|入驻(?:客服|编号|信息|资料|资质|费用|流程|申请|条件|审核|的?店铺名?)|资质审核(?:被|没|未|一直)|资质被?驳回"
        # not 这家店开店多久了
        r"|(?:想|要|打算|准备|怎么|怎样|如何|申请)[^,.!?;]{0,8}?开(?:个|一个|一家)?(?:网店|店铺|店|旗舰店|专营店)",
    ),
    (
        "own_shop",
        # their shop and their listings (a shopper's goods are 我买的, not 我上架的)
        r"(?:我们|我)的?(?:店铺|网店|小店)|我们店(?!员)|本店"
        r"|(?:我们|我)的?(?:商品|宝贝|链接)(?:一直|都|还)?(?:被|在)?(?:审核|下架|上架|限流|降权)|(?:我们|我)上架的|(?:我们|我)发布的(?:商品|宝贝|链接)"
        # running it: what only a seller pays, sets or suffers (关店, 延迟发货, 保证金 are shoppers' words too)
        r"|货款(?:结算|提现|被冻结)|结算货款|技术服务费|直通车|降权|限流|运费模板|批量发货|类目权限|放错类目|被投诉侵权",
    ),
    (
        "seller_tools",
        # the back office as the seller's own (not 客服说商家后台可以改, 卖家后台能看到我的手机号吗)
        r"(?<![说称])(?:商家|卖家)后台(?=[^,.!?;]{0,6}?(?:登|进不去|打不开|设置|操作|提示|报错|看不到|怎么))"
        r"|商家中心|卖家中心|我们的?后台|后台(?:评价|订单|商品)管理|后台库存|电子面单|打单(?:软件|系统)|^vc(?:\d|\[)"
        r"|千牛|京麦|商家版|卖家版|商家端",  # the sellers' apps
    ),
    (
        "their_customer",
        "|".join(
            (
                rf"(?:我的|我们的|(?<!所)有个?|这个|那个|此单?|该|这单的?|这订单的?|此订单的?|订单的?){_PARTY}{_NOT_PARTY}",
                rf"{_PARTY}(?:申请|要求|要(?!求)|反映|反应|来找|现在来|本人|没有?收到|不要了|还要的?|拍下?了?|下单的?"
                r"|签收|点了|选的|同意|回信|那边|的电话|的手机|手机|电话|留的|说)",
                rf"(?:联系|通知|告知|发送|让|帮|替)(?:一下)?{_PARTY}{_NOT_PARTY}"
                rf"|给{_PARTY}(?:派送|发货|寄|送|补发|退款|开|优惠)",
                # a buyer as the seller speaks of one (not 别的买家都说, 作为买家, 买家秀)
                r"(?<!所)有个?买家|我的买家|(?:联系|通知|告知)(?:一下|下)买家|买家(?:退回|拍下|恶意|问我要|找我|地址写错)",
            )
        ),
    ),
)
MERCHANT_RULES = tuple(name for name, _ in _RULES)
_PATTERNS = tuple((name, re.compile(p)) for name, p in _RULES)


@dataclass(frozen=True)
class MerchantMatch:
    """Why a message reads as a seller's: the rule (onboarding | own_shop | seller_tools |
    their_customer) and the text it matched."""

    rule: str
    text: str


def match_merchant(norm: str, off: frozenset[str] = frozenset()) -> MerchantMatch | None:
    """The first rule by which ``norm`` (normalised) is a seller's message, or None; rules named in
    ``off`` are skipped."""
    norm = _WIDGET.sub(" ", norm)
    for rule, pattern in _PATTERNS:
        if rule in off:
            continue
        for m in pattern.finditer(norm):
            if not _SELF.search(norm, max(0, m.start() - _SELF_BEFORE), m.end()):
                return MerchantMatch(rule, m.group())
    return None


@dataclass(frozen=True)
class MerchantRules(KBRules):
    """``match_merchant`` for one KB: a KB for sellers (a merchant help center, atec's 我们店铺怎样开通
    花呗) has made their wording its topic, and the rules its own FAQ questions match are off."""

    def match(self, norm: str) -> MerchantMatch | None:
        return match_merchant(norm, self.off)

    @staticmethod
    def first_rule(norm: str, off: frozenset[str]) -> str | None:
        m = match_merchant(norm, off)
        return m.rule if m is not None else None
