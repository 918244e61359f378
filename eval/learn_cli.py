"""``kefu learn``: resolve unserved messages and tickets, then apply the decisions (kb/learned.py,
eval/learn.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from eval.learn_guard import DEFAULT_TOLERANCE, Checks
from eval.learn_rows import CHECK
from eval.learn_show import print_result, print_tuned
from eval.learn_stage import kb_folder
from kb.clikit import console, edge, err_console, settings_of
from kb.errors import ConfigError
from kb.learn_journal import Action, Decision, last_run, states
from kb.learned import decide, ticket_messages, undo
from kb.settings import BUNDLED_KB, Settings

learn_app = typer.Typer(
    help="Learn from handoffs: attach messages to entries, mark them out of scope, draft new entries; "
    "`kefu learn` alone applies the decisions, rebuilds, recalibrates and ships only if nothing got worse.",
    invoke_without_command=True,
)

MESSAGE = typer.Option(None, "--message", "-m", help="a shopper's message (repeat for several)")
TICKET = typer.Option(None, "--ticket", help="a handoff ticket id (its masked message)")
FILE = typer.Option(None, "--file", help="a text file of messages, one a line")
WHO = typer.Option(None, "--who", help="who decides (default: the user name)")


@learn_app.callback()
@edge
def learn_cmd(
    ctx: typer.Context,
    tolerance: float = typer.Option(
        DEFAULT_TOLERANCE, "--tolerance", help="largest loss of hit@1, precision or out-of-scope recall allowed"
    ),
    force: bool = typer.Option(False, "--force", help="ship even if the checks lose more than the tolerance"),
    precision: float = typer.Option(0.95, "--precision", help="answered-precision target of the recalibration"),
    oos_recall: float = typer.Option(0.95, "--oos-recall", help="out-of-scope handoff-recall target"),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="labelled set (dev.jsonl, test.jsonl) checked too; default KEFU_EVAL_DIR, or the "
        "bundled set for the bundled KB",
    ),
    who: str | None = WHO,
    examples_only: bool = typer.Option(
        False,
        "--examples-only",
        help="attached messages become labelled examples only, no alternative questions (they calibrate, "
        "check and tune): for a round refused because its new alternatives took other entries' messages",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Apply the pending decisions: rebuild (incremental), recalibrate, compare before/after on the
    learned test examples and the labelled test set, and on the learned dev examples with and without
    the new alternatives, and ship only if none lost more than the tolerance. A running server picks
    the new build up with POST /admin/reload."""
    if ctx.invoked_subcommand is not None:
        return
    from eval.dataset import load_split
    from eval.learn import learn
    from indexer.encoder import load_encoder

    s = settings_of(ctx)
    folder = _labelled_folder(s, data)
    dev = load_split("dev", folder) if folder is not None else []
    test = load_split("test", folder) if folder is not None else []

    def say(msg: str) -> None:
        if not as_json:
            err_console.print(msg, highlight=False, soft_wrap=True)

    checks = Checks(tolerance, force, precision, oos_recall, dev, test)
    result = learn(s, load_encoder(s), checks, who=who, say=say, alternatives=not examples_only)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print_result(result, tolerance)
    if result.refused:
        raise typer.Exit(1)


def _labelled_folder(s: Settings, data: Path | None) -> Path | None:
    if data is not None:
        return data
    if s.eval_dir is not None:
        return s.eval_dir
    if kb_folder(Path(s.kb_dir)).resolve() == BUNDLED_KB.resolve():
        from eval.dataset import DATA_DIR

        return DATA_DIR
    return None


def _messages(message: list[str] | None, file: Path | None, ticket: str | None, s: Settings) -> list[str]:
    out = list(message or [])
    if file is not None:
        out += [ln.strip() for ln in file.read_text("utf-8").splitlines() if ln.strip()]
    if ticket is not None:
        if out:
            raise ConfigError("give either --ticket or messages (--message/--file), not both")
        out = list(ticket_messages(s.tickets_path, ticket))
    return out


def _decide(
    ctx: typer.Context,
    action: Action,
    entry: str | None,
    message: list[str] | None,
    file: Path | None,
    ticket: str | None,
    who: str | None,
    category: str | None = None,
) -> None:
    from kb.loader import load_kb

    s = settings_of(ctx)
    kb = load_kb(s.kb_dir, log_changes=False)
    d = decide(kb, action, _messages(message, file, ticket, s), entry=entry, ticket=ticket, category=category, who=who)
    _print_decision(d)


def _print_decision(d: Decision) -> None:
    target = f" → {d.entry}" if d.entry else ""
    console.print(
        f"decision {d.id}: {d.action}{target}, {len(d.messages)} messages ({d.who}, {d.at}); "
        "pending until `kefu learn`",
        highlight=False,
    )


@learn_app.command("attach")
@edge
def attach_cmd(
    ctx: typer.Context,
    entry: str = typer.Argument(..., help="the entry that answers the messages (its id)"),
    message: list[str] | None = MESSAGE,
    file: Path | None = FILE,
    ticket: str | None = TICKET,
    who: str | None = WHO,
) -> None:
    """The entry answers these messages: they become its alternative questions and labelled examples."""
    _decide(ctx, "attach", entry, message, file, ticket, who)


@learn_app.command("confirm")
@edge
def confirm_cmd(
    ctx: typer.Context,
    entry: str = typer.Argument(..., help="the entry kefu answered these messages with, rightly (its id)"),
    message: list[str] | None = MESSAGE,
    file: Path | None = FILE,
    who: str | None = WHO,
) -> None:
    """Kefu answered these rightly: labelled examples only (no alternatives), so the checks and the
    recalibration also see the traffic kefu already serves."""
    _decide(ctx, "confirm", entry, message, file, None, who)


@learn_app.command("out-of-scope")
@edge
def out_of_scope_cmd(
    ctx: typer.Context,
    message: list[str] | None = MESSAGE,
    file: Path | None = FILE,
    ticket: str | None = TICKET,
    who: str | None = WHO,
) -> None:
    """The KB should not answer these: they become labelled handoff examples."""
    _decide(ctx, "out_of_scope", None, message, file, ticket, who)


@learn_app.command("new-entry")
@edge
def new_entry_cmd(
    ctx: typer.Context,
    message: list[str] | None = MESSAGE,
    file: Path | None = FILE,
    ticket: str | None = TICKET,
    category: str | None = typer.Option(None, "--category", help="category of the draft entry"),
    who: str | None = WHO,
) -> None:
    """The KB needs an entry for these: a draft stub in drafts/ (listed by `kefu kb check`, not built)."""
    _decide(ctx, "new_entry", None, message, file, ticket, who, category)


@learn_app.command("dismiss")
@edge
def dismiss_cmd(
    ctx: typer.Context,
    message: list[str] | None = MESSAGE,
    file: Path | None = FILE,
    ticket: str | None = TICKET,
    who: str | None = WHO,
) -> None:
    """Nothing to learn from these (recorded, so the item is not shown again)."""
    _decide(ctx, "dismiss", None, message, file, ticket, who)


@learn_app.command("undo")
@edge
def undo_cmd(
    ctx: typer.Context,
    decision: str = typer.Argument(..., help="decision id (kefu learn status)"),
    who: str | None = WHO,
) -> None:
    """Revert a decision: withdrawn if pending; if applied, its alternatives, examples and draft are
    removed from the KB files (run `kefu learn` to rebuild)."""
    from kb.loader import load_kb

    s = settings_of(ctx)
    state = undo(load_kb(s.kb_dir, log_changes=False), decision, who)
    if state.change is None:
        console.print(f"decision {decision} withdrawn (it was not applied yet)")
        return
    c = state.change
    console.print(
        f"decision {decision} undone: removed {len(c.alternatives)} alternative questions, {len(c.examples)} "
        f"examples{', its draft' if c.draft else ''}; run `kefu learn` to rebuild",
        highlight=False,
    )


@learn_app.command("tune")
@edge
def tune_cmd(
    ctx: typer.Context,
    epochs: int = typer.Option(3, "--epochs", min=1, help="passes over the learned examples"),
    out: Path | None = typer.Option(None, "--out", help="folder for the tuned model (default: <model cache>/tuned)"),
    tolerance: float = typer.Option(
        DEFAULT_TOLERANCE, "--tolerance", help="largest loss of hit@1, precision or out-of-scope recall allowed"
    ),
    force: bool = typer.Option(False, "--force", help="keep the tuned model even if it loses more than the tolerance"),
    data: Path | None = typer.Option(
        None, "--data", help="labelled set tuned on (dev) and checked (test) too; default as for `kefu learn`"
    ),
    who: str | None = WHO,
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Tune the model on the learned examples, build and calibrate the KB with it, compare it with
    the build served now on the learned and labelled test examples, and keep the tuned model only
    if it loses nothing beyond the tolerance. It serves once KEFU_MODEL names it (then run
    `kefu learn` and restart the server)."""
    from eval.dataset import load_split
    from eval.learn_tune import tune_kb
    from indexer.encoder import load_encoder
    from indexer.tune import TuneOptions

    s = settings_of(ctx)
    folder = _labelled_folder(s, data)

    def say(msg: str) -> None:
        if not as_json:
            err_console.print(msg, highlight=False, soft_wrap=True)

    dev, test = (load_split("dev", folder), load_split("test", folder)) if folder is not None else ([], [])
    checks = Checks(tolerance, force, labelled_dev=dev, labelled_test=test)
    result = tune_kb(s, load_encoder(s), checks, options=TuneOptions(epochs=epochs), out_root=out, who=who, say=say)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print_tuned(result, tolerance)
    if not result.kept:
        raise typer.Exit(1)


@learn_app.command("status")
@edge
def status_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(30, "--limit", min=1, help="most recent decisions shown"),
) -> None:
    """Every decision with its status (pending, applied, undone), who made it and when."""
    s = settings_of(ctx)
    rows = sorted(states(kb_folder(Path(s.kb_dir))).values(), key=lambda x: x.decision.at, reverse=True)[:limit]
    if as_json:
        out = [
            {**x.decision.to_json(), "status": x.status, "change": x.change.to_json() if x.change else None}
            for x in rows
        ]
        print(json.dumps(out, ensure_ascii=False))
        return
    last = last_run(kb_folder(Path(s.kb_dir)))
    pulling = set(last.get("pulling", ())) if last and last["event"] == "refused" else set()
    table = Table(title=f"decisions ({len(rows)} most recent)")
    for col in ("id", "status", "action", "entry", "messages", "who", "at", "not added as alternatives"):
        table.add_column(col)
    for x in rows:
        d = x.decision
        skipped = "; ".join(f"{m[:20]}: {why}" for m, why in (x.change.skipped if x.change else ())[:3])
        table.add_row(
            d.id,
            x.status + (" (its rows took others')" if x.status == "pending" and d.id in pulling else ""),
            d.action,
            d.entry or "",
            d.messages[0][:30] + (f" (+{len(d.messages) - 1})" if len(d.messages) > 1 else ""),
            d.who,
            d.at,
            skipped,
        )
    console.print(table)
    if last and last["event"] == "refused":
        losses = list(last.get("losses", ()))
        way = " or as labelled examples only (`--examples-only`)" if any(x.startswith(CHECK) for x in losses) else ""
        console.print(
            f"the last `kefu learn` ({last.get('at', '?')}, {last.get('who', '?')}) was refused: {'; '.join(losses)}. "
            f"Undo a decision that hurts, or ship with `kefu learn --force`{way}.",
            highlight=False,
            soft_wrap=True,
        )
