"""mask_pii: phones, ID cards, bank cards and emails are masked; order numbers are not."""

from __future__ import annotations

import pytest

from service.pii import mask_pii


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我的电话13812345678", "我的电话[手机号]"),
        ("电话 +86 138 1234 5678 谢谢", "电话 [手机号] 谢谢"),
        ("手机 138-1234-5678", "手机 [手机号]"),
        ("8613912345678打我", "[手机号]打我"),
        ("身份证11010519491231002X", "身份证[身份证号]"),
        ("身份证号 11010519491231002x 请核对", "身份证号 [身份证号] 请核对"),
        ("卡号6222021234567890", "卡号[银行卡号]"),  # 16 digits
        ("卡号 6222 0212 3456 7890 123 退款到这张", "卡号 [银行卡号] 退款到这张"),  # 19 digits, spaced
        ("卡 6222-0212-3456-7890", "卡 [银行卡号]"),
        ("邮箱 zhang.san+shop@example.com.cn 联系我", "邮箱 [邮箱] 联系我"),
    ],
)
def test_personal_data_is_masked(text: str, expected: str):
    assert mask_pii(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "订单号20261125001还没发货",  # 11 digits, not 1[3-9]…: an order number, not a phone
        "订单 20261125001 怎么还没到",
        "退款 128 元什么时候到账",
        "快递单号 SF1234567890",
        "邮编100000",
        "没有任何个人信息的一句话",
    ],
)
def test_non_personal_numbers_are_kept(text: str):
    assert mask_pii(text) == text


def test_several_kinds_in_one_message():
    out = mask_pii("我叫张三，电话13812345678，邮箱 a@b.cn，身份证110105194912310021，订单20261125001")
    assert "13812345678" not in out and "a@b.cn" not in out and "110105194912310021" not in out
    assert out.count("[手机号]") == 1 and out.count("[邮箱]") == 1 and out.count("[身份证号]") == 1
    assert "[银行卡号]" not in out  # the ID card is not mistaken for a bank card
    assert "20261125001" in out


def test_masking_is_idempotent():
    once = mask_pii("电话13812345678 卡号6222021234567890")
    assert mask_pii(once) == once
