"""``kefu eval beir / suite / traffic``: evaluation on data beyond the KB's own splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from eval.calibrate_cli import calibrate_dev
from eval.cli_common import eval_runtime, print_headline
from eval.dataset import EvalItem
from kb.clikit import console, edge, err_console, settings_of
from kb.errors import ConfigError, KBError


@edge
def beir_cmd(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/test.tsv"),
    as_json: bool = typer.Option(False, "--json"),
    limit: int | None = typer.Option(None, "--limit", help="evaluate at most this many queries"),
    corpus: str = typer.Option(
        "auto", "--corpus", help="faq: each corpus text is a question (an FAQ entry); doc: passages; auto: by length"
    ),
) -> None:
    """Evaluate on any BEIR-layout dataset (temporary index, self-calibrated as `kefu build` does;
    queries without qrels should be handed off)."""
    from eval.beir import run_beir

    s = settings_of(ctx)
    rt = eval_runtime(ctx)
    result = run_beir(folder, rt, s, limit, None if as_json else console, corpus)
    if as_json:
        print(json.dumps(result.metrics["headline"] | {"dataset": str(folder)}, ensure_ascii=False))
        return
    print_headline(result.metrics["headline"], f"kefu eval beir — {folder.name}")


@edge
def suite_cmd(
    ctx: typer.Context,
    folders: list[Path] = typer.Argument(..., help="suite folders, each with kb/, dev.jsonl and test.jsonl"),
    calibrate: bool = typer.Option(
        False, "--calibrate", help="also evaluate after calibrating on the suite's dev split"
    ),
    split: str = typer.Option("test", "--split", help="test (report) or dev (choosing methods)"),
    write: bool = typer.Option(
        True, "--write/--no-write", help="with the test split, keep the results for the eval report"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per suite"),
) -> None:
    """Build each suite's KB as `kefu build` does (zero labels, its own self-calibration), evaluate
    its test split, and print the bare model's figures measured in the same run beside kefu's."""
    from eval.suite import run_suite
    from indexer.encoder import load_encoder
    from indexer.store import write_calibration
    from service.policy import Calibration
    from service.runtime import Runtime
    from service.selfcal import build_calibrator

    s = settings_of(ctx)
    encoder = load_encoder(s)

    def runtime_for(settings: Any) -> Any:
        return Runtime.create(settings, encoder=encoder)

    def on_dev(rt: Any, dev: list[EvalItem]) -> None:
        answerer = rt.answerer(calibration=Calibration())
        cal, _, _ = calibrate_dev(answerer, dev, quiet=True)
        assert answerer.index.folder is not None
        write_calibration(answerer.index.folder, cal.to_json())

    def say(msg: str) -> None:
        if not as_json:
            err_console.print(msg, highlight=False)

    # `kefu eval suite ../shared/foreign/*` also passes the folder's README: skip what is not a suite
    suites = [f for f in folders if f.is_dir()]
    for f in folders:
        if not f.is_dir():
            say(f"skipped {f}: not a suite folder")
    if not suites:
        raise KBError(f"none of {', '.join(map(str, folders))} is a suite folder (kb/, dev.jsonl, test.jsonl)")
    results = []
    for folder in suites:
        r = run_suite(folder, s, runtime_for, on_dev if calibrate else None, say, build_calibrator(s, encoder), split)
        results.append(r)
        if as_json:
            print(json.dumps(r.to_json(), ensure_ascii=False), flush=True)
    if not as_json:
        console.print(suite_table(results, calibrate, split))
    if write and split == "test":
        from eval.report import REPORTS
        from eval.suite import SUITES_FILE

        REPORTS.mkdir(parents=True, exist_ok=True)
        path = REPORTS / SUITES_FILE
        # rows of suites not run this time are kept: the report shows every suite measured last
        kept = json.loads(path.read_text("utf-8")) if path.is_file() else []
        ran = {r.name for r in results}
        rows = [row for row in kept if row.get("suite") not in ran] + [r.to_json() for r in results]
        path.write_text(json.dumps(sorted(rows, key=lambda row: row["suite"]), ensure_ascii=False, indent=1), "utf-8")
        say(f"results kept in {REPORTS / SUITES_FILE} for the eval report (kefu eval report)")


def suite_table(results: list[Any], calibrated: bool, split: str = "test") -> Table:
    """One row per suite: bare model | kefu zero-label (| kefu after dev calibration)."""
    from eval.suite import no_prediction

    table = Table(title=f"kefu eval suite — {split} splits (bare = dense question match, same encoder)")
    cols = [
        "suite",
        "in/out",
        "hit@1 bare→kefu",
        "MRR@10 bare→kefu",
        "R@5 bare→kefu",
        "oracle cov @0.8/@0.9",
        "kefu precision",
        "coverage",
        "OOS handoff",
        "predicted prec/cov",
    ]
    if calibrated:
        cols.append("dev-calibrated hit@1/prec/cov/OOS")
    for c in cols:
        table.add_column(c, justify="left" if c == "suite" else "right")
    for r in results:
        k, b = r.kefu, r.bare
        row = [
            r.name,
            f"{r.n_in}/{r.n_out}",
            f"{b.hit1:.3f}→{k['hit@1']:.3f}",
            f"{b.mrr10:.3f}→{k['mrr@10']:.3f}",
            f"{b.recall5:.3f}→{k['recall@5']:.3f}",
            f"{b.oracle_coverage[0.8]:.3f}/{b.oracle_coverage[0.9]:.3f}",
            f"{k['answered_precision']:.3f}",
            f"{k['coverage']:.3f}",
            f"{k['oos_handoff_recall']:.3f}" if r.n_out else "–",
            f"{r.predicted.get('answered_precision', 0):.2f}/{r.predicted.get('coverage', 0):.2f}"
            if r.predicted
            else no_prediction(r.calibration),
        ]
        if calibrated and r.calibrated:
            c = r.calibrated
            row.append(
                f"{c['hit@1']:.3f}/{c['answered_precision']:.3f}/{c['coverage']:.3f}/{c['oos_handoff_recall']:.3f}"
            )
        table.add_row(*row)
    return table


@edge
def traffic_cmd(
    ctx: typer.Context,
    split: str = typer.Option("dev", "--split", help="dev (choosing methods), test (report) or all"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Real shoppers' messages (labelled JDDC turns, read from ../shared/traffic): answer rate,
    precision, needless handoffs, answers to order-specific and out-of-scope messages, clarify
    quality; with the session's earlier turns (history) and without."""
    from eval.report import REPORTS
    from eval.traffic import TRAFFIC_FILE, load_labels, load_sessions, run_traffic, summarize, traffic_markdown

    if split not in ("dev", "test", "all"):
        raise ConfigError(f"split {split!r} is unknown; allowed: dev, test, all")
    labels = [lab for lab in load_labels() if split == "all" or lab.split == split]
    sessions = load_sessions()
    answerer = eval_runtime(ctx).answerer()
    tables = {}
    for history in (False, True):
        name = f"{split}, {'with' if history else 'without'} history"
        tables[name] = summarize(run_traffic(answerer, labels, sessions, history)).to_json()
    if split == "test":
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / TRAFFIC_FILE).write_text(json.dumps(tables, ensure_ascii=False, indent=1), "utf-8")
    if as_json:
        print(json.dumps(tables, ensure_ascii=False))
        return
    console.print("\n".join(traffic_markdown(tables)), highlight=False, soft_wrap=True)
