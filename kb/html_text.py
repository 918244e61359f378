"""A page's content elements written out as Markdown-like lines, for kb/html.py: headings as ``#``
lines, list items as ``- ``/``1. `` lines, table rows as cells joined by `` | ``, blank lines between
paragraphs."""

from __future__ import annotations

import re
import unicodedata

from kb.html_tree import HEADINGS, LINES, PARAGRAPHS, Node, dropped, walk

_SPACE = re.compile(r"\s+")
_INVISIBLE = str.maketrans("", "", "\u200b\ufeff")  # zero-width space, stray BOM: CMS leftovers


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


def inline_text(node: Node) -> str:
    """The text of ``node`` on one line (titles, headings)."""
    w = Writer()
    w.inline = 1
    w.render(node)
    return _collapse("".join(w.parts))


class Writer:
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

    def render(self, top: Node) -> None:
        # Iterative, not recursive: pages with thousands of unclosed <font> nest that deep.
        todo: list[tuple[Node | str, str | None]] = [(top, None)]  # (node, None) opens it
        while todo:
            item, action = todo.pop()
            if isinstance(item, str):
                self.text(item)
            elif action is not None:
                self.end(action)
            elif item is top or not dropped(item):
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

    def start(self, node: Node) -> str:
        """Open ``node``; the action returned is what ``end`` undoes."""
        tag = node.tag
        if tag in HEADINGS and not self.inline:
            self.brk(True)
            self.marker = "#" * HEADINGS[tag] + " "
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
        if tag in PARAGRAPHS or tag in LINES:
            self.brk(tag in PARAGRAPHS)
            self.pre += tag == "pre"
            return "pre" if tag == "pre" else "para" if tag in PARAGRAPHS else "line"
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


def _layout_table(table: Node) -> bool:
    """A table holding headings or other tables lays out a page (older help centers); it is not data."""
    return any(n.tag in HEADINGS or n.tag == "table" for n in walk(table, skip_dropped=False))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default
