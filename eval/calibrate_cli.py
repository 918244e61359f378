"""``kefu eval calibrate``: fit the ranker, confidence model and thresholds on the dev split."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

from eval.calibrate import OOS_SE_MARGIN, PRECISION_SE_MARGIN
from eval.cli_common import DATA_OPTION, eval_runtime, evaluate_items, labelled_split
from eval.dataset import EvalItem
from kb.clikit import console, edge, err_console, progress_display
from kb.errors import ConfigError


def fit_ranker(answerer: Any, items: list[EvalItem], quiet: bool, units: bool = True):  # type: ignore[no-untyped-def]
    """The ranker cross-fitted on dev, the KB's alternatives and (``units``) its document units'
    pseudo-queries (``unit_groups``; none in a KB without clauses or sections)."""
    from eval.ranker_training import cross_fit_ranker, kb_groups, ranker_view, unit_groups

    view = ranker_view(answerer.index)  # fitted as if documents had no questions of their own
    train = answerer if view is answerer.index else answerer.variant(index=view)
    if quiet:
        unit = unit_groups(train) if units else []
        return cross_fit_ranker(answerer, items, kb_groups(view), units=unit, train=train)
    with progress_display() as bar:
        t_kb = bar.add_task("ranker: KB alternatives", total=None)
        kb = kb_groups(view, progress=lambda d, t: bar.update(t_kb, completed=d, total=t))
        t_units = bar.add_task("ranker: document units", total=None)
        unit = unit_groups(train) if units else []
        bar.update(t_units, completed=len(unit), total=len(unit))
        t_dev = bar.add_task("ranker: dev, cross-fitted", total=len(items))
        return cross_fit_ranker(
            answerer, items, kb, lambda d, t: bar.update(t_dev, completed=d), units=unit, train=train
        )


def calibrate_dev(  # type: ignore[no-untyped-def]
    answerer: Any,
    items: list[EvalItem],
    quiet: bool,
    ranker: bool = True,
    precision: float = 0.95,
    oos_recall: float = 0.95,
    margin_se: float = PRECISION_SE_MARGIN,
    scope: bool = True,
    units: bool = True,
    oos_margin_se: float = OOS_SE_MARGIN,
):
    """(calibration, report, ranker or None): the ranker when asked (fitted on dev, cross-fitted,
    or the shipped KB-agnostic one where that ranks dev better), then the confidence model and
    thresholds on the dev results."""
    from eval.calibrate import calibrate
    from eval.runner import summarize

    fitted = results = None
    summary: dict[str, Any] = {}
    if ranker:
        try:
            fitted, results, summary = fit_ranker(answerer, items, quiet, units)
        except ConfigError as exc:  # a KB without alternatives and a small dev split
            err_console.print(f"[yellow]ranker not fitted:[/] {exc}", highlight=False)
        fitted, results, summary = _against_shipped(answerer, items, quiet, fitted, results, summary)
    if results is None:
        results = evaluate_items(answerer, items, "dev", quiet).results
    cal, report = calibrate(
        results, precision, oos_recall, margin_se, ranker=fitted, scope=scope, oos_margin_se=oos_margin_se
    )
    # provenance: fitted on labelled queries, for this KB only (a build of another KB will not inherit it)
    cal = dataclasses.replace(cal, origin="labelled", kb_hash=answerer.index.manifest.kb_hash)
    if fitted is not None:
        retrieval = summarize(results, 0.0)["retrieval"]
        report["ranker"] = {**summary, "dev_cross_fitted": {k: retrieval[k] for k in ("hit@1", "mrr@10", "recall@5")}}
    return cal, report, fitted


def _against_shipped(  # type: ignore[no-untyped-def]
    answerer: Any, items: list[EvalItem], quiet: bool, fitted: Any, results: Any, summary: dict[str, Any]
):
    """(ranker, dev results, summary): the fitted ranker, or the shipped KB-agnostic one (as a
    self-calibrated build of this KB serves it) when that ranks the in-scope dev queries first
    at least as often as the fitted one does cross-fitted, or when none could be fitted. A few
    hundred labelled queries fit a ranker worse than the one fitted on many KBs' queries
    (stripped bundled KB, half of dev: hit@1 0.561 on the other half against 0.684)."""
    from eval.runner import summarize
    from service.selfcal import shipped_ranker

    shipped = shipped_ranker(answerer.index)
    if shipped is None:
        if fitted is None:
            err_console.print("[yellow]no shipped ranker either:[/] calibrating without one", highlight=False)
        return fitted, results, summary
    ship_results = evaluate_items(answerer.variant(ranker=shipped), items, "dev", quiet).results

    def hit1(rs: Any) -> float:  # of the in-scope queries, as the report counts it
        return float(summarize(rs, 0.0)["retrieval"].get("hit@1", 0.0))

    ship_hit = hit1(ship_results)
    fit_hit = hit1(results) if fitted is not None else None
    if fit_hit is not None and fit_hit > ship_hit:
        return fitted, results, {**summary, "kept": "fitted", "shipped_dev_hit@1": round(ship_hit, 4)}
    why = "ranks dev no better" if fit_hit is not None else "none could be fitted"
    err_console.print(f"ranker: the shipped KB-agnostic one kept (a ranker fitted on dev {why})", highlight=False)
    kept = {
        "kept": "shipped",
        "dev_queries": summary.get("dev_queries", 0),
        "kb_queries": summary.get("kb_queries", 0),
        "unit_queries": summary.get("unit_queries", 0),
        "fitted_dev_hit@1": None if fit_hit is None else round(fit_hit, 4),
    }
    return shipped, ship_results, kept


@edge
def calibrate_cmd(
    ctx: typer.Context,
    precision: float = typer.Option(0.95, "--precision", help="answered-precision target"),
    oos_recall: float = typer.Option(0.95, "--oos-recall", help="out-of-scope handoff-recall target"),
    margin_se: float = typer.Option(
        PRECISION_SE_MARGIN,
        "--margin-se",
        help="aim this many standard errors above the precision target (0 = exactly at it)",
    ),
    oos_margin_se: float = typer.Option(
        OOS_SE_MARGIN,
        "--oos-margin-se",
        help="aim this many standard errors above the out-of-scope handoff target (0 = exactly at it)",
    ),
    ship: bool = typer.Option(False, "--ship", help="also write <kb>/calibration.json, used by fresh builds"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="fit and print the operating point, write nothing (for experiments)"
    ),
    data: Path | None = DATA_OPTION,
    ranker: bool = typer.Option(
        True, "--ranker/--no-ranker", help="fit the learned ranker too (on dev and the KB's alternative questions)"
    ),
    scope: bool = typer.Option(
        True,
        "--scope/--no-scope",
        help="below the answer threshold, clarify queries that look in scope instead of handing them off",
    ),
    units: bool = typer.Option(
        True,
        "--unit-queries/--no-unit-queries",
        help="also fit the ranker on pseudo-queries for the KB's rules clauses and article sections",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit thresholds (and the confidence model, and the ranker) on dev; store them in the
    current index manifest."""
    from indexer.store import write_calibration
    from service.policy import Calibration

    if dry_run and ship:
        raise ConfigError("--dry-run writes nothing, so it cannot --ship; drop one of them")
    rt = eval_runtime(ctx)
    # Start from no calibration: the fit must not depend on the one it replaces (which may also
    # be one this kefu cannot load), so a refit reproduces the same file.
    answerer = rt.answerer(calibration=Calibration())
    cal, report, fitted = calibrate_dev(
        answerer,
        labelled_split(ctx, "dev", data),
        as_json,
        ranker,
        precision,
        oos_recall,
        margin_se,
        scope,
        units,
        oos_margin_se,
    )
    folder = answerer.index.folder
    assert folder is not None
    # An experiment's fit must not replace the index's calibration: the service (and `make eval`)
    # would then run on it.
    if not dry_run:
        write_calibration(folder, cal.to_json())
        (folder / "calibration_report.json").write_text(json.dumps(report, ensure_ascii=False), "utf-8")
    if ship:
        from indexer.build import SHIPPED_CALIBRATION

        manifest = answerer.index.manifest
        shipped = {"model_id": manifest.model_id, "kb_hash": manifest.kb_hash, "calibration": cal.to_json()}
        (Path(manifest.kb_root) / SHIPPED_CALIBRATION).write_text(
            json.dumps(shipped, ensure_ascii=False, indent=1), "utf-8"
        )
    op = report["operating_point_cv"]
    if as_json:
        print(
            json.dumps(
                {**op, "build": folder.name, "ranker": report.get("ranker"), "written": not dry_run}, ensure_ascii=False
            )
        )
        return
    below = (
        f"below it, clarify when the query looks in scope (scope ≥ {op['scope_at']:.3f}), else hand off"
        if op.get("scope_at") is not None
        else f"clarify ≥ {op['clarify_at']:.3f}"
    )
    verb = "fitted (dry run, nothing written) for build" if dry_run else "calibrated build"
    console.print(
        f"{verb} {folder.name}: answer at confidence ≥ {op['answer_at']:.3f}; {below}\n"
        f"dev (cross-validated): coverage {op['coverage']:.3f}, answered precision {op['answered_precision']:.3f}, "
        f"out-of-scope handoff recall {op['oos_handoff_recall']:.3f}, clarify rate {op['clarify_rate']:.3f}, "
        f"in-scope handoff rate {op['in_scope_handoff_rate']:.3f}"
    )
    if fitted is not None:
        summary = report["ranker"]
        cv = summary["dev_cross_fitted"]
        if summary.get("kept") == "shipped":
            fit = summary.get("fitted_dev_hit@1")
            console.print(
                f"ranker: the shipped KB-agnostic one (dev hit@1 {cv['hit@1']:.3f}, MRR@10 {cv['mrr@10']:.3f}, "
                f"recall@5 {cv['recall@5']:.3f}; "
                + ("none could be fitted)" if fit is None else f"one fitted on dev ranked it {fit:.3f}, cross-fitted)")
            )
        else:
            console.print(
                f"ranker: fitted on {summary['dev_queries']} dev queries, {summary['kb_queries']} KB alternatives "
                f"and {summary.get('unit_queries', 0)} document-unit pseudo-queries; "
                f"dev with cross-fitted rankers: hit@1 {cv['hit@1']:.3f}, MRR@10 {cv['mrr@10']:.3f}, "
                f"recall@5 {cv['recall@5']:.3f}"
            )
