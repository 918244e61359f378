"""Answering for a shop: the shop's KB and the platform help center, each with its own calibration.

Two answerers run on the same message: the shop's (its build, served from the vector store, its
self-calibration) and the platform's (the served help center and its calibration). Neither is
changed: this module composes their typed answers.

- **Rules once.** Both answerers share the platform's detectors (转人工 requests, sensitive terms,
  needs_order), so a rule fires on both or on neither; the decision and the one ticket are made
  here, never twice.
- **Confidence decides.** Each side's confidence is calibrated for its own KB (a probability that
  its top answer is right), so they compare: of the sides that would answer, the more confident
  one answers first and the other's answers follow; else a clarify offers both sides' choices;
  else it is a handoff.
- **Route.** A handoff goes to the shop's agents (``shop``: its goods, shipping, returns, a
  shopper asking for a person in the shop's chat, an order of the shop) or to 官方客服
  (``platform``: sensitive messages, disputes with the seller, anything that names the platform,
  and a low-confidence question closer to the help center than to the shop's KB).

Each answer's ``source.owner`` says ``shop`` or ``platform``. Shops' answerers are loaded on
first use from their build's pack (``indexer.vectorstore_index``: one file read, nothing rebuilt,
the vectors read from the store once) and kept in an LRU bounded by memory (``memory_budget``) and,
when KEFU_SHOP_CACHE is set, by count; a shop rebuilt by another process is picked up at its next
question (the registry names the build to serve).

The parts: ``service/shops_merge.py`` makes the one decision from the two sides, and
``service/shops_load.py`` loads a shop's answerer from its build's pack.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from indexer.vectorstore import check_shop_id
from kb.errors import InputError, KefuError
from kb.settings import Settings
from service.answerer import Answerer
from service.pipeline.decide import Decision
from service.schemas import Answer, HistoryTurn
from service.sessions import SessionStore
from service.shops import Shops
from service.shops_load import LoadedShop, load_shop
from service.shops_merge import Route, Side, merge
from service.shops_registry import ShopRecord
from service.shops_tickets import ShopTickets
from service.tickets import Prior
from service.webhook import OrderWebhook

EncodeFn = Callable[[Sequence[str]], np.ndarray]
# The LRU of loaded shops holds at most this share of the memory the process may use, and never
# more than SHOP_MEMORY_CAP. A server grows by ~1.1× the shops' estimate (allocator slack) on top
# of ~1.1 GB (model, platform index, Python): at 1.5 GiB a server with 5,000 shops holds 2.8 GiB,
# under 3 GB; at 2 GiB it held 3.13 GiB (docs/scaling.md).
SHOP_MEMORY_SHARE = 0.25
SHOP_MEMORY_CAP = 3 << 29  # 1.5 GiB
PRELOAD_FILL = 0.9  # ShopDesk.preload stops when the loaded shops hold this share of the budget
# Shops being loaded for a question, beside the platform's decision (``ShopDesk.answer``); two at once
# as the machine has cores, and a load mostly waits on a file or the vector store.
_LOADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kefu-shop-load")

log = logging.getLogger("kefu.shops")


def _memory_limit() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when lower."""
    import os

    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def memory_budget() -> int:
    """Bytes the LRU of loaded shops may hold (``SHOP_MEMORY_SHARE`` of the limit, at most the cap)."""
    return int(min(SHOP_MEMORY_CAP, SHOP_MEMORY_SHARE * _memory_limit()))


def shop_capacity(settings: Settings) -> int | None:
    """KEFU_SHOP_CACHE when it was set (a count bound on top of the memory one), else None: the
    memory budget alone sizes the LRU. (Its default, 256, is not a choice anyone made: a settings
    object copied with overrides marks every field as set, so the environment is asked again.)"""
    default = type(settings).model_fields["shop_cache"].default
    if settings.shop_cache != default:
        return settings.shop_cache
    try:
        given = "shop_cache" in type(settings)().model_fields_set
    except ValueError:
        given = False
    return settings.shop_cache if given else None


# A message and its readings with context (at most two) are searched by the shop's answerer and then
# by the platform's: remembering this many texts per thread encodes each once.
SHARED_ENCODE_MEMORY = 4


class _SharedEncode:
    """The query encoder with a small memory per thread: the shop's and the platform's answerer
    search the same texts one after the other, and each is encoded once."""

    def __init__(self, encode: EncodeFn) -> None:
        self.encode = encode
        self._local = threading.local()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        key = tuple(texts)
        memory: OrderedDict[tuple[str, ...], np.ndarray] | None = getattr(self._local, "memory", None)
        if memory is None:
            memory = self._local.memory = OrderedDict()
        if key in memory:
            memory.move_to_end(key)
            return memory[key]
        vecs = self.encode(list(texts))
        memory[key] = vecs
        if len(memory) > SHARED_ENCODE_MEMORY:
            memory.popitem(last=False)
        return vecs


class ShopDesk:
    """``answer(platform, query, shop=…)``: one decision from a shop's KB and the platform's."""

    def __init__(
        self,
        shops: Shops,
        encode: EncodeFn,
        tickets: ShopTickets | None,
        sessions: SessionStore | None = None,
        platform_sessions: SessionStore | None = None,
        capacity: int | None = None,
        webhook: OrderWebhook | None = None,
        model_id: str | None = None,
        dim: int | None = None,
        budget: int | None = None,
    ) -> None:
        self.shops = shops
        self.encode = _SharedEncode(encode)
        self.tickets = tickets
        self.sessions = sessions or SessionStore()
        # the platform side of shop conversations, apart from the platform's own (None: one store
        # per served platform answerer, in memory)
        self.platform_sessions = platform_sessions
        self.capacity = capacity  # shops kept loaded at most (None: as many as the budget holds)
        self.budget = memory_budget() if budget is None else budget  # bytes they may hold
        self.webhook = webhook
        self.model_id = model_id
        self.dim = dim
        self._loaded: OrderedDict[str, LoadedShop] = OrderedDict()
        self._bytes = 0  # the loaded shops' nbytes
        self._lock = threading.Lock()
        self._platform: tuple[Answerer, Answerer] | None = None  # (served answerer, its variant here)

    def warm_up(self) -> None:
        """Connect the vector store (a Milvus URI that cannot be reached fails here, with the reason)."""
        if self.dim is not None:
            self.shops.store(self.dim)

    # --- answerers -----------------------------------------------------------------------------
    def platform_variant(self, platform: Answerer) -> Answerer:
        """The served platform answerer with the shared encoder, sessions of its own, no tickets or
        webhook (the desk opens the one ticket), made once per served answerer."""
        cached = self._platform
        if cached is not None and cached[0] is platform:
            return cached[1]
        variant = Answerer(
            platform.index,
            self.encode,
            platform.sensitive,
            platform.options,
            greetings=platform.greetings,
            thanks=platform.thanks,
            calibration=platform.calibration,
            synonyms=platform.synonyms,
            speller=platform.speller,
            sessions=self.platform_sessions,
            orders=platform.orders,
            merchant=platform.merchant,
            small_talk=platform.small_talk,
        )
        self._platform = (platform, variant)
        return variant

    def shop_answerer(self, shop: str, platform: Answerer) -> tuple[ShopRecord, Answerer]:
        """The shop's answerer for the build the registry names (loaded on first use, LRU)."""
        return self._answerer_for(self.shops.registry.require(check_shop_id(shop)), platform)

    def _loaded_answerer(self, rec: ShopRecord) -> Answerer | None:
        """The shop's answerer if the build ``rec`` names is loaded (now the most recently used)."""
        with self._lock:
            loaded = self._loaded.get(rec.id)
            if loaded is None or loaded.build_id != rec.build_id:
                return None
            self._loaded.move_to_end(rec.id)
            return loaded.answerer

    def _answerer_for(self, rec: ShopRecord, platform: Answerer) -> tuple[ShopRecord, Answerer]:
        answerer = self._loaded_answerer(rec)
        if answerer is not None:
            return rec, answerer
        shop = rec.id
        loaded = load_shop(self.shops, rec, platform, self.encode, self.sessions, self.model_id)
        with self._lock:
            old = self._loaded.pop(shop, None)
            self._bytes += loaded.nbytes - (old.nbytes if old is not None else 0)
            self._loaded[shop] = loaded
            while len(self._loaded) > 1 and (
                self._bytes > self.budget or (self.capacity is not None and len(self._loaded) > self.capacity)
            ):
                self._bytes -= self._loaded.popitem(last=False)[1].nbytes
        # A loaded shop is ~330 objects the cyclic collector tracks (its chunks, entries, rows of
        # units) and none of them is garbage while it is loaded; an evicted shop holds no cycle,
        # so reference counting frees it, and answering makes no cyclic garbage either. Left in
        # the collector's generations, thousands of loaded shops made every full collection walk
        # all of them (0.8 s with the interpreter lock held at 5,000 shops) and loading them set
        # one off at every 25% of growth: 3.6 s of a 15 s preload. Frozen, no collection visits them.
        gc.freeze()
        return rec, loaded.answerer

    def loaded(self) -> int:
        return len(self._loaded)

    def preload(
        self, platform: Answerer, stop: threading.Event | None = None, fill: float = PRELOAD_FILL, pace: float = 1.0
    ) -> int:
        """Load shops not loaded yet, the most recently updated first, until the LRU holds ``fill``
        of its budget (or its count bound, or every shop): the first question to a shop then finds
        it loaded. After each load it sleeps ``pace`` times as long as the load took, so serving
        keeps most of the CPU. Returns how many it loaded; a shop that fails is skipped."""
        done = 0
        for rec in sorted(self.shops.registry.list(), key=lambda r: -r.updated):
            full = self._bytes >= fill * self.budget
            if full or (stop is not None and stop.is_set()) or (self.capacity and self.loaded() >= self.capacity):
                break
            with self._lock:
                have = self._loaded.get(rec.id)
            if have is not None and have.build_id == rec.build_id:
                continue
            t0 = time.perf_counter()
            try:
                self.shop_answerer(rec.id, platform)
            except KefuError as exc:
                log.warning("shop %s not preloaded: %s", rec.id, exc)
                continue
            done += 1
            if pace > 0:
                time.sleep(pace * (time.perf_counter() - t0))
        return done

    def loaded_bytes(self) -> int:
        """What the loaded shops hold, by their estimates (against ``budget``)."""
        return self._bytes

    # --- the one verb --------------------------------------------------------------------------
    def answer(
        self,
        platform: Answerer,
        query: str,
        shop: str,
        session_id: str | None = None,
        top_k: int | None = None,
        history: Sequence[HistoryTurn] | None = None,
    ) -> Answer:
        t0 = time.perf_counter()
        k = platform.options.top_k if top_k is None else top_k
        if k < 1:
            raise InputError(f"top_k={k} must be ≥ 1")
        sid = session_id or SessionStore.new_id()
        rec = self.shops.registry.require(check_shop_id(shop))  # an unknown shop is refused before any work
        variant = self.platform_variant(platform)
        early: Decision | None = None
        answerer = self._loaded_answerer(rec)
        if answerer is not None:
            shop_answerer = answerer
        else:
            # A shop not loaded yet is read from its build and the vector store while the platform
            # decides (its encode and a Milvus read both leave the interpreter lock): the decision
            # has no effects, and the platform's answer is made from it below only if still needed.
            loading = _LOADS.submit(self._answerer_for, rec, platform)
            try:
                early = variant.explain(query, session_id=sid, history=history)
            finally:
                rec, shop_answerer = loading.result()
        before = Prior(self.sessions.messages(sid), tuple(history or ()))  # read before this message joins them
        own = Side.of(Route.SHOP, shop_answerer.answer(query, session_id=sid, top_k=k, history=history))
        other: Side | None = None
        if own.answer.reason not in ("empty_query", "greeting"):  # nothing to search for
            if early is not None:
                said = variant.respond(early, top_k=k, history=history, started=t0)
            else:
                said = variant.answer(query, session_id=sid, top_k=k, history=history)
            other = Side.of(Route.PLATFORM, said)
        return merge(query, rec, own, other, k, sid, t0, tickets=self.tickets, webhook=self.webhook, before=before)

    def is_loaded(self, shop: str) -> bool:
        """Whether ``shop``'s answerer for the build the registry names is loaded."""
        rec = self.shops.registry.get(check_shop_id(shop))
        return rec is not None and self._loaded_answerer(rec) is not None
