"""``kefu shops add|list|rebuild|rollback|remove|token``: shop knowledge bases served beside the platform's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from kb.clikit import console, edge, settings_of
from service.schemas import Answer, HistoryTurn, Welcome
from service.shops import ShopBuild, Shops

if TYPE_CHECKING:
    from kb.settings import Settings
    from service.answerer import Answerer
    from service.shops_answer import ShopDesk

shops_app = typer.Typer(
    help="Shops: knowledge bases of their own, searched together with the platform help center.",
    no_args_is_help=True,
)


def _shops(ctx: typer.Context) -> Shops:
    return Shops(settings_of(ctx))


class ShopAsker:
    """``kefu ask --shop SHOP``: answers as the shop's chat does (its KB with the platform help
    center, ``ShopDesk``), with the ``answer`` of an ``Answerer``."""

    def __init__(self, desk: ShopDesk, platform: Answerer, shop: str) -> None:
        self.desk, self.platform, self.shop = desk, platform, shop

    def answer(
        self,
        query: str,
        session_id: str | None = None,
        top_k: int | None = None,
        history: Sequence[HistoryTurn] | None = None,
    ) -> Answer:
        return self.desk.answer(self.platform, query, self.shop, session_id=session_id, top_k=top_k, history=history)

    def welcome(self) -> Welcome:
        """What the shop's chat opens with: its greeting and questions of its own KB."""
        return self.desk.shop_answerer(self.shop, self.platform)[1].welcome()

    def keep_sessions(self, settings: Settings) -> None:
        """Keep sessions in the session file (``kefu ask --session``): the desk's and its platform
        side's apart, as a server keeps them apart in memory. Before the first answer: the shop's
        answerer takes the desk's sessions when it is loaded."""
        from service.sessions_store import SessionFile

        self.desk.sessions = SessionFile.at(settings, scope="shops")
        self.desk.platform_sessions = SessionFile.at(settings, scope="shops-platform")


def shop_asker(ctx: typer.Context, shop: str, record: bool) -> ShopAsker:
    """The shop's answerer for ``kefu ask``; an unknown or unsafe shop fails here, before any
    question. With ``record`` False its handoffs open no ticket, as for the platform."""
    from service.runtime import Runtime, order_webhook
    from service.shops_answer import ShopDesk
    from service.shops_tickets import ShopTickets

    settings = settings_of(ctx)
    shops = Shops(settings)
    shops.registry.require(shop)
    rt = Runtime.create(settings)
    shops.encoder = rt.encoder
    desk = ShopDesk(
        shops,
        rt.encoder.encode_queries,
        ShopTickets(rt.tickets) if record else None,
        capacity=1,
        webhook=order_webhook(settings) if record else None,
        model_id=rt.encoder.model_id,
        dim=rt.encoder.dim,
    )
    desk.warm_up()
    return ShopAsker(desk, rt.answerer(), shop)


def _built(shops: Shops, verb: str, run) -> ShopBuild:  # type: ignore[no-untyped-def]
    """Run a build with progress bars for embedding and self-calibration."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        embed = bar.add_task(f"{verb}: embedding texts", total=None)
        fit = bar.add_task("self-calibration: pseudo-queries", total=None, visible=False)
        result: ShopBuild = run(
            lambda done, total: bar.update(embed, completed=done, total=total),
            lambda done, total: bar.update(fit, completed=done, total=total, visible=True),
        )
    return result


def _report(b: ShopBuild) -> None:
    state = "unchanged" if b.unchanged else f"build {b.build_id}"
    console.print(
        f"shop {b.shop}: {state}, {b.entries} entries, {b.vectors} vectors in the {b.store} store, {b.seconds:.1f} s",
        highlight=False,
    )
    console.print(b.calibration, highlight=False, soft_wrap=True)


@shops_app.command("add")
@edge
def add(
    ctx: typer.Context,
    shop: str = typer.Argument(..., help="shop id: a slug such as acme-shoes"),
    kb: Path = typer.Option(..., "--kb", help="the shop's KB folder or file (see `kefu kb check`)"),
) -> None:
    """Add a shop: check its KB, build its index, calibrate it from its KB alone, start serving it."""
    shops = _shops(ctx)
    try:
        _report(_built(shops, f"shop {shop}", lambda p, f: shops.add(shop, kb, p, f)))
    finally:
        shops.close()


@shops_app.command("rebuild")
@edge
def rebuild(
    ctx: typer.Context,
    shop: str = typer.Argument(...),
    kb: Path | None = typer.Option(None, "--kb", help="a new KB for the shop (default: the one it was added with)"),
    force: bool = typer.Option(False, "--force", help="rebuild even if nothing changed"),
) -> None:
    """Rebuild a shop; its last good build serves until the new one is verified and stored."""
    shops = _shops(ctx)
    try:
        _report(_built(shops, f"shop {shop}", lambda p, f: shops.rebuild(shop, kb, p, f, force)))
    finally:
        shops.close()


@shops_app.command("rollback")
@edge
def rollback(ctx: typer.Context, shop: str = typer.Argument(...), build: str | None = typer.Argument(None)) -> None:
    """Serve the shop's previous build again (or BUILD)."""
    shops = _shops(ctx)
    try:
        console.print(f"shop {shop} now serves build {shops.rollback(shop, build)}", highlight=False)
    finally:
        shops.close()


@shops_app.command("remove")
@edge
def remove(ctx: typer.Context, shop: str = typer.Argument(...)) -> None:
    """Stop serving a shop and delete its builds and vectors (its tickets are kept)."""
    shops = _shops(ctx)
    try:
        shops.remove(shop)
    finally:
        shops.close()
    console.print(f"shop {shop} removed", highlight=False)


@shops_app.command("list")
@edge
def list_shops(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="one JSON object per shop")
) -> None:
    """The registered shops and the build each serves."""
    records = _shops(ctx).registry.list()
    if as_json:
        for r in records:
            print(json.dumps({**vars(r)}, ensure_ascii=False))
        return
    if not records:
        console.print("no shops yet; add one with `kefu shops add SHOP --kb PATH`")
        return
    table = Table(title=f"shops ({len(records)})")
    for col in ("shop", "build", "entries", "vectors", "store", "token", "knowledge base"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.id, r.build_id, str(r.entries), str(r.vectors), r.store, "yes" if r.has_token else "", r.kb_root
        )
    console.print(table)


@shops_app.command("token")
@edge
def token(ctx: typer.Context, shop: str = typer.Argument(...)) -> None:
    """Issue a new admin token for one shop (it replaces the previous one; printed once, stored hashed).
    With it, /admin/* sees only that shop."""
    print(_shops(ctx).registry.new_token(shop))
