"""Read FAQ tables (CSV, TSV, JSONL, XLSX) into a load, mapping non-slug ids to slugs."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb.clauses import parse_cite
from kb.loadstate import LoadState, slugify
from kb.schema import SLUG, ImportedEntry, Source, entry_slug

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".xlsx"}
ALT_SPLIT = re.compile(r"\s*(?:\||\n|；|;)\s*")
CITE_SPLIT = re.compile(r"\s*(?:\||\n|；|;|,|，|、)\s*")


def load_table(state: LoadState, path: Path) -> None:
    """Add the rows of the table at ``path`` as imported entries; outside strict mode an incomplete
    row is skipped and a non-slug id mapped to a slug, each counted in the report."""
    src = Source(state.rel(path))
    try:
        rows = list(_table_rows(path))
    except UnicodeDecodeError:
        state.problem(src, "not UTF-8 text; save the table as UTF-8")
        return
    except (ValueError, OSError, csv.Error) as exc:
        state.problem(src, f"cannot read table: {exc}")
        return
    if not rows:
        state.problem(src, "table has no rows")
        return
    for line, row in rows:
        here = Source(src.path, line)
        if isinstance(row, str):
            state.problem(here, row)
            continue
        state.rows_read += 1
        row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        missing = [c for c in ("question", "answer") if not _cell(row.get(c))]
        if missing:
            what = f"missing {' and '.join(missing)}"
            if state.strict:
                state.problem(here, f"{what}; fill in the question and answer columns or delete the row")
            elif not any(_cell(v) for v in row.values()):
                state.note("skipped", here, "empty row; skipped", "empty row")
            else:
                state.note("skipped", here, f"{what}; row skipped (fill it in to include the row)", what)
            continue
        alts = row.get("alt_questions") or ()
        if isinstance(alts, str):
            alts = tuple(a for a in ALT_SPLIT.split(alts) if a)
        elif not isinstance(alts, list | tuple):
            alts = (_cell(alts),)
        original = _cell(row.get("id"))
        cites = table_cites(state, row.get("rules"), here)
        raw = {
            "id": original or f"{slugify(path.stem, 'faq')}-{path.suffix[1:].lower()}-{line}",
            "category": _cell(row.get("category")) or path.stem,
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
                continue
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


def _table_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield (line number, row) pairs; a str row is an error message for that line."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        text = path.read_text("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "question" not in [f.strip().lower() for f in reader.fieldnames]:
            raise ValueError(f"header must name the columns question and answer, found {reader.fieldnames}")
        for row in reader:
            yield reader.line_num, row
    elif suffix == ".jsonl":
        for n, line in enumerate(path.read_text("utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, f"invalid JSON: {exc.msg}"
                continue
            yield n, obj if isinstance(obj, dict) else "each line must be a JSON object"
    elif suffix == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True, data_only=True)
        ws = wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = [str(h or "").strip().lower() for h in next(rows, ())]
        if "question" not in header:
            raise ValueError(f"first row must name the columns question and answer, found {header}")
        for n, values in enumerate(rows, 2):
            if all(v is None for v in values):
                continue
            yield n, {h: ("" if v is None else v) for h, v in zip(header, values, strict=False) if h}
        wb.close()
