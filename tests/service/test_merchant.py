"""The merchant rules (``service/merchant.py``): a seller's message to the shoppers' help center."""

from __future__ import annotations

import pytest

from indexer.normalize import normalize
from service.merchant import MERCHANT_RULES, MerchantRules, match_merchant


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("个人可以入驻吗，需要什么资质", "onboarding"),
        ("入驻编号：[数字x]", "onboarding"),
        ("刚申请入驻，店铺名填错了能退回修改吗", "onboarding"),
        ("我们店铺的退货地址已经改了，怎么还退到旧地址", "own_shop"),
        ("这笔优惠算我的店铺出吗", "own_shop"),
        ("我们的商品被下架了，怎么申诉", "own_shop"),
        ("货款结算要几天", "own_shop"),
        ("想开个网店，要交保证金吗", "onboarding"),
        ("千牛上看不到这个订单", "seller_tools"),
        ("资质审核被驳回了，要补什么材料", "onboarding"),
        ("我打算在你们平台开个旗舰店", "onboarding"),
        ("我上架的裙子审核一直不过", "own_shop"),
        ("链接被限流了，什么时候恢复", "own_shop"),
        ("运费模板改了不生效", "own_shop"),
        ("技术服务费怎么收", "own_shop"),
        ("后台库存对不上", "seller_tools"),
        ("麻烦联系一下买家，电话打不通", "their_customer"),
        ("买家恶意退款，东西用过了", "their_customer"),
        ("商家后台看不到这个订单", "seller_tools"),
        ("能把SKU打在电子面单上吗", "seller_tools"),
        ("VC[数字x] 这单能继续派送吗", "seller_tools"),
        ("这单顾客说没收到货", "their_customer"),
        ("客户要开发票，是平台开还是我们开", "their_customer"),
        ("麻烦让快递员联系一下客户", "their_customer"),
        ("有买家退回了两件，都是上门取件吗", "their_customer"),
    ],
)
def test_a_sellers_message_is_detected(query: str, rule: str) -> None:
    m = match_merchant(normalize(query))
    assert m is not None and m.rule == rule, query


@pytest.mark.parametrize(
    "query",
    [
        "卖家一直不发货怎么办",
        "平台规定卖家能不能把买家的电话用在别处",  # a rule about buyers, asked by one
        "卖家在我评价下面的回复，是不是所有买家都能看到",
        "我是老客户了，有没有优惠",
        "作为顾客我想投诉这家店",
        "客户端怎么下载",
        "消费撤销没打单，能收到钱吗",  # a card payment's slip, not a parcel's label
        "联系客服怎么联系",
        "这家店是入驻商家还是自营",
        "这家店开店多久了",
        "我买的商品还没发货",
        "退货款什么时候到账",
        "我是卖家，买家发来的链接能点吗",  # a second-hand seller: the bundled KB answers it
        "客服说商家后台可以改地址，你们帮我改下",  # the shopper reports what they were told
        "卖家后台能看到我的手机号吗",
        "商家关店了，保证金能赔给我吗",  # 关店, 保证金, 延迟发货: shoppers' words too
        "卖家延迟发货有赔偿吗",
        "哪些类目不支持七天无理由退货",
        "花呗账期是多久",
        "我发布的评价怎么删除",
        "卖家会联系买家确认地址吗",
        "买家申请退款后卖家多久处理",
        "看评价好多买家说是假货",
        "降价了怎么补差价给顾客",
        # JD's chat widget writes this line into a shopper's pasted order card
        "顾客通过点击web咚咚[站点x]信息发送:[订单编号:[订单x]] 这个快递几点送?",
    ],
)
def test_a_shoppers_message_is_not(query: str) -> None:
    assert match_merchant(normalize(query)) is None, query


def test_rules_the_kbs_own_questions_match_are_off_for_it() -> None:
    # a KB whose shoppers are sellers (花呗 for shops): "our shop" and "our customers" are its topics
    kb = [normalize(q) for q in ("我们店铺怎样开通花呗收款", "我们的顾客付不了款怎么办", "花呗怎么还款")]
    rules = MerchantRules.for_kb(kb)
    assert rules.off == {"own_shop", "their_customer"}
    assert dict(rules.kb_topics) == {"own_shop": 1, "their_customer": 1}
    assert rules.match(normalize("这单顾客说没收到货")) is None
    assert rules.match(normalize("怎么申请入驻")) is not None  # the other rules still count
    assert match_merchant(normalize("这单顾客说没收到货")) is not None  # on for other KBs


def test_a_kb_without_such_questions_keeps_every_rule() -> None:
    rules = MerchantRules.for_kb([normalize("七天无理由退货怎么申请"), normalize("卖家不发货怎么办")])
    assert rules == MerchantRules()
    assert set(MERCHANT_RULES) == {"onboarding", "own_shop", "seller_tools", "their_customer"}
