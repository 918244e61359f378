"""Chunking: FAQ entries into question/alternative/answer chunks, documents into clause chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.chunking import (
    PATH_SEP,
    Chunk,
    DocUnit,
    chunk_kb,
    document_chunks,
    document_units,
    faq_chunks,
    pack_sentences,
    split_sentences,
)
from indexer.normalize import normalize
from kb.errors import ConfigError
from kb.loader import load_kb
from kb.schema import Document, FAQEntry, Source

ANSWER = (
    "在「我的订单」找到对应订单，点击「退款/售后」，按页面提示选择退款原因并提交申请。"
    "卖家超时未处理系统会自动同意，仍有问题可以申请平台客服介入处理。"
)


def _entry(alts: tuple[str, ...] = ("退款怎么弄啊", "怎么申请退钱", "钱怎么退回来")) -> FAQEntry:
    return FAQEntry(
        id="refund-apply",
        category="退货退款",
        question="怎么申请退款？",
        alt_questions=alts,
        answer=ANSWER,
    )


def _doc(body: str, title: str = "标题", kind: str = "rules") -> Document:
    return Document(
        id="rules-demo",
        title=title,
        category="规则",
        body=body,
        source=Source("rules/demo.md"),
        kind=kind,  # type: ignore[arg-type]
    )


# --- FAQ entries -------------------------------------------------------------------------------
def test_faq_chunks_question_each_alt_and_answer_share_the_unit():
    e = _entry()
    chunks = faq_chunks(e)
    assert [c.kind for c in chunks] == ["question", "alt", "alt", "alt", "answer"]
    assert [c.text for c in chunks] == [e.question, *e.alt_questions, e.answer]
    assert {c.unit_id for c in chunks} == {e.id}
    assert {c.doc_id for c in chunks} == {e.id}
    assert {c.title for c in chunks} == {e.question}
    assert {c.category for c in chunks} == {"退货退款"}
    assert [c.chunk_id for c in chunks] == [
        "refund-apply#q",
        "refund-apply#alt1",
        "refund-apply#alt2",
        "refund-apply#alt3",
        "refund-apply#a",
    ]


def test_faq_chunks_count_follows_the_number_of_alternatives():
    alts = tuple(f"另一种问法{i}" for i in range(7))
    chunks = faq_chunks(_entry(alts))
    assert len(chunks) == 2 + len(alts)
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_faq_embed_text_is_the_normalised_text_without_section():
    for c in faq_chunks(_entry()):
        assert c.embed_text == normalize(c.text)
        assert "退货退款" not in c.embed_text  # the category (section) is not embedded for FAQ chunks


def test_chunk_json_round_trip():
    for c in faq_chunks(_entry()):
        assert Chunk.from_json(c.to_json()) == c


# --- sentences ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("一。二！三？四；", ["一。", "二！", "三？", "四；"]),
        ("a!b?c;d", ["a!", "b?", "c;", "d"]),
        ("没有结尾标点", ["没有结尾标点"]),
        ("第一句。 第二句没有结尾", ["第一句。", "第二句没有结尾"]),
        ("第一行\n第二行。", ["第一行", "第二行。"]),
        ("  前后空格。  ", ["前后空格。"]),
        ("逗号，不分句。", ["逗号，不分句。"]),
        ("", []),
        ("  \n\n  ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


# --- packing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sentences", "target", "expected"),
    [
        pytest.param([], 10, [], id="empty"),
        pytest.param(["一二三。"], 10, ["一二三。"], id="one-sentence"),
        pytest.param(["一。", "二。", "三。"], 100, ["一。二。三。"], id="all-fit"),
        pytest.param(
            ["甲甲。", "乙乙。", "丙丙。", "丁丁。"],
            6,
            ["甲甲。乙乙。", "乙乙。丙丙。", "丙丙。丁丁。"],
            id="many-with-overlap",
        ),
        pytest.param(
            ["短。", "这是一个很长的句子。", "短二。"],
            5,
            ["短。", "这是一个很长的句子。", "短二。"],
            id="sentence-longer-than-target",
        ),
        pytest.param(["一二三。", "四五六。"], 2, ["一二三。", "四五六。"], id="target-below-every-sentence"),
        pytest.param(
            ["一二三四五六七八九十。", "甲。", "乙。"],
            12,
            ["一二三四五六七八九十。", "甲。乙。"],
            id="overlap-skipped-when-it-would-overflow",
        ),
    ],
)
def test_pack_sentences(sentences, target, expected):
    assert pack_sentences(sentences, target) == expected


@pytest.mark.parametrize("target", [0, -1, -100])
def test_pack_sentences_rejects_target_below_one(target):
    with pytest.raises(ConfigError, match="≥ 1"):
        pack_sentences(["一。"], target)


@pytest.mark.parametrize(
    ("sentences", "target", "expected"),
    [
        (["请保留凭证。", "请保留凭证。"], 6, ["请保留凭证。", "请保留凭证。"]),
        (["好。", "好。", "好。"], 4, ["好。好。", "好。好。"]),
    ],
)
def test_pack_sentences_keeps_repeated_sentences(sentences, target, expected):
    assert pack_sentences(sentences, target) == expected


_SENTENCE = st.text(alphabet="甲乙丙丁戊己庚辛壬癸子丑寅卯", min_size=1, max_size=10).map(lambda s: s + "。")


def _reconstruct(pieces: list[list[str]]) -> tuple[list[str], list[bool]]:
    """Concatenate piece sentences, dropping a carried-over first sentence (sentences are unique)."""
    out: list[str] = []
    overlaps: list[bool] = []
    for i, piece in enumerate(pieces):
        carried = i > 0 and piece[0] == pieces[i - 1][-1]
        overlaps.append(carried)
        out.extend(piece[1:] if carried else piece)
    return out, overlaps


@settings(max_examples=300, deadline=None)
@given(st.lists(_SENTENCE, max_size=25, unique=True), st.integers(1, 40))
def test_property_pack_sentences(sentences, target):
    pieces = pack_sentences(sentences, target)
    split = [split_sentences(p) for p in pieces]
    # Never cut a sentence: every piece is made of whole input sentences.
    assert all(s in sentences for piece in split for s in piece)
    # Dropping the overlaps gives back the input sequence exactly.
    rebuilt, overlaps = _reconstruct(split)
    assert rebuilt == sentences
    for i, piece in enumerate(split):
        # Target respected, except by a piece that is one over-long sentence.
        assert len(pieces[i]) <= target or len(piece) == 1
        # No piece is only the carried-over sentence.
        assert not (overlaps[i] and len(piece) == 1)
        if i > 0:
            # One sentence of overlap, exactly when it fits with the next new sentence.
            first_new = piece[1] if overlaps[i] else piece[0]
            fits = len(split[i - 1][-1]) + len(first_new) <= target
            assert overlaps[i] == fits


# --- documents ---------------------------------------------------------------------------------
BODY = """# 标题

## 第一章 总则

### 第一节 定义

第一条 本规范所称买家，是指在平台购买商品的用户。

第二条 本规范所称卖家，是指在平台出售商品的用户。卖家应当如实描述商品。

## 第二章 其他

第一段说明。

第二段说明！
"""


def test_document_chunks_follow_headings_and_clauses():
    chunks = document_chunks(_doc(BODY), target=200)
    got = [(c.section, c.text) for c in chunks]
    assert got == [
        (
            PATH_SEP.join(["标题", "第一章 总则", "第一节 定义", "第一条"]),
            "第一条 本规范所称买家，是指在平台购买商品的用户。",
        ),
        (
            PATH_SEP.join(["标题", "第一章 总则", "第一节 定义", "第二条"]),
            "第二条 本规范所称卖家，是指在平台出售商品的用户。卖家应当如实描述商品。",
        ),
        (PATH_SEP.join(["标题", "第二章 其他"]), "第一段说明。"),
        (PATH_SEP.join(["标题", "第二章 其他"]), "第二段说明！"),
    ]
    assert chunks[1].section == "标题 › 第一章 总则 › 第一节 定义 › 第二条"


def test_document_chunks_split_long_clause_with_same_path():
    chunks = document_chunks(_doc(BODY), target=30)
    second = [c for c in chunks if c.section.endswith("第二条")]
    assert [c.text for c in second] == ["第二条 本规范所称卖家，是指在平台出售商品的用户。", "卖家应当如实描述商品。"]


def test_clause_continues_over_blank_lines_until_next_clause_or_heading():
    body = "第一条 第一句。\n\n续写的一句。\n\n第二条 另一条。\n# 新标题\n标题下的文字。"
    chunks = document_chunks(_doc(body), target=200)
    assert [(c.section, c.text) for c in chunks] == [
        ("标题 › 第一条", "第一条 第一句。续写的一句。"),
        ("标题 › 第二条", "第二条 另一条。"),
        ("标题 › 新标题", "标题下的文字。"),
    ]


def test_heading_equal_to_title_is_not_repeated_and_missing_title_heading_is_added():
    with_heading = document_chunks(_doc("# 标题\n正文。"), target=100)
    without_heading = document_chunks(_doc("正文。"), target=100)
    assert with_heading[0].section == without_heading[0].section == "标题"


def test_document_chunk_fields_and_unique_ids():
    chunks = document_chunks(_doc(BODY), target=20)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert [c.unit_id for c in chunks] == [
        "rules-demo.1",
        "rules-demo.2",
        "rules-demo.2",  # 第二条 does not fit in 20 characters: two rows, one unit
        "rules-demo.s1",  # 第二章's two paragraphs outside clauses: one section
        "rules-demo.s1",
    ]
    for c in chunks:
        assert "#" not in c.unit_id  # a unit id goes into GET /v1/entries/{id} unescaped
        assert c.doc_id == "rules-demo"
        assert c.kind == "rules"
        assert c.title == "标题"
        assert c.category == "规则"
    assert {c.kind for c in document_chunks(_doc(BODY, kind="doc"), target=20)} == {"doc"}


def test_document_chunks_never_cut_sentences():
    sentences_in_body = set(split_sentences("\n".join(line for line in BODY.splitlines() if line.strip())))
    for target in (1, 10, 25, 60, 500):
        for c in document_chunks(_doc(BODY), target=target):
            for s in split_sentences(c.text):
                assert s in sentences_in_body, (target, s)


def test_rules_embed_text_includes_the_section_path():
    chunks = document_chunks(_doc(BODY), target=200)
    c = chunks[1]
    assert c.embed_text == normalize(f"{c.section}：{c.text}")
    assert "第二条" in c.embed_text and "第一节定义" in c.embed_text and "标题" in c.embed_text
    assert c.embed_text.index("第一章") < c.embed_text.index("卖家应当")


def test_chunk_kb_on_tiny_kb(tiny_kb_dir):
    kb = load_kb(tiny_kb_dir, strict=False)
    chunks = chunk_kb(kb, 60)
    ids = [c.chunk_id for c in chunks]
    assert len(set(ids)) == len(ids)
    faq = [c for c in chunks if c.kind in ("question", "alt", "answer")]
    assert {c.unit_id for c in faq} == {e.id for e in kb.entries}
    assert len(faq) == sum(2 + len(e.alt_questions) for e in kb.entries)
    rules = [c for c in chunks if c.kind == "rules"]
    assert [c.unit_id for c in rules] == ["rules-return.1", "rules-return.2", "rules-return.3"]
    assert [c.section for c in rules] == [
        "退货规范 › 第一章 总则 › 第一条",
        "退货规范 › 第一章 总则 › 第二条",
        "退货规范 › 第二章 运费 › 第三条",
    ]
    assert all(c.embed_text.startswith(normalize(c.section)) for c in rules)


# --- document units ----------------------------------------------------------------------------
def test_document_units_are_clauses_whole_and_sections():
    units = document_units(_doc(BODY))
    assert [(u.id, u.clause, u.label) for u in units] == [
        ("rules-demo.1", 1, "《标题》第一条"),
        ("rules-demo.2", 2, "《标题》第二条"),
        ("rules-demo.s1", None, "《标题》第二章 其他"),
    ]
    assert units[1].text == "第二条 本规范所称卖家，是指在平台出售商品的用户。卖家应当如实描述商品。"
    assert units[1].section == "标题 › 第一章 总则 › 第一节 定义 › 第二条"
    assert units[2].text == "第一段说明。\n第二段说明！"
    assert all(DocUnit.from_json(u.to_json()) == u for u in units)


def test_every_row_belongs_to_a_unit_and_a_long_clause_keeps_its_items():
    body = "第十二条 下列情形不予支持：\n（一）超过期限的；\n（二）商品已损坏的。\n第一百零五条 附则。"
    units = {u.id: u for u in document_units(_doc(body))}
    assert set(units) == {"rules-demo.12", "rules-demo.105"}
    assert units["rules-demo.12"].text == "第十二条 下列情形不予支持：\n（一）超过期限的；\n（二）商品已损坏的。"
    rows = document_chunks(_doc(body), target=12)
    assert {c.unit_id for c in rows} == set(units)
    assert [c.unit_id for c in rows].count("rules-demo.12") == 3


def test_article_without_clauses_is_one_unit_per_heading_section():
    body = "开头的话。\n\n# 退款\n退款说明。\n\n更多退款说明。\n## 到账\n到账说明。"
    units = document_units(_doc(body, title="帮助", kind="doc"))
    assert [(u.id, u.section, u.label, u.kind) for u in units] == [
        ("rules-demo.s1", "帮助", "《帮助》", "doc"),
        ("rules-demo.s2", "帮助 › 退款", "《帮助》退款", "doc"),
        ("rules-demo.s3", "帮助 › 退款 › 到账", "《帮助》到账", "doc"),
    ]
    assert units[1].text == "退款说明。\n更多退款说明。"


def test_a_repeated_clause_number_becomes_a_section_so_ids_stay_unique():
    body = "## 第一章\n第一条 甲。\n## 第二章\n第一条 乙。"
    units = document_units(_doc(body))
    assert [u.id for u in units] == ["rules-demo.1", "rules-demo.s1"]
    assert units[1].clause is None and units[1].text == "第一条 乙。"


def test_rows_are_unchanged_by_units():
    """Units group rows; the rows (and so their vectors and the embedding cache) stay as before."""
    chunks = document_chunks(_doc(BODY), target=200)
    assert [c.chunk_id for c in chunks] == [f"rules-demo#{i}" for i in range(1, 5)]
