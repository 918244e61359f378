"""Helpers shared by the ``kefu eval`` commands: labelled splits, the eval runtime, progress, headlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from eval.dataset import EvalItem, load_split
from eval.runner import RunResult, evaluate
from kb.clikit import console, progress_display, settings_of


def evaluate_items(answerer: Any, items: list[EvalItem], label: str, quiet: bool) -> RunResult:
    if quiet:
        return evaluate(answerer, items)
    with progress_display() as bar:
        task = bar.add_task(label, total=len(items))
        return evaluate(answerer, items, lambda d, t: bar.update(task, completed=d))


DATA_OPTION = typer.Option(
    None, "--data", help="folder with your own dev.jsonl / test.jsonl (KEFU_EVAL_DIR; default the bundled eval/data)"
)


def labelled_split(ctx: typer.Context, name: str, data: Path | None) -> list[EvalItem]:
    """A labelled split from --data, else KEFU_EVAL_DIR, else the bundled set."""
    folder = data or settings_of(ctx).eval_dir
    return load_split(name, folder) if folder is not None else load_split(name)


def eval_runtime(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from service.runtime import Runtime

    s = settings_of(ctx)
    # Evaluation must not fill the real handoff queue with test tickets.
    return Runtime.create(s.with_overrides(tickets_db=s.data_dir / "eval-tickets.db"))


def print_headline(h: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in h.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
