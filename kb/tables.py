"""Read FAQ tables (CSV, TSV, JSONL, XLSX) into a load, mapping non-slug ids to slugs."""

from __future__ import annotations

import csv
import difflib
import functools
import re
from pathlib import Path
from typing import Any

from kb.clauses import parse_cite
from kb.encoding import encoding_note
from kb.loadstate import LoadState
from kb.schema import SLUG, ImportedEntry, Source, entry_slug
from kb.table_read import Table, TableError, read_tables

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".xlsx"}
REQUIRED = ("question", "answer")
OPTIONAL = ("alt_questions", "category", "id", "rules")
# What other systems' exports call kefu's columns: the import templates of Chinese customer-service
# and chatbot platforms name them in Chinese (标准问题, 相似问题, 答案, 分类). Compared lower-cased,
# without spaces, underscores or hyphens. A header not listed is reported as not read.
COLUMN_NAMES = {
    "question": ("question", "问题", "标准问题", "标准问", "主问题", "问句", "问法", "q"),
    "answer": ("answer", "答案", "回答", "答复", "回复", "标准答案", "答案内容", "回复内容", "a", "reply", "response"),
    "alt_questions": (
        "alt_questions",
        "alternatives",
        "similar_questions",
        "相似问题",
        "相似问",
        "相似问法",
        "扩展问题",
        "扩展问",
        "同义问题",
        "其他问法",
    ),
    "category": ("category", "分类", "类别", "类目", "问题分类", "所属分类", "目录"),
    "id": ("id", "编号", "问题编号", "问题id", "faq_id", "qid"),
    "rules": ("rules", "依据", "引用条款"),
}
_NAME_KEY = re.compile(r"[\s_\-]+")
_COLUMN_OF = {_NAME_KEY.sub("", n.lower()): c for c, names in COLUMN_NAMES.items() for n in names}


@functools.lru_cache(maxsize=512)  # asked for every cell's key of every row: a table has few headers
def column_of(header: str) -> str | None:
    """The kefu column a table's header names (``标准问题`` → ``question``), or None."""
    return _COLUMN_OF.get(_NAME_KEY.sub("", str(header).strip().lower()))


ALT_SPLIT = re.compile(r"\s*(?:\||\n|；|;)\s*")
CITE_SPLIT = re.compile(r"\s*(?:\||\n|；|;|,|，|、)\s*")


def load_table(state: LoadState, path: Path) -> None:
    """Add the rows of the table at ``path`` (each sheet of a workbook) as imported entries; outside
    strict mode an incomplete row is skipped and a non-slug id mapped to a slug, each counted in the report."""
    src = Source(state.rel(path))
    try:
        tables = read_tables(path, src.path)
    except (TableError, OSError, csv.Error) as exc:
        state.problem(src, str(exc) if isinstance(exc, TableError) else f"cannot read table: {exc}")
        return
    if tables and tables[0].encoding != "utf-8":
        state.note("encoding", src, encoding_note(tables[0].encoding))
    readable = [t for t in tables if _has_columns(state, t)]
    if len(readable) == len(tables) and not any(t.rows for t in tables):
        state.problem(src, "table has no rows")
        return
    for t in readable:
        for line, row in t.rows:
            _add_row(state, t, Source(t.where, line), row)


def _has_columns(state: LoadState, t: Table) -> bool:
    """Whether ``t`` names the question and answer columns; if not, one problem says what it has instead
    (not a "missing answer" for every row)."""
    if t.columns is None or not (t.columns or t.rows):  # no object in a JSONL, an empty file: said otherwise
        return True
    named: dict[str, list[str]] = {}
    for header in t.columns:
        if header:
            named.setdefault(column_of(header) or "", []).append(header)
    twice = [
        f"{', '.join(hs[:-1])} and {hs[-1]} {'both' if len(hs) == 2 else 'all'} name {c}"
        for c, hs in named.items()
        if c and len(hs) > 1
    ]
    if twice:
        state.problem(Source(t.where, 1), f"columns {'; '.join(twice)}: keep one of each (rename or delete the others)")
        return False
    missing = [c for c in REQUIRED if c not in named]
    if not missing:
        for header in named.get("", []):  # a column of its own kind: its cells are not lost silently
            state.note(
                "column_ignored",
                Source(t.where, 1),
                f"column {header!r} not read (kefu reads question, answer and {', '.join(OPTIONAL)}; "
                f"rename it to one of them if it holds one)",
            )
        return True
    found = [c for c in t.columns if c]
    shown = ", ".join(c if len(c) <= 24 else c[:23] + "…" for c in found[:12]) or "nothing"
    if len(found) > 12:
        shown += f" and {len(found) - 12} more"
    hints = [f"{close[0]} → {c}?" for c in missing if (close := _close_header(c, found))]
    seps = [sep for sep in ",;\t|" if len(found) == 1 and sep in found[0]]
    if seps:  # one column holding the whole row: another separator than the file type's
        hints = [f"the columns seem separated by {seps[0]!r}; kefu reads .csv with commas and .tsv with tabs"]
    hint = f" ({'; '.join(hints)})" if hints else ""
    wanted = f"question and answer (or 问题 and 答案; optional: {', '.join(OPTIONAL)})"
    what = " and ".join(missing) + (" are" if len(missing) > 1 else " is")
    if t.jsonl:
        message = f"no line has the key {' or '.join(missing)}; found: {shown}{hint}; each line needs {wanted}"
    elif t.sheet is not None:
        message = (
            f"the first row of sheet {t.sheet} must name the columns {wanted}; found: {shown}, so {what} missing"
            f"{hint}; hide the sheet if it holds no FAQ rows"
        )
    else:
        message = f"header must name the columns {wanted}; found: {shown}, so {what} missing{hint}"
    state.problem(Source(t.where, 1), message)
    return False


# The character a Chinese header for the column carries (提问, 客户问法 → question; 解答 → answer).
_CJK_MARK = {"question": "问", "answer": "答"}


def _close_header(column: str, found: list[str]) -> list[str]:
    """A header that is probably ``column`` misnamed: close in spelling (answr), or a Chinese name
    with the column's character (提问 for question) that is not another column's."""
    close = difflib.get_close_matches(column, found, 1, 0.6)
    mark = _CJK_MARK.get(column)
    if close or mark is None:
        return close
    others = set(_CJK_MARK.values()) - {mark}
    return [h for h in found if mark in h and not others & set(h) and column_of(h) is None][:1]


def _add_row(state: LoadState, t: Table, here: Source, row: dict[str, Any] | str) -> None:
    """Add one row of ``t`` read at ``here``."""
    if isinstance(row, str):
        state.problem(here, row)
        return
    state.rows_read += 1
    row = {column_of(str(k)) or str(k).strip().lower(): v for k, v in row.items() if k is not None}
    missing = [c for c in REQUIRED if not _cell(row.get(c))]
    if missing:
        what = f"missing {' and '.join(missing)}"
        if state.strict:
            state.problem(here, f"{what}; fill in the question and answer columns or delete the row")
        elif not any(_cell(v) for v in row.values()):
            state.note("skipped", here, "empty row; skipped", "empty row")
        else:
            state.note("skipped", here, f"{what}; row skipped (fill it in to include the row)", what)
        return
    alts = row.get("alt_questions") or ()
    if isinstance(alts, str):
        alts = tuple(a for a in ALT_SPLIT.split(alts) if a)
    elif not isinstance(alts, list | tuple):
        alts = (_cell(alts),)
    original = _cell(row.get("id"))
    cites = table_cites(state, row.get("rules"), here)
    raw = {
        "id": original or f"{t.id_prefix}-{here.line}",
        "category": _cell(row.get("category")) or t.category,
        "question": _cell(row["question"]),
        "answer": _cell(row["answer"]),
        "alt_questions": tuple(_cell(a) for a in alts),
        "rules": cites,
    }
    if original and not SLUG.match(original):
        slug = entry_slug(original)
        if state.strict:
            state.problem(
                here,
                f"id {original!r} is not a readable slug (lowercase letters, digits and hyphens); "
                f"rename it, or load without --strict to map it to {slug!r}",
            )
            return
        raw["id"], raw["source_id"] = slug, original
        state.ids_mapped += 1
    state.add_entry(raw, here, ImportedEntry)


def table_cites(state: LoadState, cell: Any, src: Source) -> tuple[str, ...]:
    """A table's ``rules`` cell (``|``-separated, or a JSONL list) as cites; outside strict mode a
    malformed one is dropped with a warning instead of refusing the row."""
    texts = [_cell(x) for x in cell] if isinstance(cell, list | tuple) else CITE_SPLIT.split(_cell(cell))
    out = []
    for text in filter(None, texts):
        try:
            out.append(str(parse_cite(text)))
        except ValueError as exc:
            if state.strict:
                state.problem(src, str(exc))
            else:
                state.note("cite_dropped", src, f"{exc}; dropped", "malformed")
    return tuple(out)


def _cell(value: Any) -> str:
    """A table cell as stripped text; a whole number read as a float (XLSX: 1024.0) as "1024"."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
