"""Chunking: FAQ entries into question/alternative/answer vectors, documents into clause chunks.

An FAQ entry is one answer unit reached through several vectors (question, each alternative,
the answer), all carrying the entry id. Rules documents are split along headings and clauses
(第X条), then sentences (。！？；), into chunks near a target size with one sentence of overlap,
never mid-sentence; each chunk carries its document id, title and heading path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from indexer.normalize import normalize
from kb.errors import ConfigError
from kb.schema import Document, FAQEntry, KnowledgeBase

ChunkKind = Literal["question", "alt", "answer", "rules", "doc"]
QUESTION_KINDS: frozenset[str] = frozenset({"question", "alt"})
PATH_SEP = " › "

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_CLAUSE = re.compile(r"^(第[一二三四五六七八九十百零〇两\d]+条)[\s　]*")
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


def _blocks(doc: Document) -> Iterable[tuple[list[str], str]]:
    """Yield (heading path, text) blocks: one per clause, or per paragraph group under a heading."""
    headings: list[tuple[int, str]] = []
    clause: str | None = None
    buf: list[str] = []

    def path() -> list[str]:
        p = [h for _, h in headings]
        if p and p[0] == doc.title:
            p = p[1:]
        return [doc.title, *p, *([clause] if clause else [])]

    def flush() -> Iterable[tuple[list[str], str]]:
        text = "\n".join(buf).strip()
        if text:
            yield path(), text

    for raw in doc.body.splitlines():
        line = raw.strip()
        m = _HEADING.match(line)
        if m:
            yield from flush()
            buf, clause = [], None
            level = len(m.group(1))
            headings = [(lv, h) for lv, h in headings if lv < level] + [(level, m.group(2))]
            continue
        c = _CLAUSE.match(line)
        if c:
            yield from flush()
            buf, clause = [line], c.group(1)
            continue
        if not line and clause is None:
            yield from flush()
            buf = []
            continue
        if line:
            buf.append(line)
    yield from flush()


def document_chunks(doc: Document, target: int) -> list[Chunk]:
    out: list[Chunk] = []
    for path, text in _blocks(doc):
        for piece in pack_sentences(split_sentences(text), target):
            n = len(out) + 1
            cid = f"{doc.id}#{n}"
            out.append(
                Chunk(
                    chunk_id=cid,
                    unit_id=cid,
                    doc_id=doc.id,
                    kind="rules" if doc.kind == "rules" else "doc",
                    text=piece,
                    title=doc.title,
                    section=PATH_SEP.join(path),
                    category=doc.category,
                )
            )
    return out


def chunk_kb(kb: KnowledgeBase, target: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for e in kb.entries:
        chunks.extend(faq_chunks(e))
    for d in kb.documents:
        chunks.extend(document_chunks(d, target))
    return chunks
