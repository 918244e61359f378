"""Training queries for document units: what a ranker can learn documents from.

A KB's alternative questions all point at FAQ entries, so a ranker fitted on them learns that the
answer is an entry. Document units (clauses, sections) have no questions of their own; these
pseudo-queries stand in for them: a unit's own sentence, its clause number stripped, either its
first sentence (what the clause is about) or a fragment of one of its sentences, as a shopper
quotes a rule half-remembered. A unit has no row to leave out (its sentence is in its only row),
so these are easier than a left-out alternative; eval weighs them accordingly.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from indexer.chunking import split_sentences
from indexer.index import Index
from indexer.normalize import normalize
from kb.clauses import CLAUSE

SEED = 22
MIN_CHARS = 6  # shorter fragments say too little to be a question
_PUNCT = re.compile(r"[。！？；：，、,.!?;:“”‘’「」『』（）()《》\s]")


@dataclass(frozen=True)
class UnitQuery:
    """A pseudo-query (normalised) and the document unit that answers it."""

    text: str
    unit: str


def _sentences(text: str) -> list[str]:
    """The unit's sentences without punctuation; the first loses its 第X条 label."""
    out = []
    for i, s in enumerate(split_sentences(text)):
        if i == 0:
            s = CLAUSE.sub("", s, count=1)
        core = _PUNCT.sub("", s)
        if len(core) >= MIN_CHARS:
            out.append(core)
    return out


def unit_queries(
    index: Index, how: Literal["first", "fragment"] = "fragment", per_unit: int = 2, seed: int = SEED
) -> list[UnitQuery]:
    """Pseudo-queries for every document unit of ``index`` (its ``doc_units``), in unit order:
    ``first``: its first sentence; ``fragment``: up to ``per_unit`` of its sentences (the first,
    then others at random), each cut to a random 60–85 % window."""
    rng = random.Random(seed)
    out = []
    for uid, unit in index.doc_units.items():
        sentences = _sentences(unit.text)
        if not sentences:
            continue
        if how == "first":
            out.append(UnitQuery(normalize(sentences[0]), uid))
            continue
        chosen = [sentences[0], *rng.sample(sentences[1:], min(per_unit - 1, len(sentences) - 1))]
        for s in chosen[:per_unit]:
            n = max(MIN_CHARS, round(len(s) * rng.uniform(0.6, 0.85)))
            start = rng.randrange(0, len(s) - n + 1) if len(s) > n else 0
            out.append(UnitQuery(normalize(s[start : start + n]), uid))
    return out
