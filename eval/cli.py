"""``kefu eval …``: run, calibrate, report, beir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from eval.calibrate import PRECISION_SE_MARGIN
from eval.dataset import EvalItem, load_split
from eval.runner import RunResult, evaluate
from kb.clikit import console, edge, settings_of

eval_app = typer.Typer(help="Offline evaluation, calibration and reports.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _evaluate(answerer: Any, items: list[EvalItem], label: str, quiet: bool) -> RunResult:
    if quiet:
        return evaluate(answerer, items)
    with _progress() as bar:
        task = bar.add_task(label, total=len(items))
        return evaluate(answerer, items, lambda d, t: bar.update(task, completed=d))


def _runtime(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from service.runtime import Runtime

    s = settings_of(ctx)
    # Evaluation must not fill the real handoff queue with test tickets.
    return Runtime.create(s.with_overrides(tickets_db=s.data_dir / "eval-tickets.db"))


def _print_headline(h: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in h.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)


@eval_app.command("run")
@edge
def run_cmd(
    ctx: typer.Context,
    split: str = typer.Option("test", "--split", help="dev, test or all"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object of metrics"),
) -> None:
    """Evaluate retrieval and decisions on a labelled split."""
    rt = _runtime(ctx)
    result = _evaluate(rt.answerer(), load_split(split), f"eval {split}", as_json)
    if as_json:
        print(json.dumps(result.metrics["headline"] | {"split": split}, ensure_ascii=False))
        return
    _print_headline(result.metrics["headline"], f"kefu eval — {split}")


@eval_app.command("calibrate")
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
    ship: bool = typer.Option(False, "--ship", help="also write <kb>/calibration.json, used by fresh builds"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit thresholds (and the confidence model) on dev; store them in the current index manifest."""
    from eval.calibrate import calibrate
    from indexer.store import write_calibration

    rt = _runtime(ctx)
    answerer = rt.answerer()
    result = _evaluate(answerer, load_split("dev"), "dev", as_json)
    cal, report = calibrate(result.results, precision, oos_recall, margin_se)
    folder = answerer.index.folder
    assert folder is not None
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
        print(json.dumps({**op, "build": folder.name}, ensure_ascii=False))
        return
    console.print(
        f"calibrated build {folder.name}: answer at confidence ≥ {op['answer_at']:.3f}, "
        f"clarify ≥ {op['clarify_at']:.3f}\n"
        f"dev (cross-validated): coverage {op['coverage']:.3f}, answered precision {op['answered_precision']:.3f}, "
        f"out-of-scope handoff recall {op['oos_handoff_recall']:.3f}, clarify rate {op['clarify_rate']:.3f}"
    )


@eval_app.command("report")
@edge
def report_cmd(
    ctx: typer.Context,
    out: Path | None = typer.Option(None, "--out", help="folder (default eval/reports)"),
    ablations: bool = typer.Option(True, "--ablations/--no-ablations"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate dev and test, run ablations, write latest.md / latest.json with plots."""
    from eval.ablations import run_ablations
    from eval.dataset import independence
    from eval.report import REPORTS, write_report
    from kb.loader import load_kb

    s = settings_of(ctx)
    rt = _runtime(ctx)
    answerer = rt.answerer()
    dev_items, test_items = load_split("dev"), load_split("test")
    dev = _evaluate(answerer, dev_items, "dev", as_json)
    test = _evaluate(answerer, test_items, "test", as_json)
    folder = answerer.index.folder
    cal_path = folder / "calibration_report.json" if folder else None
    if cal_path is not None and cal_path.is_file():
        cal_report = json.loads(cal_path.read_text("utf-8"))
    else:
        from eval.calibrate import calibrate

        cal_report = calibrate(dev.results)[1]
    abl = run_ablations(answerer, dev_items) if ablations else []
    ind = independence(dev_items + test_items, load_kb(s.kb_dir))
    path = write_report(
        test.metrics, dev.metrics, cal_report, abl, ind, answerer.index.manifest.model_dump(), out or REPORTS
    )
    if as_json:
        print(json.dumps(test.metrics["headline"] | {"split": "test", "report": str(path)}, ensure_ascii=False))
        return
    _print_headline(test.metrics["headline"], "kefu eval — test")
    console.print(f"report written to {path}")


@eval_app.command("beir")
@edge
def beir_cmd(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/test.tsv"),
    as_json: bool = typer.Option(False, "--json"),
    limit: int | None = typer.Option(None, "--limit", help="evaluate at most this many queries"),
) -> None:
    """Evaluate on any BEIR-layout dataset (temporary index; queries without qrels should be handed off)."""
    from eval.beir import run_beir

    s = settings_of(ctx)
    rt = _runtime(ctx)
    result = run_beir(folder, rt, s, limit, None if as_json else console)
    if as_json:
        print(json.dumps(result.metrics["headline"] | {"dataset": str(folder)}, ensure_ascii=False))
        return
    _print_headline(result.metrics["headline"], f"kefu eval beir — {folder.name}")
