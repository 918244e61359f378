"""Word documents (``.docx``) as Markdown-like text, for the loader and the document chunker.

A ``.docx`` file is a zip of XML parts. ``parse_docx`` reads ``word/document.xml`` with the standard
library (no Word, no extra package) and writes out the body in the shape the HTML reader gives:
headings (a paragraph style named ``heading N``, ``标题 N`` or ``Title``, or an outline level) as
``#`` lines that the chunker splits along, list paragraphs as ``- `` lines, table rows as cells
joined by `` | ``, paragraphs separated by blank lines. The title is the document's own (its
properties), else its first heading. The older binary ``.doc`` is not a zip and is not read.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from io import BytesIO
from xml.etree import ElementTree as ET

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
MAX_PART_BYTES = 64 * 1024 * 1024  # an XML part larger than this unpacked is refused (a zip bomb)
# Style names Word and WPS give headings, in English and Chinese (标题 1); a Title is a first-level heading.
_HEADING_NAME = re.compile(r"^(?:heading|标题)\s*(\d)$", re.I)


class DocxError(ValueError):
    """A ``.docx`` file that cannot be read."""


@dataclass(frozen=True)
class DocxText:
    title: str  # "" when the document has neither a title property nor a heading
    body: str


def parse_docx(data: bytes) -> DocxText:
    """The text of a ``.docx`` file's bytes; DocxError says why it cannot be read."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            document = _part(z, "word/document.xml")
            if document is None:
                raise DocxError("has no word/document.xml, so it is not a Word document")
            styles, core = _part(z, "word/styles.xml"), _part(z, "docProps/core.xml")
    except zipfile.BadZipFile:
        raise DocxError(
            "is not a .docx file (a .docx is a zip; an older .doc or a password-protected file is not)"
        ) from None
    except (NotImplementedError, RuntimeError, OSError) as exc:  # an unknown compression, an encrypted part
        raise DocxError(f"cannot be unpacked ({exc})") from exc
    levels, lists = _styles(_xml(styles)) if styles is not None else ({}, set())
    body = _xml(document).find(f"{W}body")
    lines: list[str] = []
    first_heading = ""
    for el in body if body is not None else ():
        if el.tag == f"{W}p":
            text, level, listed = _paragraph(el, levels, lists)
            if not text:
                continue
            if level:
                first_heading = first_heading or text
                lines.append(f"{'#' * level} {text}")
            else:
                lines.append(f"- {text}" if listed else text)
        elif el.tag == f"{W}tbl":
            lines.extend(_table(el))
    title = ""
    if core is not None:
        found = _xml(core).find(DC_TITLE)
        title = (found.text or "").strip() if found is not None else ""
    return DocxText(title or first_heading, "\n\n".join(lines) + "\n" if lines else "")


def _part(z: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        info = z.getinfo(name)
    except KeyError:
        return None
    if info.file_size > MAX_PART_BYTES:
        raise DocxError(f"{name} unpacks to {info.file_size:,} bytes, more than a document holds")
    return z.read(info)


def _xml(data: bytes) -> ET.Element:
    # Word writes no DTD; one here could only be an entity-expansion attack
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise DocxError("holds a DTD, which Word documents never do")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DocxError(f"has a damaged part ({exc}); open and save it again in Word") from exc


def _styles(styles: ET.Element) -> tuple[dict[str, int], set[str]]:
    """Heading level by paragraph style id (``Heading1``, or ``1`` as Chinese Word names 标题 1), and
    the ids of list styles (List Bullet, List Number: their numbering is in the style, not the paragraph)."""
    levels, lists = {}, set()
    for s in styles.iter(f"{W}style"):
        sid = s.get(f"{W}styleId")
        name_el = s.find(f"{W}name")
        name = ((name_el.get(f"{W}val") or "") if name_el is not None else "").strip()
        if not sid:
            continue
        m = _HEADING_NAME.match(name)
        if m or name.lower() == "title":
            levels[sid] = int(m.group(1)) if m else 1
        elif s.find(f"{W}pPr/{W}numPr") is not None:
            lists.add(sid)
    return levels, lists


def _paragraph(p: ET.Element, levels: dict[str, int], lists: AbstractSet[str] = frozenset()) -> tuple[str, int, bool]:
    """(text, heading level or 0, in a list) of one paragraph."""
    parts = []
    for el in p.iter():
        if el.tag == f"{W}t" and el.text:
            parts.append(el.text)
        elif el.tag in (f"{W}tab", f"{W}br", f"{W}cr"):
            parts.append(" ")
    text = re.sub(r"\s+", " ", "".join(parts)).strip()
    props = p.find(f"{W}pPr")
    level, listed = 0, False
    if props is not None:
        style = props.find(f"{W}pStyle")
        sid = (style.get(f"{W}val") or "") if style is not None else ""
        level = levels.get(sid, 0)
        outline = props.find(f"{W}outlineLvl")
        if not level and outline is not None and (v := outline.get(f"{W}val", "")).isdigit() and int(v) < 6:
            level = int(v) + 1
        listed = props.find(f"{W}numPr") is not None or sid in lists
    return text, min(level, 6), listed


def _table(tbl: ET.Element) -> list[str]:
    """Each row of a table as its cells' text joined by `` | `` (nested tables read as text)."""
    rows = []
    for tr in tbl.findall(f"{W}tr"):
        cells = []
        for tc in tr.findall(f"{W}tc"):
            texts = [_paragraph(p, {})[0] for p in tc.iter(f"{W}p")]
            cells.append(" ".join(t for t in texts if t))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows
