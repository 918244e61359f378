"""What a ``kefu learn`` run's new alternative rows do to the messages they were not made from.

A learned message answers itself exactly once it is a row; what it does to the other messages is
what serves the next shopper, and that can be a loss: shoppers' messages are often nearer each
other across entries than to their own entry's question (the stripped bundled KB, half its dev
traffic learned as rows: the other half's hit@1 0.63 → 0.54; docs/experiments.md). ``rows_check``
measures it on the learned (and labelled) dev examples; ``pulled_by`` names the decisions whose rows
took more messages of other entries than they won for their own: where an operator looks first when
``kefu learn`` refuses a round. (Holding those back and shipping the rest was tried: the check
then passes on the very examples that chose what to hold, and the learned test examples still lost;
docs/experiments.md.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from eval.dataset import EvalItem
from eval.learn_calibration import message_folds, stable_ids, without_rows
from eval.learn_guard import Comparison, Figures
from eval.progress import Say, Ticker
from eval.runner import ItemResult, run
from indexer.index import Index
from kb.learned import Plan
from kb.loadstate import question_key
from service.answerer import Answerer

CHECK = "learned dev, held out from the new rows"


@dataclass(frozen=True)
class RowsCheck:
    """The in-scope dev examples without and with the new rows (``comparison``), and per entry
    that received new rows: the examples of other entries it now ranks first that were right
    without them (``pulled``), and its own examples it now ranks first that were not (``won``)."""

    comparison: Comparison
    pulled: dict[str, int]
    won: dict[str, int]


def new_alternative_rows(index: Index, added: Sequence[tuple[str, str]]) -> set[int]:
    """The alternative rows of ``index`` that ``added`` ((entry id, text) pairs) put there."""
    keys = {(index.resolve(e), question_key(t)) for e, t in added}
    return {r for r, c in enumerate(index.chunks) if c.kind == "alt" and (c.unit_id, question_key(c.text)) in keys}


def added_rows(plan: Plan) -> list[tuple[str, str]]:
    """(entry id, text) of every alternative ``plan`` adds."""
    return [(entry, text) for c in plan.changes for entry, text, _ in c.alternatives]


def rows_check(
    base: Answerer, items: Sequence[EvalItem], new_rows: set[int], say: Say | None = None
) -> RowsCheck | None:
    """Each in-scope item of ``items`` asked in its fold's index (without the rows of its fold's
    messages, as ``recalibrate`` asks it), once with ``new_rows`` and once without them, under
    ``base``'s ranker. None without new rows or in-scope items."""
    ins = [it for it in stable_ids(items) if it.in_scope]
    if not new_rows or not ins:
        return None
    index = base.index
    tick = Ticker(say or (lambda _m: None), "learned rows, held-out check")
    sides: dict[bool, list[ItemResult]] = {True: [], False: []}
    done = 0
    for fold, held in message_folds(index, ins):
        if not fold:
            continue
        for with_new in (True, False):
            sides[with_new] += run(base.variant(index=without_rows(index, held if with_new else held | new_rows)), fold)
            done += len(fold)
            tick(done, 2 * len(ins))
    receivers = {index.chunks[r].unit_id for r in new_rows}
    pulled: Counter[str] = Counter()
    won: Counter[str] = Counter()
    for after, before in zip(sides[True], sides[False], strict=True):
        first = after.ranking[0].id if after.ranking else None
        if first not in receivers or after.top1_correct == before.top1_correct:
            continue
        (won if after.top1_correct else pulled)[first] += 1
    comparison = Comparison(CHECK, Figures.hit_only(sides[False]), Figures.hit_only(sides[True]))
    return RowsCheck(comparison, dict(pulled), dict(won))


def pulled_by(check: RowsCheck, plan: Plan, index: Index) -> dict[str, int]:
    """The decisions of ``plan`` whose new rows went to an entry that took more examples of other
    entries than it won of its own, each with how many it took."""
    net = {e: n for e, n in check.pulled.items() if n > check.won.get(e, 0)}
    out: dict[str, int] = {}
    for c in plan.changes:
        hit = {index.resolve(e) for e, _, _ in c.alternatives} & net.keys()
        if hit:
            out[c.decision] = sum(net[e] for e in hit)
    return out
