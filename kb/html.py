"""HTML help-center pages as Markdown-like text, for the loader and the document chunker.

``decode_page`` turns bytes into text (UTF-8, or GBK when the page declares a GB charset);
``parse_page`` parses with the standard library's ``html.parser`` into a small tree, keeps the
content (``<main>``, else the ``<article>`` elements, else the whole body) and writes it out:
``<h1>``–``<h6>`` as ``#`` headings (the chunker splits along them), list items as ``- ``/``1. ``
lines, table rows as cells joined by `` | ``, paragraphs separated by blank lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser


def _words(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Elements that never hold help text. <header>/<footer> are in _SCOPED instead.
_DROP_TAGS = _words(
    "script style noscript template svg math nav aside button iframe object canvas select textarea head title"
)
# The ARIA landmarks that mean the same as the dropped elements (role="navigation" is a <nav>).
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"})
# Words of a class or id that name navigation; words are split at "-", "_" and case changes.
_NAV_WORDS = _words(
    "nav navbar navigation topnav subnav sidenav menu menubar breadcrumb breadcrumbs sidebar cookie cookies"
)
# <header>/<footer> and the class/id words header/footer mean page chrome only outside sectioning
# content: inside <article>, <main> or <section> they are that section's own header (its title,
# its date) or notes, so a <div class="content-header"> in the article keeps its heading.
_SCOPED = frozenset({"header", "footer"})
_SECTIONING = frozenset({"article", "main", "section"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
_INLINE = _words(
    "a abbr b bdi bdo big cite code data dfn em font i kbd label mark q s samp small span strike strong sub sup"
    " time tt u var"
)
_HEAD_TAGS = frozenset({"title", "meta", "link", "style", "script", "base", "noscript", "template"})
# Opening one of these closes what HTML closes implicitly: (elements closed, up to this boundary).
_IMPLIED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), frozenset({"ul", "ol", "menu"})),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "tr": (frozenset({"tr", "td", "th"}), frozenset({"table", "thead", "tbody", "tfoot"})),
    "td": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "th": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    **dict.fromkeys(
        ("thead", "tbody", "tfoot"), (frozenset({"thead", "tbody", "tfoot", "tr", "td", "th"}), frozenset({"table"}))
    ),
}
# Blocks set off by blank lines (the chunker's paragraph groups), and elements that only end a line.
_PARAGRAPHS = _words(
    "p ul ol dl table blockquote pre hr figure details section article main fieldset h1 h2 h3 h4 h5 h6"
)
_LINES = _words("div br tr td th li dt dd summary caption address figcaption center header footer nav aside form")
_CLOSES_P = (_PARAGRAPHS | _LINES) - {"br", "tr", "td", "th", "caption"}
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_TITLE_SEPARATORS = "-|_–—·丨｜"
_GB_CHARSETS = frozenset({"gb2312", "gbk", "gb18030", "x-gbk", "cp936", "euc-cn", "csgb2312", "chinese"})
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([-\w.:]+)", re.I)
_SPACE = re.compile(r"\s+")
_INVISIBLE = str.maketrans("", "", "\u200b\ufeff")  # zero-width space, stray BOM: CMS leftovers


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


@dataclass(eq=False)
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    parent: _Node | None = None
    children: list[_Node | str] = field(default_factory=list)
    holds_content: bool = False  # an ancestor of <main>/<article>: a layout wrapper, never chrome

    def ancestors(self) -> Iterator[_Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


def decode_page(data: bytes) -> str:
    """The page as text: UTF-8, or GBK (read as its superset GB18030) when a ``<meta>`` declares it.

    UTF-8 is tried first even under a GB declaration: a page re-saved as UTF-8 often keeps its old
    ``<meta charset="gb2312">``, and real GBK text is practically never valid UTF-8.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows Notepad's "Unicode"
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise PageError(1, "not valid UTF-16 text despite its byte order mark; save the page as UTF-8") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf8_error = exc
    m = _META_CHARSET.search(data[:4096])
    declared = m.group(1).decode("ascii", "replace").lower() if m else None
    if declared in _GB_CHARSETS:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise PageError(line, f"not valid {declared} text though the page declares it; save it as UTF-8") from exc
    line = data[: utf8_error.start].count(b"\n") + 1
    if declared and declared not in {"utf-8", "utf8"}:
        raise PageError(
            line, f"the page declares charset={declared}, which is not read (only UTF-8 and GBK); save it as UTF-8"
        )
    raise PageError(
        line,
        f"not UTF-8 text (byte 0x{data[utf8_error.start]:02x}); save the page as UTF-8, "
        'or declare its encoding with <meta charset="gbk"> if it is GBK',
    )


def parse_page(text: str) -> HTMLPage:
    """Extract the title and content of an HTML page (see the module docstring)."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    root = builder.root
    roots, region = _content_roots(root)
    writer = _Writer()
    for node in roots:
        writer.render(node)
    body = writer.finish()
    titles = (n for n in _walk(root, skip_dropped=False) if n.tag == "title")
    title = next((_inline_text(n) for n in titles if not any(a.tag in ("svg", "math") for a in n.ancestors())), "")
    h1 = next((_inline_text(n) for r in roots for n in _walk(r) if n.tag == "h1"), "")
    # "退货政策 - 某某商城帮助中心": the site name after the page's own <h1> is not its title.
    if h1 and title.startswith(h1) and title[len(h1) :].lstrip()[:1] in tuple(_TITLE_SEPARATORS):
        title = h1
    line = roots[0].line if region else 1
    return HTMLPage(title or h1, body, writer.size, region, line)


class _TreeBuilder(HTMLParser):
    """A forgiving tree: unclosed <p>, <li>, <td>… are closed where HTML closes them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities (&nbsp; &amp; &#20013;) arrive decoded
        self.root = _Node("#root", {}, 1)
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=tag in _VOID)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=True)  # <div/> in XHTML-ish pages: an empty element

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":  # browsers read a stray </br> as <br>
            self._open("br", [], void=True)
            return
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return
        # an end tag with nothing open to close is ignored, as browsers do

    def handle_data(self, data: str) -> None:
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], void: bool) -> None:
        self._close_implied(tag)
        parent = self.stack[-1]
        node = _Node(tag, {k.lower(): v or "" for k, v in attrs}, self.getpos()[0], parent)
        parent.children.append(node)
        if tag in ("main", "article"):
            for n in self.stack:
                n.holds_content = True
        if not void:
            self.stack.append(node)

    def _close_implied(self, tag: str) -> None:
        tags = [n.tag for n in self.stack]
        if "head" in tags and tag not in _HEAD_TAGS:  # body content without <body>: <head> has ended
            del self.stack[tags.index("head") :]
            tags = tags[: len(self.stack)]
        closes, boundary = _IMPLIED.get(tag, (frozenset(), frozenset()))
        for i in range(len(tags) - 1, 0, -1):  # <li> closes the open <li>, up to its list
            if tags[i] in closes:
                del self.stack[i:]
                tags = tags[:i]
                break
            if tags[i] in boundary:
                break
        if tag in _CLOSES_P:  # a block closes an open <p>, through inline elements only
            for i in range(len(tags) - 1, 0, -1):
                if tags[i] == "p":
                    del self.stack[i:]
                if tags[i] not in _INLINE:
                    break


def _walk(node: _Node, *, skip_dropped: bool = True) -> Iterator[_Node]:
    """Elements under ``node`` in document order, without the dropped ones (iterative: deep pages)."""
    todo = [c for c in reversed(node.children) if isinstance(c, _Node)]
    while todo:
        n = todo.pop()
        if skip_dropped and _dropped(n):
            continue
        yield n
        todo.extend(c for c in reversed(n.children) if isinstance(c, _Node))


def _dropped(node: _Node) -> bool:
    """Whether ``node`` is not content.

    Dropped: the _DROP_TAGS elements; anything ``hidden``, ``aria-hidden="true"`` or with a
    _DROP_ROLES role; a class or id with a _NAV_WORDS word; <header>/<footer> and header/footer
    class or id words outside sectioning content (_SCOPED). Never dropped by name: <html>, <body>,
    <main>, <article> and elements that hold them (layout wrappers); <form> only without headings.
    """
    a = node.attrs
    if "hidden" in a or a.get("aria-hidden", "").strip().lower() == "true":
        return True
    if a.get("role", "").strip().lower() in _DROP_ROLES:
        return True
    if node.tag in _DROP_TAGS:
        return True
    if node.tag == "form":
        # ASP.NET pages wrap the whole page in one <form>; a search box has no headings.
        return not (node.holds_content or any(n.tag in _HEADINGS for n in _walk(node, skip_dropped=False)))
    if node.holds_content or node.tag in ("html", "body", "main", "article"):
        return False  # a layout wrapper (<body class="has-sidebar">) is not navigation
    sectioned = any(n.tag in _SECTIONING for n in node.ancestors())
    if node.tag in _SCOPED and not sectioned:
        return True
    names = [*a.get("class", "").split(), a.get("id", "")]
    words = {w.lower() for name in names for w in re.split(r"[-_\s]+|(?<=[a-z])(?=[A-Z])", name) if w}
    return bool(words & _NAV_WORDS or (not sectioned and words & _SCOPED))


def _content_roots(root: _Node) -> tuple[list[_Node], str]:
    """Where the content is: the first <main>, else the outermost <article>s, else the whole page."""
    nodes = list(_walk(root))
    main = next((n for n in nodes if n.tag == "main"), None)
    if main is not None:
        return [main], "<main>"
    articles = [n for n in nodes if n.tag == "article" and not any(p.tag == "article" for p in n.ancestors())]
    if articles:
        return articles, "<article>"
    return [root], ""


def _collapse(text: str) -> str:
    """Collapse white space to one space; a line break between two CJK characters goes entirely.

    A Chinese sentence wrapped in the HTML source (收到商品后\\n可申请退货) reads without a gap,
    as CSS's segment-break rule has it; a space typed between them stays.
    """

    text = text.translate(_INVISIBLE)

    def space(m: re.Match[str]) -> str:
        s, e = m.start(), m.end()
        if "\n" in m.group() and s > 0 and e < len(text) and _wide(text[s - 1]) and _wide(text[e]):
            return ""
        return " "

    return _SPACE.sub(space, text).strip()


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _inline_text(node: _Node) -> str:
    """The text of ``node`` on one line (titles, headings)."""
    w = _Writer()
    w.inline = 1
    w.render(node)
    return _collapse("".join(w.parts))


class _Writer:
    """Writes elements out as lines; blank lines separate paragraph blocks."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.parts: list[str] = []  # raw text of the line being written
        self.marker: str | None = None  # "## " or "- " for the next line written
        self.blank = False  # a blank line is due before the next line
        self.inline = 0  # inside a heading or table cell: breaks become spaces
        self.items = 0  # inside a list item: paragraphs do not break the list
        self.pre = 0
        self.lists: list[tuple[bool, int]] = []  # per open list: ordered, next number
        self.tables: list[bool] = []  # per open table: laid out (cells are blocks) or data
        self.cells: list[int] = []  # per open data row: cells written so far
        self.size = 0

    def render(self, top: _Node) -> None:
        # Iterative, not recursive: pages with thousands of unclosed <font> nest that deep.
        todo: list[tuple[_Node | str, str | None]] = [(top, None)]  # (node, None) opens it
        while todo:
            item, action = todo.pop()
            if isinstance(item, str):
                self.text(item)
            elif action is not None:
                self.end(action)
            elif item is top or not _dropped(item):
                todo.append((item, self.start(item)))
                todo.extend((c, None) for c in reversed(item.children))

    def text(self, data: str) -> None:
        self.size += len("".join(data.split()))
        if not self.pre:
            self.parts.append(data)
            return
        for i, piece in enumerate(data.split("\n")):
            if i:
                self.brk(False)
            self.parts.append(piece)

    def brk(self, paragraph: bool) -> None:
        """End the line; ``paragraph`` also asks for a blank line, except inside a list item."""
        if self.inline:
            self.parts.append(" ")
            return
        line = _collapse("".join(self.parts))
        self.parts = []
        if line:
            if self.blank and self.lines:
                self.lines.append("")
            indent = "  " * max(len(self.lists) - 1, 0)
            self.lines.append(indent + (self.marker or ("  " if self.items else "")) + line)
            self.marker, self.blank = None, False
        if paragraph and not self.items:
            self.blank = True

    def start(self, node: _Node) -> str:
        """Open ``node``; the action returned is what ``end`` undoes."""
        tag = node.tag
        if tag in _HEADINGS and not self.inline:
            self.brk(True)
            self.marker = "#" * _HEADINGS[tag] + " "
            self.inline += 1
            return "heading"
        if tag in ("ul", "ol", "menu"):
            self.brk(True)
            self.lists.append((tag == "ol", _int(node.attrs.get("start"), 1)))
            return "list"
        if tag == "li":
            self.brk(False)
            ordered, number = self.lists[-1] if self.lists else (False, 0)
            if ordered:
                number = _int(node.attrs.get("value"), number)
                self.lists[-1] = (True, number + 1)
            self.marker = f"{number}. " if ordered else "- "
            self.items += 1
            return "item"
        if tag == "table":
            self.brk(True)
            self.tables.append(_layout_table(node))
            return "table"
        if tag == "tr" and self.tables and not self.tables[-1]:
            self.brk(False)
            self.cells.append(0)
            return "row"
        if tag in ("td", "th") and self.cells:
            if self.cells[-1]:
                self.parts.append(" | ")
            self.cells[-1] += 1
            self.inline += 1
            return "cell"
        if tag in ("tr", "td", "th"):  # a layout table: rows and cells are blocks
            self.brk(False)
            return "line"
        if tag in _PARAGRAPHS or tag in _LINES:
            self.brk(tag in _PARAGRAPHS)
            self.pre += tag == "pre"
            return "pre" if tag == "pre" else "para" if tag in _PARAGRAPHS else "line"
        return ""

    def end(self, action: str) -> None:
        if action == "heading":
            self.inline -= 1
            self.brk(True)
            self.marker = None  # an empty heading must not turn the next line into one
        elif action == "list":
            self.brk(True)
            self.lists.pop()
        elif action == "item":
            self.brk(False)
            self.items -= 1
            self.marker = None
        elif action == "table":
            self.brk(True)
            self.tables.pop()
        elif action == "row":
            self.cells.pop()
            self.brk(False)
        elif action == "cell":
            self.inline -= 1
        elif action:
            self.pre -= action == "pre"
            self.brk(action != "line")

    def finish(self) -> str:
        self.inline = 0
        self.brk(False)
        return "\n".join(self.lines) + "\n" if self.lines else ""


def _layout_table(table: _Node) -> bool:
    """A table holding headings or other tables lays out a page (older help centers); it is not data."""
    return any(n.tag in _HEADINGS or n.tag == "table" for n in _walk(table, skip_dropped=False))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default
