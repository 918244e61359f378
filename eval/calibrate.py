"""Fit the decision model and thresholds on the dev split.

Objective: maximise coverage (in-scope queries answered) subject to answered precision ≥ a
target and out-of-scope handoff recall ≥ a target. Probabilities used to pick thresholds come
from k-fold cross-validation on dev, so thresholds are not chosen on predictions the model was
fitted to; the final model is then refitted on all of dev. An optional safety margin raises the
precision target by a number of standard errors of the estimate (``margin_se``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.dataset import stable_hash
from eval.runner import ItemResult
from kb.errors import ConfigError
from service.policy import FEATURES, RANKER_FEATURES, Calibration, fit_logistic
from service.ranker import Ranker

FOLDS = 5
# Default margin above the precision target, in standard errors of the precision estimate
# (sqrt(p(1-p)/n) over the n answered dev queries). A target met exactly on dev is missed about
# half the time on new queries, but the precision curve here is flat at the top (confidently
# wrong answers are near-duplicate entries, not low scores): one standard error cut dev coverage
# from 0.70 to 0.04 (2026-11-25). So none by default; `kefu eval calibrate --margin-se 1` asks.
PRECISION_SE_MARGIN = 0.0
# Margin above the out-of-scope handoff target, in standard errors of the recall estimate
# (sqrt(t(1-t)/n) over the n out-of-scope dev queries the confidence decides). Unlike precision,
# the target binds on a handful of queries: met exactly on one assignment of dev to folds, it held
# on 39% of the re-drawn assignments; one standard error held it on 81% (2026-12-07,
# docs/experiments.md). `kefu eval calibrate --oos-margin-se 0` aims exactly at the target.
OOS_SE_MARGIN = 1.0
L2 = 1.0  # ridge strength for the logistic model (features are standardised)
# A scope model is fitted only with at least this many in-scope and out-of-scope dev queries.
MIN_SCOPE_EXAMPLES = 10
# Features are fitted at 4 decimals, as the response trace showed them when calibration read the
# trace, so a refit reproduces the stored calibrations. Exact values move the bundled dev fit's
# thresholds in the 4th decimal (answer_at 0.70105 → 0.70073) and no test decision.
FEATURE_DECIMALS = 4


@dataclass(frozen=True)
class OperatingPoint:
    answer_at: float
    clarify_at: float
    coverage: float
    answered_precision: float
    oos_handoff_recall: float
    clarify_rate: float
    scope_at: float | None = None  # with a scope model: clarify below answer_at when scope ≥ this
    in_scope_handoff_rate: float = 0.0  # in-scope queries (of those decided by confidence) handed off


def _rows(
    results: list[ItemResult], names: tuple[str, ...] = FEATURES
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[ItemResult]]:
    """Feature matrix, label (top-1 correct), in-scope mask, for items decided by confidence."""
    used = [r for r in results if r.features is not None and r.rule is None]
    if len(used) < 20:
        raise ConfigError(f"only {len(used)} dev items reached the confidence stage; need at least 20 to calibrate")
    x = np.array(
        [[round(getattr(r.features, f), FEATURE_DECIMALS) for f in names] for r in used],
        dtype=np.float64,
    )
    y = np.array([1.0 if r.item.in_scope and r.top1_correct else 0.0 for r in used])
    ins = np.array([r.item.in_scope for r in used])
    return x, y, ins, used


def fold_of(item_id: str) -> int:
    return int(stable_hash(item_id), 16) % FOLDS


def cross_val_probs(x: np.ndarray, y: np.ndarray, ids: list[str]) -> np.ndarray:
    folds = np.array([fold_of(i) for i in ids])
    p = np.zeros(len(y))
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        if not test.any():
            continue
        w, b, mean, scale = fit_logistic(x[train], y[train], L2)
        z = (x[test] - mean) / scale
        p[test] = 1.0 / (1.0 + np.exp(-(z @ w + b)))
    return p


def operating_point(
    p: np.ndarray,
    y: np.ndarray,
    ins: np.ndarray,
    oos: np.ndarray,
    n_in_total: int,
    a: float,
    c: float,
    scope: np.ndarray | None = None,
    s: float | None = None,
) -> OperatingPoint:
    """Decisions at answer threshold ``a`` and, below it, clarify by confidence ≥ ``c`` or (with
    ``scope`` probabilities) by scope ≥ ``s``."""
    answered = p >= a
    clar = ((scope >= s) if scope is not None and s is not None else (p >= c)) & ~answered
    handoff = ~answered & ~clar
    n_ans = int(answered.sum())
    prec = float(y[answered].sum() / n_ans) if n_ans else 1.0
    cov = float((answered & ins).sum() / max(1, n_in_total))
    oos_rec = float(handoff[oos].mean()) if oos.any() else 1.0
    in_handoff = float(handoff[ins].mean()) if ins.any() else 0.0
    return OperatingPoint(a, c, cov, prec, oos_rec, float(clar.mean()), s, in_handoff)


def choose_scope_threshold(
    p: np.ndarray, scope: np.ndarray, oos: np.ndarray, answer_at: float, oos_recall_target: float
) -> float:
    """Lowest scope threshold that still hands off enough out-of-scope queries (those not answered)."""
    for s in np.unique(np.concatenate([scope, [0.0, 1.0]])):  # ascending
        handed_off = (p < answer_at) & (scope < s)
        if not oos.any() or handed_off[oos].mean() >= oos_recall_target:
            return float(s)
    return 1.0


def choose_thresholds(
    p: np.ndarray,
    y: np.ndarray,
    ins: np.ndarray,
    oos: np.ndarray,
    n_in_total: int,
    precision_target: float,
    oos_recall_target: float,
    margin_se: float = PRECISION_SE_MARGIN,
) -> OperatingPoint:
    """Lowest clarify threshold meeting the OOS target; lowest answer threshold meeting precision."""
    grid = np.unique(np.concatenate([p, [0.0, 1.0]]))
    clarify_at = 1.0
    for c in grid:  # ascending: the first that keeps enough OOS queries below it
        if operating_point(p, y, ins, oos, n_in_total, 1.0, float(c)).oos_handoff_recall >= oos_recall_target:
            clarify_at = float(c)
            break
    answer_at = 1.0
    for a in grid:
        if a < clarify_at:
            continue
        op = operating_point(p, y, ins, oos, n_in_total, float(a), clarify_at)
        n_answered = int((p >= a).sum())
        margin = margin_se * math.sqrt(precision_target * (1 - precision_target) / max(1, n_answered))
        if op.answered_precision >= min(1.0, precision_target + margin):
            answer_at = float(a)
            break
    return operating_point(p, y, ins, oos, n_in_total, answer_at, clarify_at)


def calibrate(
    results: list[ItemResult],
    precision_target: float = 0.95,
    oos_recall_target: float = 0.95,
    margin_se: float = PRECISION_SE_MARGIN,
    ranker: Ranker | None = None,
    scope: bool = False,
    oos_margin_se: float = OOS_SE_MARGIN,
) -> tuple[Calibration, dict[str, Any]]:
    """Fit the confidence model and thresholds on dev ``results``. With ``ranker`` (fitted on
    the same dev split) the results must come from cross-fitted rankers (``cross_fit_ranker``),
    and the confidence model also uses the ranker's probability. With ``scope``, also a scope
    model that decides clarify vs handoff below the answer threshold."""
    if not (0.5 <= precision_target <= 1.0 and 0.5 <= oos_recall_target <= 1.0):
        raise ConfigError(
            f"targets must be within [0.5, 1]: precision {precision_target}, oos recall {oos_recall_target}"
        )
    for name, v in (("margin_se", margin_se), ("oos_margin_se", oos_margin_se)):
        if not 0.0 <= v <= 5.0:
            raise ConfigError(f"{name}={v} must be within [0, 5] standard errors")
    names = RANKER_FEATURES if ranker is not None else FEATURES
    x, y, ins, used = _rows(results, names)
    oos = np.array([r.item.reason == "low_confidence" for r in used])
    n_in_total = sum(r.item.in_scope for r in results)
    p_cv = cross_val_probs(x, y, [r.item.id for r in used])
    n_oos = int(oos.sum())
    oos_aim = oos_recall_target
    if n_oos:
        se = math.sqrt(oos_recall_target * (1 - oos_recall_target) / n_oos)
        oos_aim = min(1.0, oos_recall_target + oos_margin_se * se)
    op = choose_thresholds(p_cv, y, ins, oos, n_in_total, precision_target, oos_aim, margin_se)
    # The scope model (in scope at all, or not) decides between clarify and handoff below the
    # answer threshold: an in-scope question the ranker is unsure about is better clarified than
    # sent to a person. Dev, cross-validated (2026-11-26): in-scope handoffs 15.3% → 8.9% of the
    # queries decided by confidence, at the same out-of-scope handoff recall (0.953). Its threshold
    # is the lowest that still hands off oos_recall_target of the out-of-scope queries the answer
    # threshold left, so the band is only as wide as the labelled set shows it to be safe.
    scope_probs: np.ndarray | None = None
    scope_at: float | None = None
    if scope and min(int(ins.sum()), int(oos.sum())) >= MIN_SCOPE_EXAMPLES:
        scope_probs = cross_val_probs(x, ins.astype(np.float64), [r.item.id for r in used])
        scope_at = choose_scope_threshold(p_cv, scope_probs, oos, op.answer_at, oos_aim)
        op = operating_point(p_cv, y, ins, oos, n_in_total, op.answer_at, op.clarify_at, scope_probs, scope_at)
    w, b, mean, scale = fit_logistic(x, y, L2)
    curve = []
    for a in np.linspace(0.0, 1.0, 101):
        pt = operating_point(
            p_cv, y, ins, oos, n_in_total, float(a), min(float(a), op.clarify_at), scope_probs, scope_at
        )
        curve.append(
            {
                "threshold": round(float(a), 2),
                "coverage": round(pt.coverage, 4),
                "answered_precision": round(pt.answered_precision, 4),
            }
        )
    report: dict[str, Any] = {
        "operating_point_cv": {k: round(v, 4) if v is not None else None for k, v in vars(op).items()},
        "targets": {
            "answered_precision": precision_target,
            "oos_handoff_recall": oos_recall_target,
            "margin_se": margin_se,
            "oos_margin_se": oos_margin_se,
            "oos_handoff_recall_aimed": round(oos_aim, 4),
        },
        "n_items": len(used),
        "curve": curve,
        "scores": {
            "in_correct": [round(float(v), 4) for v, yy in zip(p_cv, y, strict=True) if yy == 1],
            "in_wrong": [round(float(v), 4) for v, yy, ii in zip(p_cv, y, ins, strict=True) if yy == 0 and ii],
            "out_of_scope": [round(float(v), 4) for v, o in zip(p_cv, oos, strict=True) if o],
        },
    }
    cal = Calibration(
        answer_at=op.answer_at,
        clarify_at=op.clarify_at,
        weights=[float(v) for v in w],
        bias=b,
        mean=[float(v) for v in mean],
        scale=[float(v) for v in scale],
        source="dev-logistic",
        metrics=dict(report["operating_point_cv"]),
        features=list(names) if ranker is not None else None,
        ranker=ranker.to_json() if ranker is not None else None,
    )
    if scope_at is not None:
        sw, sb, _, _ = fit_logistic(x, ins.astype(np.float64), L2)  # same standardisation as the confidence
        cal = dataclasses.replace(cal, scope_weights=[float(v) for v in sw], scope_bias=sb, scope_at=scope_at)
    return cal, report
