"""``kefu eval run / confusions / report``: the current build measured on its labelled splits and its KB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from eval.calibrate_cli import calibrate_dev
from eval.cli_common import DATA_OPTION, eval_runtime, evaluate_items, labelled_split, print_headline
from eval.dataset import EvalItem
from kb.clikit import console, edge, progress_display, settings_of


@edge
def run_cmd(
    ctx: typer.Context,
    split: str = typer.Option("test", "--split", help="dev, test, all, rules_dev, rules_test or unseen"),
    data: Path | None = DATA_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object of metrics"),
) -> None:
    """Evaluate retrieval and decisions on a labelled split."""
    rt = eval_runtime(ctx)
    result = evaluate_items(rt.answerer(), labelled_split(ctx, split, data), f"eval {split}", as_json)
    if as_json:
        print(json.dumps(result.metrics["headline"] | {"split": split}, ensure_ascii=False))
        return
    print_headline(result.metrics["headline"], f"kefu eval — {split}")


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

    answerer = eval_runtime(ctx).answerer()
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


def has_split(ctx: typer.Context, data: Path | None, name: str) -> bool:
    """Whether the eval data folder (``--data``, KEFU_EVAL_DIR, else the bundled one) holds split
    ``name``: a folder of your own may have no rules slice or unseen split."""
    from eval.dataset import DATA_DIR

    return ((data or settings_of(ctx).eval_dir or DATA_DIR) / f"{name}.jsonl").is_file()


def rules_items(ctx: typer.Context, data: Path | None) -> dict[str, list[EvalItem]]:
    """The rules slice's items by split (``rules_dev``, ``rules_test``), for the splits the eval
    data folder has."""
    from eval.dataset import RULES_SPLITS

    return {name: labelled_split(ctx, name, data) for name in RULES_SPLITS if has_split(ctx, data, name)}


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
    from eval.dataset import UNSEEN_SPLIT, independence, phrasing_overlap
    from eval.report import REPORTS, write_report
    from eval.runner import topic_switches
    from kb.loader import load_kb

    s = settings_of(ctx)
    rt = eval_runtime(ctx)
    answerer = rt.answerer()
    dev_items, test_items = labelled_split(ctx, "dev", data), labelled_split(ctx, "test", data)
    dev = evaluate_items(answerer, dev_items, "dev", as_json)
    test = evaluate_items(answerer, test_items, "test", as_json)
    folder = answerer.index.folder
    cal_path = folder / "calibration_report.json" if folder else None
    if cal_path is not None and cal_path.is_file():
        cal_report = json.loads(cal_path.read_text("utf-8"))
    else:  # a build that took the shipped calibration: refit on dev for the curve (not stored)
        cal = answerer.calibration
        refit = calibrate_dev(
            answerer, dev_items, as_json, ranker=answerer.ranker is not None, scope=cal.scope_at is not None
        )[1]
        cal_report = {**refit, "refit": True}
    abl = run_ablations(answerer, dev_items) if ablations else []
    kb = load_kb(s.kb_dir)
    ind: dict[str, Any] = dict(independence(dev_items + test_items, kb))
    kb_texts = [q for e in kb.entries for q in (e.question, *e.alt_questions)]
    ind["kb_phrasings"] = phrasing_overlap(
        kb_texts, {"dev": [i.query for i in dev_items], "test": [i.query for i in test_items]}
    )
    unit_texts = [q for d in kb.documents for _, qs in d.questions for q in qs]
    by_split = rules_items(ctx, data)
    if unit_texts and by_split:  # the clauses' questions against the rules slice, the same way
        ind["unit_phrasings"] = phrasing_overlap(unit_texts, {n: [i.query for i in its] for n, its in by_split.items()})
    switches = {"test": topic_switches(answerer, test.results), "dev": topic_switches(answerer, dev.results)}
    rules: dict[str, dict[str, Any]] = {}  # the rules slice's metrics by split ("dev", "test")
    for name, its in by_split.items():
        rules[name.removeprefix("rules_")] = evaluate_items(answerer, its, name, as_json).metrics
    unseen = None  # the unseen split's headline, where the eval data has it
    if has_split(ctx, data, UNSEEN_SPLIT):
        its = labelled_split(ctx, UNSEEN_SPLIT, data)
        unseen = evaluate_items(answerer, its, UNSEEN_SPLIT, as_json).metrics["headline"]
    manifest = answerer.index.manifest.model_dump()
    path = write_report(
        test.metrics, dev.metrics, cal_report, abl, ind, manifest, out or REPORTS, switches, rules, unseen
    )
    if as_json:
        print(json.dumps(test.metrics["headline"] | {"split": "test", "report": str(path)}, ensure_ascii=False))
        return
    print_headline(test.metrics["headline"], "kefu eval — test")
    console.print(f"report written to {path}")
