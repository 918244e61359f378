"""Read table files (CSV, TSV, JSONL, XLSX) into rows, each sheet of a workbook a table of its own.

A file that cannot be read as a table at all (damaged, binary, another format under a table's
name) raises :class:`TableError`, whose message says what the file is and what to do with it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.encoding import EncodingError, decode_text
from kb.loadstate import slugify

Row = tuple[int, dict[str, Any] | str]  # (line, row); a str row is the error message for that line
RESAVE_XLSX = "open it in Excel or LibreOffice and save it again as .xlsx, or export it as CSV UTF-8"
# What a file's first bytes say it is, when that is not text.
MAGIC = {
    b"PK\x03\x04": "a zip file, not text: if it is an Excel workbook, name it .xlsx, or export it as CSV UTF-8",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls or another Office binary file, not text; export it as CSV UTF-8",
    b"\xff\xfe": "UTF-16 text (Excel's “Unicode text”); save it as CSV UTF-8 instead",
    b"\xfe\xff": "UTF-16 text (Excel's “Unicode text”); save it as CSV UTF-8 instead",
}


class TableError(ValueError):
    """The whole file cannot be read as a table."""


@dataclass(frozen=True)
class Table:
    """The rows of one table: a file, or one sheet of a workbook with several."""

    where: str  # the path in messages and sources: ``faq.csv``, or ``faq.xlsx[退货]`` for one sheet of several
    category: str  # for rows without one
    id_prefix: str  # a row without an id is ``<id_prefix>-<line>``
    # The header's names, lowercased; for JSONL the keys its lines use (None: no object to tell by).
    columns: tuple[str, ...] | None
    rows: tuple[Row, ...]
    sheet: str | None = None  # the sheet's name, for one sheet of several
    jsonl: bool = False  # columns are the keys of JSON objects, not a header row
    encoding: str = "utf-8"  # what the file's text was read as (``kb.encoding.decode_text``)


def read_tables(path: Path, rel: str) -> list[Table]:
    """The tables in the file at ``path`` (``rel``: its path in messages); raise TableError if it is not one."""
    suffix = path.suffix.lower()
    prefix = f"{slugify(path.stem, 'faq')}-{suffix[1:]}"
    if suffix == ".xlsx":
        return _workbook_tables(path, rel, prefix)
    text, encoding = _text(path)
    if suffix == ".jsonl":
        rows = tuple(_jsonl_rows(text))
        keys = {str(k).strip().lower(): None for _, r in rows if isinstance(r, dict) for k in r}
        dicts = any(isinstance(r, dict) for _, r in rows)
        return [Table(rel, path.stem, prefix, tuple(keys) if dicts else None, rows, jsonl=True, encoding=encoding)]
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
    columns = tuple(f.strip().lower() for f in reader.fieldnames or ())
    rows = tuple((reader.line_num, row) for row in reader)
    return [Table(rel, path.stem, prefix, columns, rows, encoding=encoding)]


def _text(path: Path) -> tuple[str, str]:
    """The file's text and what it was read as (UTF-8, or GBK or Big5 as Excel saves "ANSI" CSV);
    TableError for a binary file, UTF-16 or another encoding."""
    data = path.read_bytes()
    for magic, what in MAGIC.items():
        if data.startswith(magic):
            raise TableError(what)
    if b"\x00" in data[:8192]:
        raise TableError("a binary file, not text; export the table as CSV UTF-8")
    try:
        return decode_text(data)
    except EncodingError as exc:
        raise TableError(str(exc)) from None


def _jsonl_rows(text: str) -> list[Row]:
    out: list[Row] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((n, f"invalid JSON: {exc.msg}"))
            continue
        except RecursionError:
            out.append((n, "invalid JSON: nested too deeply"))
            continue
        out.append((n, obj if isinstance(obj, dict) else "each line must be a JSON object"))
    return out


def _workbook_tables(path: Path, rel: str, prefix: str) -> list[Table]:
    """Each visible, non-empty sheet as a table with its own header row. With several, a sheet's
    name is its rows' category, and the rows of every sheet but the first carry its position in
    their ids; a workbook with one such sheet reads as it always did."""
    sheets = [(k, title, rows) for k, title, rows in _sheets(path) if any(_filled(v) for r in rows for v in r)]
    several = len(sheets) > 1
    out = []
    for k, title, rows in sheets:
        header = [str(h or "").strip().lower() for h in rows[0]]
        body = tuple(
            (n, {h: ("" if v is None else v) for h, v in zip(header, values, strict=False) if h})
            for n, values in enumerate(rows[1:], 2)
            if not all(v is None for v in values)
        )
        if several:
            where, category = f"{rel}[{title}]", title.strip() or path.stem
            out.append(Table(where, category, prefix if k == 1 else f"{prefix}-{k}", tuple(header), body, title))
        else:
            out.append(Table(rel, path.stem, prefix, tuple(header), body))
    return out


def _sheets(path: Path) -> list[tuple[int, str, list[tuple[Any, ...]]]]:
    """(position from 1, name, rows) of each visible worksheet, read whole so a damaged file fails here."""
    with path.open("rb") as f:
        if f.read(4) == b"\xd0\xcf\x11\xe0":  # OLE2: what Excel writes for .xls and for a password
            raise TableError(
                "an old Excel .xls workbook or a password-protected one, which kefu cannot read; "
                "save it as .xlsx without a password, or export it as CSV UTF-8"
            )
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
        try:
            return [
                (k, ws.title, list(ws.iter_rows(values_only=True)))
                for k, ws in enumerate(wb.worksheets, 1)
                if ws.sheet_state == "visible"  # a hidden sheet holds lookups and notes, not FAQ rows
            ]
        finally:
            wb.close()
    except Exception as exc:  # a damaged workbook fails in zipfile, zlib, the XML parser or openpyxl itself
        raise TableError(f"not a readable Excel workbook ({type(exc).__name__}: {exc}); {RESAVE_XLSX}") from exc


def _filled(value: Any) -> bool:
    return value is not None and str(value).strip() != ""
