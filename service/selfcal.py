"""Calibration from the knowledge base alone: what ``kefu build`` fits when no labelled set exists.

A KB brings questions and answers but no shoppers' queries, so it is asked its own questions:

- **answerable**: each alternative question with its own vector row left out (the entry still
  has its other phrasings), and each entry's question perturbed the way chat mangles questions
  (fragments, dropped characters, filler words). Their top answer is right or wrong as in real
  use.
- **unanswerable**: each entry's question asked of the KB *without that entry* (every row of it
  left out). That is exactly an in-domain question the KB has no answer for: what must be
  handed off rather than answered with the nearest neighbour.

The ranker and the confidence model are the ones shipped in ``service/models/`` (fitted by
``python -m eval.train_ranker`` on shoppers' real questions to other KBs: the KB's own questions
are easier than shoppers' paraphrases, so a confidence fitted on them alone answers too much);
without them, dense question matching and a confidence fitted on the pseudo-queries. The
pseudo-queries set what is the KB's own: the answer threshold (a precision target on a mixture
with ``oos_share`` unanswerable questions, judged by the calibrated confidence; a floor on how
many unanswerable ones are handed off) and a scope model (answerable vs. unanswerable) for the
clarify band. The precision and coverage that mixture predicts are stored with the calibration
and printed by ``kefu build``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.build import CalibrateFn
from indexer.chunking import QUESTION_KINDS
from indexer.encoder import Encoder
from indexer.index import Index
from kb.errors import ConfigError
from kb.settings import Settings
from service.answerer import Answerer
from service.pipeline.retrieve import Retrieval
from service.policy import RANKER_FEATURES, Calibration, fit_logistic
from service.ranker import Group, Ranker, fit_ranker
from service.runtime import kb_merchant, kb_orders, kb_sensitive, kb_small_talk, options_from
from service.selfcal_queries import MAX_QUERIES, pseudo_queries

MODELS = Path(__file__).resolve().parent / "models"
GENERAL_RANKER = MODELS / "general_ranker.json"
GENERAL_CONFIDENCE = MODELS / "general_confidence.json"
GENERAL_ANSWER_AT = 0.5  # the prior's confidence threshold (leave-one-suite-out on dev, docs/experiments.md)
SELF_PRECISION = 0.87  # answered-precision target of a self-calibration (KEFU_SELF_PRECISION)
OOS_SHARE = 0.3  # assumed share of incoming questions the KB has no answer for (KEFU_SELF_OOS_SHARE)
# The KB's own unanswerable questions must be handed off at least this often: a safety cap on the
# prior's threshold. Lower than the 0.7 wanted of real out-of-scope questions because a question
# asked with its entry left out often has a sibling entry that does answer it (bundled KB, dev: 37%
# of them reach the prior's threshold against 15% of the real out-of-scope queries).
OOS_RECALL = 0.6
CLARIFY_OOS_RECALL = 0.75  # below the answer threshold, unanswerable ones handed off rather than clarified
# In a plain FAQ table (one question per entry, no alternatives, no documents) a candidate whose
# question cosine leads the next by more than this goes first (``Ranker.question_lead``). Dev, ranker
# fitted with the suite left out (docs/experiments.md, 2026-12-07): unionpay_a 0.606 → 0.636 hit@1
# (question match 0.639), five suites unchanged; with alternatives it costs what they teach the ranker.
QUESTION_LEAD = 0.01
# …and its best question match is kept among the first three candidates (the clarify options and a
# handoff's suggestions): one source left out (pools, ranker fitted on the others, dev), the right
# entry among the first three on unionpay_a 0.739 → 0.782 and on its 40–150-entry cuts by up to
# 0.09, the pair-data suites within 0.001 (docs/experiments.md, session 22).
QUESTION_WITHIN = 3
MIN_QUERIES = 40  # fewer answerable or unanswerable pseudo-queries than this: the shipped prior alone
FOLDS = 5
L2 = 1.0


@dataclass(frozen=True)
class SelfCalibration:
    calibration: Calibration
    answerable: int
    unanswerable: int
    ranker: str  # "general" (shipped) or "question" (dense question matching)
    predicted_precision: float | None  # None: too few questions to predict anything
    predicted_coverage: float | None
    seconds: float

    def summary(self) -> str:
        """One line for ``kefu build`` and the server log."""
        if self.predicted_precision is None or self.predicted_coverage is None:
            return (
                f"self-calibrated from the shipped prior alone ({self.answerable} questions are too few to "
                f"measure on; {MIN_QUERIES}+ FAQ entries give a fit and a prediction of its own)"
            )
        return (
            f"self-calibrated from the KB ({self.answerable:,} answerable and {self.unanswerable:,} "
            f"unanswerable pseudo-queries, ranker: {self.ranker}): predicts answered precision "
            f"{self.predicted_precision:.2f} at coverage {self.predicted_coverage:.2f}"
        )


def question_ranker(groups: Sequence[Group]) -> Ranker:
    """Dense question matching as a ranker: the best question cosine, its softmax temperature fitted."""
    return replace(fit_ranker(groups, ("question",)), meta={"kind": "question"})


def plain_faq(index: Index) -> bool:
    """Whether ``index`` is a plain FAQ table: every unit an FAQ entry asked by its one question."""
    if not index.entries or len(index.units) != len(index.entries):
        return False
    questions = Counter(c.unit_id for c in index.chunks if c.kind in QUESTION_KINDS)
    return all(questions[u] == 1 for u in index.entries)


def general_ranker(path: Path = GENERAL_RANKER) -> Ranker | None:
    """The shipped KB-agnostic ranker (``python -m eval.train_ranker``), or None if absent."""
    if not path.is_file():
        return None
    return Ranker.from_json(json.loads(path.read_text("utf-8")))


def shipped_ranker(index: Index, path: Path = GENERAL_RANKER) -> Ranker | None:
    """The shipped KB-agnostic ranker as ``index`` is served with it: in a plain FAQ table a
    decisive question match goes first and the best one stays among the first three."""
    ranker = general_ranker(path)
    if ranker is not None and plain_faq(index):
        ranker = replace(ranker, question_lead=QUESTION_LEAD, question_within=QUESTION_WITHIN)
    return ranker


def general_confidence(path: Path = GENERAL_CONFIDENCE) -> dict[str, Any] | None:
    """The shipped confidence prior (``python -m eval.train_ranker``), or None if absent."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text("utf-8"))
    if list(data.get("features", ())) != list(RANKER_FEATURES):
        raise ConfigError(f"{path} is for features {data.get('features')}, not {list(RANKER_FEATURES)}; retrain it")
    return dict(data)


def self_calibrate(
    answerer: Answerer,
    encode: Callable[[Sequence[str]], np.ndarray],
    precision: float = SELF_PRECISION,
    oos_share: float = OOS_SHARE,
    oos_recall: float = OOS_RECALL,
    limit: int = MAX_QUERIES,
    progress: Callable[[int, int], None] | None = None,
) -> SelfCalibration:
    """Fit ranker choice, confidence and scope models and thresholds from ``answerer``'s KB alone."""
    if not (0.5 <= precision < 1.0 and 0.0 < oos_share < 1.0):
        raise ConfigError(
            f"self-calibration needs precision in [0.5, 1) and oos_share in (0, 1); got {precision}, {oos_share}"
        )
    t0 = time.perf_counter()
    index = answerer.index
    answerable, unanswerable = pseudo_queries(index, limit)
    ranker, prior = shipped_ranker(index), general_confidence()
    small = len(answerable) < MIN_QUERIES or len(unanswerable) < MIN_QUERIES
    if small and ranker is not None and prior is not None:
        # too few questions to measure anything on: the shipped prior as it is, said as such
        w, b, mean, scale = _prior_model(prior)
        note = f"prior only: {len(index.entries)} entries are too few to measure"
        cal = _calibration(w, b, mean, scale, float(prior["answer_at"]), ranker, index.manifest.kb_hash)
        cal = replace(cal, metrics={"confidence": "general", "note": note})
        return SelfCalibration(cal, len(answerable), len(unanswerable), "general", None, None, time.perf_counter() - t0)
    if small:
        raise ConfigError(
            f"the KB gives {len(answerable)} answerable and {len(unanswerable)} unanswerable pseudo-queries; "
            f"self-calibration needs {MIN_QUERIES} of each (a KB of at least {MIN_QUERIES} FAQ entries)"
        )
    queries = answerable + unanswerable
    to_encode = [q.text for q in queries if q.row is None]
    encoded = iter(np.vstack([encode([t]) for t in to_encode]) if to_encode else [])
    vecs = [index.vectors[q.row] if q.row is not None else next(encoded) for q in queries]
    total, done = len(queries), 0  # one step per pseudo-query's evidence

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 50 == 0 or done == total):
            progress(done, total)

    # 1. the ranker: the shipped KB-agnostic one; dense question matching where it is absent
    kind = "general"
    if ranker is None:
        pools = []
        for q, v in zip(answerable, vecs[: len(answerable)], strict=True):
            pool = index.candidate_pool(v, q.text, 20, exclude_row=q.exclude_row)
            pools.append(Group(pool.x, np.array([u.unit_id == q.unit for u in pool.units])))
        ranker, kind = question_ranker(pools), "question"

    # 2. evidence of every pseudo-query under that ranker
    rows: list[Retrieval] = []
    for q, v in zip(queries, vecs, strict=True):
        rows.append(answerer.evidence(q.text, v, ranker=ranker, exclude_row=q.exclude_row, exclude_unit=q.exclude_unit))
        step()
    names = RANKER_FEATURES
    x = np.array([[getattr(r.features, f) for f in names] for r in rows], dtype=np.float64)
    is_in = np.array([q.unit is not None for q in queries])
    right = np.array(
        [
            q.unit is not None and bool(r.units) and r.units[0].unit_id == q.unit
            for q, r in zip(queries, rows, strict=True)
        ]
    )
    # unanswerable pseudo-queries stand for oos_share of the traffic, answerable ones for the rest
    weight = np.where(is_in, (1 - oos_share) / is_in.sum(), oos_share / (~is_in).sum()) * len(queries)

    # 3. confidence: the shipped model, fitted on shoppers' real questions to other KBs (the KB's
    # own questions are easier than shoppers' paraphrases, so a model fitted on them alone
    # answers too much); a model of the KB's pseudo-queries only where none is shipped
    prior = prior if kind == "general" else None
    folds = np.arange(len(queries)) % FOLDS
    if prior is not None:
        w, b, mean, scale = _prior_model(prior)
        p = 1.0 / (1.0 + np.exp(-np.clip(((x - mean) / scale) @ w + b, -50, 50)))
        floor = float(prior["answer_at"])
    else:
        p = _cross_val(x, right.astype(float), weight, folds)
        w, b, mean, scale = fit_logistic(x, right.astype(float), L2, sample_weight=weight)
        floor = 0.0
    # the threshold: the prior's, raised until the KB's own unanswerable questions are handed off
    # at least oos_recall of the time, and until the pseudo-mixture meets the precision target
    oos_at = float(np.quantile(p[~is_in], oos_recall)) if (~is_in).any() else 0.0
    # precision as the confidence (calibrated on shoppers' questions) expects it: the pseudo-queries'
    # own right/wrong would be too kind (they are easy) and too harsh (a left-out entry's sibling
    # may well answer its question)
    prec_at = _answer_threshold(p, p if prior is not None else right, weight, precision)
    answer_at = min(1.0, max(floor, oos_at, prec_at))
    answered = p >= answer_at
    # predicted precision from the confidence itself (calibrated on shoppers' questions), not from
    # the pseudo-queries' own right/wrong, which are easier than real ones
    pred_prec = float((weight * p)[answered].sum() / max(1e-9, weight[answered].sum())) if answered.any() else 1.0
    pred_cov = float(answered[is_in].mean())
    # 4. scope (answerable at all) for the clarify band below the answer threshold
    s = _cross_val(x, is_in.astype(float), weight, folds)
    scope_at = _scope_threshold(p, s, is_in, weight, answer_at, CLARIFY_OOS_RECALL)
    sw, sb, _, _ = fit_logistic(x, is_in.astype(float), L2, sample_weight=weight, mean=mean, scale=scale)
    predicted = {"answered_precision": round(pred_prec, 4), "coverage": round(pred_cov, 4), "oos_share": oos_share}
    cal = replace(
        _calibration(w, b, mean, scale, answer_at, ranker, index.manifest.kb_hash),
        predicted=predicted,
        metrics={
            "precision_target": precision,
            "oos_recall_target": oos_recall,
            "confidence": "general" if prior else "kb",
        },
        scope_weights=[float(v) for v in sw],
        scope_bias=sb,
        scope_at=scope_at,
    )
    return SelfCalibration(cal, len(answerable), len(unanswerable), kind, pred_prec, pred_cov, time.perf_counter() - t0)


def _prior_model(prior: dict[str, Any]) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(weights, bias, mean, scale) of the shipped confidence prior, as ``fit_logistic`` returns them."""
    return (np.asarray(prior["weights"]), float(prior["bias"]), np.asarray(prior["mean"]), np.asarray(prior["scale"]))


def _calibration(
    w: np.ndarray, b: float, mean: np.ndarray, scale: np.ndarray, answer_at: float, ranker: Ranker, kb_hash: str
) -> Calibration:
    """A self-calibration of one KB: the confidence model over RANKER_FEATURES and its ranker."""
    return Calibration(
        answer_at=answer_at,
        clarify_at=answer_at,
        weights=[float(v) for v in w],
        bias=b,
        mean=[float(v) for v in mean],
        scale=[float(v) for v in scale],
        source="self",
        origin="self",
        kb_hash=kb_hash,
        features=list(RANKER_FEATURES),
        ranker=ranker.to_json(),
    )


def _cross_val(x: np.ndarray, y: np.ndarray, weight: np.ndarray, folds: np.ndarray) -> np.ndarray:
    p = np.zeros(len(y))
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        w, b, mean, scale = fit_logistic(x[train], y[train], L2, sample_weight=weight[train])
        p[test] = 1.0 / (1.0 + np.exp(-np.clip(((x[test] - mean) / scale) @ w + b, -50, 50)))
    return p


def _answer_threshold(p: np.ndarray, right: np.ndarray, weight: np.ndarray, precision: float) -> float:
    """The lowest confidence threshold whose weighted answered precision meets ``precision``; 1.0
    (never answer) when none does. ``right`` is 0/1, or each query's probability of being right."""
    order = np.argsort(-p, kind="stable")
    w_ans = np.cumsum(weight[order])
    w_right = np.cumsum((weight * right)[order])
    last_of_tie = np.append(p[order][1:] != p[order][:-1], True)
    ok = (w_right / w_ans >= precision) & last_of_tie
    return float(p[order][int(np.flatnonzero(ok).max())]) if ok.any() else 1.0


def _scope_threshold(
    p: np.ndarray, s: np.ndarray, is_in: np.ndarray, weight: np.ndarray, answer_at: float, oos_recall: float
) -> float:
    """Lowest scope threshold at which ``oos_recall`` of all the unanswerable pseudo-queries
    (weighted; the answered ones count as not handed off) are still handed off; below the answer
    threshold a query whose scope reaches it is clarified, any other handed off."""
    oos = ~is_in
    total = float(weight[oos].sum())
    for t in np.unique(np.concatenate([s, [1.0]])):  # ascending
        handed = oos & ((p < answer_at) & (s < t))
        if total == 0 or float(weight[handed].sum()) / total >= oos_recall:
            return float(t)
    return 1.0


def build_calibrator(
    settings: Settings, encoder: Encoder, progress: Callable[[int, int], None] | None = None
) -> CalibrateFn:
    """What ``kefu build`` hands to ``build_and_swap``: self-calibrate a build that has no
    calibration fitted for its KB (no labelled set needed)."""

    def fit(index: Index) -> tuple[dict[str, Any] | None, str]:
        answerer = Answerer(
            index,
            encoder.encode_queries,
            kb_sensitive(settings, index),
            options_from(settings),
            calibration=Calibration(),
            orders=kb_orders(index),
            merchant=kb_merchant(index),
            small_talk=kb_small_talk(index),
        )
        try:
            got = self_calibrate(
                answerer,
                encoder.encode_queries,
                precision=settings.self_precision,
                oos_share=settings.self_oos_share,
                progress=progress,
            )
        except ConfigError as exc:
            return None, f"calibration: none ({exc}); default thresholds on the raw cosine"
        return got.calibration.to_json(), f"calibration: {got.summary()} in {got.seconds:.1f} s"

    return fit
