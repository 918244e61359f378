"""What the HTTP API needs for shops: the desk that answers for a shop, and admin scopes.

Kept out of ``service/api.py`` so the API only routes: ``POST /v1/answer`` with a ``shop`` goes to
``ShopsState.answer``, and ``/admin/*`` asks ``ShopsState.admin_scope`` whose token it was given.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from kb.errors import ForbiddenError, IndexStateError, KefuError, NotFoundError
from kb.settings import Settings
from service.answerer import Answerer
from service.runtime import Runtime, order_webhook
from service.schemas import Answer, AnswerRequest, Welcome
from service.sessions_store import SessionFile
from service.shops import Shops
from service.shops_answer import ShopDesk, shop_capacity
from service.shops_tickets import RoutedTicket, ShopTickets

log = logging.getLogger("kefu.shops")
GLOBAL = None  # the admin scope of the global token: every shop and the platform


class ShopsState:
    """The serving side of shops: built at start-up, connected to the vector store on first use
    (or at start-up when shops exist), so a process without shops pays nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shops = Shops(settings)
        self.desk: ShopDesk | None = None
        self.tickets: ShopTickets | None = None
        self.not_ready: str | None = "starting"
        self._lock = threading.Lock()
        self._preload: threading.Thread | None = None

    def start(self, runtime: Runtime, encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        """Build the desk; connect the vector store now when there are shops to serve (a Milvus URI
        that cannot be reached is said in ``not_ready`` and in each shop request's 503)."""
        self.shops.encoder = runtime.encoder
        self.tickets = ShopTickets(runtime.tickets)
        self.desk = ShopDesk(
            self.shops,
            encode,
            self.tickets,
            sessions=SessionFile.for_server(self.settings, "shops"),
            platform_sessions=SessionFile.for_server(self.settings, "shops-platform"),
            capacity=shop_capacity(self.settings),
            webhook=order_webhook(self.settings),
            model_id=runtime.encoder.model_id,
            dim=runtime.encoder.dim,
        )
        self.not_ready = None
        if self.shops.registry.count():
            try:
                self.desk.warm_up()
            except KefuError as exc:
                self.not_ready = str(exc)
                log.warning("shops are not served: %s", exc)

    def answer(self, platform: Answerer, req: AnswerRequest) -> Answer:
        if req.shop is None:
            raise NotFoundError("no shop in the request")
        return self._ready(platform).answer(
            platform, req.query, req.shop, session_id=req.session_id, top_k=req.top_k, history=req.history
        )

    def welcome(self, platform: Answerer, shop: str) -> Welcome:
        """What the shop's chat opens with: its greeting and questions of its own KB."""
        _, answerer = self._ready(platform).shop_answerer(shop, platform)
        return answerer.welcome()

    def _ready(self, platform: Answerer) -> ShopDesk:
        """The desk, its vector store connected (tried again if it was not), preloading started."""
        desk = self.desk
        if desk is None:
            raise IndexStateError(f"shops are not served yet: {self.not_ready}")
        if self.not_ready is not None:
            with self._lock:  # try again: the store may be back
                try:
                    desk.warm_up()
                    self.not_ready = None
                except KefuError as exc:
                    self.not_ready = str(exc)
                    raise
        if self._preload is None:
            self._start_preload(desk, platform)
        return desk

    def _start_preload(self, desk: ShopDesk, platform: Answerer) -> None:
        """Load the other shops in the background (``ShopDesk.preload``, paced), from the first
        question to a shop on: it needs the served platform answerer the shops answer beside."""
        with self._lock:
            if self._preload is not None:
                return

            def run() -> None:
                try:
                    n = desk.preload(platform)
                    log.info("preloaded %d shops (%.0f MB)", n, desk.loaded_bytes() / 2**20)
                except Exception as exc:  # a background warm-up never takes the server down
                    log.warning("preloading shops stopped: %s", exc)

            self._preload = threading.Thread(target=run, name="kefu-shops-preload", daemon=True)
            self._preload.start()

    def admin_scope(self, authorization: str) -> str | None:
        """``GLOBAL`` (None) for the global admin token, the shop's id for a shop's token; else a
        PermissionError (401). Admin is off (404) when no global token is set and no shop has one."""
        token = self.settings.admin_token
        # the whole header against the whole expected header, in constant time, whatever was sent
        if token is not None and hmac.compare_digest(
            authorization.encode(), f"Bearer {token.get_secret_value()}".encode()
        ):
            return GLOBAL
        given = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        shop = self.shops.registry.shop_of_token(given) if given else None
        if shop is not None:
            return shop
        if token is None and not any(r.has_token for r in self.shops.registry.list()):
            raise NotFoundError("admin endpoints are disabled; set KEFU_ADMIN_TOKEN to enable them")
        raise PermissionError("missing or wrong bearer token")

    def handoffs(self, scope: str | None, limit: int, reason: str | None, shop: str | None) -> list[RoutedTicket]:
        """Recent tickets a scope may see: a shop's token sees its own only, whatever it asks."""
        if self.tickets is None:
            raise IndexStateError(f"not started: {self.not_ready}")
        if scope is not GLOBAL:
            if shop is not None and shop != scope:
                raise ForbiddenError(f"this token belongs to shop {scope!r}; it cannot read shop {shop!r}")
            shop = scope
        return self.tickets.list(min(max(limit, 1), 500), reason, shop)

    @staticmethod
    def require_global(scope: str | None, what: str) -> None:
        if scope is not GLOBAL:
            raise ForbiddenError(f"a shop's token cannot {what}; use KEFU_ADMIN_TOKEN")
