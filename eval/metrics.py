"""Retrieval and decision metrics. Pure functions, tested against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranked:
    """One ranked candidate: its unit id and the document it belongs to."""

    id: str
    doc_id: str

    def matches(self, relevant: Sequence[str]) -> str | None:
        """The relevant id this candidate satisfies, if any."""
        for r in relevant:
            if r in (self.id, self.doc_id):
                return r
        return None


def hit_at(ranking: Sequence[Ranked], relevant: Sequence[str], k: int) -> float:
    return 1.0 if any(c.matches(relevant) for c in ranking[:k]) else 0.0


def recall_at(ranking: Sequence[Ranked], relevant: Sequence[str], k: int) -> float:
    """Share of the relevant ids found in the top ``k`` (each relevant id counted once)."""
    if not relevant:
        return 0.0
    found = {m for c in ranking[:k] if (m := c.matches(relevant))}
    return len(found) / len(set(relevant))


def mrr_at(ranking: Sequence[Ranked], relevant: Sequence[str], k: int = 10) -> float:
    for i, c in enumerate(ranking[:k], 1):
        if c.matches(relevant):
            return 1.0 / i
    return 0.0


def ndcg_at(ranking: Sequence[Ranked], relevant: Sequence[str], k: int = 10) -> float:
    """Binary-gain nDCG: a relevant id earns gain once, at its first position."""
    rel = list(dict.fromkeys(relevant))
    if not rel:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for i, c in enumerate(ranking[:k], 1):
        m = c.matches(rel)
        if m and m not in seen:
            seen.add(m)
            dcg += 1.0 / math.log2(i + 1)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(rel), k) + 1))
    return dcg / ideal


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    if not pos or not neg:
        return float("nan")
    p = np.asarray(pos)[:, None]
    n = np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))
