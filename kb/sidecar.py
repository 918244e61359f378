"""The learning loop's files in a KB folder, and adding ``alternatives.yaml``'s questions to loaded
entries and to documents' answer units (a clause ``doc-id.5``, a section ``doc-id.s2``)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import yaml
from pydantic import ValidationError

from kb.clauses import document_parts, unit_id
from kb.loadstate import LoadState, fmt_validation, question_key
from kb.schema import Source

# Files of the learning loop (kb/learned.py) at the top of a KB folder: not FAQ content.
SIDECAR = "alternatives.yaml"
LEARNED = "learned.jsonl"
JOURNAL = "learn-journal.jsonl"
DRAFTS = "drafts"
LEARNING_FILES = frozenset({SIDECAR, LEARNED, JOURNAL})

log = logging.getLogger("kefu.kb")


def learning_file(rel: Path) -> bool:
    """The learning loop's own files, and draft entries (``drafts/``, loaded once promoted)."""
    return (len(rel.parts) == 1 and rel.name in LEARNING_FILES) or rel.parts[0] == DRAFTS


def load_sidecar(state: LoadState, path: Path) -> None:
    """Add ``alternatives.yaml``'s questions to the entries it names (after ids are settled, so
    a key is the id kefu shows). An id no longer in the KB is skipped with a warning: deleting
    a row from a table must not make the KB unloadable."""
    src = Source(state.rel(path))
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        state.problem(src, f"invalid {SIDECAR}: {exc}")
        return
    alts = data.get("alternatives") if isinstance(data, dict) else None
    if not isinstance(alts, dict) or not all(isinstance(v, list) for v in alts.values()):
        state.problem(src, "expected `alternatives:` mapping entry ids to lists of questions")
        return
    where = {x.entry.id: i for i, x in enumerate(state.loaded)}
    for i, x in enumerate(state.loaded):  # an imported row's original id names it too
        if x.entry.source_id is not None:
            where.setdefault(x.entry.source_id, i)
        elif len(x.entry.id) == 1:
            # Before one-character ids were slugs, row "7" was "7-<hash>", the name kefu learn wrote here.
            where.setdefault(f"{x.entry.id}-{hashlib.sha1(x.entry.id.encode()).hexdigest()[:8]}", i)
    units = {unit_id(d.id, part.key): i for i, d in enumerate(state.documents) for part in document_parts(d)}
    for entry_id, texts in alts.items():
        at = where.get(str(entry_id))
        if at is None and str(entry_id) in units:
            add_unit_questions(state, units[str(entry_id)], str(entry_id), texts)
            continue
        if at is None:
            log.warning("%s: entry %r is not in the knowledge base; its learned questions are skipped", src, entry_id)
            continue
        x = state.loaded[at]
        have = {question_key(q) for q in (x.entry.question, *x.entry.alt_questions)}
        new = [str(t).strip() for t in texts if question_key(str(t)) not in have]
        if new:
            raw = {**x.entry.model_dump(), "alt_questions": (*x.entry.alt_questions, *dict.fromkeys(new))}
            try:
                entry = type(x.entry).model_validate(raw)
            except ValidationError as exc:
                state.problem(src, f"entry {entry_id!r}: {fmt_validation(exc)}")
                continue
            state.loaded[at] = dataclasses.replace(x, entry=entry)


def add_unit_questions(state: LoadState, at: int, unit: str, texts: list[object]) -> None:
    """Give document unit ``unit`` (of ``state.documents[at]``) the questions ``texts``, in order,
    each once; blank ones are skipped."""
    doc = state.documents[at]
    have = {question_key(q) for q in doc.questions_of(unit)}
    new: dict[str, None] = {}
    for t in texts:
        q = str(t).strip()
        if q and question_key(q) not in have:
            have.add(question_key(q))
            new[q] = None
    if new:
        merged = (*doc.questions_of(unit), *new)
        rest = tuple((u, qs) for u, qs in doc.questions if u != unit)
        state.documents[at] = dataclasses.replace(doc, questions=(*rest, (unit, merged)))
