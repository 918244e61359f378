"""An HTML page as a small element tree, for kb/html.py: a forgiving builder on the standard library's
``html.parser`` that closes what HTML closes implicitly, and which elements are page chrome (navigation,
the site's header and footer, hidden elements) rather than content."""

from __future__ import annotations

import re
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
PARAGRAPHS = _words("p ul ol dl table blockquote pre hr figure details section article main fieldset h1 h2 h3 h4 h5 h6")
LINES = _words("div br tr td th li dt dd summary caption address figcaption center header footer nav aside form")
_CLOSES_P = (PARAGRAPHS | LINES) - {"br", "tr", "td", "th", "caption"}
HEADINGS = {f"h{n}": n for n in range(1, 7)}


@dataclass(eq=False)
class Node:
    tag: str
    attrs: dict[str, str]
    line: int
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)
    holds_content: bool = False  # an ancestor of <main>/<article>: a layout wrapper, never chrome

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class TreeBuilder(HTMLParser):
    """A forgiving tree: unclosed <p>, <li>, <td>… are closed where HTML closes them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities (&nbsp; &amp; &#20013;) arrive decoded
        self.root = Node("#root", {}, 1)
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
        node = Node(tag, {k.lower(): v or "" for k, v in attrs}, self.getpos()[0], parent)
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


def walk(node: Node, *, skip_dropped: bool = True) -> Iterator[Node]:
    """Elements under ``node`` in document order, without the dropped ones (iterative: deep pages)."""
    todo = [c for c in reversed(node.children) if isinstance(c, Node)]
    while todo:
        n = todo.pop()
        if skip_dropped and dropped(n):
            continue
        yield n
        todo.extend(c for c in reversed(n.children) if isinstance(c, Node))


def dropped(node: Node) -> bool:
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
        return not (node.holds_content or any(n.tag in HEADINGS for n in walk(node, skip_dropped=False)))
    if node.holds_content or node.tag in ("html", "body", "main", "article"):
        return False  # a layout wrapper (<body class="has-sidebar">) is not navigation
    sectioned = any(n.tag in _SECTIONING for n in node.ancestors())
    if node.tag in _SCOPED and not sectioned:
        return True
    names = [*a.get("class", "").split(), a.get("id", "")]
    words = {w.lower() for name in names for w in re.split(r"[-_\s]+|(?<=[a-z])(?=[A-Z])", name) if w}
    return bool(words & _NAV_WORDS or (not sectioned and words & _SCOPED))


def content_roots(root: Node) -> tuple[list[Node], str]:
    """Where the content is: the first <main>, else the outermost <article>s, else the whole page."""
    nodes = list(walk(root))
    main = next((n for n in nodes if n.tag == "main"), None)
    if main is not None:
        return [main], "<main>"
    articles = [n for n in nodes if n.tag == "article" and not any(p.tag == "article" for p in n.ancestors())]
    if articles:
        return articles, "<article>"
    return [root], ""
