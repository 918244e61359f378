"""Settle imported table rows outside strict mode: unique ids, and rows repeating a question merged."""

from __future__ import annotations

import dataclasses
import itertools

from kb.loadstate import Loaded, LoadState, question_key
from kb.schema import Source


def settle_imports(state: LoadState) -> None:
    """Outside strict mode: make imported ids unique, then merge rows that repeat a question."""
    unique_ids(state)
    merge_duplicates(state)


def unique_ids(state: LoadState) -> None:
    """Give each imported row that shares an id with an earlier holder a ``-2``, ``-3``… id of its own."""
    # Who keeps an id: curated entries and documents, then imported rows whose own id is a
    # slug (first row wins), then derived slugs. So a row literally called "1024-2" keeps
    # that id even when an earlier duplicate "1024" has to move aside.
    holder: dict[str, Source] = {}
    keeps: set[int] = set()
    for x in state.loaded:
        if not x.imported:
            for name in (x.entry.id, *x.entry.replaces):  # an alias is a name in use too
                holder.setdefault(name, x.src)
    for _, doc_id, src in state.doc_placed:
        holder.setdefault(doc_id, src)
    for rank in (0, 1):  # 0: the row's own id; 1: a derived slug
        for i, x in enumerate(state.loaded):
            if x.imported and (x.entry.source_id is not None) == bool(rank) and x.entry.id not in holder:
                holder[x.entry.id] = x.src
                keeps.add(i)
    for i, x in enumerate(state.loaded):
        if not x.imported or i in keeps:
            continue
        e = x.entry
        original = e.source_id or e.id
        new = next(f"{e.id}-{n}" for n in itertools.count(2) if f"{e.id}-{n}" not in holder)
        holder[new] = x.src
        state.note(
            "id_made_unique",
            x.src,
            f"id {original!r} is already used at {holder[e.id]}; this row is now {new!r} "
            "(give it an id of its own to choose one)",
        )
        state.loaded[i] = dataclasses.replace(x, entry=e.model_copy(update={"id": new, "source_id": original}))


def merge_duplicates(state: LoadState) -> None:
    """Merge imported rows whose question another entry has; drop alternatives another entry owns."""
    # Curated entries own their questions first: an imported row yields to them, never the
    # other way round. Among rows the first one wins, as the export had them in order.
    owner: dict[str, int] = {}
    for i, x in enumerate(state.loaded):
        if not x.imported:
            for q in (x.entry.question, *x.entry.alt_questions):
                owner.setdefault(question_key(q), i)
    gone: set[int] = set()
    for i, x in enumerate(state.loaded):
        if not x.imported:
            continue
        e = x.entry
        key = question_key(e.question)
        target = owner.get(key) if key else None
        if target is not None and target != i:
            merge_into(state, target, i, owner)
            gone.add(i)
            continue
        kept = []
        for alt in e.alt_questions:
            other = owner.get(question_key(alt))
            if other is not None and other != i:
                drop_alt(state, x, alt, other)
            else:
                kept.append(alt)
        if len(kept) != len(e.alt_questions):
            state.loaded[i] = x = dataclasses.replace(x, entry=e.model_copy(update={"alt_questions": tuple(kept)}))
        for q in (e.question, *kept):
            if question_key(q):
                owner.setdefault(question_key(q), i)
    state.loaded = [x for i, x in enumerate(state.loaded) if i not in gone]


def merge_into(state: LoadState, target: int, i: int, owner: dict[str, int]) -> None:
    """Row ``i`` repeats the question of entry ``target``: its questions become alternatives
    of the target and its id a name of the target (``replaces``); the target's answer stays."""
    t, x = state.loaded[target], state.loaded[i]
    alts = list(t.entry.alt_questions)
    texts = {t.entry.question, *alts}
    for q in (x.entry.question, *x.entry.alt_questions):
        other = owner.get(question_key(q))
        if q in texts:
            continue
        if other is not None and other != target:
            drop_alt(state, x, q, other)
            continue
        alts.append(q)
        texts.add(q)
        if question_key(q):
            owner.setdefault(question_key(q), target)
    replaces = (*t.entry.replaces, x.entry.id, *x.entry.replaces)
    state.loaded[target] = dataclasses.replace(
        t, entry=t.entry.model_copy(update={"alt_questions": tuple(alts), "replaces": replaces})
    )
    state.note(
        "merged",
        x.src,
        f"question {x.entry.question!r} repeats {t.entry.id!r} ({t.src}) up to punctuation, width and case; "
        f"merged into it: the question is an alternative there and id {x.entry.source_id or x.entry.id!r} "
        "still reaches it",
    )
    if x.entry.answer != t.entry.answer:
        state.note(
            "answer_differs",
            x.src,
            f"its answer differs from the one of {t.entry.id!r} ({t.src}); kept that first answer — "
            "edit the table if this one is right",
        )


def drop_alt(state: LoadState, x: Loaded, alt: str, other: int) -> None:
    """Note that row ``x`` loses alternative ``alt``, which entry ``other`` already has."""
    o = state.loaded[other]
    state.note(
        "alt_dropped",
        x.src,
        f"alternative question {alt!r} already belongs to {o.entry.id!r} ({o.src}); dropped it here",
    )
