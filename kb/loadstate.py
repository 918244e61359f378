"""What one knowledge-base load accumulates (entries, documents, problems, import notes) and its shared helpers."""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kb.schema import (
    MIN_ANSWER,
    Document,
    FAQEntry,
    ImportedEntry,
    ImportNote,
    ImportReport,
    NoteKind,
    Source,
)


def question_key(text: str) -> str:
    """Comparison key for duplicate questions: width-folded, lower-case, no punctuation or spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch.isalnum())


def fmt_validation(exc: ValidationError) -> str:
    """A pydantic error as one line of ``field: message`` parts."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "entry"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def slugify(text: str, fallback: str) -> str:
    """``text`` as a lowercase ASCII slug; ``fallback`` when fewer than two characters remain."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug if len(slug) >= 2 else fallback


@dataclass(frozen=True)
class Loaded:
    """An entry with where it came from; ``seq`` keeps entries and documents in load order."""

    entry: FAQEntry
    src: Source
    seq: int
    imported: bool  # a table row: outside strict mode its id and duplicates are settled, not refused


class LoadState:
    """Everything read so far from one KB folder, with the problems and import notes found."""

    def __init__(self, root: Path, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.problems: list[str] = []
        self.loaded: list[Loaded] = []
        self.documents: list[Document] = []
        self.doc_placed: list[tuple[int, str, Source]] = []  # (seq, id, source) of every document
        self.seq = itertools.count()
        self.notes: list[ImportNote] = []
        self.rows_read = 0
        self.ids_mapped = 0

    @property
    def entries(self) -> list[FAQEntry]:
        return [x.entry for x in self.loaded]

    @property
    def sources(self) -> dict[str, Source]:
        out: dict[str, Source] = {}
        for x in self.loaded:
            out.setdefault(x.entry.id, x.src)
        for _, doc_id, src in self.doc_placed:
            out.setdefault(doc_id, src)
        return out

    def note(self, kind: NoteKind, src: Source, message: str, reason: str = "") -> None:
        self.notes.append(ImportNote(kind, src, message, reason))

    def report(self) -> ImportReport:
        short = sum(1 for x in self.loaded if x.imported and len(x.entry.answer) < MIN_ANSWER)
        notes = sorted(self.notes, key=lambda n: (n.source.path, n.source.line))  # stable: per row, in phase order
        return ImportReport(self.rows_read, self.ids_mapped, short, tuple(notes))

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def problem(self, src: Source, message: str) -> None:
        self.problems.append(f"{src}: {message}")

    def add_entry(self, raw: dict[str, Any], src: Source, model: type[FAQEntry]) -> None:
        raw = {k: v for k, v in raw.items() if v is not None and k != "__line__"}
        for key in ("alt_questions", "tags", "related", "replaces", "rules"):
            if isinstance(raw.get(key), list):
                raw[key] = tuple(str(x) for x in raw[key])
        try:
            entry = model.model_validate(raw)
        except ValidationError as exc:
            shown = raw.get("source_id") or raw.get("id", "?")
            self.problem(src, f"entry {shown!r}: {fmt_validation(exc)}")
            return
        self.loaded.append(Loaded(entry, src, next(self.seq), imported=model is ImportedEntry))
