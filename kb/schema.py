"""The knowledge-base schema: FAQ entries, rules documents and the KB as a whole."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
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
    updated: dt.date | None = None

    _slug = field_validator("id")(classmethod(lambda cls, v: check_slug(v)))

    @field_validator("replaces")
    @classmethod
    def _replaced_slugs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_slug(x) for x in v)

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


@dataclass(frozen=True)
class Resources:
    """Domain resources used by normalisation, lexical search and the decision policy."""

    userdict: Path | None = None
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    out_of_scope: dict[str, tuple[str, ...]] = field(default_factory=dict)
    greetings: tuple[str, ...] = ()
    thanks: tuple[str, ...] = ()


@dataclass(frozen=True)
class KnowledgeBase:
    """Everything the indexer needs: entries, documents, resources, and where they came from."""

    root: Path
    entries: tuple[FAQEntry, ...]
    documents: tuple[Document, ...]
    resources: Resources
    sources: dict[str, Source]
    content_hash: str

    def entry(self, entry_id: str) -> FAQEntry | None:
        """The entry called ``entry_id``, or the one it was merged into (``replaces``)."""
        entry_id = self.aliases.get(entry_id, entry_id)
        for e in self.entries:
            if e.id == entry_id:
                return e
        return None

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Every merged-away entry id → the id of the entry that replaces it."""
        return {old: e.id for e in self.entries for old in e.replaces}

    def categories(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.category] = counts.get(e.category, 0) + 1
        return counts
