"""The HTTP answer API (FastAPI). Heavy objects are loaded once in the lifespan and reached
through dependencies; errors are JSON with a clear message and the right status, never a trace.
What the service holds is ``service/api_state.py``; the guard in front of every route and the
error responses are ``service/api_guard.py``."""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.encoder import Encoder
from indexer.index import Index
from indexer.vectorstore import SHOP_ID
from kb.errors import KefuError, ModelError, NotFoundError
from kb.settings import Settings
from service.answerer import Answerer
from service.api_guard import Guard, SafeJSONResponse, error, error_code, http_code, safe_json
from service.api_state import ServiceState, get_state, readiness, ready_answerer, require_admin
from service.console import install as install_console
from service.documents import entry_json
from service.pii import mask_pii
from service.schemas import (
    Answer,
    AnswerRequest,
    ErrorBody,
    FeedbackRequest,
    FeedbackResult,
    Welcome,
    describe_invalid,
)
from service.web import install as install_web

log = logging.getLogger("kefu.api")

MAX_HANDOFFS = 500  # tickets one GET /admin/handoffs returns (as the ticket store caps it)
SUGGESTED_IDS = 3  # ids a 404 of GET /v1/entries offers
MAX_ID_COMPARED = 200  # characters of an unknown id compared
MAX_IDS_COMPARED = 1000  # ids it is compared with


def create_app(settings: Settings | None = None, encoder: Encoder | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state.start(encoder)
        except KefuError as exc:  # no index yet, mismatch …: start anyway, say why in /readyz
            state.not_ready = str(exc)
        yield
        state.stop()

    app = FastAPI(
        title="kefu 客服 API",
        version="0.1.0",
        description=(
            "电商客服 FAQ 问答：返回排序后的答案，或决定转人工"
            "（转人工原因：用户要求、敏感、需查订单、置信度低、空问题）。\n\n"
            "Every query gets exactly one decision: `answer`, `clarify` (您是不是想问…) or `handoff` (转人工)."
        ),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        docs_url=None,  # /docs and /redoc come from service.web, with their assets served here (no CDN)
        redoc_url=None,
        responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    app.state.kefu = state

    app.add_middleware(Guard, state=state)

    # Added after the guard so CORS is the outer layer: 413/429/503 from the guard keep CORS headers.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(KefuError)
    async def kefu_error(_: Request, exc: KefuError) -> Response:
        return error(exc.http_status, error_code(exc), str(exc))

    @app.exception_handler(PermissionError)
    async def forbidden(_: Request, exc: PermissionError) -> Response:
        return error(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return error(422, "invalid_request", describe_invalid(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return error(422, "invalid_request", "body is not valid UTF-8 JSON; send a JSON object encoded as UTF-8")
        headers = dict(exc.headers) if exc.headers else None  # 405's Allow
        return error(exc.status_code, http_code(exc.status_code), str(exc.detail), headers)

    @app.post("/v1/answer", response_model=Answer, summary="回答一个问题 / answer one query")
    async def answer(req: AnswerRequest, answerer: Answerer = Depends(ready_answerer)) -> Response:
        # Async, with the blocking work in one thread-pool call: a sync endpoint costs FastAPI a
        # second trip through the pool to validate the returned model, which the Answer (built
        # by us, already valid) does not need; pydantic's own JSON writer is the fast path.
        t0 = time.perf_counter()

        def answer_and_log() -> Answer:  # one trip through the pool for both
            if req.shop is not None:  # the shop's KB and the platform's, each with its calibration
                a = state.shops.answer(answerer, req)
            else:
                a = answerer.answer(req.query, session_id=req.session_id, top_k=req.top_k, history=req.history)
            state.log_answer(a, req.shop)
            return a

        # At most ``answer_slots`` answers at once (``MicroBatcher.answers_at_once``); the others
        # wait here, not in threads of their own that would take CPU from the ones answering.
        result = await anyio.to_thread.run_sync(answer_and_log, limiter=state.answer_slots)
        state.metrics.latency.observe(time.perf_counter() - t0)
        state.metrics.decisions.labels(result.decision, result.reason or "none").inc()
        if result.decision == "handoff":
            log.info("handoff %s: %s", result.reason, mask_pii(req.query)[:200])
        return Response(safe_json(result.model_dump_json().encode()), media_type="application/json")

    @app.post("/v1/feedback", response_model=FeedbackResult, summary="反馈 👍/👎 on one answer")
    def feedback(req: FeedbackRequest, st: ServiceState = Depends(get_state)) -> FeedbackResult:
        """Store the shopper's vote on an answer of their session; voting again replaces the vote."""
        if st.feedback is None:
            raise ModelError(st.not_ready or "not started")
        st.logged_answers()  # the answer voted on may still be queued for the log
        result = st.feedback.vote(req.answer_id, req.session_id, req.vote, req.comment)
        if result.previous is None:
            st.metrics.feedback.labels(req.vote).inc()
        elif result.previous != req.vote:
            st.metrics.feedback_changed.labels(req.vote).inc()
        return FeedbackResult(answer_id=req.answer_id, vote=req.vote, replaced=result.previous)

    @app.get("/v1/welcome", response_model=Welcome, summary="the greeting a chat opens with")
    def welcome(
        shop: str | None = Query(None, pattern=SHOP_ID.pattern, description="a shop's chat: its KB's questions"),
        answerer: Answerer = Depends(ready_answerer),
    ) -> Welcome:
        """The greeting reply and example questions from the knowledge base served, or the shop's
        (the chat page shows them)."""
        return answerer.welcome() if shop is None else state.shops.welcome(answerer, shop)

    # ``:path`` so an imported id with a slash (URL-encoded as %2F) still reaches the route.
    @app.get("/v1/entries/{entry_id:path}", summary="one FAQ entry or document chunk")
    def entry(entry_id: str, answerer: Answerer = Depends(ready_answerer)) -> dict[str, Any]:
        # The slug, an id merged away, an imported table's original id ("退货-01", "1024"), a
        # document unit's id (rules-return.5) or a cite as FAQ entries write it (rules-return#5).
        found = entry_json(answerer.index, entry_id)
        if found is not None:
            return found
        raise NotFoundError(f"no entry {entry_id!r}; {entry_hint(answerer.index, entry_id)}")

    @app.get("/healthz", summary="process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="model and index loaded")
    def readyz(st: ServiceState = Depends(get_state)) -> Response:
        if st.answerer is None:
            return error(503, "not_ready", st.not_ready or "starting")
        return SafeJSONResponse(readiness(st.answerer))

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics(st: ServiceState = Depends(get_state)) -> Response:
        return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", summary="swap in the newest verified index")
    def reload(st: ServiceState = Depends(get_state), scope: str | None = Depends(require_admin)) -> dict[str, str]:
        st.shops.require_global(scope, "reload the platform index")
        return {"status": "reloaded", "build": st.reload()}

    @app.get("/admin/handoffs", summary="recent handoff tickets (a shop's token: that shop's only)")
    def handoffs(
        limit: int = Query(50, ge=1, le=MAX_HANDOFFS),
        reason: str | None = None,
        shop: str | None = None,
        st: ServiceState = Depends(get_state),
        scope: str | None = Depends(require_admin),
    ) -> dict[str, Any]:
        if st.runtime is None:
            raise ModelError(st.not_ready or "not started")
        return {"tickets": [t.to_json() for t in st.shops.handoffs(scope, limit, reason, shop)]}

    install_web(app, settings)

    install_console(app)  # /console's admin API (gaps, stats, resolutions) and the stats gauges (#24)
    return app


def entry_hint(index: Index, entry_id: str) -> str:
    """What to ask for instead of an unknown id: the served build's ids nearest to it by spelling,
    or else an example of each kind the build has (never ids of a KB it does not serve)."""
    ids = [*index.entries, *index.doc_units]
    # Bounded work for any request: only the start of a long id is compared (matching is quadratic
    # in its length), and a large KB's ids only where they start alike (all 7,118 of one took 37 ms).
    wanted = entry_id[:MAX_ID_COMPARED]
    pool = ids if len(ids) <= MAX_IDS_COMPARED else [i for i in ids if i[:2] == wanted[:2]][:MAX_IDS_COMPARED]
    near = difflib.get_close_matches(wanted, pool, n=SUGGESTED_IDS, cutoff=0.6)
    if near:
        return f"did you mean {' or '.join(repr(i) for i in near)}? Use an id from an answer"
    examples = [next(iter(d)) for d in (index.entries, index.doc_units) if d]
    like = f" (like {' or '.join(repr(i) for i in examples)})" if examples else ""
    return f"use an id from an answer{like} or the id the entry had in its imported table"


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (several workers): settings from the environment (a value
    not allowed is one ConfigError line naming its KEFU_ variable)."""
    return create_app(Settings.load())
