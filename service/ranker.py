"""A small learned ranker over the fused search's candidate pool.

The fused search orders units by reciprocal-rank fusion, which knows ranks but not how much of
the query a unit actually covers. ``Ranker`` is a conditional-logit (listwise softmax) linear
model over ``POOL_FEATURES`` of the ``pool`` best RRF candidates: its scores reorder the pool, and
the softmax probability of its first unit is evidence for the confidence model (``rank_prob``).

It is fitted by ``kefu eval calibrate`` on the dev split's labelled queries together with the
KB's own alternative questions held out one at a time (``Index.candidate_pool(exclude_row=…)``),
and stored with the calibration, so it belongs to one model and one knowledge base.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.index import Index
from indexer.pool import POOL_FEATURES, QUESTION, CandidatePool
from indexer.units import UnitHit
from kb.errors import ConfigError

POOL = 20  # candidates reranked per query: dev recall@20 of the RRF order is 0.994, so few are lost
L2 = 1.0  # ridge strength on the standardised weights (10 gave the same dev ranking)
# A document unit with questions of its own (a clause's, in alternatives.yaml) would compete with FAQ
# entries on their terms. The ranker is fitted as if documents had no questions (``eval.ranker_training.ranker_view``)
# and a clause that an FAQ entry among the candidates cites (``CandidatePool.cited``: that entry's
# answer already rests on it) ranks above FAQ entries only when it leads by DOC_MARGIN in ranker
# score (``Ranker.doc_margin``); a clause no candidate cites competes on its score. Chosen on the
# rules and FAQ dev splits (docs/experiments.md, 2026-12-06 and 12-07): a margin for every document
# unit kept FAQ dev hit@1 within one query of the KB without clause questions (0.937 against 0.940)
# with the right clause first for 0.648 of rules dev; the margin only for cited clauses keeps the
# same FAQ dev hit@1 and puts the right clause first for 0.716.
DOC_MARGIN = 1.0


@dataclass(frozen=True)
class Reranked:
    units: list[UnitHit]  # best first, ranks renumbered
    probs: list[float]  # the ranker's softmax probability of each, same order


@dataclass(frozen=True)
class Ranker:
    """Linear scores over standardised POOL_FEATURES columns; a softmax over the pool."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    pool: int = POOL
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    # subtracted, for the first place, from a clause's score that an FAQ entry in the pool cites, and
    # after it from every document unit's (``rerank``; 0: no margin; eval.ranker_training sets it
    # where documents have questions of their own)
    doc_margin: float = 0.0
    # the candidate whose best question cosine leads every other's by more than this goes first
    # whatever the scores say (``rerank``; 0: never). Self-calibration sets it for a plain FAQ table
    # (service/selfcal.py ``QUESTION_LEAD``), where the question match is the evidence a KB has.
    question_lead: float = 0.0
    # the candidate with the best question cosine is kept within the first this many (``rerank``; 0:
    # not kept), so a plain FAQ table's clarify options and handoff suggestions hold its question
    # match where the ranker put it lower (service/selfcal.py ``QUESTION_WITHIN``)
    question_within: int = 0
    # derived in __post_init__: the feature columns, weights divided by scale, and the bias
    _cols: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _w: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _b: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in POOL_FEATURES]
        if unknown or not self.features:
            raise ConfigError(
                f"ranker features {unknown or '(none)'} are not candidate features; allowed: {POOL_FEATURES}"
            )
        n = len(self.features)
        if not (len(self.weights) == len(self.mean) == len(self.scale) == n):
            raise ConfigError(
                f"ranker needs one weight, mean and scale per feature ({n}); got "
                f"{len(self.weights)}, {len(self.mean)}, {len(self.scale)}"
            )
        if not all(math.isfinite(v) for v in (*self.weights, *self.mean, *self.scale)):
            raise ConfigError("ranker weights, mean and scale must be finite numbers")
        if any(v <= 0 for v in self.scale):
            raise ConfigError("ranker scales must be positive")
        if not math.isfinite(self.doc_margin) or self.doc_margin < 0:
            raise ConfigError(f"ranker doc_margin={self.doc_margin} must be a finite number ≥ 0")
        if not (math.isfinite(self.question_lead) and 0 <= self.question_lead < 1):
            raise ConfigError(f"ranker question_lead={self.question_lead} must be a cosine gap within [0, 1)")
        if self.pool < 2:
            raise ConfigError(f"ranker pool={self.pool} must be ≥ 2 (one candidate leaves nothing to rank)")
        if not 0 <= self.question_within <= self.pool:
            raise ConfigError(f"ranker question_within={self.question_within} must be within [0, pool={self.pool}]")
        object.__setattr__(self, "_cols", np.array([POOL_FEATURES.index(f) for f in self.features]))
        object.__setattr__(self, "_w", np.asarray(self.weights) / np.asarray(self.scale))
        object.__setattr__(self, "_b", -float(np.dot(self._w, self.mean)))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """One linear score per candidate row of a POOL_FEATURES matrix."""
        return np.asarray(x[:, self._cols] @ self._w + self._b)

    def rerank(self, pool: CandidatePool) -> Reranked:
        """The pool best first, with each candidate's softmax probability. With ``doc_margin``, a
        clause that an FAQ entry in the pool cites (``pool.cited``) takes the first place only when
        it leads by the margin, and any other document unit on its score; after the first, every
        document unit stays the margin behind the FAQ entries, whose answers the shopper picks from
        when the first is not it. With ``question_lead``, a candidate whose question cosine leads by
        more than it goes first; with ``question_within``, the best question match is moved up to
        that place when the scores put it lower."""
        if not pool.units:
            return Reranked([], [])
        s = self.scores(pool.x)
        if self.doc_margin and pool.cited is not None and pool.document is not None:
            first = s - self.doc_margin * pool.cited
            top = int(np.argmax(first))  # the first of equal scores, as the stable sort takes it
            rest = np.argsort(-(s - self.doc_margin * pool.document), kind="stable")
            order = np.concatenate(([top], rest[rest != top]))
            s = first
        else:
            order = np.argsort(-s, kind="stable")  # stable: equal scores keep the RRF order
        if self.question_lead and len(order) > 1:
            q = pool.x[:, QUESTION]
            best, second = np.argsort(-q, kind="stable")[:2]
            if q[best] - q[second] > self.question_lead and order[0] != best:
                order = np.concatenate(([best], order[order != best]))
        if self.question_within and len(order) > self.question_within:
            best = int(np.argmax(pool.x[:, QUESTION]))  # the first of equal cosines
            rest = order[order != best]
            if int(np.flatnonzero(order == best)[0]) >= self.question_within:
                k = self.question_within - 1
                order = np.concatenate((rest[:k], [best], rest[k:]))
        p = np.exp(s - s.max())
        p /= p.sum()
        hits = pool.units
        # the constructor, not dataclasses.replace: 20 replaces cost about 50 µs a query
        units = [
            UnitHit(h.unit_id, h.score, r, h.best_chunk, h.question_score, h.votes)
            for r, h in enumerate(hits[i] for i in order.tolist())
        ]
        return Reranked(units, p[order].tolist())

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "weights": list(self.weights),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "pool": self.pool,
            "meta": self.meta,
            **({"doc_margin": self.doc_margin} if self.doc_margin else {}),
            **({"question_lead": self.question_lead} if self.question_lead else {}),
            **({"question_within": self.question_within} if self.question_within else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ranker:
        try:
            return cls(
                features=tuple(data["features"]),
                weights=tuple(float(v) for v in data["weights"]),
                mean=tuple(float(v) for v in data["mean"]),
                scale=tuple(float(v) for v in data["scale"]),
                pool=int(data.get("pool", POOL)),
                meta=dict(data.get("meta") or {}),
                doc_margin=float(data.get("doc_margin", 0.0)),
                question_lead=float(data.get("question_lead", 0.0)),
                question_within=int(data.get("question_within", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"ranker in the calibration is malformed ({e}); run `kefu eval calibrate` again") from e


@dataclass(frozen=True)
class Group:
    """One training query: its candidate pool's features and which candidates are relevant."""

    x: np.ndarray  # [n, len(POOL_FEATURES)]
    relevant: np.ndarray  # bool [n]
    weight: float = 1.0


def fit_ranker(groups: Sequence[Group], features: Sequence[str] = POOL_FEATURES, l2: float = L2) -> Ranker:
    """Maximise Σ weight · log Σ_relevant softmax(score) over the queries (L-BFGS, ridge on weights).

    Queries whose pool has no relevant candidate, or nothing but relevant ones, teach nothing
    and are skipped.
    """
    from scipy.optimize import minimize

    cols = np.array([POOL_FEATURES.index(f) for f in features])
    use = [g for g in groups if g.relevant.any() and (~g.relevant).any()]
    if len(use) < 20:
        raise ConfigError(f"only {len(use)} training queries have a relevant candidate to rank; need at least 20")
    allx = np.vstack([g.x[:, cols] for g in use])
    mean = allx.mean(axis=0)
    scale = allx.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (allx - mean) / scale
    gid = np.repeat(np.arange(len(use)), [len(g.relevant) for g in use])
    rel = np.concatenate([g.relevant for g in use]).astype(bool)
    wq = np.array([g.weight for g in use])
    ng = len(use)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        top = np.full(ng, -np.inf)
        np.maximum.at(top, gid, s)
        e = np.exp(s - top[gid])
        total = np.bincount(gid, e, ng)
        relevant = np.bincount(gid, e * rel, ng)
        loglik = np.log(relevant) - np.log(total)
        # d/ds of log Σ_rel e^s − log Σ e^s: p(i | relevant) − p(i)
        coef = (np.where(rel, e / relevant[gid], 0.0) - e / total[gid]) * wq[gid]
        return float(-(wq * loglik).sum() + 0.5 * l2 * w @ w), -(z.T @ coef) + l2 * w

    res = minimize(objective, np.zeros(len(cols)), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return Ranker(
        features=tuple(features),
        weights=tuple(float(v) for v in res.x),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        meta={"queries": ng, "converged": bool(res.success), "l2": l2},
    )


def with_doc_margin(ranker: Ranker, index: Index) -> Ranker:
    """``ranker`` with DOC_MARGIN where ``index`` gives document units questions of their own."""
    return dataclasses.replace(ranker, doc_margin=DOC_MARGIN) if index.document_question_rows() else ranker
