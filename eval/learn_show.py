"""What ``kefu learn`` and ``kefu learn tune`` print: the before/after tables and the outcome."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from eval.learn import LearnResult
from eval.learn_guard import Comparison, Figures
from eval.learn_rows import CHECK
from eval.learn_tune import TuneResult
from kb.clikit import console


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _row(label: str, f: Figures | None) -> list[str]:
    if f is None:
        return [label, "–", "–", "–", "–", "–"]
    return [label, f"{f.n_in}/{f.n_out}", _fmt(f.hit1), _fmt(f.precision), _fmt(f.coverage), _fmt(f.oos_recall)]


def _print_comparisons(title: str, comparisons: Sequence[Comparison], sides: tuple[str, str]) -> None:
    if not comparisons:
        return
    table = Table(title=title)
    for col in ("set", "in/out", "hit@1", "answered precision", "coverage", "out-of-scope handoff"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for c in comparisons:
        table.add_row(*_row(f"{c.name}, {sides[0]}", c.before))
        table.add_row(*_row(f"{c.name}, {sides[1]}", c.after))
    console.print(table)


def print_result(r: LearnResult, tolerance: float) -> None:
    if r.nothing_to_do:
        console.print("nothing to learn: no pending decisions, and the served build is of this KB and this model")
        return
    p = r.plan
    skipped = sum(len(c.skipped) for c in p.changes)
    console.print(
        f"{len(p.changes)} decisions: {p.alternatives} alternative questions, {p.examples} labelled examples, "
        f"{p.drafts} drafts ({skipped} messages not added as alternatives; `kefu learn status` says why)",
        highlight=False,
    )
    console.print(r.calibration, highlight=False, soft_wrap=True)
    _print_comparisons(f"before → after (build {r.build_id})", r.comparisons, ("before", "after"))
    if any(x.startswith(CHECK) for x in r.refused):
        took = (
            "; these decisions took more of other entries' messages than they won for their own: "
            + ", ".join(f"{d} ({n} taken)" for d, n in r.pulling)
            if r.pulling
            else ""
        )
        console.print(
            f"the new alternatives cost the other learned messages{took}. `kefu learn --examples-only` applies "
            "the decisions as labelled examples alone (they calibrate, check and tune; no alternatives).",
            highlight=False,
            soft_wrap=True,
        )
    if r.refused and not r.shipped:
        console.print(
            f"[bold red]refused:[/] lost more than {tolerance} on {'; '.join(r.refused)}. The KB files and the served "
            "index are unchanged and the decisions still pending: undo the decision that hurts "
            "(`kefu learn status`), or ship anyway with --force.",
            highlight=False,
        )
    elif r.shipped:
        forced = f" (forced past: {'; '.join(r.refused)})" if r.refused else ""
        console.print(
            f"shipped build {r.build_id}{forced} in {r.seconds:.1f} s; "
            "a running server takes it with POST /admin/reload",
            highlight=False,
        )


def print_tuned(r: TuneResult, tolerance: float) -> None:
    t = r.tuned
    console.print(
        f"tuned on {t.examples} examples, {t.epochs} epochs in {t.seconds:.0f} s "
        f"(loss {' → '.join(f'{x:.3f}' for x in t.epoch_loss)})",
        highlight=False,
    )
    console.print(f"current model: {r.calibration[0]}", highlight=False, soft_wrap=True)
    console.print(f"tuned model: {r.calibration[1]}", highlight=False, soft_wrap=True)
    _print_comparisons("current model → tuned model", r.comparisons, ("current model", "tuned model"))
    if not r.kept:
        why = f"lost more than {tolerance} on {'; '.join(r.refused)}" if r.comparisons else "; ".join(r.refused)
        console.print(
            f"[bold red]not kept:[/] {why}; the tuned model was removed, nothing else changed (learn from more "
            "messages first, give a labelled test set with --data, or keep it anyway with --force)",
            highlight=False,
        )
        return
    forced = f" (forced past: {'; '.join(r.refused)})" if r.forced else ""
    console.print(
        f"kept{forced}: {t.folder}\nto serve it: KEFU_MODEL={t.folder} KEFU_MODEL_PROFILE={r.profile} kefu learn "
        "(rebuilds and recalibrates the KB with it, as measured above), then restart the server with the same "
        "settings; every shop behind the server shares the model",
        highlight=False,
        soft_wrap=True,
    )
