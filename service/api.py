"""The HTTP answer API (FastAPI). Heavy objects are loaded once in the lifespan and reached
through dependencies; errors are JSON with a clear message and the right status, never a trace."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from indexer.build import describe_calibration
from indexer.encoder import Encoder
from kb.errors import IndexMissingError, IndexStateError, KefuError, ModelError, NotFoundError
from kb.settings import Settings
from service.answerer import Answerer
from service.batcher import MicroBatcher
from service.documents import entry_json
from service.pii import mask_pii
from service.runtime import Runtime, micro_batcher
from service.schemas import Answer, AnswerRequest, ErrorBody, FeedbackRequest, FeedbackResult
from service.shops_api import ShopsState
from service.tickets import AnswerLog, FeedbackStore
from service.web import WEB_PATHS
from service.web import install as install_web

log = logging.getLogger("kefu.api")


class SafeJSONResponse(JSONResponse):
    """JSON with <, > and & escaped, so echoed text can never be read as HTML."""

    def render(self, content: Any) -> bytes:
        return safe_json(super().render(content))


def safe_json(body: bytes) -> bytes:
    return body.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("kefu_requests_total", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "kefu_answer_seconds",
            "answer latency",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5),
        )
        self.decisions = Counter(
            "kefu_decisions_total", "decisions by reason", ["decision", "reason"], registry=self.registry
        )
        self.batch_size = Histogram(
            "kefu_encoder_batch_texts",
            "texts per encoder call (micro-batching)",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.batch_seconds = Histogram(
            "kefu_encoder_batch_seconds",
            "time per encoder call",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
        )
        # A shopper may change a vote: the first vote on an answer counts in feedback, a change only in
        # feedback_changed (so the first counter never counts one answer twice).
        self.feedback = Counter(
            "kefu_feedback_total", "first vote on each answer (👍 up / 👎 down)", ["vote"], registry=self.registry
        )
        self.feedback_changed = Counter(
            "kefu_feedback_changed_total", "votes changed, by the new vote", ["vote"], registry=self.registry
        )

    def encoder_batch(self, texts: int, seconds: float) -> None:
        self.batch_size.observe(texts)
        self.batch_seconds.observe(seconds)


WARMUP_QUERY = "退款多久能到账"


class ServiceState:
    """What the running service holds. ``answerer`` is swapped atomically on reload."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.batcher: MicroBatcher | None = None
        self.answerer: Answerer | None = None
        self.answer_log: AnswerLog | None = None
        self.feedback: FeedbackStore | None = None
        self.shops = ShopsState(settings)  # POST /v1/answer with a shop; per-shop admin tokens
        self.not_ready: str | None = "starting"
        self.metrics = Metrics()
        self.reload_lock = threading.Lock()
        self.inflight = 0
        self.inflight_lock = threading.Lock()
        self.rate: dict[str, deque[float]] = defaultdict(deque)
        self.rate_lock = threading.Lock()

    def start(self, encoder: Encoder | None = None) -> None:
        # Next to the tickets: the answer log (what a vote names) and the votes.
        self.answer_log = AnswerLog(self.settings.tickets_path)
        self.feedback = FeedbackStore(self.settings.tickets_path)
        try:
            self.runtime = Runtime.create(self.settings, encoder)
        except ModelError as exc:
            self.not_ready = f"model not loaded: {exc}"
            return
        self.batcher = micro_batcher(self.settings, self.runtime.encoder, self.metrics.encoder_batch)
        self.shops.start(self.runtime, self.batcher)
        self.reload()

    def reload(self) -> str:
        """Load the current verified build and swap it in; the old one keeps serving on failure."""
        if self.runtime is None or self.batcher is None:
            raise ModelError(self.not_ready or "the model is not loaded")
        with self.reload_lock:
            try:
                answerer = self.runtime.answerer(encode=self.batcher)
            except IndexMissingError as exc:
                self.not_ready = str(exc)
                raise
            except IndexStateError as exc:
                if self.answerer is None:
                    self.not_ready = str(exc)
                raise
            # Warm up before taking traffic: the lexical index and the chunk texts' bigrams are
            # built on first use, and a burst of first requests would all wait for them.
            answerer.retrieve([WARMUP_QUERY])
            self.answerer = answerer
            self.not_ready = None
            return answerer.index.manifest.build_id

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def log_answer(self, answer: Answer, shop: str | None = None) -> None:
        """Record a served answer (asked in ``shop``); a failing write is logged and the answer still goes out."""
        if self.answer_log is None:
            return
        try:
            self.answer_log.record(answer, shop)
        except sqlite3.Error as exc:
            log.warning("answer %s not logged (its 👍/👎 will get 404): %s", answer.answer_id, exc)


# The dependencies are async: they only look things up, and a sync dependency costs a trip
# through the thread pool per request.
async def get_state(request: Request) -> ServiceState:
    return request.app.state.kefu


async def ready_answerer(state: ServiceState = Depends(get_state)) -> Answerer:
    if state.answerer is None:
        raise IndexMissingError(
            f"the assistant is not ready: {state.not_ready}. Build the index with `kefu build`, then POST /admin/reload"
        )
    return state.answerer


async def require_admin(request: Request, state: ServiceState = Depends(get_state)) -> str | None:
    """None for KEFU_ADMIN_TOKEN (everything), a shop's id for that shop's token (its own only)."""
    return state.shops.admin_scope(request.headers.get("authorization", ""))


class Guard:
    """Pure ASGI middleware in front of every route: body size, rate limit, load shedding,
    security headers, request metrics, and a JSON 500 that never leaks a stack trace.

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs each
    request in an extra task group with its own events and cancel scopes, and under 32 clients
    that bookkeeping kept the event loop (and the interpreter lock) busy nearly all the time.
    """

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.settings = state.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        status = 500
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        async def reply(code: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
            await error(code, kind, message, headers)(scope, receive, send_tracked)

        limit = self.settings.max_body_bytes
        try:
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if length is not None and (not length.isdigit() or int(length) > limit):
                await reply(413, "body_too_large", f"request body over {limit} bytes")
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                # A chunked body has no Content-Length: read it here with the same limit, then
                # hand the bytes to the app as one message.
                chunks: list[bytes] = []
                size = 0
                more = True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        status = 499  # the client went away mid-body (nginx's code for it); nothing to answer
                        return
                    size += len(message.get("body", b""))
                    if size > limit:
                        await reply(413, "body_too_large", f"request body over {limit} bytes")
                        return
                    chunks.append(message.get("body", b""))
                    more = message.get("more_body", False)
                body = b"".join(chunks)
                replayed = False

                async def receive_body() -> Message:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                receive = receive_body
            if path.startswith("/v1/"):
                limited = _rate_limited(self.state, scope)
                if limited:
                    await reply(429, "rate_limited", limited, {"Retry-After": "1"})
                    return
                with self.state.inflight_lock:
                    admitted = self.state.inflight < self.settings.max_inflight
                    if admitted:
                        self.state.inflight += 1
                if not admitted:
                    await reply(503, "overloaded", "too many requests in flight; retry shortly", {"Retry-After": "1"})
                    return
                try:
                    await self.app(scope, receive, send_tracked)
                finally:
                    with self.state.inflight_lock:
                        self.state.inflight -= 1
            else:
                await self.app(scope, receive, send_tracked)
        except Exception:  # never leak a stack trace
            log.exception("unhandled error on %s", path)
            status = 500
            if not started:
                await reply(500, "internal_error", "internal error; it has been logged")
        finally:
            self.state.metrics.requests.labels(path if path in KNOWN_PATHS else "other", str(status)).inc()


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
        return error(exc.http_status, type(exc).__name__, str(exc))

    @app.exception_handler(PermissionError)
    async def forbidden(_: Request, exc: PermissionError) -> Response:
        return error(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            msg = "body is not valid JSON (send UTF-8 JSON)" if e.get("type") == "json_invalid" else e.get("msg")
            parts.append(f"{loc}: {msg}")
        return error(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return error(422, "invalid_request", "body is not valid UTF-8 JSON; send a JSON object encoded as UTF-8")
        return error(exc.status_code, "http_error", str(exc.detail))

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

        result = await run_in_threadpool(answer_and_log)
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
        result = st.feedback.vote(req.answer_id, req.session_id, req.vote, req.comment)
        if result.previous is None:
            st.metrics.feedback.labels(req.vote).inc()
        elif result.previous != req.vote:
            st.metrics.feedback_changed.labels(req.vote).inc()
        return FeedbackResult(answer_id=req.answer_id, vote=req.vote, replaced=result.previous)

    # ``:path`` so an imported id with a slash (URL-encoded as %2F) still reaches the route.
    @app.get("/v1/entries/{entry_id:path}", summary="one FAQ entry or document chunk")
    def entry(entry_id: str, answerer: Answerer = Depends(ready_answerer)) -> dict[str, Any]:
        # The slug, an id merged away, an imported table's original id ("退货-01", "1024"), a
        # document unit's id (rules-return.5) or a cite as FAQ entries write it (rules-return#5).
        found = entry_json(answerer.index, entry_id)
        if found is not None:
            return found
        raise NotFoundError(
            f"no entry {entry_id!r}; use an id from an answer (like 'refund-seven-day-conditions' or "
            "'rules-seven-day-return.5') "
            "or the id the entry had in its imported table"
        )

    @app.get("/healthz", summary="process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="model and index loaded")
    def readyz(st: ServiceState = Depends(get_state)) -> Response:
        if st.answerer is None:
            return error(503, "not_ready", st.not_ready or "starting")
        m = st.answerer.index.manifest
        return SafeJSONResponse(
            {
                "status": "ready",
                "build": m.build_id,
                "model": m.model_id,
                "entries": m.counts.get("entries"),
                "calibrated": m.calibration is not None,
                "calibration": describe_calibration(m.calibration or {}),
            }
        )

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics(st: ServiceState = Depends(get_state)) -> Response:
        return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", summary="swap in the newest verified index")
    def reload(st: ServiceState = Depends(get_state), scope: str | None = Depends(require_admin)) -> dict[str, str]:
        st.shops.require_global(scope, "reload the platform index")
        return {"status": "reloaded", "build": st.reload()}

    @app.get("/admin/handoffs", summary="recent handoff tickets (a shop's token: that shop's only)")
    def handoffs(
        limit: int = 50,
        reason: str | None = None,
        shop: str | None = None,
        st: ServiceState = Depends(get_state),
        scope: str | None = Depends(require_admin),
    ) -> dict[str, Any]:
        if st.runtime is None:
            raise ModelError(st.not_ready or "not started")
        return {"tickets": [t.to_json() for t in st.shops.handoffs(scope, limit, reason, shop)]}

    install_web(app, settings)
    from service.console import install as install_console  # imports this module, so not at the top

    install_console(app)  # /console's admin API (gaps, stats, resolutions) and the stats gauges (#24)
    return app


KNOWN_PATHS = {
    "/v1/answer",
    "/v1/feedback",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/reload",
    "/admin/handoffs",
    *WEB_PATHS,
}
RATE_WINDOW_S = 60.0


def _rate_limited(state: ServiceState, scope: Scope) -> str | None:
    limit = state.settings.rate_limit_per_minute
    if limit <= 0:
        return None
    client = scope["client"][0] if scope.get("client") else "unknown"
    now = time.monotonic()
    with state.rate_lock:
        q = state.rate[client]
        while q and now - q[0] > RATE_WINDOW_S:
            q.popleft()
        if len(q) >= limit:
            return f"more than {limit} requests per minute from {client}; slow down (KEFU_RATE_LIMIT_PER_MINUTE)"
        q.append(now)
        if len(state.rate) > 100_000:  # bound memory under many distinct clients
            state.rate.clear()
    return None


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (several workers): settings from the environment."""
    return create_app(Settings())
