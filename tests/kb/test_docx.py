"""Word documents: text extraction (kb/docx.py) and loading them as documents split along headings."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from indexer.chunking import PATH_SEP, chunk_kb
from kb.docx import DocxError, parse_docx
from kb.errors import KBError
from kb.loader import load_kb

NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
# Chinese Word names its heading styles by number: styleId "1" is 标题 1 ("heading 1" inside the file)
STYLES = f"""<w:styles {NS}>
<w:style w:type="paragraph" w:styleId="1"><w:name w:val="heading 1"/></w:style>
<w:style w:type="paragraph" w:styleId="Heading2"><w:name w:val="Heading 2"/></w:style>
<w:style w:type="paragraph" w:styleId="a3"><w:name w:val="List Paragraph"/></w:style>
<w:style w:type="paragraph" w:styleId="ListBullet"><w:name w:val="List Bullet"/>
<w:pPr><w:numPr><w:numId w:val="2"/></w:numPr></w:pPr></w:style>
</w:styles>"""
CORE = (
    '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></cp:coreProperties>'
)


def p(text: str, style: str = "", listed: bool = False, outline: int | None = None) -> str:
    props = f'<w:pStyle w:val="{style}"/>' if style else ""
    props += '<w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr>' if listed else ""
    props += f'<w:outlineLvl w:val="{outline}"/>' if outline is not None else ""
    # a paragraph's text comes in runs, split wherever the formatting changes
    runs = "".join(f'<w:r><w:t xml:space="preserve">{part}</w:t></w:r>' for part in text.split("|"))
    return f"<w:p><w:pPr>{props}</w:pPr>{runs}</w:p>"


def table(rows: list[list[str]]) -> str:
    cells = "".join("<w:tr>" + "".join(f"<w:tc>{p(c)}</w:tc>" for c in row) + "</w:tr>" for row in rows)
    return f"<w:tbl>{cells}</w:tbl>"


def docx(*body: str, title: str | None = None, styles: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", f"<w:document {NS}><w:body>{''.join(body)}</w:body></w:document>")
        if styles:
            z.writestr("word/styles.xml", STYLES)
        if title is not None:
            z.writestr("docProps/core.xml", CORE.format(title=title))
    return out.getvalue()


SHIPPING = docx(
    p("配送说明", "1"),
    p("发货时间", "Heading2"),
    p("付款成功后，现货商品会在|48小时内|从杭州仓库发出，节假日顺延一到两天。"),
    p("运费", "Heading2"),
    p("单笔订单满99元包邮；不满99元收取8元运费。"),
    p("新疆、西藏暂不支持冷链商品", "a3", listed=True),
    p("生鲜商品只发顺丰冷运", "ListBullet"),  # numbered by its style, as Word's List Bullet is
    table([["地区", "时效"], ["江浙沪", "次日达"], ["其他地区", "2到4天"]]),
)


def test_headings_lists_and_tables_become_markdown_like_text():
    got = parse_docx(SHIPPING)
    assert got.title == "配送说明"  # no title property: the first heading
    assert got.body.split("\n\n") == [
        "# 配送说明",
        "## 发货时间",
        "付款成功后，现货商品会在48小时内从杭州仓库发出，节假日顺延一到两天。",
        "## 运费",
        "单笔订单满99元包邮；不满99元收取8元运费。",
        "- 新疆、西藏暂不支持冷链商品",
        "- 生鲜商品只发顺丰冷运",
        "地区 | 时效",
        "江浙沪 | 次日达",
        "其他地区 | 2到4天\n",
    ]


def test_the_title_property_and_outline_levels_are_read():
    got = parse_docx(docx(p("退货须知", outline=0), p("七天内可以申请退货，商品需完好。"), title="退换货政策"))
    assert got.title == "退换货政策" and got.body.startswith("# 退货须知\n\n七天内")
    plain = parse_docx(docx(p("标题", "1"), p("没有样式表的文档，标题样式读不出来。"), styles=False))
    assert plain.body.startswith("标题\n\n") and plain.title == ""  # without styles.xml, no heading is known


def test_a_word_document_is_loaded_and_split_along_its_headings(tmp_path: Path):
    (tmp_path / "配送.docx").write_bytes(SHIPPING)
    kb = load_kb(tmp_path)
    (doc,) = kb.documents
    assert (doc.title, doc.kind, kb.skipped_files) == ("配送说明", "doc", ())
    sections = {c.section.split(PATH_SEP)[-1] for c in chunk_kb(kb, 200) if c.doc_id == doc.id}
    assert {"发货时间", "运费"} <= sections


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 Word 97", "is not a .docx file"),
        (b"PK\x05\x06" + b"\x00" * 18, "has no word/document.xml"),
        (docx(p("短")), "fewer than 20: text in pictures or text boxes is not read"),
    ],
)
def test_a_document_that_cannot_be_read_is_a_problem_that_says_what_to_do(tmp_path: Path, data: bytes, message: str):
    (tmp_path / "guide.md").write_text("# 指南\n\n这是一篇足够长的帮助文章，用来让知识库不为空。", "utf-8")
    (tmp_path / "rules.docx").write_bytes(data)
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    [problem] = info.value.problems
    assert problem.startswith("rules.docx:1: ") and message in problem, problem


def test_a_part_with_a_dtd_is_refused():
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("word/document.xml", '<!DOCTYPE d [<!ENTITY a "aaaa">]><d>&a;</d>')
    with pytest.raises(DocxError, match="holds a DTD"):
        parse_docx(bomb.getvalue())
