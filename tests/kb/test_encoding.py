"""Text as Chinese users save it: UTF-8, or GBK and Big5 (Excel's and Windows' "ANSI" text), told
apart by what they decode to; anything else refused with where UTF-8 failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.encoding import EncodingError, decode_text, looks_chinese
from kb.loader import load_kb, summary_line

ANSWER = "现货商品付款后四十八小时内从杭州仓发出，预售商品以商品页写明的发货日期为准，请耐心等待。"
TRADITIONAL = "請問怎麼退貨？的一是不了人我在有他這個們中來上大為和國地到以說時要就出會可也你對生能而子那得於著下自之年"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("问题,答案\n怎么退货？,七天内申请\n".encode(), "utf-8"),
        ("\ufeff问题,答案\n".encode(), "utf-8"),  # Excel's "CSV UTF-8" starts with a byte order mark
        ("问题,答案\n请问怎么退货？,七天内在订单页面申请\n".encode("gbk"), "gb18030"),
        (TRADITIONAL.encode("big5"), "big5"),
        (TRADITIONAL.encode("gbk"), "gb18030"),  # GBK holds traditional characters too: still GBK
    ],
)
def test_each_encoding_is_read_as_itself(data: bytes, encoding: str):
    text, got = decode_text(data)
    assert got == encoding and text.lstrip("\ufeff") == data.decode(encoding).lstrip("\ufeff")


def test_bytes_that_are_not_chinese_text_are_refused_with_where_utf8_failed():
    with pytest.raises(EncodingError, match=r"byte 0xe9 on line 2\), nor GBK or Big5; save it as UTF-8"):
        decode_text("question,answer\ncafé crème,très bon\n".encode("latin-1"))


def test_looks_chinese_counts_the_non_ascii_characters():
    assert looks_chinese("abc 退货，好的") and not looks_chinese("abc") and not looks_chinese("退货 ぁぃぅぇ")


def test_a_gbk_table_and_a_big5_article_load_with_a_note(tmp_path: Path):
    (tmp_path / "faq.csv").write_bytes(f"标准问题,答案\n下单后多久发货？,{ANSWER}\n".encode("gbk"))
    (tmp_path / "guide.txt").write_bytes(("退貨說明\n\n" + TRADITIONAL * 3).encode("big5"))
    kb = load_kb(tmp_path)
    [entry] = kb.entries
    assert entry.question == "下单后多久发货？" and entry.answer == ANSWER
    assert TRADITIONAL in kb.documents[0].body
    assert kb.report.counts()["files_not_utf8"] == 2
    assert "2 files read as GBK or Big5, not UTF-8" in summary_line(kb.report)
    notes = sorted(str(n) for n in kb.report.notes if n.kind == "encoding")
    assert notes == [
        "faq.csv:1: read as GBK text, not UTF-8; save it as UTF-8 to be sure every character is read as meant",
        "guide.txt:1: read as BIG5 text, not UTF-8; save it as UTF-8 to be sure every character is read as meant",
    ]
