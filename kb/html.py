"""HTML help-center pages as Markdown-like text, for the loader and the document chunker.

``decode_page`` turns bytes into text (UTF-8, or the GBK or Big5 the page declares or, declaring
none, is found to be: ``kb.encoding``);
``parse_page`` parses with the standard library's ``html.parser`` into a small tree, keeps the
content (``<main>``, else the ``<article>`` elements, else the whole body) and writes it out:
``<h1>``–``<h6>`` as ``#`` headings (the chunker splits along them), list items as ``- ``/``1. ``
lines, table rows as cells joined by `` | ``, paragraphs separated by blank lines. The tree is
kb/html_tree.py; the writing, kb/html_text.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.encoding import GBK, EncodingError, decode_text
from kb.html_text import Writer, inline_text
from kb.html_tree import TreeBuilder, content_roots, walk

_TITLE_SEPARATORS = "-|_–—·丨｜"
_GB_CHARSETS = frozenset({"gb2312", "gbk", "gb18030", "x-gbk", "cp936", "euc-cn", "csgb2312", "chinese"})
# Traditional Chinese pages (Taiwan, Hong Kong): read as Big5-HKSCS, which holds Big5
_BIG5_CHARSETS = frozenset({"big5", "big5-hkscs", "big5hkscs", "cp950", "x-x-big5", "csbig5"})
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([-\w.:]+)", re.I)


class PageError(ValueError):
    """A page that cannot be read; ``line`` is where the problem is."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class HTMLPage:
    """The content of a page: title, Markdown-like body, and how much text it holds."""

    title: str  # "" when the page has neither a <title> nor an <h1>
    body: str
    size: int  # non-space characters of page text, without the added markers (#, -, |)
    region: str  # "<main>", "<article>" or "" (the whole page): where the text was taken from
    line: int  # the line where that region starts


def decode_page(data: bytes) -> tuple[str, str]:
    """(text, encoding) of the page: UTF-8, or GBK (read as its superset GB18030) or Big5 when a
    ``<meta>`` declares it or, when none does, when the bytes read as Chinese text in one of them
    (``kb.encoding.decode_text``, as for text files: an old export saved as "ANSI" often has no
    declaration).

    UTF-8 is tried first even under a GB declaration: a page re-saved as UTF-8 often keeps its old
    ``<meta charset="gb2312">``, and real GBK text is practically never valid UTF-8.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows Notepad's "Unicode"
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise PageError(1, "not valid UTF-16 text despite its byte order mark; save the page as UTF-8") from exc
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    m = _META_CHARSET.search(data[:4096])
    declared = m.group(1).decode("ascii", "replace").lower() if m else None
    codec = GBK if declared in _GB_CHARSETS else "big5hkscs" if declared in _BIG5_CHARSETS else None
    if codec is not None:
        try:
            return data.decode(codec), codec if codec == GBK else "big5"
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise PageError(line, f"not valid {declared} text though the page declares it; save it as UTF-8") from exc
    line = data[: utf8_error.start].count(b"\n") + 1
    if declared is None or declared in {"utf-8", "utf8"}:  # none, or one the bytes do not keep
        try:
            return decode_text(data)
        except EncodingError:
            pass  # the error below says where UTF-8 failed
    if declared and declared not in {"utf-8", "utf8"}:
        raise PageError(
            line,
            f"the page declares charset={declared}, which is not read (only UTF-8, GBK and Big5); save it as UTF-8",
        )
    raise PageError(
        line,
        f"not UTF-8 text (byte 0x{data[utf8_error.start]:02x}), nor GBK or Big5; save the page as UTF-8",
    )


def parse_page(text: str) -> HTMLPage:
    """Extract the title and content of an HTML page (see the module docstring)."""
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    root = builder.root
    roots, region = content_roots(root)
    writer = Writer()
    for node in roots:
        writer.render(node)
    body = writer.finish()
    titles = (n for n in walk(root, skip_dropped=False) if n.tag == "title")
    title = next((inline_text(n) for n in titles if not any(a.tag in ("svg", "math") for a in n.ancestors())), "")
    h1 = next((inline_text(n) for r in roots for n in walk(r) if n.tag == "h1"), "")
    # "退货政策 - 某某商城帮助中心": the site name after the page's own <h1> is not its title.
    if h1 and title.startswith(h1) and title[len(h1) :].lstrip()[:1] in tuple(_TITLE_SEPARATORS):
        title = h1
    line = roots[0].line if region else 1
    return HTMLPage(title or h1, body, writer.size, region, line)
