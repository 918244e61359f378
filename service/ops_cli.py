"""``kefu gaps`` and ``kefu stats``: the operator's loop without the console (service/gaps.py,
service/stats.py; the same numbers as ``/admin/gaps``, ``/admin/stats`` and ``/console``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.table import Table

from kb.clikit import console, edge, err_console, progress_display, settings_of
from kb.errors import ConfigError
from kb.learn_journal import Action, Decision
from kb.settings import Settings
from service.gaps import Gap, GapReport
from service.gaps_unserved import ABANDON_S
from service.stats import HANDOFF_REASONS, TOP_GAPS, Counts, StatsReport, parse_since

gaps_app = typer.Typer(
    help="The questions kefu could not serve, clustered by meaning; resolve a cluster to teach the KB.",
    invoke_without_command=True,
)

SINCE = typer.Option("7d", "--since", help="how far back: 30m, 24h, 7d, 2w, or a date (2026-12-01)")
ABANDON = typer.Option(
    ABANDON_S / 60, "--abandon-minutes", min=1.0, help="a clarify not followed by an answer this soon was abandoned"
)


def _stores(s: Settings):  # type: ignore[no-untyped-def]
    from service.tickets import AnswerLog, FeedbackStore

    return AnswerLog(s.tickets_path), FeedbackStore(s.tickets_path)


def gap_report(s: Settings, since: float, now: float, limit: int | None, abandon_s: float) -> GapReport:
    """Load the model and the served index, read the unserved messages, cluster them (progress on stderr)."""
    from indexer.encoder import load_encoder  # at call time: tests swap the model
    from indexer.store import IndexStore
    from service.gaps import GapFinder
    from service.gaps_unserved import decided_keys, read_unserved

    log, feedback = _stores(s)
    messages = read_unserved(log, feedback, since, now, abandon_s)
    encoder = load_encoder(s)
    index = IndexStore(s.index_home, s.keep_builds).load_current(encoder.model_id)
    root = Path(index.manifest.kb_root)
    decided = decided_keys(root) if root.is_dir() else set()
    with progress_display() as bar:
        task = bar.add_task("encoding messages", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return GapFinder(encoder).report(
            index, messages, decided=decided, since=since, until=now, limit=limit, progress=tick
        )


def _when(t: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(t))


def _kinds(g: Gap) -> str:
    short = {"low_confidence": "low conf", "abandoned_clarify": "abandoned", "voted_down": "👎"}
    return ", ".join(f"{short.get(k, k)} {n}" for k, n in g.kinds.items())


def print_gaps(r: GapReport, title: str = "gaps") -> None:
    table = Table(title=f"{title} ({len(r.gaps)} of {r.clusters} clusters)")
    for col in ("gap", "size", "seen", "kinds", "examples (masked)", "nearest entries"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for g in r.gaps:
        table.add_row(
            g.id,
            f"{g.size} ({g.texts} texts)" if g.texts != g.size else str(g.size),
            f"{_when(g.first_seen)} → {_when(g.last_seen)}",
            _kinds(g),
            "\n".join(g.examples),
            "\n".join(f"{n.id} {n.score:.3f}" for n in g.nearest),
        )
    console.print(table)


@gaps_app.callback()
@edge
def gaps_cmd(
    ctx: typer.Context,
    since: str = SINCE,
    limit: int = typer.Option(20, "--limit", min=1, help="largest clusters shown"),
    abandon: float = ABANDON,
    as_json: bool = typer.Option(False, "--json", help="the report as one JSON object"),
) -> None:
    """Low-confidence handoffs, abandoned clarifies and 👎 answers (rule handoffs such as needs_order
    left out), clustered by meaning, largest first, with the nearest KB entries. Messages an
    operator already decided are left out."""
    if ctx.invoked_subcommand is not None:
        return
    s = settings_of(ctx)
    now = time.time()
    r = gap_report(s, parse_since(since, now), now, limit, abandon * 60)
    if as_json:
        print(json.dumps(r.to_json(), ensure_ascii=False))
        return
    console.print(
        f"{r.messages} unserved messages since {since} ({r.decided} already decided), {r.clusters} clusters "
        f"(merged at cosine ≥ {r.threshold:.3f} with a shared character pair)",
        highlight=False,
    )
    if r.gaps:
        print_gaps(r)
        console.print(
            "resolve one: kefu gaps resolve GAP --attach ENTRY | --out-of-scope | --new-entry | --dismiss; "
            "then `kefu learn` applies the decisions",
            highlight=False,
            soft_wrap=True,
        )


@gaps_app.command("resolve")
@edge
def resolve_cmd(
    ctx: typer.Context,
    gap: str = typer.Argument(..., help="a gap's id (kefu gaps), or a ticket's (kefu handoffs list)"),
    attach: str | None = typer.Option(
        None, "--attach", help="what answers them: an FAQ entry's id, or a clause's (rules-seven-day-return.5)"
    ),
    out_of_scope: bool = typer.Option(False, "--out-of-scope", help="the KB should not answer them: hand off"),
    new_entry: bool = typer.Option(False, "--new-entry", help="the KB needs an entry: a draft in drafts/"),
    dismiss: bool = typer.Option(False, "--dismiss", help="nothing to learn (recorded, not shown again)"),
    category: str | None = typer.Option(None, "--category", help="with --new-entry: the draft's category"),
    since: str = SINCE,
    abandon: float = ABANDON,
    who: str | None = typer.Option(None, "--who", help="who decides (default: the user name)"),
) -> None:
    """Decide on one gap or ticket in the served build's KB (recorded, pending until `kefu learn`)."""
    from indexer.index import Index
    from indexer.store import IndexStore
    from service.gaps import find
    from service.gaps_resolve import resolve, resolve_ticket, served_kb

    chosen: list[tuple[Action, bool]] = [
        ("attach", attach is not None),
        ("out_of_scope", out_of_scope),
        ("new_entry", new_entry),
        ("dismiss", dismiss),
    ]
    actions = [a for a, on in chosen if on]
    if len(actions) != 1:
        raise ConfigError("give exactly one of --attach ENTRY, --out-of-scope, --new-entry, --dismiss")
    if category is not None and actions[0] != "new_entry":
        raise ConfigError("--category goes with --new-entry only")
    s = settings_of(ctx)
    manifest = Index.read_manifest(IndexStore(s.index_home, s.keep_builds).current_path())
    if gap.startswith("T"):  # a ticket: its message, no clustering (and no model)
        kb = served_kb(s, manifest)
        d = resolve_ticket(kb, s.tickets_path, gap, actions[0], entry=attach, category=category, who=who)
        _print_decision(d, f"ticket {gap}")
        return
    now = time.time()
    g = find(gap_report(s, parse_since(since, now), now, None, abandon * 60), gap)
    d = resolve(served_kb(s, manifest), actions[0], g.messages, entry=attach, category=category, who=who)
    _print_decision(d, f"gap {g.id}")


def _print_decision(d: Decision, what: str) -> None:
    target = f" → {d.entry}" if d.entry else ""
    console.print(
        f"{what}: decision {d.id}, {d.action}{target}, {len(d.messages)} messages ({d.who}, {d.at}); "
        "pending until `kefu learn` (`kefu learn undo " + d.id + "` reverts it)",
        highlight=False,
        soft_wrap=True,
    )


# --- kefu stats -------------------------------------------------------------------------------------------------
def stats_of(
    s: Settings, since: float, now: float, gaps: int, abandon_s: float = ABANDON_S, shop: str | None = None
) -> StatsReport:
    """The report; with ``shop``, of that shop's answers, with its build's calibration and no gaps."""
    from indexer.folder import Manifest
    from indexer.index import Index
    from indexer.store import IndexStore
    from kb.errors import IndexStateError
    from service.stats import shop_manifest, stats_report

    log, feedback = _stores(s)
    if shop is not None:
        from indexer.vectorstore import check_shop_id
        from service.shops import Shops

        return stats_report(log, feedback, shop_manifest(Shops(s), check_shop_id(shop)), since, now, None, shop)
    manifest: Manifest | None
    try:
        manifest = Index.read_manifest(IndexStore(s.index_home, s.keep_builds).current_path())
    except IndexStateError:
        manifest = None
    top = gap_report(s, since, now, gaps, abandon_s) if gaps and manifest is not None else None
    return stats_report(log, feedback, manifest, since, now, top)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _summary(c: Counts) -> str:
    r = c.rates()
    reasons = ", ".join(f"{k} {_pct(v)}" for k, v in c.handoff_rates().items())
    return (
        f"{c.answers} answers: answer {_pct(r['answer'])} · clarify {_pct(r['clarify'])} · handoff {_pct(r['handoff'])}"
        + (f" ({reasons})" if reasons else "")
        + f" · greeting or closing {_pct(r['greeting'])}"
        + f" · 👍 {c.up} 👎 {c.down} (👎 {_pct(r['down'])} of votes; {_pct(r['vote'])} of answers voted)"
    )


@edge
def stats(
    ctx: typer.Context,
    since: str = SINCE,
    gaps: int = typer.Option(TOP_GAPS, "--gaps", min=0, help="largest gaps listed (0: skip them and the model)"),
    shop: str | None = typer.Option(
        None, "--shop", help="only the answers asked in this shop, with its build's calibration (no gaps)"
    ),
    as_json: bool = typer.Option(False, "--json", help="the report as one JSON object"),
) -> None:
    """Per day: answer, clarify, handoff (by reason) and greeting rates, 👍/👎; the unserved messages,
    the largest gaps, and where the served calibration comes from with the precision it promises."""
    s = settings_of(ctx)
    now = time.time()
    r = stats_of(s, parse_since(since, now), now, gaps, shop=shop)
    if as_json:
        print(json.dumps(r.to_json(), ensure_ascii=False))
        return
    print_stats(r, since)


def print_stats(r: StatsReport, since: str) -> None:
    cal = r.calibration
    whose = f"shop {r.shop}, build" if r.shop is not None else "build"
    if cal is not None:
        console.print(f"{whose} {cal.build_id}: {cal.line}", highlight=False, soft_wrap=True)
    elif r.shop is not None:
        err_console.print(f"shop {r.shop}: no calibration (not registered, or its build unreadable)", highlight=False)
    else:
        err_console.print("no build is served yet: `kefu build`", highlight=False)
    asked = f" in shop {r.shop}" if r.shop is not None else ""
    console.print(f"since {since}{asked}: {_summary(r.total)}", highlight=False, soft_wrap=True)
    u = r.unserved
    console.print(
        f"unserved: {u.get('low_confidence', 0)} low-confidence handoffs, {u.get('abandoned_clarify', 0)} "
        f"abandoned clarifies, {u.get('voted_down', 0)} voted down (`kefu gaps` clusters them)",
        highlight=False,
    )
    table = Table(title="per day")
    reasons = [x for x in HANDOFF_REASONS if r.total.handoff_reasons.get(x)]
    reasons += sorted(set(r.total.handoff_reasons) - set(reasons))
    for col in ("day", "answers", "answer", "clarify", "handoff", *reasons, "greeting", "👍", "👎"):
        table.add_column(col, justify="left" if col == "day" else "right")
    cell: Callable[[Counts, str], str] = lambda c, k: _pct(c.rates()[k])  # noqa: E731
    for d in r.days:
        c = d.counts
        hr = c.handoff_rates()
        table.add_row(
            d.day,
            str(c.answers),
            cell(c, "answer"),
            cell(c, "clarify"),
            cell(c, "handoff"),
            *(_pct(hr.get(x)) if c.answers else "–" for x in reasons),
            cell(c, "greeting"),
            str(c.up),
            str(c.down),
        )
    console.print(table)
    if r.gaps is not None and r.gaps.gaps:
        print_gaps(r.gaps, "top gaps")
