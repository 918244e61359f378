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
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eval.dataset import EvalItem, resolve_labels, stable_hash
from eval.metrics import Ranked
from eval.runner import ItemResult, run
from indexer.index import Index
from indexer.normalize import normalize
from indexer.pseudo import MIN_CHARS as PSEUDO_MIN_CHARS
from indexer.pseudo import SEED as PSEUDO_SEED
from indexer.pseudo import UnitQuery, unit_queries
from kb.errors import ConfigError
from kb.loader import load_resources
from kb.settings import BUNDLED_KB
from service.answerer import Answerer
from service.policy import FEATURES, RANKER_FEATURES, Calibration, fit_logistic
from service.ranker import POOL, Group, Ranker, fit_ranker, with_doc_margin

FOLDS = 5
# Default margin above the precision target, in standard errors of the precision estimate
# (sqrt(p(1-p)/n) over the n answered dev queries). A target met exactly on dev is missed about
# half the time on new queries, but the precision curve here is flat at the top (confidently
# wrong answers are near-duplicate entries, not low scores): one standard error cut dev coverage
# from 0.70 to 0.04 (2026-11-25). So none by default; `kefu eval calibrate --margin-se 1` asks.
PRECISION_SE_MARGIN = 0.0
L2 = 1.0  # ridge strength for the logistic model (features are standardised)
# The labelled dev queries together weigh this many times the KB's alternative questions
# together when the ranker is fitted: shoppers' phrasing is what it must learn, and the KB's
# own phrasings are many more. Each dev query's weight follows from the counts (dev_weight), so
# the balance holds when alternatives are added or a user brings a KB and a dev set of their
# own. History on dev: with 3,169 alternatives, a fixed 10× (about equal weight) gave
# cross-validated hit@1 0.904 against 0.882 / 0.892 at 1× / 3×; after alternatives went to 5,275,
# the same 10× had fallen to 0.65 of the KB's weight, and restoring equal weight (15.9×) lifted
# pool-level CV hit@1 0.922 → 0.928 (2026-11-26).
DEV_SHARE = 1.0
# Training queries for document units (``unit_groups``): the kind of pseudo-query, how many per
# unit and the weight of each (an alternative question weighs 1). Chosen on the rules dev split
# and the FAQ dev split (docs/experiments.md, 2026-12-06, issue 22): the right clause first for
# 0.011 → 0.204 of rules dev, FAQ dev hit@1 0.9366 → 0.9395; verbatim fragments reach about 0.10,
# and above a weight of 5–10 FAQ dev and the calibration's coverage fall.
UnitKind = Literal["first", "fragment", "shopper"]
UNIT_QUERIES: UnitKind = "shopper"
UNIT_PER_UNIT = 4
UNIT_WEIGHT = 5.0
# How a shopper_queries pseudo-query opens and ends (one of each, at random; "" is no opening).
ASK_OPENINGS = ("", "", "", "请问", "我想问下", "问一下", "如果", "卖家说", "我这个", "想知道")
ASK_ENDINGS: tuple[str, ...] = ("吗", "怎么办", "怎么算", "是什么规定", "平台怎么处理", "有规定吗")
ASK_ENDINGS += ("可以吗", "多久", "", "的话怎么弄", "能赔吗", "谁负责")
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


def _fold(item_id: str) -> int:
    return int(stable_hash(item_id), 16) % FOLDS


def cross_val_probs(x: np.ndarray, y: np.ndarray, ids: list[str]) -> np.ndarray:
    folds = np.array([_fold(i) for i in ids])
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
) -> tuple[Calibration, dict[str, Any]]:
    """Fit the confidence model and thresholds on dev ``results``. With ``ranker`` (fitted on
    the same dev split) the results must come from cross-fitted rankers (``cross_fit_ranker``),
    and the confidence model also uses the ranker's probability. With ``scope``, also a scope
    model that decides clarify vs handoff below the answer threshold."""
    if not (0.5 <= precision_target <= 1.0 and 0.5 <= oos_recall_target <= 1.0):
        raise ConfigError(
            f"targets must be within [0.5, 1]: precision {precision_target}, oos recall {oos_recall_target}"
        )
    if not 0.0 <= margin_se <= 5.0:
        raise ConfigError(f"margin_se={margin_se} must be within [0, 5] standard errors")
    names = RANKER_FEATURES if ranker is not None else FEATURES
    x, y, ins, used = _rows(results, names)
    oos = np.array([r.item.reason == "low_confidence" for r in used])
    n_in_total = sum(r.item.in_scope for r in results)
    p_cv = cross_val_probs(x, y, [r.item.id for r in used])
    op = choose_thresholds(p_cv, y, ins, oos, n_in_total, precision_target, oos_recall_target, margin_se)
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
        scope_at = choose_scope_threshold(p_cv, scope_probs, oos, op.answer_at, oos_recall_target)
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


def faq_alt_rows(index: Index) -> list[int]:
    """The rows of FAQ entries' alternative questions (not the questions documents' units were given)."""
    return [r for r, c in enumerate(index.chunks) if c.kind == "alt" and c.unit_id in index.entries]


def ranker_view(index: Index) -> Index:
    """The index a ranker is fitted on: ``index`` without its document units' question rows (the
    served ranker holds those units back by ``service.ranker.DOC_MARGIN`` instead); ``index``
    itself when it has none."""
    drop = set(index.document_question_rows())
    return index.with_rows([r for r in range(len(index.chunks)) if r not in drop]) if drop else index


def kb_groups(index: Index, size: int = POOL, progress: Callable[[int, int], None] | None = None) -> list[Group]:
    """One training query per stored FAQ alternative question (``faq_alt_rows``): its own vector
    and text, searched with that row left out; its unit is the relevant candidate."""
    rows = faq_alt_rows(index)
    out = []
    for n, r in enumerate(rows, 1):
        pool = index.candidate_pool(index.vectors[r], index.norm_texts[r], size, exclude_row=r)
        unit = index.chunks[r].unit_id
        out.append(Group(pool.x, np.array([u.unit_id == unit for u in pool.units])))
        if progress:
            progress(n, len(rows))
    return out


def shopper_queries(
    queries: Sequence[UnitQuery], synonyms: Mapping[str, Sequence[str]], seed: int = PSEUDO_SEED
) -> list[UnitQuery]:
    """Fragments (``unit_queries(…, "fragment")``) made to read less like the rule's own text, as
    a shopper asks about it: a shorter window (55–85 % of the fragment), the help center's terms
    put in the shoppers' words (``synonyms.yaml`` read backwards: 退款 → 退钱, 70 % of the time),
    and a question's opening and ending around it (请问…怎么算). A verbatim fragment holds every
    one of its bigrams in its unit's row, which no shopper's question does; a ranker fitted on
    fragments alone learns that only."""
    rng = random.Random(seed)
    terms = [(normalize(t), [normalize(x) for x in says if x]) for t, says in synonyms.items()]
    out = []
    for q in queries:
        n = max(PSEUDO_MIN_CHARS, round(len(q.text) * rng.uniform(0.55, 0.85)))
        start = rng.randrange(0, len(q.text) - n + 1) if len(q.text) > n else 0
        text = q.text[start : start + n]
        for term, says in terms:
            if term and says and term in text and rng.random() < 0.7:
                text = text.replace(term, rng.choice(says))
        out.append(UnitQuery(normalize(rng.choice(ASK_OPENINGS) + text + rng.choice(ASK_ENDINGS)), q.unit))
    return out


def _synonyms(index: Index) -> dict[str, tuple[str, ...]]:
    """The synonyms the build serves with: its own resources, else its KB's, else the bundled ones."""
    for root in (index.folder, Path(index.manifest.kb_root) if index.manifest.kb_root else None):
        if root is not None and (root / "resources").is_dir():
            return load_resources(root).synonyms
    return load_resources(BUNDLED_KB).synonyms


def unit_groups(
    answerer: Answerer,
    how: UnitKind = UNIT_QUERIES,
    per_unit: int = UNIT_PER_UNIT,
    weight: float = UNIT_WEIGHT,
    size: int = POOL,
) -> list[Group]:
    """Training queries for the index's document units (clauses, sections), which have no
    alternative questions: pseudo-queries (``indexer.pseudo.unit_queries``; ``shopper``:
    ``shopper_queries`` over its fragments) searched as a shopper's query is
    (``Answerer.candidate_pools``), the unit the relevant candidate, each of weight ``weight``
    (an alternative weighs 1). Without them the ranker only ever sees an FAQ entry win."""
    if how == "shopper":
        queries = shopper_queries(unit_queries(answerer.index, "fragment", per_unit), _synonyms(answerer.index))
    else:
        queries = unit_queries(answerer.index, how, per_unit)
    if not queries:
        return []
    pools = answerer.candidate_pools([q.text for q in queries], size)
    return [
        Group(pool.x, np.array([u.unit_id == q.unit for u in pool.units], dtype=bool), weight)
        for q, pool in zip(queries, pools, strict=True)
    ]


def dev_weight(n_kb: int, n_dev: int, share: float = DEV_SHARE) -> float:
    """Weight of one dev query so that the dev queries together weigh ``share`` × the KB's
    alternatives together; never below 1 (a dev query is worth at least an alternative)."""
    if n_dev < 1:
        raise ValueError(f"n_dev must be ≥ 1, got {n_dev}")
    return max(1.0, share * n_kb / n_dev)


def dev_groups(answerer: Answerer, items: Sequence[EvalItem], size: int = POOL) -> dict[str, Group]:
    """One training query per in-scope dev item without session context, of weight 1
    (``cross_fit_ranker`` gives them ``dev_weight``)."""
    use = [it for it in resolve_labels(items, answerer.index.aliases) if it.in_scope and not it.context]
    pools = answerer.candidate_pools([it.query for it in use], size)
    out = {}
    chunks = answerer.index.chunks
    for it, pool in zip(use, pools, strict=True):
        ranked = [Ranked(u.unit_id, chunks[u.best_chunk].doc_id) for u in pool.units]
        rel = np.array([c.matches(it.relevant) is not None for c in ranked])
        out[it.id] = Group(pool.x, rel)
    return out


def cross_fit_ranker(
    answerer: Answerer,
    items: Sequence[EvalItem],
    kb: list[Group],
    progress: Callable[[int, int], None] | None = None,
    units: Sequence[Group] = (),
    train: Answerer | None = None,
) -> tuple[Ranker, list[ItemResult], dict[str, Any]]:
    """Fit the ranker on KB alternatives + document units' pseudo-queries (``unit_groups``) + dev,
    and run dev so that each item is ranked by a ranker fitted without its fold (the calibration
    then sees honest probabilities). The dev weight balances dev against the alternatives alone.

    Returns the ranker fitted on all of dev, the cross-fitted dev results (in ``items`` order)
    and a summary. Each fold is run by a variant of ``answerer``; ``answerer`` itself is untouched.
    ``train`` (default ``answerer``) searches the dev queries for the fit: ``answerer`` over
    ``ranker_view`` where documents have questions; the rankers then get ``with_doc_margin``.
    """
    dev = dev_groups(train or answerer, items)
    weight = dev_weight(len(kb), len(dev)) if dev else 1.0
    dev = {i: dataclasses.replace(g, weight=weight) for i, g in dev.items()}
    by_id: dict[str, ItemResult] = {}
    done = 0
    for k in range(FOLDS):
        fold_ranker = fit_ranker([*kb, *units, *(g for i, g in dev.items() if _fold(i) != k)])
        fold_answerer = answerer.variant(ranker=with_doc_margin(fold_ranker, answerer.index))
        fold = [it for it in items if _fold(it.id) == k]

        def step(n: int, total: int, base: int = done) -> None:
            if progress:
                progress(base + n, len(items))

        for r in run(fold_answerer, fold, step):
            by_id[r.item.id] = r
        done += len(fold)
    ranker = with_doc_margin(fit_ranker([*kb, *units, *dev.values()]), answerer.index)
    summary = {
        "kb_queries": len(kb),
        "unit_queries": len(units),
        "unit_weight": round(float(units[0].weight), 2) if units else 0.0,
        "dev_queries": len(dev),
        "dev_weight": round(weight, 2),
        "doc_margin": ranker.doc_margin,
        **ranker.meta,
    }
    return ranker, [by_id[it.id] for it in items], summary
