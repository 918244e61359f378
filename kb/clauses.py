"""Clause numbers, clause citations and the answer units of a document.

A rules document's clause 「第五条 …」 is one answer unit with id ``<doc-id>.5``, its text the whole
clause up to the next clause or heading. Text outside any clause (a chapter's introduction, an
article without clauses) is one unit per heading section, ``<doc-id>.s<k>`` (k counts the sections
with such text, from 1). FAQ entries cite clauses as ``doc-id#5`` (``doc-id#第五条`` is read as that).
Both the loader (cite checks) and the indexer (units) read documents through ``document_parts``.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kb.schema validates cites with this module
    from kb.schema import Document

PATH_SEP = " › "
CN_NUMERALS = "零〇一二两三四五六七八九十百"
_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100}
_WRITE = "零一二三四五六七八九"
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CLAUSE = re.compile(rf"^(第([{CN_NUMERALS}\d]+)条)[\s　]*")
_CITE = re.compile(rf"^(?P<doc>[^#\s]+)\s*#\s*(?:第\s*)?(?P<n>[{CN_NUMERALS}\d]+)\s*(?:条)?$")


def cn_number(text: str) -> int | None:
    """The value of a numeral written in Arabic digits or in Chinese up to 九百九十九 (五, 十二,
    二十, 一百零五, 两百一十); None for anything else."""
    text = text.strip()
    if not text:
        return None
    if text.isdecimal():
        return int(text)
    total, digit, last_unit, after_zero = 0, None, 1000, False
    for ch in text:
        if ch in _DIGITS:
            if digit is not None and not after_zero:
                return None  # two digits in a row (二五) is not a numeral
            value = _DIGITS[ch]
            after_zero = value == 0
            digit = None if after_zero else value
        elif ch in _UNITS:
            unit = _UNITS[ch]
            if unit >= last_unit or (digit is None and unit == 100):
                return None  # units must fall (百 then 十); 百 needs its digit
            total += (1 if digit is None else digit) * unit
            digit, last_unit, after_zero = None, unit, False
        else:
            return None
    return total + (digit or 0)


def cn_numeral(n: int) -> str:
    """``n`` (0–999) in Chinese numerals as clause numbers are written: 五, 十二, 二十, 一百零五."""
    if not 0 <= n <= 999:
        raise ValueError(f"clause number {n} is outside 0–999")
    if n < 10:
        return _WRITE[n]
    hundreds, tens, ones = n // 100, n // 10 % 10, n % 10
    out = f"{_WRITE[hundreds]}百" if hundreds else ""
    if tens:
        out += f"{_WRITE[tens]}十" if (hundreds or tens > 1) else "十"
    elif hundreds and ones:
        out += "零"
    return out + (_WRITE[ones] if ones else "")


def clause_label(n: int) -> str:
    return f"第{cn_numeral(n)}条"


@dataclass(frozen=True)
class Cite:
    """A clause an FAQ answer rests on: ``doc_id#clause``."""

    doc_id: str
    clause: int

    def __str__(self) -> str:
        return f"{self.doc_id}#{self.clause}"

    @property
    def unit_id(self) -> str:
        return unit_id(self.doc_id, str(self.clause))


def parse_cite(text: str) -> Cite:
    """``doc-id#5`` or ``doc-id#第五条`` as a Cite; ValueError saying what is expected otherwise."""
    m = _CITE.match(str(text).strip())
    n = cn_number(m.group("n")) if m else None
    if m is None or n is None or n < 1:
        raise ValueError(f"rules cite {text!r} must be a document id and a clause number, like 'rules-coupons#5'")
    return Cite(m.group("doc"), n)


def cite_units(cites: Iterable[str], known: Container[str]) -> list[str]:
    """The answer unit ids of ``cites`` (``doc-id#5``) that are in ``known``, in order; a clause
    not there (a KB edited after its cites were checked) is left out."""
    return [u for u in (parse_cite(c).unit_id for c in cites) if u in known]


def unit_id(doc_id: str, key: str) -> str:
    """The answer unit id of a document part: ``doc.5`` (clause 5) or ``doc.s2`` (second section)."""
    return f"{doc_id}.{key}"


@dataclass(frozen=True)
class Part:
    """One answer unit of a document: a clause, or a heading section's text outside clauses."""

    key: str  # "5" for 第五条, "s1" for the first section: the unit id is ``doc-id.key``
    clause: int | None
    path: tuple[str, ...]  # document title, headings, then the clause label (第五条)
    blocks: tuple[str, ...]  # paragraph groups; each is chunked on its own, never across

    @property
    def text(self) -> str:
        """The whole unit as the answer shows it."""
        return "\n".join(self.blocks)

    @property
    def section(self) -> str:
        return PATH_SEP.join(self.path)


def document_parts(doc: Document) -> list[Part]:
    """``doc`` split into answer units, in order: each clause runs to the next clause or heading
    (over blank lines); other text is grouped by heading, a blank line ending a paragraph group.
    A clause number that repeats in one document is a section there (its id must stay unique);
    ``duplicate_clauses`` names them."""
    raw: list[tuple[tuple[str, ...], str | None, str]] = []  # (path, clause label, block)
    headings: list[tuple[int, str]] = []
    clause: str | None = None
    buf: list[str] = []

    def path() -> tuple[str, ...]:
        p = [h for _, h in headings]
        if p and p[0] == doc.title:
            p = p[1:]
        return (doc.title, *p, *([clause] if clause else []))

    def flush() -> None:
        text = "\n".join(buf).strip()
        if text:
            raw.append((path(), clause, text))

    for line in (x.strip() for x in doc.body.splitlines()):
        m = HEADING.match(line)
        if m:
            flush()
            buf, clause = [], None
            level = len(m.group(1))
            headings = [(lv, h) for lv, h in headings if lv < level] + [(level, m.group(2))]
        elif c := CLAUSE.match(line):
            flush()
            buf, clause = [line], c.group(1)
        elif not line and clause is None:
            flush()
            buf = []
        elif line:
            buf.append(line)
    flush()
    return _group(raw)


def _group(raw: list[tuple[tuple[str, ...], str | None, str]]) -> list[Part]:
    parts: list[Part] = []
    seen: set[int] = set()
    sections = 0
    for path, label, block in raw:
        n = cn_number(label[1:-1]) if label else None
        if n is not None and n >= 1 and n not in seen:
            seen.add(n)
            parts.append(Part(str(n), n, path, (block,)))
            continue
        last = parts[-1] if parts else None
        if label is None and last is not None and last.clause is None and last.path == path:
            parts[-1] = Part(last.key, None, path, (*last.blocks, block))  # the same section goes on
            continue
        sections += 1
        parts.append(Part(f"s{sections}", None, path, (block,)))
    return parts


def duplicate_clauses(doc: Document) -> list[str]:
    """Clause labels that occur more than once in ``doc`` (第五条 twice), in order."""
    counts: dict[int, int] = {}
    labels: dict[int, str] = {}
    for line in doc.body.splitlines():
        c = CLAUSE.match(line.strip())
        n = cn_number(c.group(2)) if c else None
        if c and n is not None:
            counts[n] = counts.get(n, 0) + 1
            labels.setdefault(n, c.group(1))
    return [labels[n] for n, k in counts.items() if k > 1]


def clauses(doc: Document) -> dict[int, Part]:
    """The clauses of ``doc`` by number (the first, where a number repeats)."""
    return {p.clause: p for p in document_parts(doc) if p.clause is not None}
