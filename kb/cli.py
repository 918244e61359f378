"""``kefu kb check``: validate a knowledge base and print its counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.table import Table

from kb.clikit import console, edge, settings_of
from kb.loader import load_kb

kb_app = typer.Typer(help="Validate and inspect the knowledge base.", no_args_is_help=True)


@kb_app.command("check")
@edge
def check(
    ctx: typer.Context,
    path: Path | None = typer.Argument(None, help="KB folder or file (default: KEFU_KB_DIR)"),
    as_json: bool = typer.Option(False, "--json", help="print counts as one JSON object"),
) -> None:
    """Validate everything; print counts by category, or every problem as file:line: message."""
    s = settings_of(ctx)
    kb = load_kb(path or s.kb_dir)
    cats = kb.categories()
    doc_cats: dict[str, int] = {}
    for d in kb.documents:
        doc_cats[d.category] = doc_cats.get(d.category, 0) + 1
    chars = sum(len(e.question) + sum(map(len, e.alt_questions)) + len(e.answer) for e in kb.entries)
    chars += sum(len(re.sub(r"\s", "", d.body)) for d in kb.documents)
    summary = {
        "entries": len(kb.entries),
        "documents": len(kb.documents),
        "categories": len(cats),
        "alt_questions": sum(len(e.alt_questions) for e in kb.entries),
        "characters": chars,
        "content_hash": kb.content_hash[:16],
        "by_category": {
            c: {"entries": cats.get(c, 0), "documents": doc_cats.get(c, 0)} for c in sorted(set(cats) | set(doc_cats))
        },
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    table = Table(title=f"knowledge base {kb.root}")
    table.add_column("category")
    table.add_column("FAQ entries", justify="right")
    table.add_column("documents", justify="right")
    for c, v in summary["by_category"].items():  # type: ignore[attr-defined]
        table.add_row(c, str(v["entries"]), str(v["documents"]))
    table.add_row("[bold]total", f"[bold]{len(kb.entries)}", f"[bold]{len(kb.documents)}")
    console.print(table)
    console.print(
        f"OK: {len(kb.entries)} entries, {summary['alt_questions']} alternative questions, "
        f"{len(kb.documents)} documents, {chars:,} characters, {len(cats)} categories; hash {summary['content_hash']}"
    )
