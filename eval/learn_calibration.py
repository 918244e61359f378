"""The labelled recalibration of ``kefu learn``: cross-fitted in folds, each item without its own alternative rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.calibrate import calibrate
from eval.dataset import EvalItem, stable_hash
from eval.progress import Say, Ticker
from eval.ranker_training import faq_alt_rows, kb_groups, unit_groups
from eval.runner import ItemResult, run, summarize
from indexer.index import Index
from kb.errors import ConfigError
from kb.loadstate import question_key
from service.answerer import Answerer
from service.policy import Calibration
from service.ranker import Ranker, fit_ranker, with_doc_margin

FOLDS = 5
# A labelled calibration needs this many in-scope and out-of-scope examples; with fewer the
# build self-calibrates. Without out-of-scope examples the fit would never hand anything off.
MIN_IN_SCOPE = 20
MIN_OUT_OF_SCOPE = 10
MIN_RANKER_ALTS = 50  # alternatives before a ranker fitted on this KB is tried against the shipped one


@dataclass(frozen=True)
class Recalibration:
    calibration: Calibration
    how: str  # one line for people
    report: dict[str, Any]  # calibrate()'s report, stored next to the build as calibration_report.json


def without_rows(index: Index, rows: set[int]) -> Index:
    """``index`` as if the vector rows ``rows`` were not in it (a flat copy; the original is kept)."""
    return index.with_rows([i for i in range(len(index.chunks)) if i not in rows]) if rows else index


def stable_ids(items: Sequence[EvalItem]) -> list[EvalItem]:
    """``items`` named after their message (and its occurrence), so every fold drawn from an id,
    here and in ``calibrate``'s cross-validation, is the same on every run."""
    seen: dict[str, int] = {}
    out = []
    for it in items:
        key = stable_hash(question_key(it.query))[:16]
        seen[key] = seen.get(key, 0) + 1
        out.append(dataclasses.replace(it, id=f"m{key}.{seen[key]}"))
    return out


def message_fold(item: EvalItem) -> int:
    """The item's fold, by its message: the same text always in one fold (its alternative row is
    left out there). A learned example's id carries its decision's random id: folds drawn from it
    made each run's thresholds differ (the same learning round twice: dev coverage 0.151 and 0.303)."""
    return int(stable_hash(question_key(item.query)), 16) % FOLDS


def message_folds(index: Index, items: Sequence[EvalItem]) -> list[tuple[list[EvalItem], set[int]]]:
    """``items`` in their ``message_fold``s, each fold with the alternative rows of ``index`` that
    are its messages' own text (left out when the fold is asked)."""
    rows_of: dict[str, list[int]] = {}
    for r, c in enumerate(index.chunks):
        if c.kind == "alt":
            rows_of.setdefault(question_key(c.text), []).append(r)
    by_fold: list[list[EvalItem]] = [[] for _ in range(FOLDS)]
    for it in items:
        by_fold[message_fold(it)].append(it)
    return [(fold, {r for it in fold for r in rows_of.get(question_key(it.query), ())}) for fold in by_fold]


def recalibrate(
    base: Answerer,
    items: Sequence[EvalItem],
    precision: float = 0.95,
    oos_recall: float = 0.95,
    say: Say | None = None,
) -> Recalibration | str:
    """A labelled calibration of ``base``'s index from ``items`` (learned dev examples and any
    labelled dev set), or the reason there is none. Each item is asked in its fold's index, without
    the alternative rows that are its own text; the ranker is the shipped KB-agnostic one or one
    fitted on this KB's alternatives, whichever ranks the items better in that cross-fitting."""
    from service.selfcal import general_ranker

    log = say or (lambda _m: None)
    n_in = sum(it.in_scope for it in items)
    n_out = sum(it.reason == "low_confidence" for it in items)
    if n_in < MIN_IN_SCOPE or n_out < MIN_OUT_OF_SCOPE:
        return (
            f"{n_in} in-scope and {n_out} out-of-scope labelled dev examples; a labelled calibration "
            f"needs {MIN_IN_SCOPE} and {MIN_OUT_OF_SCOPE}"
        )
    items = stable_ids(items)
    index = base.index
    folds = message_folds(index, items)
    by_fold, held = [f for f, _ in folds], [h for _, h in folds]
    subs = [without_rows(index, h) for h in held]
    candidates: list[tuple[str, Ranker | None, list[Ranker | None]]] = []
    general = general_ranker()
    if general is not None:
        candidates.append(("shipped ranker", general, [general] * FOLDS))
    if len(faq_alt_rows(index)) >= MIN_RANKER_ALTS:
        groups = kb_groups(index, progress=Ticker(log, "ranker: KB alternatives"))
        # the KB's clauses and sections have no alternatives: their pseudo-queries, as `kefu eval
        # calibrate` fits them, or this ranker would only ever see an FAQ entry win
        units = unit_groups(base)
        try:
            full = with_doc_margin(fit_ranker([*groups, *units]), index)
            faq_rows = faq_alt_rows(index)  # the rows kb_groups made its queries from
            per: list[Ranker | None] = [
                with_doc_margin(
                    fit_ranker([*(g for g, r in zip(groups, faq_rows, strict=True) if r not in h), *units]), index
                )
                for h in held
            ]
            candidates.append(("ranker fitted on the KB's alternatives", full, per))
        except ConfigError as exc:
            log(f"no ranker fitted on this KB: {exc}")
    if not candidates:
        candidates.append(("no ranker", None, [None] * FOLDS))
    best: tuple[float, str, Ranker | None, list[ItemResult]] | None = None
    for name, full_ranker, per_fold in candidates:
        by_id: dict[str, ItemResult] = {}
        tick = Ticker(log, f"calibration items, {name}")
        done = 0
        for k in range(FOLDS):
            r_k = per_fold[k]
            cal = Calibration(ranker=r_k.to_json()) if r_k is not None else Calibration()
            answerer = base.variant(index=subs[k], calibration=cal)
            for res in run(answerer, by_fold[k]):
                by_id[res.item.id] = res
                done += 1
                tick(done, len(items))
        results = [by_id[it.id] for it in items]
        hit1 = float(summarize(results, 0.0)["retrieval"]["hit@1"])  # of the in-scope examples, as reports count it
        log(f"{name}: cross-fitted hit@1 {hit1:.3f} on {n_in} labelled dev examples")
        if best is None or hit1 > best[0]:
            best = (hit1, name, full_ranker, results)
    assert best is not None
    hit1, name, ranker, results = best
    try:
        cal, report = calibrate(results, precision, oos_recall, ranker=ranker)
    except ConfigError as exc:
        return str(exc)
    cal = dataclasses.replace(cal, origin="labelled", kb_hash=index.manifest.kb_hash)
    report["learned"] = {"ranker": name, "cross_fitted_hit@1": round(hit1, 4), "items": len(items)}
    op = report["operating_point_cv"]
    how = (
        f"calibration: labelled on {n_in} + {n_out} dev examples ({name}); dev cross-validated precision "
        f"{op['answered_precision']:.3f}, coverage {op['coverage']:.3f}, "
        f"out-of-scope handoff {op['oos_handoff_recall']:.3f}"
    )
    return Recalibration(cal, how, report)
