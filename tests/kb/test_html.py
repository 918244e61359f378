"""HTML help-center pages: text extraction (kb/html.py) and loading them as documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from indexer.chunking import PATH_SEP, chunk_kb
from kb.documents import MIN_DOC_BODY
from kb.encoding import GBK
from kb.errors import KBError
from kb.html import PageError, decode_page, parse_page
from kb.loader import load_kb

# A help-center page as a CMS renders it: site chrome around a <main> that holds the article.
RETURNS = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
  <meta charset="utf-8">
  <title>退货政策 - 好物商城帮助中心</title>
  <style>.notice { color: #c00; }</style>
  <script>window.dataLayer = []; document.write("<p>统计脚本</p>");</script>
</head>
<body class="page has-sidebar">
  <header class="site-header"><a href="/">好物商城</a> <a href="/login">登录</a></header>
  <nav class="top-nav"><ul><li><a href="/help">帮助中心</a></li><li><a href="/orders">我的订单</a></li></ul></nav>
  <div class="cookie-banner">本站使用 Cookie 改善浏览体验 <button>我知道了</button></div>
  <main id="content">
    <div class="breadcrumb">首页 &gt; 帮助中心 &gt; 售后服务</div>
    <article>
      <div class="content-header">
        <h1>退货政策</h1>
        <p class="meta">更新时间：2024年3月1日</p>
      </div>
      <h2>七天无理由退货</h2>
      <p>自签收次日起七天内，商品及包装保持完好的，
         可申请无理由退货。</p>
      <h3>不支持无理由退货的商品</h3>
      <ul>
        <li>定制类商品，如刻字首饰</li>
        <li>鲜活易腐类商品
          <ul><li>生鲜水果</li><li>鲜花绿植</li></ul>
        </li>
        <li>已拆封的<strong>数字化商品</strong></li>
      </ul>
      <h2>退货流程</h2>
      <ol>
        <li>进入「我的订单」，找到要退的商品</li>
        <li>点击「申请售后」，选择退货原因并上传照片</li>
        <li>审核通过后七天内寄回商品</li>
      </ol>
      <h2>退货运费</h2>
      <table>
        <thead><tr><th>情形</th><th>运费承担方</th></tr></thead>
        <tbody>
          <tr><td>商品质量问题</td><td>商家</td></tr>
          <tr><td>七天无理由退货</td><td>买家&nbsp;（已购运费险的由保险赔付）</td></tr>
        </tbody>
      </table>
      <p>退款金额 &amp; 退款方式：原路退回，一般&#49;至&#x37;个工作日到账。</p>
      <div hidden>内部备注：双十一期间审核延长</div>
      <span class="icon" aria-hidden="true">★</span>
      <noscript>请开启浏览器的 JavaScript 功能</noscript>
    </article>
    <aside class="related"><h3>相关问题</h3><a href="/help/refund">退款多久到账？</a></aside>
  </main>
  <footer id="footer">客服热线 400-000-0000 ｜ 沪ICP备00000000号</footer>
  <script>trackPage("returns");</script>
</body>
</html>
"""

# An older page without <main>/<article>: chrome is recognised by its class names only.
SHIPPING = """<html><head><title>配送说明</title></head>
<body>
<div id="header">好物商城 | 购物车(0)</div>
<div class="side-menu"><a href="/help/pay">支付方式</a><a href="/help/invoice">发票说明</a></div>
<div class="help-body">
  <h1>配送说明</h1>
  <h2>发货时间</h2>
  <div>现货商品在付款后48小时内发货。</div>
  <div>预售商品以商品页标注的时间为准。</div>
  <h2>配送范围</h2>
  <p>支持全国配送，新疆、西藏等偏远地区运费另计。</p>
  <p>港澳台及海外地址暂不支持配送。</p>
</div>
<div class="footer-links">关于我们 联系我们</div>
</body></html>
"""

GBK_PAGE = """<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=gb2312">
<title>售后服务说明</title></head>
<body><h1>售后服务说明</h1>
<p>商品签收后十五天内出现质量问题，可申请换货，运费由商家承担。</p>
</body></html>
"""


def _page(body: str, head: str = "") -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def _problems(folder: Path) -> list[str]:
    with pytest.raises(KBError) as info:
        load_kb(folder)
    return info.value.problems


# --- extraction --------------------------------------------------------------------------------


def test_headings_become_markdown_headings_and_the_title_drops_the_site_name():
    page = parse_page(RETURNS)
    headings = [line for line in page.body.splitlines() if line.startswith("#")]
    assert headings == ["# 退货政策", "## 七天无理由退货", "### 不支持无理由退货的商品", "## 退货流程", "## 退货运费"]
    assert page.title == "退货政策"  # not "退货政策 - 好物商城帮助中心"


def test_title_comes_from_title_then_h1():
    assert parse_page(_page("<h1>配送说明</h1><p>正文</p>", "<title>物流与配送</title>")).title == "物流与配送"
    assert parse_page(_page("<h1>配送 <em>说明</em></h1><p>正文</p>")).title == "配送 说明"
    assert parse_page(_page("<p>只有正文，没有标题</p>")).title == ""


def test_paragraphs_are_blocks_and_a_wrapped_chinese_line_is_joined():
    lines = _lines(parse_page(RETURNS).body)
    i = lines.index("自签收次日起七天内，商品及包装保持完好的，可申请无理由退货。")
    assert lines[i - 1] == "" and lines[i + 1] == ""
    body = parse_page(SHIPPING).body
    # <div>s end a line, <p>s are paragraphs set off by a blank line
    assert "现货商品在付款后48小时内发货。\n预售商品以商品页标注的时间为准。" in body
    assert "运费另计。\n\n港澳台" in body
    assert parse_page(_page("<p>Hello\n   world,  欢迎\n光临 本店</p>")).body == "Hello world, 欢迎光临 本店\n"


def test_lists_become_markdown_items():
    lines = _lines(parse_page(RETURNS).body)
    i = lines.index("- 定制类商品，如刻字首饰")
    assert lines[i : i + 5] == [
        "- 定制类商品，如刻字首饰",
        "- 鲜活易腐类商品",
        "- 生鲜水果",
        "- 鲜花绿植",
        "- 已拆封的数字化商品",
    ]
    assert "  - 生鲜水果" in parse_page(RETURNS).body.splitlines()  # nested: indented
    j = lines.index("1. 进入「我的订单」，找到要退的商品")
    assert lines[j + 1].startswith("2. 点击「申请售后」") and lines[j + 2].startswith("3. 审核通过后")
    numbered = parse_page(_page('<ol start="4"><li>联系客服<li>等待审核</ol>')).body
    assert numbered == "4. 联系客服\n5. 等待审核\n"  # unclosed <li> closes at the next one


def test_table_rows_are_lines_of_cells():
    lines = _lines(parse_page(RETURNS).body)
    i = lines.index("情形 | 运费承担方")
    assert lines[i + 1 : i + 3] == ["商品质量问题 | 商家", "七天无理由退货 | 买家 （已购运费险的由保险赔付）"]


def test_entities_are_decoded():
    body = parse_page(RETURNS).body
    assert "退款金额 & 退款方式：原路退回，一般1至7个工作日到账。" in body
    assert "&nbsp;" not in body and "\xa0" not in body
    assert parse_page(_page("<p>&#36864;&#x8D27;&lt;说明&gt;&quot;</p>")).body == '退货<说明>"\n'


@pytest.mark.parametrize(
    "chrome",
    [
        "统计脚本",  # <script>, even with markup inside
        "trackPage",
        "color: #c00",  # <style>
        "好物商城",  # page <header>
        "帮助中心",  # <nav> (and the breadcrumb)
        "Cookie",  # class="cookie-banner"
        "我知道了",  # <button>
        "首页 > 帮助中心",  # class="breadcrumb"
        "内部备注",  # hidden
        "★",  # aria-hidden="true"
        "JavaScript",  # <noscript>
        "相关问题",  # <aside>
        "客服热线",  # page <footer>
    ],
)
def test_what_is_not_content_is_dropped(chrome: str):
    assert chrome not in parse_page(RETURNS).body


def test_chrome_is_recognised_by_class_and_id_without_main():
    page = parse_page(SHIPPING)
    assert page.region == ""
    for chrome in ("购物车", "支付方式", "关于我们"):  # id="header", class="side-menu", class="footer-links"
        assert chrome not in page.body
    assert page.body.startswith("# 配送说明\n\n## 发货时间\n")
    nav = _page(
        '<div role="navigation">全部分类</div>'
        '<form action="/search"><input name="q"><button>搜索</button></form>'
        "<p>订单满99元包邮，不满收取8元运费。</p>"
    )
    assert parse_page(nav).body == "订单满99元包邮，不满收取8元运费。\n"


def test_header_and_footer_inside_the_article_are_kept():
    # Decision: a <header>/<footer> (or a class/id naming one) inside <article>, <main> or
    # <section> is that section's own title block, not the site's banner.
    body = parse_page(RETURNS).body
    assert "# 退货政策" in body and "更新时间：2024年3月1日" in body  # class="content-header"
    page = parse_page(
        _page(
            "<header>网站导航条</header><article><header><h1>发票说明</h1></header>"
            "<p>电子发票在确认收货后开具。</p><footer>本说明自2024年1月1日起施行。</footer></article>"
        )
    )
    assert page.body == "# 发票说明\n\n电子发票在确认收货后开具。\n\n本说明自2024年1月1日起施行。\n"
    # a navigation word counts everywhere, also inside the article
    assert (
        "上一篇" not in parse_page(_page("<article><p>正文内容</p><div class='post-nav'>上一篇</div></article>")).body
    )


def test_a_layout_wrapper_named_after_a_sidebar_is_not_dropped():
    # <body class="has-sidebar"> and wrappers that hold <main> describe the layout, not navigation
    body = parse_page(_page("<div class='layout with-sidebar'><main><p>七天无理由退货说明</p></main></div>")).body
    assert body == "七天无理由退货说明\n"


def test_main_is_preferred_then_articles():
    page = parse_page(RETURNS)
    assert page.region == "<main>" and page.line == RETURNS.splitlines().index('  <main id="content">') + 1
    two = _page(
        "<div class='intro'>站点公告：春节期间暂停发货</div>"
        "<article><h2>顺丰配送</h2><p>江浙沪次日达。</p></article>"
        "<article><h2>普通快递</h2><p>三至五天送达。</p></article>"
    )
    page = parse_page(two)
    assert page.region == "<article>"
    assert "站点公告" not in page.body
    assert page.body == "## 顺丰配送\n\n江浙沪次日达。\n\n## 普通快递\n\n三至五天送达。\n"


def test_malformed_and_deeply_nested_pages_are_read():
    body = parse_page("<p>第一段<p>第二段<dl><dt>运费谁出？<dd>质量问题由商家承担。</dl>").body
    assert body == "第一段\n\n第二段\n\n运费谁出？\n质量问题由商家承担。\n"
    # an empty heading does not make the next paragraph a heading; zero-width spaces go
    assert parse_page(_page("<h2> </h2><p>运费说明</p><p>退\u200b货</p>")).body == "运费说明\n\n退货\n"
    deep = parse_page("<font>" * 3000 + "旧页面里没有闭合的字体标签" + "</font>" * 10)  # no RecursionError
    assert deep.body == "旧页面里没有闭合的字体标签\n"


def test_an_old_layout_table_is_read_as_blocks():
    # A page laid out in a table holds headings in its cells: those cells are blocks, not data.
    body = parse_page(
        "<table><tr><td class='sidebar'>帮助导航</td><td><h2>配送时效</h2>"
        "<p>江浙沪次日达。</p><p>其他地区三至五天。</p></td></tr></table>"
    ).body
    assert body == "## 配送时效\n\n江浙沪次日达。\n\n其他地区三至五天。\n"


def test_an_aspnet_page_wrapped_in_a_form_is_kept():
    body = parse_page(
        _page("<form id='form1' method='post'><h1>换货说明</h1><p>收到商品十五天内可换货。</p></form>")
    ).body
    assert body == "# 换货说明\n\n收到商品十五天内可换货。\n"


# --- decoding ----------------------------------------------------------------------------------


def test_a_declared_gb_charset_is_honoured():
    assert decode_page(GBK_PAGE.encode("gbk")) == (GBK_PAGE, GBK)
    text, _ = decode_page('<meta charset="GB18030"><p>退货𠀀</p>'.encode("gb18030"))
    assert text.endswith("退货𠀀</p>")
    # re-saved as UTF-8 with the old declaration left in: still read right
    assert decode_page(GBK_PAGE.encode("utf-8")) == (GBK_PAGE, "utf-8")
    big5 = '<meta charset="big5">\n<p>退貨政策：七天內可申請退貨</p>'
    assert decode_page(big5.encode("big5")) == (big5, "big5")


@pytest.mark.parametrize(
    ("page", "codec", "encoding"),
    [
        ("<p>\n退货政策：签收后七天内可申请退货</p>", "gbk", GBK),  # declares nothing
        ('<meta charset="utf-8">\n<p>退货政策：签收后七天内可申请退货</p>', "gbk", GBK),  # declares what it is not
        ("<p>退貨政策：七天內可申請退貨，運費由買家承擔</p>", "big5", "big5"),
    ],
)
def test_an_undeclared_or_misdeclared_chinese_page_is_read_as_what_it_is(page: str, codec: str, encoding: str):
    assert decode_page(page.encode(codec)) == (page, encoding)


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (b"<p>\n\xff\xfe\xfd broken</p>", 2, "not UTF-8 text"),
        ('<meta charset="shift_jis">\n<p>返品</p>'.encode("shift_jis"), 2, "charset=shift_jis"),
        (b'<meta charset="gbk">\n\n<p>\x81</p>', 3, "not valid gbk text"),
    ],
)
def test_undecodable_pages_say_where_and_what_to_do(data: bytes, line: int, message: str):
    with pytest.raises(PageError) as info:
        decode_page(data)
    assert info.value.line == line and message in str(info.value) and "UTF-8" in str(info.value)


# --- loading -----------------------------------------------------------------------------------


def test_a_folder_of_pages_loads_as_documents_that_chunk_along_their_headings(tmp_path: Path):
    (tmp_path / "returns.html").write_text(RETURNS, "utf-8")
    (tmp_path / "配送说明.htm").write_text(SHIPPING, "utf-8")
    kb = load_kb(tmp_path)
    docs = {d.title: d for d in kb.documents}
    assert set(docs) == {"退货政策", "配送说明"}
    returns, shipping = docs["退货政策"], docs["配送说明"]
    assert (returns.id, returns.kind, returns.category) == ("returns", "doc", "文档")
    assert shipping.id.startswith("doc-")  # a stem that makes no slug, as for *.md and *.txt
    assert str(returns.source) == "returns.html:1" and kb.sources["returns"] == returns.source
    chunks = [c for c in chunk_kb(kb, 200) if c.doc_id == "returns"]
    sections = {c.section for c in chunks}
    assert {
        PATH_SEP.join(["退货政策", "七天无理由退货"]),
        PATH_SEP.join(["退货政策", "七天无理由退货", "不支持无理由退货的商品"]),
        PATH_SEP.join(["退货政策", "退货流程"]),
        PATH_SEP.join(["退货政策", "退货运费"]),
    } <= sections
    flow = next(c for c in chunks if c.section.endswith("退货流程"))
    assert "申请售后" in flow.text and "运费承担方" not in flow.text
    assert any(c.section.endswith("发货时间") and "48小时内发货" in c.text for c in chunk_kb(kb, 200))


def test_a_gbk_page_loads(tmp_path: Path):
    (tmp_path / "after-sales.html").write_bytes(GBK_PAGE.encode("gbk"))
    (doc,) = load_kb(tmp_path).documents
    assert doc.title == "售后服务说明" and "运费由商家承担" in doc.body


def test_an_undeclared_gbk_page_loads_with_a_note(tmp_path: Path):
    undeclared = "\n".join(line for line in GBK_PAGE.splitlines() if "charset" not in line)
    (tmp_path / "after-sales.html").write_bytes(undeclared.encode("gbk"))
    kb = load_kb(tmp_path)
    (doc,) = kb.documents
    assert doc.title == "售后服务说明" and "运费由商家承担" in doc.body
    assert [str(n) for n in kb.report.notes if n.kind == "encoding"] == [
        "after-sales.html:1: read as GBK text, not UTF-8; save it as UTF-8 to be sure every character is read as meant"
    ]
    assert kb.report.counts()["files_not_utf8"] == 1


def test_an_undecodable_page_is_a_problem_with_file_and_line(tmp_path: Path):
    (tmp_path / "returns.html").write_bytes(b"<html>\n<body>\n<p>\xff\xfe\xfd returns</p>")
    (problem,) = _problems(tmp_path)
    assert problem.startswith("returns.html:3: not UTF-8 text") and "nor GBK or Big5" in problem


def test_a_page_with_too_little_text_is_a_problem(tmp_path: Path):
    # all the text is chrome; what <main> holds is shorter than MIN_DOC_BODY
    (tmp_path / "faq.html").write_text(
        '<html><body>\n<nav>首页 帮助中心 我的订单 购物车 联系客服 关于我们</nav>\n<main id="app">\n'
        "<p>加载中…</p>\n</main>\n<footer>客服热线 400-000-0000 沪ICP备00000000号</footer></body></html>",
        "utf-8",
    )
    (problem,) = _problems(tmp_path)
    assert problem.startswith("faq.html:3: page has 4 characters of text inside <main>")
    assert f"at least {MIN_DOC_BODY} required" in problem and "JavaScript" in problem


def test_kb_check_reports_pages(tmp_path: Path):
    from kefu_cli import app

    (tmp_path / "returns.html").write_text(RETURNS, "utf-8")
    ok = CliRunner().invoke(app, ["kb", "check", str(tmp_path), "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"documents": 1' in ok.output
    (tmp_path / "empty.htm").write_text("<html><body><p>空</p></body></html>", "utf-8")
    bad = CliRunner().invoke(app, ["kb", "check", str(tmp_path)])
    assert bad.exit_code == 3 and "empty.htm:1: page has 1 characters" in bad.output
