"""The answer/clarify/handoff policy over retrieval evidence.

Evidence per query (``Features``): the best unit's cosine, its best question/alternative
cosine, the margin to the runner-up, the gap to the nearest negative anchor (out-of-scope
example), how many of the unit's vectors were retrieved, character-bigram overlap with the
matched question, and query length. A small logistic model turns them into a confidence;
thresholds on that confidence pick the decision. Both are fitted on the labelled dev split by
``kefu eval calibrate`` and stored in the index manifest. Until then the documented defaults
apply: confidence is the raw top-1 cosine with the cut-offs below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from indexer.lexical import char_bigrams, jaccard
from kb.errors import ConfigError
from service.schemas import Decision as Outcome

FEATURES = ("top1", "question_top1", "margin", "anchor_gap", "votes", "bigram_overlap", "length")
# With a learned ranker (service/ranker.py) the confidence model also sees the ranker's softmax
# probability of its first unit. A calibration names the features its weights refer to.
RANKER_FEATURES = (*FEATURES, "rank_prob")

# Defaults without calibration, on the raw top-1 cosine of multilingual-e5-small over the bundled
# KB: in-domain questions' top-1 median 0.893; out-of-domain ones (weather, stocks) up to 0.864.
DEFAULT_ANSWER_AT = 0.90
DEFAULT_CLARIFY_AT = 0.865


def bigram_overlap(a: str, b: str) -> float:
    """Jaccard similarity of character bigrams."""
    return jaccard(char_bigrams(a), char_bigrams(b))


@dataclass(frozen=True)
class Features:
    top1: float
    question_top1: float
    margin: float
    anchor_gap: float
    votes: float
    bigram_overlap: float
    length: float
    rank_prob: float = 0.0  # 0 without a ranker


@dataclass
class Calibration:
    """A fitted confidence model and its thresholds (what `kefu eval calibrate` stores)."""

    answer_at: float = DEFAULT_ANSWER_AT
    clarify_at: float = DEFAULT_CLARIFY_AT
    weights: list[float] | None = None  # logistic weights over standardised FEATURES; None = raw top1
    bias: float = 0.0
    mean: list[float] | None = None
    scale: list[float] | None = None
    source: str = "default"
    metrics: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None  # names the weights refer to; None means FEATURES
    ranker: dict[str, Any] | None = None  # service.ranker.Ranker.to_json(), fitted with these weights
    # Optional scope model: the probability that a query is in scope at all, over the same
    # standardised features. With it, a query below answer_at is clarified when it looks in scope
    # (scope ≥ scope_at) and handed off otherwise; without it, clarify_at on the confidence decides.
    scope_weights: list[float] | None = None
    scope_bias: float = 0.0
    scope_at: float | None = None
    # Provenance: "default" (no fit), "self" (fitted from the KB alone at build time), "labelled"
    # (`kefu eval calibrate` on a labelled dev split), "shipped" (the KB's calibration.json). A
    # calibration belongs to the KB it was fitted for (kb_hash) and is never carried to another.
    origin: str = "default"
    kb_hash: str | None = None
    predicted: dict[str, float] | None = None  # precision and coverage the fit predicts (self only)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.features) if self.features else FEATURES

    def __post_init__(self) -> None:
        if not 0.0 <= self.clarify_at <= self.answer_at <= 1.0:
            raise ConfigError(
                f"thresholds must satisfy 0 ≤ clarify_at ({self.clarify_at}) ≤ answer_at ({self.answer_at}) ≤ 1"
            )
        unknown = [f for f in self.names if f not in RANKER_FEATURES]
        if unknown:
            raise ConfigError(f"calibration names unknown features {unknown}; allowed: {RANKER_FEATURES}")
        if "rank_prob" in self.names and not self.ranker:
            raise ConfigError("calibration uses rank_prob but carries no ranker; run `kefu eval calibrate` again")
        if self.weights is not None:
            n = len(self.names)
            if len(self.weights) != n:
                raise ConfigError(f"calibration has {len(self.weights)} weights, expected {n} ({self.names})")
            if self.mean is None or self.scale is None or len(self.mean) != n or len(self.scale) != n:
                raise ConfigError(f"calibration needs mean and scale of {n} values each, one per feature {self.names}")
            if not all(math.isfinite(v) for v in [*self.weights, *self.mean, *self.scale, self.bias]):
                raise ConfigError("calibration weights, mean, scale and bias must be finite numbers")
            if any(v <= 0 for v in self.scale):
                raise ConfigError(f"calibration scale values must be > 0, got {self.scale}")
        if self.scope_weights is not None:
            if self.weights is None or len(self.scope_weights) != len(self.names):
                raise ConfigError(
                    f"the scope model needs the confidence model's standardisation and one weight per feature "
                    f"{self.names}; got {len(self.scope_weights)} weights"
                )
            if not all(math.isfinite(v) for v in [*self.scope_weights, self.scope_bias]):
                raise ConfigError("scope weights and bias must be finite numbers")
            if self.scope_at is None or not 0.0 <= self.scope_at <= 1.0:
                raise ConfigError(f"a scope model needs scope_at within [0, 1], got {self.scope_at}")

    def confidence(self, f: Features) -> float:
        """Probability that the top answer is right (the raw top-1 cosine without a model)."""
        if self.weights is None:
            return float(f.top1)
        return self._probability(self.weights, self.bias, f)

    def scope(self, f: Features) -> float | None:
        """Probability that the query is in scope, or None without a scope model."""
        if self.scope_weights is None:
            return None
        return self._probability(self.scope_weights, self.scope_bias, f)

    def _probability(self, weights: list[float], bias: float, f: Features) -> float:
        assert self.mean is not None and self.scale is not None  # checked in __post_init__
        # plain floats: seven or eight features, where numpy's per-call overhead was 40 µs a query
        # (float arithmetic turns overflow into inf and 0·inf into NaN; both are caught below)
        x = (getattr(f, name) for name in self.names)
        logit = bias + sum(w * (v - m) / s for w, v, m, s in zip(weights, x, self.mean, self.scale, strict=True))
        if not math.isfinite(logit):
            return 0.0  # undefined evidence never earns an answer (nor a clarify)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def decide(confidence: float, cal: Calibration, scope: float | None = None) -> Outcome:
    """'answer', 'clarify' or 'handoff' for a retrieval confidence (and, with a scope model, the
    probability that the query is in scope: below answer_at it decides between clarify and handoff)."""
    if confidence >= cal.answer_at:
        return "answer"
    if cal.scope_at is not None and scope is not None:
        return "clarify" if scope >= cal.scope_at else "handoff"
    if confidence >= cal.clarify_at:
        return "clarify"
    return "handoff"


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    l2: float = 1.0,
    iters: int = 500,
    sample_weight: np.ndarray | None = None,
    mean: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by Newton's method; returns weights, bias, mean, scale.

    Small and deterministic: a handful of features, a few hundred labelled queries. Rows may be
    weighted; ``mean``/``scale`` reuse another model's standardisation (a scope model shares the
    confidence model's).
    """
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ConfigError(f"need a 2-D feature matrix with one label per row, got {x.shape} and {y.shape}")
    if mean is None or scale is None:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
    sw = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (sw * (p - y)) + reg * w
        hess = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1]), mean, scale
