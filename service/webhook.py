"""``OrderWebhook.send(event) -> Delivery``: tell an order system that a shopper needs their order.

A ``needs_order`` handoff is POSTed as JSON to ``KEFU_ORDER_WEBHOOK`` so the order system can look
the order up before an agent takes the chat. It is a courtesy, never a dependency: the answer waits
at most ``KEFU_ORDER_WEBHOOK_TIMEOUT_S`` for it, and every failure is a warning in the log.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass

from kb.errors import ConfigError

log = logging.getLogger("kefu.webhook")

# The POST runs on a worker so the caller's wait is bounded by the timeout as a whole: urllib's
# timeout applies to each socket operation, and a server that trickles its reply could hold a
# caller for several of them. A few workers are enough for a handoff rate of a few per second;
# a POST still queued when its caller gave up is cancelled instead of sent late.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kefu-webhook")


@dataclass(frozen=True)
class OrderEvent:
    """What the order system receives (the JSON body, field for field)."""

    query: str  # the shopper's own text, unmasked: the order number in it is the point
    normalized_query: str
    session_id: str
    ticket_id: str
    suggestions: tuple[str, ...]  # ids of the self-service articles offered meanwhile
    intent: str = "needs_order"

    def to_json(self) -> bytes:
        body = asdict(self)
        body["suggestions"] = list(self.suggestions)
        return json.dumps(body, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Delivery:
    """How one POST went: ``ok`` with a 2xx, otherwise ``error`` says what failed."""

    ok: bool
    status: int | None
    error: str | None
    elapsed_ms: float

    def describe(self) -> str:
        return f"delivered ({self.status})" if self.ok else f"failed: {self.error}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET without its body; report it as a failure."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class OrderWebhook:
    """POSTs :class:`OrderEvent` to one http(s) URL with a short, bounded wait."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"KEFU_ORDER_WEBHOOK must be an http:// or https:// URL with a host, got {url!r}")
        if not 0 < timeout_s <= 10:
            raise ConfigError(f"KEFU_ORDER_WEBHOOK_TIMEOUT_S must be in (0, 10] seconds, got {timeout_s}")
        self.url = url
        self.timeout_s = timeout_s
        # For the log: a token in the userinfo or the query string stays out of it.
        port = f":{parts.port}" if parts.port else ""
        self.where = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"

    def send(self, event: OrderEvent) -> Delivery:
        """POST ``event``; wait at most ``timeout_s``. Never raises: failures are logged and returned."""
        t0 = time.perf_counter()
        future = _POOL.submit(self._post, event.to_json())
        try:
            status, error = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued: drop it; running: its socket timeout ends it
            status, error = None, f"no reply within {self.timeout_s:g} s"
        except Exception as exc:  # anything else: a webhook must never fail an answer
            status, error = None, f"{type(exc).__name__}: {exc}"
        delivery = Delivery(error is None, status, error, round((time.perf_counter() - t0) * 1000, 2))
        if not delivery.ok:
            log.warning("order webhook %s for ticket %s %s", self.where, event.ticket_id, delivery.describe())
        return delivery

    def _post(self, body: bytes) -> tuple[int | None, str | None]:
        """(status, None) on a 2xx, else (status or None, what went wrong)."""
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "kefu-order-webhook"},
        )
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:  # a non-2xx reply, redirects included
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, socket timeout, TLS
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return None, f"{type(reason).__name__}: {reason}"
        if not 200 <= status < 300:
            return status, f"HTTP {status}"
        return status, None
