"""Messages from the other side of the counter (``merchant``): a seller writing to the shoppers' help
center about joining the platform, their shop, their tools or *their* customer's order. A rule of the
route stage (``service/pipeline/route.py``), read on normalised text before the order rules: a
shoppers' article read to a seller answers the wrong person (我想问下客户要开发票，是平台开吗 got the
shopper's invoice article), so the message goes to a person, and the ticket says it is a seller's.

Precision comes first, as for the order rules. Shoppers name sellers (卖家, 商家, 店家) and rules
about buyers (卖家能不能把买家的电话…) all the time; what gives a seller away is speaking *as* one:
joining or opening a shop (申请入驻, 想开个网店), "our shop" and its listings (我们店铺, 我的商品被下架),
the seller's back office and apps (商家后台, 电子面单, 千牛, a vendor code VC…), or a customer of theirs in
the third person (这单顾客反应没收到, 让客户签收). A shopper calling themselves a customer (我是老客户,
作为顾客) does not count, nor does the app (客户端), nor 我是卖家 alone: a help center may answer people
selling second-hand (the bundled KB's 闲鱼 anti-fraud questions are asked so).
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
        r"|入驻(?:客服|编号|信息|资料|资质|费用|流程|申请|条件|审核|的?店铺名?)"
        r"|(?:想|要|怎么|怎样|如何|申请)开(?:个|一个|一家)?(?:网店|店铺|店)",  # not 这家店开店多久了
    ),
    (
        "own_shop",
        # their shop, their listings, being paid for what they sold
        r"(?:我们|我)的?(?:店铺|网店|小店)|我们店(?!员)|本店|(?:我们|我)的?商品被?(?:下架|上架|发布|审核)"
        r"|货款(?:结算|提现)|结算货款",
    ),
    (
        "seller_tools",
        r"商家后台|卖家后台|商家中心|卖家中心|我们的?后台|后台(?:评价|订单|商品)管理|电子面单|^vc(?:\d|\[)"
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
                r"(?<!所)有个?买家|我的买家|买家(?:退回|拍下)",
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
