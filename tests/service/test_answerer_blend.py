"""Candidate lists reordered after the search: see-also moves the first answer's related entries up,
and context blending lists a follow-up's other reading after its two best."""

from __future__ import annotations

import pytest

from indexer.units import UnitHit
from service.answerer import Answerer


# --- see also ------------------------------------------------------------------------------------
def _hits(*ids: str) -> list[UnitHit]:
    return [UnitHit(u, 0.9 - 0.01 * r, r, r, 0.9, 1) for r, u in enumerate(ids)]


def _entries(**related: tuple[str, ...]) -> dict:
    from indexer.folder import EntryInfo

    return {k: EntryInfo(k, f"{k}？", "答", "类", v) for k, v in related.items()}


@pytest.mark.parametrize(
    ("ids", "related", "expected"),
    [
        # the first one's related entries follow the two best, in rank order, up to rank 5
        (("a", "b", "c", "d", "e", "f", "g"), {"a": ("f", "d")}, ("a", "b", "d", "f", "c", "e", "g")),
        # at most three move (ranks 3-5); the rest keep their order
        (("a", "b", "c", "d", "e", "f", "g"), {"a": ("g", "f", "e", "d")}, ("a", "b", "d", "e", "f", "c", "g")),
        # a related entry already in the top two stays where it is
        (("a", "b", "c", "d"), {"a": ("b", "d")}, ("a", "b", "d", "c")),
        # nothing related among the candidates, no related links, an empty list
        (("a", "b", "c"), {"a": ("z",)}, ("a", "b", "c")),
        (("a", "b", "c"), {"a": ()}, ("a", "b", "c")),
        ((), {}, ()),
        # the first candidate is a rules chunk, not an FAQ entry: nothing moves
        (("rules-x#1", "b", "c", "d"), {"b": ("d",)}, ("rules-x#1", "b", "c", "d")),
    ],
)
def test_see_also_moves_the_first_answers_related_entries_up(ids, related, expected):
    from service.pipeline.retrieve import see_also

    units = _hits(*ids)
    out = see_also(units, _entries(**related))
    assert tuple(u.unit_id for u in out) == expected
    assert [u.rank for u in out] == list(range(len(out)))
    by_id = {u.unit_id: u for u in units}
    assert all(u.score == by_id[u.unit_id].score and u.best_chunk == by_id[u.unit_id].best_chunk for u in out)


def test_see_also_leaves_the_confidence_and_is_off_by_default(answerer: Answerer):
    q = "七天无理由退货需要满足什么条件？"
    assert not answerer.options.see_also
    off = answerer.answer(q, top_k=5)
    on_answerer = answerer.variant(see_also=True)
    on = on_answerer.answer(q, top_k=5)
    assert on.trace["confidence"] == off.trace["confidence"] and on.decision == off.decision
    ids_on = [c["id"] for c in on.trace["candidates"]]
    ids_off = [c["id"] for c in off.trace["candidates"]]
    assert ids_on[:2] == ids_off[:2] and sorted(ids_on) == sorted(ids_off)
    related = set(answerer.index.entries[ids_on[0]].related)
    moved = [u for u in ids_off[2:] if u in related][:3]
    assert ids_on[2 : 2 + len(moved)] == moved


# --- context blending ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # the answer's two best, then the readings in turn
        (("a", "b", "c", "d", "e"), ("x", "y", "z"), ("a", "b", "x", "c", "y")),
        # shared candidates are listed once; the other list fills in
        (("a", "b", "c", "d", "e"), ("b", "a", "x"), ("a", "b", "x", "c", "d")),
        # the other reading runs out: the answer's own list fills the rest
        (("a", "b", "c", "d"), ("x",), ("a", "b", "x", "c")),
        # the answer's list runs out first: never longer than it was
        (("a", "b"), ("x", "y", "z"), ("a", "b")),
        (("a",), ("x", "y"), ("a",)),
        (("a", "b", "c"), (), ("a", "b", "c")),
    ],
)
def test_blend_interleaves_the_other_reading_after_the_two_best(first, second, expected):
    from service.pipeline.retrieve import blend

    out = blend(_hits(*first), _hits(*second))
    assert tuple(u.unit_id for u in out) == expected
    assert [u.rank for u in out] == list(range(len(out)))


def test_a_follow_up_lists_its_other_reading_and_keeps_its_answer(answerer: Answerer):
    first = answerer.answer("七天无理由退货需要满足什么条件？")
    on = answerer.answer("那运费呢", session_id=first.session_id, top_k=10)
    alone = answerer.answer("那运费呢", top_k=10)
    off_answerer = answerer.variant(blend_context=False)
    first_off = off_answerer.answer("七天无理由退货需要满足什么条件？")
    off = off_answerer.answer("那运费呢", session_id=first_off.session_id, top_k=10)
    ids = [c["id"] for c in on.trace["candidates"]]
    ids_off = [c["id"] for c in off.trace["candidates"]]
    assert on.trace["used_context"] and off.trace["used_context"]
    assert on.trace["confidence"] == off.trace["confidence"] and ids[:2] == ids_off[:2]
    # the message read alone comes third: its best candidate that the contextual reading had not
    # already listed in its two best
    alone_ids = [c["id"] for c in alone.trace["candidates"]]
    assert ids[2] == next(u for u in alone_ids if u not in ids_off[:2])
    assert len(ids) == len(ids_off) and len(set(ids)) == len(ids)
