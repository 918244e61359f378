"""``kefu kb check``: validate a knowledge base and print its counts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import typer
from rich.table import Table

from kb.cites import NumberMismatch, number_mismatches
from kb.clikit import console, edge, settings_of
from kb.errors import KBError
from kb.learn_files import list_drafts
from kb.loader import REPORT_LABELS, load_kb, skip_reason
from kb.schema import ImportReport
from kb.sidecar import SIDECAR

kb_app = typer.Typer(help="Validate and inspect the knowledge base.", no_args_is_help=True)
SHOWN_WARNINGS = 20  # the rest are in --json; an export can have thousands


@kb_app.command("check")
@edge
def check(
    ctx: typer.Context,
    path: Path | None = typer.Argument(None, help="KB folder or file (default: KEFU_KB_DIR)"),
    as_json: bool = typer.Option(False, "--json", help="print counts as one JSON object"),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="curated-KB rules for tables too: refuse non-slug or duplicate ids, repeated questions, incomplete rows",
    ),
) -> None:
    """Validate everything; print counts by category and what an imported table needed changed,
    or every problem as file:line: message."""
    s = settings_of(ctx)
    target = path or s.kb_dir
    if not target.expanduser().exists():  # say how this command takes a path: load_kb's hint is --kb
        how = "pass an existing folder or file: `kefu kb check PATH`"
        if path is None:
            how = f"set KEFU_KB_DIR (or `kefu --kb`) to an existing folder or file, or {how}"
        raise KBError(f"knowledge base {target} does not exist; {how}")
    # Without --strict the default applies: strict for the bundled KB, lenient for anything else.
    kb = load_kb(target, strict=True if strict else None, log_changes=False)
    cats = kb.categories()
    doc_cats: dict[str, int] = {}
    for d in kb.documents:
        doc_cats[d.category] = doc_cats.get(d.category, 0) + 1
    by_category = {
        c: {"entries": cats.get(c, 0), "documents": doc_cats.get(c, 0)} for c in sorted(set(cats) | set(doc_cats))
    }
    chars = sum(len(e.question) + sum(map(len, e.alt_questions)) + len(e.answer) for e in kb.entries)
    chars += sum(len(re.sub(r"\s", "", d.body)) for d in kb.documents)
    mismatches = number_mismatches(kb)
    alts = sum(len(e.alt_questions) for e in kb.entries)
    # what the chat says in the KB's own words (resources/greetings.yaml), by kind
    replies = {k: v for k, v in dataclasses.asdict(kb.resources.replies).items() if v is not None}
    summary = {
        "entries": len(kb.entries),
        "documents": len(kb.documents),
        "categories": len(by_category),  # as the table lists them: of entries and of documents
        "alt_questions": alts,
        "characters": chars,
        "content_hash": kb.content_hash[:16],
        "by_category": by_category,
        "cites": sum(len(e.rules) for e in kb.entries),
        "entries_citing": sum(1 for e in kb.entries if e.rules),
        "unit_questions": sum(len(qs) for d in kb.documents for _, qs in d.questions),
        "units_with_questions": sum(len(d.questions) for d in kb.documents),
        "number_mismatches": [m.to_json() for m in mismatches],
        "import": kb.report.to_json(),
        "drafts": [dataclasses.asdict(d) for d in list_drafts(kb.root)],
        "skipped_files": list(kb.skipped_files),
        "replies": replies,
        "examples": list(kb.resources.examples),
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    table = Table(title=f"knowledge base {kb.root}")
    table.add_column("category")
    table.add_column("FAQ entries", justify="right")
    table.add_column("documents", justify="right")
    for c, v in by_category.items():
        table.add_row(c, str(v["entries"]), str(v["documents"]))
    table.add_row("[bold]total", f"[bold]{len(kb.entries)}", f"[bold]{len(kb.documents)}")
    console.print(table)
    console.print(
        f"OK: {_n(len(kb.entries), 'entry', 'entries')}, {_n(alts, 'alternative question')}, "
        f"{_n(len(kb.documents), 'document')}, {_n(chars, 'character')}, "
        f"{_n(len(by_category), 'category', 'categories')}; hash {summary['content_hash']}"
    )
    if summary["cites"]:
        console.print(f"{summary['entries_citing']} entries cite {summary['cites']} rules clauses", highlight=False)
    if summary["unit_questions"]:
        console.print(
            f"{summary['units_with_questions']} document units (clauses, sections) have "
            f"{summary['unit_questions']} questions ({SIDECAR})",
            highlight=False,
        )
    if replies or kb.resources.examples:
        own = ", ".join(replies) or "none"
        asks = "、".join(kb.resources.examples) or "picked from the KB"
        console.print(f"the chat's own replies: {own}; it suggests asking: {asks}", highlight=False)
    _print_mismatches(mismatches)
    if kb.report.rows_read:
        _print_report(kb.report)
    _print_drafts(summary["drafts"])  # type: ignore[arg-type]
    _print_skipped(kb.skipped_files)


def _print_skipped(skipped: tuple[str, ...]) -> None:
    """Files of a type kefu does not read: a warning each (they may be content the user expects served)."""
    if not skipped:
        return
    n = len(skipped)
    console.print(f"{n} file{'s' if n != 1 else ''} skipped, of types kefu does not read:", highlight=False)
    for name in skipped[:SHOWN_WARNINGS]:
        console.print(f"warning: {name}: {skip_reason(name)}", highlight=False, soft_wrap=True, markup=False)
    if len(skipped) > SHOWN_WARNINGS:
        console.print(f"… and {len(skipped) - SHOWN_WARNINGS} more (all of them with --json)")


def _print_mismatches(mismatches: list[NumberMismatch]) -> None:
    """Answers whose numbers differ from the clause they cite: a heuristic, so warnings."""
    if not mismatches:
        return
    console.print(f"{len(mismatches)} answers state numbers their cited clause does not:", highlight=False)
    for m in mismatches[:SHOWN_WARNINGS]:
        console.print(f"warning: {m}", highlight=False, soft_wrap=True, markup=False)
    if len(mismatches) > SHOWN_WARNINGS:
        console.print(f"… and {len(mismatches) - SHOWN_WARNINGS} more (all of them with --json)")


def _print_drafts(drafts: list[dict[str, object]]) -> None:
    """Draft entries (`kefu learn new-entry`): not built until filled in and moved out of drafts/."""
    if not drafts:
        return
    console.print(f"{len(drafts)} draft entries in drafts/ (not built; fill in and move into the KB):", highlight=False)
    for d in drafts:
        console.print(f"  {d['path']}: {d['question']} ({d['messages']} messages)", highlight=False, markup=False)


def _print_report(report: ImportReport) -> None:
    """What loading the tables changed, one count a line, then the first warnings."""
    counts = report.counts()
    console.print(f"imported {counts['rows_read']:,} table rows; changed on the way in:", highlight=False)
    for key, label in REPORT_LABELS.items():
        line = f"  {counts[key]:>6,}  {label}"
        if key == "rows_skipped" and counts[key]:
            line += ": " + ", ".join(f"{n} {why}" for why, n in sorted(report.skipped_by_reason().items()))
        console.print(line, highlight=False)
    for note in report.notes[:SHOWN_WARNINGS]:
        console.print(f"warning: {note}", highlight=False, soft_wrap=True, markup=False)
    if len(report.notes) > SHOWN_WARNINGS:
        console.print(f"… and {len(report.notes) - SHOWN_WARNINGS} more warnings (all of them with --json)")


def _n(count: int, one: str, many: str = "") -> str:
    """``1 document``, ``2 documents``, ``1,024 characters``."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"
