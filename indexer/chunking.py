"""Chunking: FAQ entries into question/alternative/answer vectors, documents into unit rows.

An FAQ entry is one answer unit reached through several vectors (question, each alternative,
the answer), all carrying the entry id. A document's answer units are its clauses (第X条, id
``doc-id.5``) and the text of its heading sections outside clauses (``doc-id.s1``; kb/clauses.py).
A unit's text is split into sentences (。！？；) and packed into rows near a target size with one
sentence of overlap, never mid-sentence; every row carries the unit id, the document id, title
and heading path. A long clause is one unit of several rows, as an FAQ entry is.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from indexer.normalize import normalize
from kb.clauses import PATH_SEP, clause_label, document_parts, unit_id
from kb.errors import ConfigError
from kb.schema import Document, FAQEntry, KnowledgeBase

ChunkKind = Literal["question", "alt", "answer", "rules", "doc"]
QUESTION_KINDS: frozenset[str] = frozenset({"question", "alt"})
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")


@dataclass(frozen=True)
class Chunk:
    """One embedded text. ``unit_id`` is the answer unit: the FAQ entry, or the chunk itself."""

    chunk_id: str
    unit_id: str
    doc_id: str
    kind: ChunkKind
    text: str
    title: str
    section: str
    category: str

    @property
    def embed_text(self) -> str:
        """What gets embedded: normalised, with the heading path for document chunks."""
        if self.kind in ("rules", "doc"):
            return normalize(f"{self.section}：{self.text}")
        return normalize(self.text)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chunk:
        return cls(**data)


def faq_chunks(entry: FAQEntry) -> list[Chunk]:
    base = {"unit_id": entry.id, "doc_id": entry.id, "title": entry.question, "section": entry.category}
    out = [Chunk(chunk_id=f"{entry.id}#q", kind="question", text=entry.question, category=entry.category, **base)]
    for i, alt in enumerate(entry.alt_questions, 1):
        out.append(Chunk(chunk_id=f"{entry.id}#alt{i}", kind="alt", text=alt, category=entry.category, **base))
    out.append(Chunk(chunk_id=f"{entry.id}#a", kind="answer", text=entry.answer, category=entry.category, **base))
    return out


def split_sentences(text: str) -> list[str]:
    """Split after 。！？； (and ASCII !?;), keeping the punctuation; no empty pieces."""
    parts: list[str] = []
    for line in text.splitlines():
        parts.extend(p.strip() for p in _SENTENCE_END.split(line))
    return [p for p in parts if p]


def pack_sentences(sentences: list[str], target: int) -> list[str]:
    """Greedy packing into pieces of about ``target`` characters with one sentence of overlap.

    A sentence is never cut; a sentence longer than ``target`` is a piece of its own.
    """
    if target < 1:
        raise ConfigError(f"chunk target size {target} must be ≥ 1")
    pieces: list[list[str]] = []
    current: list[str] = []
    size = 0
    fresh = 0  # sentences in ``current`` that are not the overlap carried from the previous piece
    for s in sentences:
        if current and size + len(s) > target:
            pieces.append(current)
            # Overlap: carry the last sentence over, unless it alone would overflow the piece.
            last = current[-1]
            current, size = ([last], len(last)) if len(last) + len(s) <= target else ([], 0)
            fresh = 0
        current.append(s)
        size += len(s)
        fresh += 1
    if current and fresh:
        pieces.append(current)
    return ["".join(p) for p in pieces]


def document_chunks(doc: Document, target: int) -> list[Chunk]:
    """The rows of ``doc``: each unit's paragraph groups packed into pieces near ``target``
    characters; every piece of a unit carries the unit's id (``doc-id.5``, ``doc-id.s1``). The
    questions a unit was given (``Document.questions``) follow the document's text rows as
    question rows of that unit (kind ``alt``), so their numbering leaves the text rows' ids alone."""
    out: list[Chunk] = []
    asked: list[Chunk] = []
    for part in document_parts(doc):
        uid = unit_id(doc.id, part.key)
        for q in doc.questions_of(uid):
            asked.append(
                Chunk(
                    chunk_id=f"{doc.id}#q{len(asked) + 1}",
                    unit_id=uid,
                    doc_id=doc.id,
                    kind="alt",
                    text=q,
                    title=doc.title,
                    section=part.section,
                    category=doc.category,
                )
            )
        for block in part.blocks:
            for piece in pack_sentences(split_sentences(block), target):
                out.append(
                    Chunk(
                        chunk_id=f"{doc.id}#{len(out) + 1}",  # a row's id; ``#`` never reaches a URL
                        unit_id=uid,
                        doc_id=doc.id,
                        kind="rules" if doc.kind == "rules" else "doc",
                        text=piece,
                        title=doc.title,
                        section=part.section,
                        category=doc.category,
                    )
                )
    return out + asked


@dataclass(frozen=True)
class DocUnit:
    """A document's answer unit as served: the whole clause or section, and where it stands."""

    id: str
    doc_id: str
    kind: Literal["rules", "doc"]
    title: str  # the document's title
    category: str
    section: str  # heading path, ending in the clause label for a clause
    clause: int | None  # 5 for 第五条; None for a section
    text: str  # the whole unit (a clause's every paragraph and item)

    @property
    def label(self) -> str:
        """How an answer names it: 《七天无理由退货规范》第五条, or 《title》 and its heading."""
        if self.clause is not None:
            return f"《{self.title}》{clause_label(self.clause)}"
        heading = self.section.split(PATH_SEP)[-1]
        return f"《{self.title}》" + (heading if heading != self.title else "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DocUnit:
        return cls(**data)


def document_units(doc: Document) -> list[DocUnit]:
    """The answer units of ``doc`` (``document_chunks`` gives their rows)."""
    kind: Literal["rules", "doc"] = "rules" if doc.kind == "rules" else "doc"
    return [
        DocUnit(unit_id(doc.id, p.key), doc.id, kind, doc.title, doc.category, p.section, p.clause, p.text)
        for p in document_parts(doc)
    ]


def units_of(kb: KnowledgeBase) -> dict[str, DocUnit]:
    """Every document unit of ``kb`` by id."""
    return {u.id: u for d in kb.documents for u in document_units(d)}


def chunk_kb(kb: KnowledgeBase, target: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for e in kb.entries:
        chunks.extend(faq_chunks(e))
    for d in kb.documents:
        chunks.extend(document_chunks(d, target))
    return chunks
