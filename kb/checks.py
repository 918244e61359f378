"""Whole-KB checks once every file is read: duplicate ids and questions, replaces, related ids and cites."""

from __future__ import annotations

import dataclasses

from kb.cites import cite_problem, clause_index
from kb.loadstate import LoadState, question_key
from kb.schema import Source


def cross_check(state: LoadState) -> None:
    """Record a problem for each id or question used twice and each related id or cite that leads nowhere."""
    placed = sorted([(x.seq, x.entry.id, x.src) for x in state.loaded] + state.doc_placed)
    seen: dict[str, Source] = {}
    for _, obj_id, src in placed:
        if obj_id in seen:
            state.problem(src, f"duplicate id {obj_id!r} (first at {seen[obj_id]})")
        seen.setdefault(obj_id, src)
    ids = set(seen)
    sources = state.sources  # a property that builds the map: once, not per entry
    merged: dict[str, str] = {}
    for e in state.entries:
        src = sources[e.id]
        for old in e.replaces:
            if old in ids:
                why = f"which still exists; delete {old!r} or drop it from replaces"
                state.problem(src, f"entry {e.id!r} replaces {old!r}, {why}")
            elif old in merged:
                state.problem(src, f"entry {e.id!r} replaces {old!r}, which {merged[old]!r} replaces too; keep one")
            merged.setdefault(old, e.id)
    questions: dict[str, str] = {}
    for e in state.entries:
        src = sources[e.id]
        for rel in e.related:
            if rel in merged:
                new = merged[rel]
                state.problem(src, f"entry {e.id!r}: related id {rel!r} was merged into {new!r}; write {new!r}")
            elif rel not in ids:
                state.problem(src, f"entry {e.id!r}: related id {rel!r} does not exist")
        for q in (e.question, *e.alt_questions):
            key = question_key(q)
            owner = questions.get(key)
            if owner is not None and owner != e.id:
                state.problem(src, f"entry {e.id!r}: question {q!r} duplicates one of {owner!r}")
            elif owner is None:
                questions[key] = e.id
    check_cites(state)


def check_cites(state: LoadState) -> None:
    """Each cite names a clause that exists: a problem in curated entries (and in strict mode),
    else a warning and the cite dropped, so an imported table never serves a broken link."""
    if not any(x.entry.rules for x in state.loaded):
        return
    docs = clause_index(state.documents)
    for i, x in enumerate(state.loaded):
        bad = {c: why for c in x.entry.rules if (why := cite_problem(c, docs)) is not None}
        for why in bad.values():
            if x.imported and not state.strict:
                state.note("cite_dropped", x.src, f"entry {x.entry.id!r} {why}; dropped", "unknown")
            else:
                state.problem(x.src, f"entry {x.entry.id!r} {why}")
        if bad and x.imported and not state.strict:
            kept = tuple(c for c in x.entry.rules if c not in bad)
            state.loaded[i] = dataclasses.replace(x, entry=x.entry.model_copy(update={"rules": kept}))
