"""The pure ASGI guard in front of every route (body size, rate limit, load shedding, security
headers, request metrics, a JSON 500) and the JSON error responses the API sends."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.errors import (
    BuildInProgressError,
    ConfigError,
    ForbiddenError,
    IndexMissingError,
    IndexStateError,
    InputError,
    KBError,
    KefuError,
    ModelError,
    NotFoundError,
)
from kb.learned import AlreadyUndoneError
from service.api_state import ServiceState
from service.gaps_resolve import AlreadyResolvedError
from service.web import WEB_PATHS

log = logging.getLogger("kefu.api")


class SafeJSONResponse(JSONResponse):
    """JSON with <, > and & escaped, so echoed text can never be read as HTML."""

    def render(self, content: Any) -> bytes:
        return safe_json(super().render(content))


def safe_json(body: bytes) -> bytes:
    return body.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


# The API's ``error`` code of each exception of kb/errors.py (a subclass not listed gets its nearest
# listed ancestor's). docs/api.md lists every code with its status; the status is the exception's
# ``http_status``.
ERROR_CODES: dict[type[KefuError], str] = {
    KefuError: "internal_error",
    ConfigError: "bad_request",
    AlreadyResolvedError: "conflict",
    AlreadyUndoneError: "conflict",
    InputError: "invalid_request",
    KBError: "kb_invalid",
    ForbiddenError: "forbidden",
    NotFoundError: "not_found",
    ModelError: "model_unavailable",
    IndexStateError: "index_unavailable",
    IndexMissingError: "not_ready",
    BuildInProgressError: "build_in_progress",
}
# The code of an HTTP error Starlette raises itself (no route, wrong method, unreadable body).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    422: "invalid_request",
    429: "rate_limited",
}


def error_code(exc: KefuError) -> str:
    """The ``error`` code of ``exc``: that of its class, or of the nearest ancestor in ERROR_CODES."""
    return next(ERROR_CODES[c] for c in type(exc).__mro__ if c in ERROR_CODES)


def http_code(status: int) -> str:
    return HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")


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
        # HEAD wherever GET works (FastAPI routes a GET route's HEAD to 405): the route answers the
        # GET, and only its headers go out (Content-Length still the GET body's, as HEAD wants).
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}

        async def send_tracked(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
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
