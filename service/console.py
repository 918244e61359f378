"""The operators' admin API behind ``/console`` (the page itself is served by service/web), and the
stats gauges of ``/metrics``.

``/admin/gaps``, ``/admin/gaps/{id}/resolve``, ``/admin/handoffs/{id}/resolve``, ``/admin/decisions``
and ``/admin/decisions/{id}/undo`` need the global admin token (``require_admin``; a shop's token
gets 403: the gaps and the KB are the platform's). ``/admin/stats`` takes a shop's token too, and
shows it its own shop's traffic only. Resolutions go through ``kb.learned.decide`` (undo through
``kb.learned.undo``, as ``kefu learn undo``) into the KB the served build was built from, so a
running server and ``kefu learn`` agree on where decisions live. Kept out of service/api.py, which
includes it with ``install``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from indexer.index import Index
from indexer.vectorstore import SHOP_ID
from kb.errors import ConfigError, ForbiddenError, IndexMissingError, InputError, ModelError
from kb.learn_journal import Decision, last_run, states
from kb.learned import undo
from kb.schema import KnowledgeBase
from service.api_state import ServiceState, get_state, require_admin
from service.gaps import GapFinder, GapReport, find
from service.gaps_resolve import check_writable, resolve, resolve_ticket, served_kb
from service.gaps_unserved import ABANDON_S, decided_keys, read_unserved
from service.pii import mask_pii
from service.schemas import stripped_text
from service.shops_api import GLOBAL
from service.stats import TOP_GAPS, StatsCollector, StatsSource, parse_since, shop_manifest, stats_report

MAX_GAPS = 200
MAX_DECISIONS = 500

router = APIRouter(tags=["admin"])


class ResolveRequest(BaseModel):
    """An operator's decision on a gap or a ticket (kb/learned.py)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"action": "attach", "entry": "refund-time", "who": "小王"}]},
    )

    action: Literal["attach", "out_of_scope", "new_entry", "dismiss"] = Field(
        description="attach: the messages become alternatives of `entry`; out_of_scope: labelled handoff "
        "examples; new_entry: a draft in the KB's drafts/; dismiss: recorded only"
    )
    entry: str | None = Field(None, max_length=200, description="attach: the id of the entry that answers them")
    category: str | None = Field(None, max_length=64, description="new_entry: the draft's category")
    who: str | None = Field(None, max_length=64, description="the operator (default: console)")
    since: str = Field("7d", max_length=32, description="the window the gap was listed in (as GET /admin/gaps)")

    @field_validator("entry", "category", "who")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return stripped_text(v)


class UndoRequest(BaseModel):
    """Who reverts a decision (the body of ``/admin/decisions/{id}/undo`` may be left out)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"who": "小王"}]})

    who: str | None = Field(None, max_length=64, description="the operator (default: console)")

    @field_validator("who")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return stripped_text(v)


class Ops:
    """What the console's endpoints keep between calls: the gap finder (its vector cache) and the
    served build's KB, loaded once per build."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self._finder: GapFinder | None = None
        self._kb: tuple[str, KnowledgeBase] | None = None
        self._lock = threading.Lock()

    def index(self) -> Index:
        if self.state.answerer is None:
            raise IndexMissingError(f"the assistant is not ready: {self.state.not_ready}; run `kefu build`")
        return self.state.answerer.index

    def finder(self) -> GapFinder:
        if self.state.runtime is None:
            raise ModelError(self.state.not_ready or "not started")
        with self._lock:
            if self._finder is None or self._finder.encoder is not self.state.runtime.encoder:
                self._finder = GapFinder(self.state.runtime.encoder)
            return self._finder

    def kb(self) -> KnowledgeBase:
        m = self.index().manifest
        with self._lock:
            if self._kb is None or self._kb[0] != m.build_id:
                self._kb = (m.build_id, served_kb(self.state.settings, m))
            return self._kb[1]

    def stores(self) -> StatsSource:
        st = self.state
        answers = st.logged_answers()
        if answers is None or st.feedback is None:
            raise ModelError(st.not_ready or "not started")
        return StatsSource(answers, st.feedback, st.answerer.index.manifest if st.answerer else None)

    def gaps(self, since: float, now: float, limit: int | None) -> GapReport:
        src, index = self.stores(), self.index()
        root = Path(index.manifest.kb_root)
        messages = read_unserved(src.log, src.feedback, since, now, ABANDON_S)
        decided = decided_keys(root) if root.is_dir() else set()
        return self.finder().report(index, messages, decided=decided, since=since, until=now, limit=limit)


def since_of(text: str, now: float, name: str = "query parameter since") -> float:
    """``parse_since`` for a request: a bad value is the request's fault (422), named as the request
    names it rather than as the CLI's --since."""
    try:
        return parse_since(text, now, name)
    except ConfigError as exc:
        raise InputError(str(exc)) from None


async def get_ops(request: Request) -> Ops:
    ops: Ops = request.app.state.kefu_ops
    return ops


async def platform_admin(state: ServiceState = Depends(get_state), scope: str | None = Depends(require_admin)) -> None:
    """The global admin token only: gaps, stats and the KB are the platform's, not a shop's."""
    state.shops.require_global(scope, "read or resolve the platform's gaps and stats")


def _decision_json(d: Decision, status: str = "pending") -> dict[str, Any]:
    return {
        "id": d.id,
        "item": d.item,
        "action": d.action,
        "entry": d.entry,
        "category": d.category,
        "messages": len(d.messages),
        "example": mask_pii(d.messages[0]) if d.messages else "",  # a CLI decision may carry typed text
        "who": d.who,
        "at": d.at,
        "status": status,
    }


@router.get("/admin/gaps", summary="unserved questions, clustered (kefu gaps)", dependencies=[Depends(platform_admin)])
def gaps(
    since: str = Query("7d", max_length=32, description="30m, 24h, 7d, 2w or a date"),
    limit: int = Query(20, ge=1, le=MAX_GAPS),
    ops: Ops = Depends(get_ops),
) -> dict[str, Any]:
    now = time.time()
    return ops.gaps(since_of(since, now), now, limit).to_json()


@router.post(
    "/admin/gaps/{gap_id}/resolve",
    summary="decide on a gap: attach, out of scope, new entry or dismiss",
    dependencies=[Depends(platform_admin)],
)
def resolve_gap(gap_id: str, req: ResolveRequest, ops: Ops = Depends(get_ops)) -> dict[str, Any]:
    """Record the decision (pending until `kefu learn`); 409 when another operator decided it first,
    404 when the gap is no longer open."""
    now = time.time()
    gap = find(ops.gaps(since_of(req.since, now, "since"), now, None), gap_id)
    d = resolve(ops.kb(), req.action, gap.messages, entry=req.entry, category=req.category, who=req.who or "console")
    return {"gap": gap.to_json(), "decision": _decision_json(d)}


@router.post(
    "/admin/handoffs/{ticket_id}/resolve",
    summary="decide on a handoff ticket: attach, out of scope, new entry or dismiss",
    dependencies=[Depends(platform_admin)],
)
def resolve_handoff(ticket_id: str, req: ResolveRequest, ops: Ops = Depends(get_ops)) -> dict[str, Any]:
    path = ops.state.settings.tickets_path
    d = resolve_ticket(
        ops.kb(), path, ticket_id, req.action, entry=req.entry, category=req.category, who=req.who or "console"
    )
    return {"ticket": ticket_id, "decision": _decision_json(d)}


@router.get(
    "/admin/decisions",
    summary="operators' recent decisions (kefu learn status)",
    dependencies=[Depends(platform_admin)],
)
def decisions(limit: int = Query(100, ge=1, le=MAX_DECISIONS), ops: Ops = Depends(get_ops)) -> dict[str, Any]:
    root = ops.kb().root
    rows = sorted(states(root).values(), key=lambda s: s.decision.at, reverse=True)[:limit]
    last = last_run(root)
    learned = None
    if last is not None:  # what the last `kefu learn` did, so a refusal reaches the operators who decided
        learned = {k: last.get(k) for k in ("event", "at", "who", "build")}
        learned |= {"losses": list(last.get("losses", ())), "pulling": list(last.get("pulling", ()))}
    return {"decisions": [_decision_json(s.decision, s.status) for s in rows], "last_learn": learned}


@router.post(
    "/admin/decisions/{decision_id}/undo",
    summary="undo a decision (kefu learn undo): a pending one is withdrawn, an applied one reverted",
    dependencies=[Depends(platform_admin)],
)
def undo_decision(decision_id: str, req: UndoRequest | None = None, ops: Ops = Depends(get_ops)) -> dict[str, Any]:
    """404 for an unknown decision, 409 for one already undone. An applied decision's alternatives,
    examples and draft leave the KB files; the served index keeps them until `kefu learn` rebuilds."""
    kb = ops.kb()
    check_writable(kb.root)
    s = undo(kb, decision_id, who=(req.who if req is not None else None) or "console")
    return {"decision": _decision_json(s.decision, s.status), "reverted": s.change is not None}


def stats_scope(scope: str | None, shop: str | None) -> str | None:
    """The shop whose stats a token may read: any (or all) for the global token, its own for a shop's."""
    if scope is GLOBAL:
        return shop
    if shop is not None and shop != scope:
        raise ForbiddenError(f"this token belongs to shop {scope!r}; it cannot read the stats of shop {shop!r}")
    return scope


@router.get("/admin/stats", summary="rates per day, votes, top gaps, calibration (kefu stats)")
def stats(
    since: str = Query("7d", max_length=32, description="30m, 24h, 7d, 2w or a date"),
    top: int = Query(TOP_GAPS, ge=0, le=50, alias="gaps", description="largest gaps included (0: none)"),
    shop: str | None = Query(
        None,
        max_length=64,
        pattern=SHOP_ID.pattern,
        description="only the answers asked in this shop (a shop's token: always its own); no gaps then",
    ),
    ops: Ops = Depends(get_ops),
    scope: str | None = Depends(require_admin),
) -> dict[str, Any]:
    now = time.time()
    start = since_of(since, now)
    shop = stats_scope(scope, shop)
    src = ops.stores()
    if shop is not None:  # the gaps are clustered against the platform's KB: not a shop's
        manifest = shop_manifest(ops.state.shops.shops, shop)
        return stats_report(src.log, src.feedback, manifest, start, now, None, shop).to_json()
    top_gaps = ops.gaps(start, now, top) if top and ops.state.answerer is not None else None
    return stats_report(src.log, src.feedback, src.manifest, start, now, top_gaps).to_json()


def install(app: FastAPI) -> None:
    """Add the admin routes and register the stats gauges on the app's metrics registry."""
    state: ServiceState = app.state.kefu
    ops = Ops(state)
    app.state.kefu_ops = ops

    def source() -> StatsSource | None:
        try:
            return ops.stores()
        except ModelError:
            return None

    state.metrics.registry.register(StatsCollector(source))
    app.include_router(router)
