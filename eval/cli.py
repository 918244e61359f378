"""``kefu eval …``: run, calibrate, report, beir."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from eval.calibrate import PRECISION_SE_MARGIN
from eval.dataset import EvalItem, load_split
from eval.runner import RunResult, evaluate
from kb.clikit import console, edge, err_console, progress_display, settings_of
from kb.errors import ConfigError, KBError

eval_app = typer.Typer(help="Offline evaluation, calibration and reports.", no_args_is_help=True)


def _evaluate(answerer: Any, items: list[EvalItem], label: str, quiet: bool) -> RunResult:
    if quiet:
        return evaluate(answerer, items)
    with progress_display() as bar:
        task = bar.add_task(label, total=len(items))
        return evaluate(answerer, items, lambda d, t: bar.update(task, completed=d))


DATA_OPTION = typer.Option(
    None, "--data", help="folder with your own dev.jsonl / test.jsonl (KEFU_EVAL_DIR; default the bundled eval/data)"
)


def _split(ctx: typer.Context, name: str, data: Path | None) -> list[EvalItem]:
    """A labelled split from --data, else KEFU_EVAL_DIR, else the bundled set."""
    folder = data or settings_of(ctx).eval_dir
    return load_split(name, folder) if folder is not None else load_split(name)


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
    split: str = typer.Option("test", "--split", help="dev, test, all, or the rules slice: rules_dev, rules_test"),
    data: Path | None = DATA_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object of metrics"),
) -> None:
    """Evaluate retrieval and decisions on a labelled split."""
    rt = _runtime(ctx)
    result = _evaluate(rt.answerer(), _split(ctx, split, data), f"eval {split}", as_json)
    if as_json:
        print(json.dumps(result.metrics["headline"] | {"split": split}, ensure_ascii=False))
        return
    _print_headline(result.metrics["headline"], f"kefu eval — {split}")


def _fit_ranker(answerer: Any, items: list[EvalItem], quiet: bool, units: bool = True):  # type: ignore[no-untyped-def]
    """The ranker cross-fitted on dev, the KB's alternatives and (``units``) its document units'
    pseudo-queries (``unit_groups``; none in a KB without clauses or sections)."""
    from eval.calibrate import cross_fit_ranker, kb_groups, unit_groups

    if quiet:
        unit = unit_groups(answerer) if units else []
        return cross_fit_ranker(answerer, items, kb_groups(answerer.index), units=unit)
    with progress_display() as bar:
        t_kb = bar.add_task("ranker: KB alternatives", total=None)
        kb = kb_groups(answerer.index, progress=lambda d, t: bar.update(t_kb, completed=d, total=t))
        t_units = bar.add_task("ranker: document units", total=None)
        unit = unit_groups(answerer) if units else []
        bar.update(t_units, completed=len(unit), total=len(unit))
        t_dev = bar.add_task("ranker: dev, cross-fitted", total=len(items))
        return cross_fit_ranker(answerer, items, kb, lambda d, t: bar.update(t_dev, completed=d), units=unit)


def _calibrate_dev(  # type: ignore[no-untyped-def]
    answerer: Any,
    items: list[EvalItem],
    quiet: bool,
    ranker: bool = True,
    precision: float = 0.95,
    oos_recall: float = 0.95,
    margin_se: float = PRECISION_SE_MARGIN,
    scope: bool = True,
    units: bool = True,
):
    """(calibration, report, ranker or None): the ranker cross-fitted on dev when asked and
    possible, then the confidence model and thresholds on the dev results."""
    from eval.calibrate import calibrate
    from eval.runner import summarize

    fitted = results = None
    if ranker:
        try:
            fitted, results, summary = _fit_ranker(answerer, items, quiet, units)
        except ConfigError as exc:  # a KB without alternatives and a small dev split: go on without
            err_console.print(f"[yellow]ranker not fitted:[/] {exc}; calibrating without it", highlight=False)
    if results is None:
        results = _evaluate(answerer, items, "dev", quiet).results
    cal, report = calibrate(results, precision, oos_recall, margin_se, ranker=fitted, scope=scope)
    # provenance: fitted on labelled queries, for this KB only (a build of another KB will not inherit it)
    cal = dataclasses.replace(cal, origin="labelled", kb_hash=answerer.index.manifest.kb_hash)
    if fitted is not None:
        retrieval = summarize(results, 0.0)["retrieval"]
        report["ranker"] = {**summary, "dev_cross_fitted": {k: retrieval[k] for k in ("hit@1", "mrr@10", "recall@5")}}
    return cal, report, fitted


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
    rt = _runtime(ctx)
    # Start from no calibration: the fit must not depend on the one it replaces (which may also
    # be one this kefu cannot load), so a refit reproduces the same file.
    answerer = rt.answerer(calibration=Calibration())
    cal, report, fitted = _calibrate_dev(
        answerer, _split(ctx, "dev", data), as_json, ranker, precision, oos_recall, margin_se, scope, units
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
        console.print(
            f"ranker: fitted on {summary['dev_queries']} dev queries, {summary['kb_queries']} KB alternatives and "
            f"{summary.get('unit_queries', 0)} document-unit pseudo-queries; "
            f"dev with cross-fitted rankers: hit@1 {cv['hit@1']:.3f}, MRR@10 {cv['mrr@10']:.3f}, "
            f"recall@5 {cv['recall@5']:.3f}"
        )


@eval_app.command("confusions")
@edge
def confusions_cmd(
    ctx: typer.Context,
    top: int = typer.Option(20, "--top", min=1, help="pairs of entries to show"),
    examples: int = typer.Option(2, "--examples", min=0, help="alternative questions shown per direction"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Which entries the assistant confuses, from the KB alone: every alternative question asked
    (left out of the index), and where it lands when not at its own entry."""
    from eval.confusions import kb_confusions

    answerer = _runtime(ctx).answerer()
    if as_json:
        rep = kb_confusions(answerer)
    else:
        with progress_display() as bar:
            task = bar.add_task("alternatives", total=None)
            rep = kb_confusions(answerer, lambda d, t: bar.update(task, completed=d, total=t))
    pairs = rep.pairs()[:top]
    by_way = {(c.entry, c.other): c.questions for c in rep.confusions}
    if as_json:
        out = {
            "alternatives": rep.alternatives,
            "alt_hit@1": round(rep.accuracy, 4),
            "pairs": [
                {
                    "a": a,
                    "b": b,
                    "a_to_b": ab,
                    "b_to_a": ba,
                    "a_to_b_examples": list(by_way.get((a, b), ())[:examples]),
                    "b_to_a_examples": list(by_way.get((b, a), ())[:examples]),
                }
                for a, b, ab, ba in pairs
            ],
        }
        print(json.dumps(out, ensure_ascii=False))
        return
    table = Table(
        title=f"entries confused most ({rep.alternatives - rep.right} of {rep.alternatives} alternatives elsewhere)"
    )
    for col in ("entry a", "entry b", "a→b", "b→a", "for example"):
        table.add_column(col, justify="right" if "→" in col else "left")
    for a, b, ab, ba in pairs:
        shown = [*by_way.get((a, b), ())[:examples], *by_way.get((b, a), ())[:examples]]
        table.add_row(a, b, str(ab), str(ba), " / ".join(shown))
    console.print(table)
    console.print(
        f"alternative questions answered with their own entry: {rep.accuracy:.3f}. A pair high on this "
        "list is either two entries that answer the same question (merge them; `replaces:` keeps the "
        "old id working) or alternatives that do not say what tells them apart."
    )


def rules_slice(ctx: typer.Context, answerer: Any, data: Path | None, quiet: bool) -> dict[str, dict[str, Any]]:
    """The rules slice's metrics by split (``rules_dev``, ``rules_test``), for the splits the eval
    data folder has (a folder of your own may have none)."""
    from eval.dataset import DATA_DIR, RULES_SPLITS

    folder = data or settings_of(ctx).eval_dir or DATA_DIR
    return {
        name.removeprefix("rules_"): _evaluate(answerer, _split(ctx, name, data), name, quiet).metrics
        for name in RULES_SPLITS
        if (folder / f"{name}.jsonl").is_file()
    }


@eval_app.command("report")
@edge
def report_cmd(
    ctx: typer.Context,
    out: Path | None = typer.Option(None, "--out", help="folder (default eval/reports)"),
    ablations: bool = typer.Option(True, "--ablations/--no-ablations"),
    data: Path | None = DATA_OPTION,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate dev and test, run ablations, write latest.md / latest.json with plots."""
    from eval.ablations import run_ablations
    from eval.dataset import independence, phrasing_overlap
    from eval.report import REPORTS, write_report
    from eval.runner import topic_switches
    from kb.loader import load_kb

    s = settings_of(ctx)
    rt = _runtime(ctx)
    answerer = rt.answerer()
    dev_items, test_items = _split(ctx, "dev", data), _split(ctx, "test", data)
    dev = _evaluate(answerer, dev_items, "dev", as_json)
    test = _evaluate(answerer, test_items, "test", as_json)
    folder = answerer.index.folder
    cal_path = folder / "calibration_report.json" if folder else None
    if cal_path is not None and cal_path.is_file():
        cal_report = json.loads(cal_path.read_text("utf-8"))
    else:  # a build that took the shipped calibration: refit on dev for the curve (not stored)
        cal = answerer.calibration
        cal_report = _calibrate_dev(
            answerer, dev_items, as_json, ranker=answerer.ranker is not None, scope=cal.scope_at is not None
        )[1]
    abl = run_ablations(answerer, dev_items) if ablations else []
    kb = load_kb(s.kb_dir)
    ind: dict[str, Any] = dict(independence(dev_items + test_items, kb))
    kb_texts = [q for e in kb.entries for q in (e.question, *e.alt_questions)]
    ind["kb_phrasings"] = phrasing_overlap(
        kb_texts, {"dev": [i.query for i in dev_items], "test": [i.query for i in test_items]}
    )
    switches = {"test": topic_switches(answerer, test.results), "dev": topic_switches(answerer, dev.results)}
    rules = rules_slice(ctx, answerer, data, as_json)
    manifest = answerer.index.manifest.model_dump()
    path = write_report(test.metrics, dev.metrics, cal_report, abl, ind, manifest, out or REPORTS, switches, rules)
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
    corpus: str = typer.Option(
        "auto", "--corpus", help="faq: each corpus text is a question (an FAQ entry); doc: passages; auto: by length"
    ),
) -> None:
    """Evaluate on any BEIR-layout dataset (temporary index, self-calibrated as `kefu build` does;
    queries without qrels should be handed off)."""
    from eval.beir import run_beir

    s = settings_of(ctx)
    rt = _runtime(ctx)
    result = run_beir(folder, rt, s, limit, None if as_json else console, corpus)
    if as_json:
        print(json.dumps(result.metrics["headline"] | {"dataset": str(folder)}, ensure_ascii=False))
        return
    _print_headline(result.metrics["headline"], f"kefu eval beir — {folder.name}")


@eval_app.command("suite")
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
        cal, _, _ = _calibrate_dev(answerer, dev, quiet=True)
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
            else r.calibration,
        ]
        if calibrated and r.calibrated:
            c = r.calibrated
            row.append(
                f"{c['hit@1']:.3f}/{c['answered_precision']:.3f}/{c['coverage']:.3f}/{c['oos_handoff_recall']:.3f}"
            )
        table.add_row(*row)
    return table


@eval_app.command("traffic")
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
        raise KBError(f"split {split!r} is unknown; allowed: dev, test, all")
    labels = [lab for lab in load_labels() if split == "all" or lab.split == split]
    sessions = load_sessions()
    answerer = _runtime(ctx).answerer()
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
