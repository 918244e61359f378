"""The knowledge-base schema: FAQ entries, rules documents and the KB as a whole."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kb.clauses import document_parts, parse_cite, unit_id

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")  # one character too: a table's ids are often 1, 2, 3…
MIN_QUESTION = 6  # characters: shorter titles are too vague to retrieve on
MIN_ALT = 4
MIN_ALTS = 3  # shoppers word things in many ways; fewer than three alternatives measurably hurts recall
MIN_ANSWER = 60  # an actionable answer (steps, limits, fallback) needs at least this much
MIN_RULES_BODY = 1500


def check_slug(v: str) -> str:
    """Ids are readable slugs, so they can appear in URLs, file names and citations."""
    if not SLUG.match(v):
        raise ValueError(f"id {v!r} must be a readable slug: lowercase letters, digits and hyphens")
    return v


SLUG_ASCII_MAX = 40  # characters of the original kept in a derived slug; the hash keeps it unique


def entry_slug(original: str) -> str:
    """The slug kefu uses for an imported id: ``original`` itself when it is one, else its
    lowercase ASCII letters and digits plus a short hash of the exact original.

    Deterministic (the API turns an original id into the slug without the KB) and, up to the
    hash (the loader settles a clash), distinct for distinct originals: ``"ABC"`` → ``"abc-…"``
    never meets a natural ``"abc"``. Examples:
    ``"退货-01"`` → ``"01-5e950f9e"``, ``"Q 12"`` → ``"q-12-3b8fc432"``, ``"常见问题"`` → ``"id-0adb1147"``.
    """
    original = original.strip()
    if SLUG.match(original):
        return original
    # NFKC first, so full-width digits and letters (１０２４, ＡＢ) stay readable.
    ascii_part = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKC", original).lower())
    ascii_part = ascii_part.strip("-")[:SLUG_ASCII_MAX].strip("-") or "id"
    digest = hashlib.sha1(original.encode("utf-8")).hexdigest()[:8]
    return f"{ascii_part}-{digest}"


class FAQEntry(BaseModel):
    """One answer unit: a question, how shoppers also ask it, and the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    category: str = Field(min_length=1)
    question: str = Field(min_length=MIN_QUESTION)
    alt_questions: tuple[str, ...] = Field(min_length=MIN_ALTS)
    answer: str = Field(min_length=MIN_ANSWER)
    tags: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    # Ids of entries merged into this one. They stay valid names for it: a labelled set, a
    # related link or an API client that still says the old id reaches the survivor.
    replaces: tuple[str, ...] = ()
    # The id the row had in an imported table when kefu had to change it (not a slug, or not
    # unique); ``id`` is then the slug derived from it. Both names reach the entry.
    source_id: str | None = None
    # Clauses of rules documents the answer rests on, as ``doc-id#5`` (``doc-id#第五条`` is read as
    # that); the loader checks that each exists, and answers show them as citations.
    rules: tuple[str, ...] = ()
    updated: dt.date | None = None

    _slug = field_validator("id")(classmethod(lambda cls, v: check_slug(v)))

    @field_validator("replaces")
    @classmethod
    def _replaced_slugs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_slug(x) for x in v)

    @field_validator("rules")
    @classmethod
    def _cites(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(parse_cite(x)) for x in v))

    @field_validator("alt_questions")
    @classmethod
    def _alts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        short = [a for a in v if len(a.strip()) < MIN_ALT]
        if short:
            raise ValueError(f"alternative questions shorter than {MIN_ALT} characters: {short}")
        return tuple(a.strip() for a in v)

    @field_validator("question", "answer", "category")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()


class ImportedEntry(FAQEntry):
    """An FAQ row from a user's table (CSV/TSV/JSONL/XLSX): alternatives optional, shorter answers allowed."""

    question: str = Field(min_length=1)
    alt_questions: tuple[str, ...] = ()
    answer: str = Field(min_length=1)

    @field_validator("alt_questions")
    @classmethod
    def _alts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.strip() for a in v if a.strip())


class RulesMeta(BaseModel):
    """Front matter of a rules document."""

    model_config = ConfigDict(extra="forbid")

    id: str
    title: str = Field(min_length=2)
    category: str = Field(min_length=1)
    effective: dt.date
    supersedes: str | None = None

    _slug = field_validator("id")(classmethod(lambda cls, v: check_slug(v)))


@dataclass(frozen=True)
class Source:
    """Where something came from, for `file:line` messages and citations."""

    path: str
    line: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Document:
    """A rules or help document: metadata plus Markdown/plain body."""

    id: str
    title: str
    category: str
    body: str
    source: Source
    kind: Literal["rules", "doc"] = "rules"
    effective: dt.date | None = None
    supersedes: str | None = None
    # Questions a unit of this document answers, as shoppers ask them (``alternatives.yaml`` keyed by
    # the unit's id, ``doc-id.5``): searched like an FAQ entry's alternatives, shown as the unit.
    questions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def questions_of(self, unit: str) -> tuple[str, ...]:
        """The questions given for answer unit ``unit`` of this document (none by default)."""
        return next((qs for u, qs in self.questions if u == unit), ())


REPLY_KINDS = ("greeting", "closing", "empty", "clarify", "clarify_order", "handoff", "merchant")


@dataclass(frozen=True)
class Replies:
    """What kefu says in the KB's own words (greetings.yaml ``replies:``); None: kefu's default. The
    greeting and the empty-message reply may hold ``{examples}``, where the suggested questions go."""

    greeting: str | None = None
    closing: str | None = None  # to thanks, an acknowledgement or the chat's end (没有了，谢谢)
    empty: str | None = None
    clarify: str | None = None  # before the options of a 您是不是想问…
    # before the options offered to a question asked in a chat about the shopper's own order
    clarify_order: str | None = None
    handoff: str | None = None  # KEFU_HANDOFF_MESSAGE is the text of a KB that sets none
    merchant: str | None = None  # a seller's message handed off (reason merchant)


@dataclass(frozen=True)
class Resources:
    """Domain resources used by normalisation, lexical search and the decision policy."""

    userdict: Path | None = None
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    out_of_scope: dict[str, tuple[str, ...]] = field(default_factory=dict)
    greetings: tuple[str, ...] = ()
    thanks: tuple[str, ...] = ()
    # Questions the greeting suggests asking (greetings.yaml ``examples:``); none: the KB's own are picked
    examples: tuple[str, ...] = ()
    replies: Replies = field(default_factory=Replies)
    # The files these came from (the KB's own, else the bundled one), by file name: a build copies
    # them into its folder and hashes them into the KB hash, so it serves without the KB's path.
    files: tuple[tuple[str, Path], ...] = ()


NoteKind = Literal[
    "id_made_unique", "merged", "alt_dropped", "answer_differs", "skipped", "cite_dropped", "column_ignored", "encoding"
]


@dataclass(frozen=True)
class ImportNote:
    """One change the loader made to an imported table instead of refusing it."""

    kind: NoteKind
    source: Source
    message: str
    reason: str = ""  # for skipped rows: a short why, to count them by ("missing answer")

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True)
class ImportReport:
    """What loading tables changed; all zero for a KB without tables or without surprises."""

    rows_read: int = 0
    ids_mapped: int = 0  # ids that were not slugs, now a derived slug (the original kept as source_id)
    short_answers: int = 0  # imported answers under the curated format's MIN_ANSWER, accepted
    notes: tuple[ImportNote, ...] = ()

    def count(self, kind: NoteKind) -> int:
        return sum(1 for n in self.notes if n.kind == kind)

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.notes:
            if n.kind == "skipped":
                counts[n.reason] = counts.get(n.reason, 0) + 1
        return counts

    def counts(self) -> dict[str, int]:
        """The numbers `kefu kb check` prints, by stable key."""
        return {
            "rows_read": self.rows_read,
            "ids_mapped": self.ids_mapped,
            "ids_made_unique": self.count("id_made_unique"),
            "duplicates_merged": self.count("merged"),
            "answers_differing": self.count("answer_differs"),
            "alternatives_dropped": self.count("alt_dropped"),
            "short_answers_accepted": self.short_answers,
            "rows_skipped": self.count("skipped"),
            "cites_dropped": self.count("cite_dropped"),
            "columns_ignored": self.count("column_ignored"),
            "files_not_utf8": self.count("encoding"),
        }

    def to_json(self) -> dict[str, object]:
        return {**self.counts(), "skipped": self.skipped_by_reason(), "warnings": [str(n) for n in self.notes]}


@dataclass(frozen=True)
class AnswerTarget:
    """What shoppers' messages can be attached to as questions: an FAQ entry, or a document's
    answer unit (a clause, a section), whose questions live in ``alternatives.yaml``."""

    id: str
    category: str


@dataclass(frozen=True)
class KnowledgeBase:
    """Everything the indexer needs: entries, documents, resources, and where they came from."""

    root: Path
    entries: tuple[FAQEntry, ...]
    documents: tuple[Document, ...]
    resources: Resources
    sources: dict[str, Source]
    content_hash: str
    report: ImportReport = field(default_factory=ImportReport)
    # Files in the folder of a type kefu does not read (a PDF, a Word file), relative to ``root``.
    skipped_files: tuple[str, ...] = ()

    def target(self, name: str) -> AnswerTarget | None:
        """What ``name`` can be given questions as: an FAQ entry (``entry``), or a document's
        clause or section by its unit id (``rules-seven-day-return.5``)."""
        e = self.entry(name)
        if e is not None:
            return AnswerTarget(e.id, e.category)
        for d in self.documents:
            if name.startswith(f"{d.id}.") and any(unit_id(d.id, p.key) == name for p in document_parts(d)):
                return AnswerTarget(name, d.category)
        return None

    def entry(self, entry_id: str) -> FAQEntry | None:
        """The entry called ``entry_id`` (its slug or, for imported rows, its original id), or
        the one it was merged into (``replaces``)."""
        by_id = {e.id: e for e in self.entries}
        for key in (entry_id, entry_slug(entry_id)):
            found = by_id.get(self.aliases.get(key, key))
            if found is not None:
                return found
            if key == entry_id and key in self.source_ids:
                # Before the derived slug: a duplicate id made unique is only known by source_id.
                return by_id[self.source_ids[key]]
        return None

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Every merged-away entry id → the id of the entry that replaces it."""
        return {old: e.id for e in self.entries for old in e.replaces}

    @cached_property
    def source_ids(self) -> dict[str, str]:
        """Original id of an imported row → the slug of its entry (the first, for duplicates)."""
        out: dict[str, str] = {}
        for e in self.entries:
            if e.source_id is not None:
                out.setdefault(e.source_id, e.id)
        return out

    def categories(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.category] = counts.get(e.category, 0) + 1
        return counts
