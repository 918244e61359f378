"""Which entries the assistant confuses, from the knowledge base alone.

Every stored alternative question is asked as if a shopper had typed it, with its own vector and
text left out of every channel (as the ranker's training does), and answered by the same pool
and ranker as a real query. An alternative that comes back under another entry is either
misplaced, too vague to tell two entries apart, or a sign that the two entries answer the same
question. No labelled set is needed, so this works on any KB, before anyone writes one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from service.answerer import Answerer
from service.ranker import POOL


@dataclass(frozen=True)
class Confusion:
    """Alternatives of ``entry`` that were answered with ``other`` instead."""

    entry: str
    other: str
    questions: tuple[str, ...]


@dataclass(frozen=True)
class ConfusionReport:
    alternatives: int  # alternatives asked
    right: int  # answered with their own entry first
    confusions: tuple[Confusion, ...]  # most alternatives first

    @property
    def accuracy(self) -> float:
        return self.right / self.alternatives if self.alternatives else 1.0

    def pairs(self) -> list[tuple[str, str, int, int]]:
        """(a, b, a→b, b→a) for every confused pair, the most confused first."""
        one_way = {(c.entry, c.other): len(c.questions) for c in self.confusions}
        out = {}
        for a, b in one_way:
            key = (a, b) if a < b else (b, a)
            out[key] = (key[0], key[1], one_way.get(key, 0), one_way.get((key[1], key[0]), 0))
        return sorted(out.values(), key=lambda p: (-(p[2] + p[3]), p[0], p[1]))


def kb_confusions(answerer: Answerer, progress: Callable[[int, int], None] | None = None) -> ConfusionReport:
    """Ask every alternative question of the index (left out) and collect where it lands."""
    index = answerer.index
    rows = [r for r, c in enumerate(index.chunks) if c.kind == "alt"]
    ranker = answerer.ranker
    size = ranker.pool if ranker is not None else POOL
    wrong: dict[tuple[str, str], list[str]] = defaultdict(list)
    right = 0
    for n, r in enumerate(rows, 1):
        pool = index.candidate_pool(index.vectors[r], index.norm_texts[r], size, exclude_row=r)
        units = ranker.rerank(pool).units if ranker is not None else pool.units
        own = index.chunks[r].unit_id
        top = units[0].unit_id if units else None
        if top == own:
            right += 1
        elif top is not None:
            wrong[(own, top)].append(index.chunks[r].text)
        if progress:
            progress(n, len(rows))
    confusions = tuple(
        Confusion(a, b, tuple(qs)) for (a, b), qs in sorted(wrong.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )
    return ConfusionReport(len(rows), right, confusions)
