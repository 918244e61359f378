"""FAQ entries' cites of rules clauses: does each name a clause that exists, and do the answer's
numbers (days, hours, amounts, percentages) agree with the clauses it cites?

The number check is a heuristic for `kefu kb check`: a number with a unit in the answer is
flagged when a cited clause states that unit, but only with other values (「15天」 against a
clause that says 「七日」). Numbers in units no cited clause uses are not judged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kb.clauses import Cite, Part, clause_label, clauses, cn_number, parse_cite
from kb.schema import Document, FAQEntry, KnowledgeBase, Source

_CN = "零〇一二两三四五六七八九十百"
_NUM = rf"(?:\d+(?:\.\d+)?|[{_CN}]+)"
# A numeral is read whole: not from the middle of one, not an ordinal (第二天) or a date (5月1日).
_BEFORE = rf"(?<![第\d.月号{_CN}])"
_RANGE = r"\s*(?:-|~|～|—|–|至|到)\s*"
UNITS: tuple[tuple[str, str], ...] = (  # (shown unit, pattern after the numeral), longest first
    ("个工作日", r"个?工作日"),
    ("小时", r"个?小时"),
    ("分钟", r"分钟"),
    ("个月", r"个月"),
    ("天", r"(?:天|日)"),
    ("年", r"年"),
    ("元", r"(?:元|块钱|块)"),
    ("%", r"(?:%|％)"),
    ("倍", r"倍"),
)
_QUANTITY = re.compile(
    rf"{_BEFORE}(?P<a>{_NUM})(?:{_RANGE}(?P<b>{_NUM}))?\s*(?P<unit>{'|'.join(f'(?:{p})' for _, p in UNITS)})"
)
_PERCENT = re.compile(rf"百分之(?P<a>{_NUM})")
_UNIT_OF = [(name, re.compile(rf"^{p}$")) for name, p in UNITS]
MAX_YEARS = 100  # 「2026年」 is a date, not a period


def _value(text: str) -> float | None:
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    n = cn_number(text)
    return None if n is None else float(n)


def quantities(text: str) -> dict[str, set[float]]:
    """Every number with a unit in ``text``, by unit (both ends of a range such as 3-5个工作日)."""
    out: dict[str, set[float]] = {}
    for m in _QUANTITY.finditer(text):
        unit = next(name for name, rx in _UNIT_OF if rx.match(m.group("unit")))
        for end in (m.group("a"), m.group("b")):
            v = _value(end) if end else None
            if v is not None and not (unit == "年" and v >= MAX_YEARS):
                out.setdefault(unit, set()).add(v)
    for m in _PERCENT.finditer(text):
        v = _value(m.group("a"))
        if v is not None:
            out.setdefault("%", set()).add(v)
    return out


def _show(unit: str, values: Iterable[float]) -> tuple[str, ...]:
    return tuple(f"{v:g}{unit}" for v in sorted(values))


@dataclass(frozen=True)
class NumberMismatch:
    """An FAQ answer states a number its cited clauses state only with other values."""

    entry_id: str
    source: Source
    unit: str
    cites: tuple[str, ...]  # the cited clauses that state this unit, as doc-id#n
    labels: tuple[str, ...]  # the same as 《title》第n条
    answer: tuple[str, ...]  # the answer's numbers in this unit, e.g. ("15天",)
    clause: tuple[str, ...]  # the clauses' numbers in this unit, e.g. ("7天",)

    def __str__(self) -> str:
        return (
            f"{self.source}: entry {self.entry_id!r} says {'、'.join(self.answer)} where "
            f"{'、'.join(self.labels)} ({', '.join(self.cites)}) says {'、'.join(self.clause)}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "entry": self.entry_id,
            "source": str(self.source),
            "unit": self.unit,
            "cites": list(self.cites),
            "answer_numbers": list(self.answer),
            "clause_numbers": list(self.clause),
        }


def clause_index(documents: Iterable[Document]) -> dict[str, tuple[Document, dict[int, Part]]]:
    """Every document by id with its clauses by number."""
    return {d.id: (d, clauses(d)) for d in documents}


def cite_problem(cite: str, docs: Mapping[str, tuple[Document, dict[int, Part]]]) -> str | None:
    """Why ``cite`` names no clause of ``docs`` (None when it does)."""
    c = parse_cite(cite)
    found = docs.get(c.doc_id)
    if found is None:
        rules = sorted(d for d, (doc, _) in docs.items() if doc.kind == "rules")
        shown = ", ".join(rules[:8]) + (" …" if len(rules) > 8 else "")
        listed = f" (rules documents: {shown})" if rules else ""
        return f"cites {cite!r}, but there is no document {c.doc_id!r}{listed}"
    doc, by_number = found
    if c.clause not in by_number:
        if not by_number:
            return f"cites {cite!r}, but 《{doc.title}》 ({doc.source.path}) has no numbered clauses"
        have = sorted(by_number)
        return (
            f"cites {cite!r}, but 《{doc.title}》 ({doc.source.path}) has no {clause_label(c.clause)} "
            f"(its clauses: {clause_label(have[0])}–{clause_label(have[-1])})"
        )
    return None


def _cited(entry: FAQEntry, docs: Mapping[str, tuple[Document, dict[int, Part]]]) -> list[tuple[Cite, Document, Part]]:
    out = []
    for text in entry.rules:
        c = parse_cite(text)
        doc, by_number = docs.get(c.doc_id, (None, {}))
        part = by_number.get(c.clause)
        if doc is not None and part is not None:
            out.append((c, doc, part))
    return out


def number_mismatches(kb: KnowledgeBase) -> list[NumberMismatch]:
    """Every (entry, unit) whose answer states a number its cited clauses state only otherwise."""
    docs = clause_index(kb.documents)
    out: list[NumberMismatch] = []
    for e in kb.entries:
        cited = _cited(e, docs)
        if not cited:
            continue
        said = quantities(e.answer)
        stated = [(c, doc, quantities(part.text)) for c, doc, part in cited]
        for unit, values in said.items():
            using = [(c, doc, q[unit]) for c, doc, q in stated if unit in q]
            if not using:
                continue
            allowed = set().union(*(v for _, _, v in using))
            if values - allowed:
                out.append(
                    NumberMismatch(
                        e.id,
                        kb.sources.get(e.id, Source("?")),
                        unit,
                        tuple(str(c) for c, _, _ in using),
                        tuple(f"《{doc.title}》{clause_label(c.clause)}" for c, doc, _ in using),
                        _show(unit, values),
                        _show(unit, allowed),
                    )
                )
    return out
