"""``kefu build``, ``kefu ask``, ``kefu chat``, ``kefu serve`` and ``kefu handoffs list``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kb.clauses import clause_label
from kb.clikit import console, edge, err_console, progress_display, settings_of
from kb.errors import ConfigError, InputError, KefuError
from kb.settings import MAX_TOP_K, Settings
from service.schemas import Answer, AnswerItem, AnswerRequest, HistoryTurn, describe_invalid

handoffs_app = typer.Typer(help="Handoff tickets (转人工 records).", no_args_is_help=True)

DECISION_STYLE = {"answer": "green", "clarify": "yellow", "handoff": "red"}
DECISION_ZH = {"answer": "回答", "clarify": "澄清", "handoff": "转人工"}
# An answer card is read, not scanned like a table: at most this wide (about 48 Chinese characters a
# line), on a wide terminal and when piped (where the console is PIPE_WIDTH wide so tables stay whole).
CARD_WIDTH = 100


def card_heading(item: AnswerItem) -> tuple[str, str]:
    """(title, source) of an answer's panel: a rules clause is named as it is cited,
    《七天无理由退货规范》第五条, its source the unit id (``GET /v1/entries/{id}``); anything else
    by its title, its source the document and section."""
    s = item.source
    if s.kind == "rules" and s.clause is not None:
        label = item.title if item.title.startswith("《") else f"《{item.title}》{clause_label(s.clause)}"
        return label, f"rules:{item.id}"
    return item.title, f"{s.kind}:{s.doc_id} · {s.section}"


def render(a: Answer) -> None:
    """A readable card: decision, reason, answers with scores and sources."""
    style = DECISION_STYLE[a.decision]
    said = "问候" if a.reason == "greeting" else DECISION_ZH[a.decision]  # a greeting's or closing's reply
    head = Text.assemble((f"{a.decision} {said}", f"bold {style}"))
    if a.reason:
        head.append(f"  reason: {a.reason}", style=style)
    conf = a.trace.get("confidence")
    if conf is not None:
        head.append(f"  confidence {conf:.3f}", style="dim")
    head.append(f"  {a.elapsed_ms:.0f} ms", style="dim")
    console.print(head)
    if a.trace.get("spelling"):  # say what was searched, so a changed word is never a surprise
        fixes = "，".join(a.trace["spelling"])
        console.print(f"[dim]按「{a.trace.get('retrieval_text', '')}」搜索（{fixes}）[/]")
    if a.message:
        console.print(a.message)
    if a.handoff:
        tid = a.handoff.ticket_id
        if tid != "-":
            console.print(f"[red]{a.handoff.message}[/] (ticket {tid})")
        elif a.reason == "empty_query":  # nothing to hand over: the shopper is asked for the question
            console.print(a.handoff.message)
        else:
            console.print(f"[red]{a.handoff.message}[/] (no ticket opened: --record opens one)")
    for i, item in enumerate(a.answers, 1):
        title, src = card_heading(item)
        body = item.text if a.decision == "answer" and i == 1 else item.text[:80] + ("…" if len(item.text) > 80 else "")
        shown = Text(body)  # the KB's text as it is: brackets in an answer are not console markup
        if item.cites:  # the clauses an FAQ answer rests on, so they can be checked
            shown.append("\n依据：" + "、".join(c.label for c in item.cites), style="dim")
        console.print(
            Panel(
                shown,
                title=f"{i}. {title}",
                subtitle=f"{src} · score {item.score:.3f}",
                title_align="left",
                subtitle_align="right",
                border_style=style if i == 1 else "dim",
                width=min(console.width, CARD_WIDTH),
            )
        )
    if a.suggestions:  # a low-confidence handoff: what the shopper may read while waiting
        console.print("[dim]等待人工时可以先看看：[/]")
        for i, item in enumerate(a.suggestions, 1):
            console.print(f"[dim]  {i}. {item.title} ({item.id} · score {item.score:.3f})[/]", highlight=False)


def _answerer(ctx: typer.Context, record: bool = True):  # type: ignore[no-untyped-def]
    """The answerer of the current build; with ``record`` False its handoffs open no ticket and
    tell no order webhook (a question tried from the command line is not a shopper waiting)."""
    from service.runtime import Runtime

    answerer = Runtime.create(settings_of(ctx)).answerer()
    if not record:
        answerer.tickets = None
        answerer.webhook = None
    return answerer


@edge
def ask(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="the question, or - to read one query per line from stdin"),
    as_json: bool = typer.Option(False, "--json", help="print the API response as JSON"),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, max=MAX_TOP_K, help="answers to return (default: KEFU_TOP_K, 3)"
    ),
    session: str | None = typer.Option(
        None,
        "--session",
        help="session id: a follow-up reads this session's earlier questions, which are kept in "
        "<KEFU_DATA_DIR>/sessions.db for KEFU_SESSION_TTL_S (default 30 min), so later `kefu ask --session ID` "
        "calls continue it (without it nothing is kept)",
    ),
    trace: bool = typer.Option(False, "--trace", help="show the signals and thresholds behind the decision"),
    history: Path | None = typer.Option(
        None, "--history", help="JSON file: the conversation so far, [{role: customer|agent, text}, …] oldest first"
    ),
    record: bool = typer.Option(
        False, "--record", help="open a handoff ticket and tell KEFU_ORDER_WEBHOOK as the server would (off: try only)"
    ),
    shop: str | None = typer.Option(
        None, "--shop", help="answer in this shop's chat: its KB with the platform help center (`kefu shops list`)"
    ),
) -> None:
    """Answer one question (or a stream of them with `-`: one query per line, or one JSON request
    per line as the API takes it, history included)."""
    turns = read_history(history) if history is not None else None
    if shop is not None:
        from service.shops_cli import shop_asker

        answerer = shop_asker(ctx, shop, record)
    else:
        answerer = _answerer(ctx, record)
    if session is not None:  # each `kefu ask` is a process of its own: the session lives in a file
        keep_session_turns(ctx, answerer)
    if query == "-":
        failed: list[int] = []
        for n, line in enumerate(sys.stdin, 1):
            q = line.rstrip("\n")
            if not q.strip():
                continue
            try:
                req = parse_line(q, session, top_k, turns)
                a = answerer.answer(req.query, session_id=req.session_id, top_k=req.top_k, history=req.history)
                print(a.model_dump_json() if as_json else f"{a.decision}\t{a.reason or ''}\t{req.query}", flush=True)
            except InputError as exc:  # one bad line must not stop the stream; it fails the run at the end
                failed.append(n)
                print(json.dumps({"line": n, "query": q, "error": str(exc)}, ensure_ascii=False), flush=True)
        if failed:
            lines = ", ".join(map(str, failed[:10])) + (", …" if len(failed) > 10 else "")
            raise InputError(f"{len(failed)} input line(s) failed (line {lines}); their errors are in the output")
        return
    a = answerer.answer(query, session_id=session, top_k=top_k, history=turns)
    if as_json:
        print(a.model_dump_json(indent=None))
        return
    render(a)
    if trace:
        console.print_json(json.dumps(a.trace, ensure_ascii=False))


def keep_session_turns(ctx: typer.Context, answerer: object) -> None:
    """Point ``answerer`` (an ``Answerer`` or ``kefu ask --shop``'s ``ShopAsker``) at the session
    file, so a session outlives this process; without ``--session`` nothing is written."""
    from service.answerer import Answerer
    from service.sessions_store import SessionFile
    from service.shops_cli import ShopAsker

    settings = settings_of(ctx)
    if isinstance(answerer, ShopAsker):
        answerer.keep_sessions(settings)
    elif isinstance(answerer, Answerer):
        answerer.sessions = SessionFile.at(settings)


def read_history(path: Path) -> list[HistoryTurn]:
    """A conversation from a JSON file (a list of turns) with a clear error for each problem."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read --history {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"--history {path} is not valid JSON ({exc}); expected [{{role, text}}, …]") from exc
    try:
        return AnswerRequest.model_validate({"query": "-", "history": data}).history or []
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(f"--history {path}: {where}: {first['msg']}") from exc


def parse_line(line: str, session: str | None, top_k: int | None, history: list[HistoryTurn] | None) -> AnswerRequest:
    """One line of `kefu ask -`: a plain query, or a JSON request as POST /v1/answer takes it."""
    if line.lstrip().startswith("{"):
        try:
            return AnswerRequest.model_validate_json(line)
        except ValidationError as exc:  # worded as the API's 422
            raise InputError(describe_invalid(exc.errors())) from exc
    return AnswerRequest.model_construct(query=line, session_id=session, top_k=top_k, history=history)


@edge
def chat(
    ctx: typer.Context,
    record: bool = typer.Option(
        False, "--record", help="open a handoff ticket and tell KEFU_ORDER_WEBHOOK as the server would (off: try only)"
    ),
    shop: str | None = typer.Option(None, "--shop", help="chat as this shop's shoppers do (as `kefu ask --shop`)"),
) -> None:
    """Interactive session with history (follow-ups such as “那运费呢” use the previous question).
    As with `kefu ask`, a handoff opens a ticket for an agent only with --record."""
    if shop is not None:
        from service.shops_cli import shop_asker

        answerer = shop_asker(ctx, shop, record)
    else:
        answerer = _answerer(ctx, record)
    session = None
    console.print("[bold]kefu 客服[/] — 输入问题，回车发送；输入 /quit 退出。")
    console.print(answerer.welcome().message, highlight=False)
    while True:
        try:
            q = console.input("[bold cyan]你> [/]")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if q.strip() in {"/quit", "/exit", "exit", "quit"}:
            return
        if not q.strip():
            continue
        try:
            a = answerer.answer(q, session_id=session)
        except InputError as exc:
            err_console.print(f"[red]{exc}")
            continue
        session = a.session_id
        render(a)


@edge
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="address to listen on (default: KEFU_HOST, 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port (default: KEFU_PORT, 8000)"),
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=64, help="server processes (default: KEFU_WORKERS, 1); more share sessions.db"
    ),
) -> None:
    """Serve the HTTP API (docs at /docs)."""
    import uvicorn

    s = settings_of(ctx).with_overrides(host=host, port=port, workers=workers)
    cores = os.cpu_count() or 1
    # Compute threads per worker (torch's pool, or ONNX calls at once): the cores shared out, so
    # workers do not oversubscribe the CPU.
    threads = s.torch_threads or max(1, cores // s.workers)
    check_port_free(s.host, s.port)
    console.print(
        f"kefu serving on http://{s.host}:{s.port} (docs: /docs) — {s.workers} worker(s), "
        f"{threads} compute thread(s) each"
    )
    # Once, on stderr, whatever uvicorn's log level: the calibration the build serves with.
    err_console.print(serving_calibration(s), highlight=False, soft_wrap=True, markup=False)
    if s.workers == 1:
        from service.api import create_app

        uvicorn.run(create_app(s.with_overrides(torch_threads=threads)), host=s.host, port=s.port, log_level="warning")
        return
    env = {
        f"KEFU_{k.upper()}": str(v)
        for k, v in {"model": s.model, "kb_dir": s.kb_dir, "index_dir": s.index_home, "torch_threads": threads}.items()
    }
    os.environ.update(env)
    uvicorn.run(
        "service.api:app_from_env", factory=True, host=s.host, port=s.port, workers=s.workers, log_level="warning"
    )


def serving_calibration(settings: Settings) -> str:
    """The line `kefu build` printed about the current build's calibration (``kefu index info``
    and ``/readyz`` give it too), or why there is no build to serve yet."""
    from indexer.index import Index
    from indexer.store import IndexStore, calibration_note

    try:
        return calibration_note(Index.read_manifest(IndexStore(settings.index_home).current_path()))
    except KefuError as exc:  # the server starts anyway; /readyz says the same
        return f"calibration: no build to serve yet ({exc})"


def check_port_free(host: str, port: int) -> None:
    """Refuse a busy port before announcing the server (uvicorn would log the error and exit 0)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc}; pass --host with an address of this machine") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as uvicorn sets it, so a port in TIME_WAIT after a restart is not called busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop the program using it or pass --port"
            ) from exc


@handoffs_app.command("list")
@edge
def handoffs_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    reason: str | None = typer.Option(None, "--reason", help="only this reason (needs_order, low_confidence, …)"),
    shop: str | None = typer.Option(None, "--shop", help="only this shop's tickets"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per ticket and line (JSON Lines)"),
) -> None:
    """Recent handoff tickets, newest first (personal data masked), with their shop and route."""
    from service.shops_tickets import ShopTickets

    tickets = ShopTickets.at(settings_of(ctx).tickets_path).list(limit, reason, shop)
    if as_json:
        for t in tickets:
            print(json.dumps(t.to_json(), ensure_ascii=False))
        return
    table = Table(title=f"handoffs ({len(tickets)})")
    for col in ("ticket", "time", "reason", "shop", "route", "query", "top candidate"):
        table.add_column(col)
    for routed in tickets:
        tk = routed.ticket
        j = tk.to_json()
        top = f"{tk.candidates[0]['id']} {tk.candidates[0]['score']:.3f}" if tk.candidates else ""
        table.add_row(tk.id, j["created"], tk.reason, routed.shop or "", routed.route, tk.query[:60], top)
    console.print(table)


@edge
def build(
    ctx: typer.Context,
    kb: Path | None = typer.Option(None, "--kb", help="KB folder or file (default: KEFU_KB_DIR)"),
    kind: str | None = typer.Option(None, "--kind", help="flat (exact), hnsw or ivf"),
    force: bool = typer.Option(False, "--force", help="rebuild even if nothing changed"),
) -> None:
    """Build the index of a knowledge base and calibrate it for that KB (from the KB itself when
    no calibration was fitted for it); the serving index is replaced only after verification."""
    from indexer.build import build_and_swap
    from indexer.encoder import load_encoder
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from service.selfcal import build_calibrator

    s = settings_of(ctx)
    if kind is not None:
        s = s.with_overrides(index_kind=kind)
    t0 = time.perf_counter()
    knowledge = load_kb(kb or s.kb_dir)
    encoder = load_encoder(s)
    with progress_display() as bar:
        embed = bar.add_task("embedding texts", total=None)
        fit = bar.add_task("self-calibration: pseudo-queries", total=None, visible=False)

        def progress(done: int, total: int) -> None:
            bar.update(embed, completed=done, total=total)

        def fitting(done: int, total: int) -> None:
            bar.update(fit, completed=done, total=total, visible=True)

        summary = build_and_swap(
            knowledge,
            encoder,
            IndexStore(s.index_home, s.keep_builds),
            s.chunk_chars,
            s.index_kind,
            progress,
            force,
            calibrate=build_calibrator(s, encoder, fitting),
        )
    total_s = time.perf_counter() - t0
    if summary.unchanged:  # the line said when it was built (how it was calibrated, and why)
        same = "KB, model, query path and document precision unchanged"
        console.print(f"index {summary.build_id} is up to date ({same}) — {total_s:.1f} s")
        console.print(summary.calibration, highlight=False, soft_wrap=True)
        return
    table = Table(title=f"built {summary.build_id}", show_header=False)
    for k in ("entries", "documents", "chunks", "vectors", "anchors", "cache_hits"):
        table.add_row(k.replace("_", " "), f"{getattr(summary, k):,}")
    table.add_row("index seconds", f"{summary.seconds:.1f}")
    table.add_row("total seconds", f"{total_s:.1f} (incl. model load)")
    table.add_row("path", summary.path)
    console.print(table)
    console.print(summary.calibration, highlight=False, soft_wrap=True)
