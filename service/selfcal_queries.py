"""The pseudo-queries a KB is asked in its self-calibration (``service.selfcal``): its own
alternative questions with their row left out and its questions perturbed the way chat mangles
them (answerable), and each entry's question with that entry left out (unanswerable)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from indexer.index import Index
from indexer.normalize import normalize

MAX_QUERIES = 1500  # pseudo-queries of each kind: enough for stable thresholds, bounded build time
SEED = 20261206
# Filler a shopper wraps a question in, and the question particles they drop.
_OPENERS = ("请问", "你好，", "想问一下", "我想知道", "问下", "在吗，")
_CLOSERS = ("？", "啊", "呢", "吗", "怎么办", "可以吗")
_PUNCT = re.compile(r"[\s，。！？、；：,.!?;:\"'“”‘’（）()]+")


@dataclass(frozen=True)
class PseudoQuery:
    text: str  # normalised
    row: int | None  # a stored vector row that is this text's query vector, else it is encoded
    unit: str | None  # the unit that answers it; None: the KB has no answer (its entry is left out)
    exclude_row: int | None = None
    exclude_unit: str | None = None


def perturb(text: str, rng: random.Random) -> str:
    """A chat-like rewording of a question: punctuation gone, then one or two of a fragment, a
    dropped character span, an opener or a closer. Never returns the text unchanged when it has
    at least four characters."""
    core = _PUNCT.sub("", text)
    if len(core) < 4:
        return text
    out = core
    for op in rng.sample(("window", "drop", "opener", "closer"), 2):
        if op == "window" and len(out) >= 6:
            n = max(3, round(len(out) * rng.uniform(0.6, 0.85)))
            start = rng.randrange(0, len(out) - n + 1)
            out = out[start : start + n]
        elif op == "drop" and len(out) >= 5:
            k = 1 if len(out) < 10 else 2
            i = rng.randrange(0, len(out) - k)
            out = out[:i] + out[i + k :]
        elif op == "opener":
            out = rng.choice(_OPENERS) + out
        elif op == "closer":
            out = out + rng.choice(_CLOSERS)
    return out if out != core else core[1:]


def pseudo_queries(
    index: Index, limit: int = MAX_QUERIES, seed: int = SEED
) -> tuple[list[PseudoQuery], list[PseudoQuery]]:
    """(answerable, unanswerable) pseudo-queries of ``index``'s FAQ entries, at most ``limit`` each."""
    rng = random.Random(seed)
    questions: dict[str, int] = {}
    alts: list[int] = []
    for r, c in enumerate(index.chunks):
        if c.kind == "question":
            questions[c.unit_id] = r
        elif c.kind == "alt":
            alts.append(r)
    units = sorted(questions)
    rng.shuffle(units)
    answerable: list[PseudoQuery] = []
    if alts:
        for r in rng.sample(alts, min(limit, len(alts))):
            answerable.append(PseudoQuery(index.norm_texts[r], r, index.chunks[r].unit_id, exclude_row=r))
    # perturbed questions fill up to the limit (all of it for a KB without alternatives)
    for u in units[: max(0, limit - len(answerable))]:
        r = questions[u]
        text = normalize(perturb(index.chunks[r].text, rng))
        answerable.append(PseudoQuery(text, None, u))
    # one entry left out at a time; an entry that is the KB's only one has nothing to stand in for
    unanswerable = [
        PseudoQuery(index.norm_texts[questions[u]], questions[u], None, exclude_unit=u)
        for u in units[:limit]
        if len(index.units) > 1
    ]
    return answerable, unanswerable
