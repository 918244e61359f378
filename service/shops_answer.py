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
first use and kept in a bounded LRU; a shop rebuilt by another process is picked up at its next
question (the registry names the build to serve).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from indexer.vectorstore import check_shop_id
from indexer.vectorstore_index import StoreIndex
from kb.errors import InputError
from kb.loader import load_resources
from kb.schema import Resources
from kb.settings import BUNDLED_KB
from service.answerer import CLARIFY_CHOICES, SUGGESTIONS, Answerer
from service.schemas import Answer, AnswerItem, HandoffInfo, HistoryTurn
from service.sessions import SessionStore
from service.shops import ShopRecord, Shops
from service.shops_tickets import ShopTickets
from service.speller import Speller, read_userdict
from service.synonyms import SynonymExpander
from service.webhook import OrderEvent, OrderWebhook

EncodeFn = Callable[[Sequence[str]], np.ndarray]
# Decided by a rule before any confidence: the same on both sides, taken once.
RULE_REASONS = frozenset({"user_requested", "sensitive", "needs_order", "empty_query", "greeting"})
# Words that take a handoff to 官方客服 even from a shop's chat: the platform itself, its
# intervention in a dispute, complaints about the seller, fraud and counterfeits.
PLATFORM_TERMS = re.compile(
    r"官方|平台|小二|介入|仲裁|维权|举报|投诉(?:商家|卖家|店家|店铺|这家)|(?:商家|卖家|店家)不(?:理|回|处理|同意|退)|假货|骗"
)
TICKET_CANDIDATES = 5


class Route(StrEnum):
    SHOP = "shop"
    PLATFORM = "platform"


@dataclass(frozen=True)
class Side:
    """One answerer's answer to the message and its calibrated confidence."""

    owner: Route
    answer: Answer
    confidence: float

    @classmethod
    def of(cls, owner: Route, answer: Answer) -> Side:
        conf = answer.trace.get("confidence")
        return cls(owner, answer, float(conf) if isinstance(conf, int | float) else 0.0)


@dataclass(frozen=True)
class LoadedShop:
    build_id: str
    answerer: Answerer


def route_for(reason: str | None, query: str, shop: Side, platform: Side | None) -> Route:
    """Whom a handoff goes to (see the module docstring)."""
    if reason == "sensitive" or PLATFORM_TERMS.search(query):
        return Route.PLATFORM
    if reason == "low_confidence" and platform is not None and platform.confidence > shop.confidence:
        return Route.PLATFORM
    return Route.SHOP


def owned(items: Sequence[AnswerItem], owner: Route) -> list[AnswerItem]:
    return [i.model_copy(update={"source": i.source.model_copy(update={"owner": owner.value})}) for i in items]


def by_score(*lists: Sequence[AnswerItem]) -> list[AnswerItem]:
    """Items of both sides, best score first (both sides score on the same cosine scale)."""
    return sorted((i for items in lists for i in items), key=lambda i: -i.score)


class _SharedEncode:
    """The query encoder with a one-text memory per thread: the shop's and the platform's
    answerer search the same text one after the other, and it is encoded once."""

    def __init__(self, encode: EncodeFn) -> None:
        self.encode = encode
        self._local = threading.local()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        key = tuple(texts)
        last: tuple[tuple[str, ...], np.ndarray] | None = getattr(self._local, "last", None)
        if last is not None and last[0] == key:
            return last[1]
        vecs = self.encode(list(texts))
        self._local.last = (key, vecs)
        return vecs


BUNDLED_USERDICT = BUNDLED_KB / "resources" / "userdict.txt"


@lru_cache(maxsize=64)
def _userdict_words(path: Path | None) -> tuple[str, ...]:
    return tuple(read_userdict(path if path is not None and path.is_file() else None))


def _own_resources(kb_root: Path) -> Resources | None:
    """A shop KB's own ``resources/`` (synonyms, user words), or None: most shop KBs are one FAQ
    table, and parsing the bundled YAML again for each shop loaded cost 55 ms of a 60 ms load."""
    folder = kb_root / "resources"
    if not folder.is_dir():
        return None
    return _resources_at(folder, folder.stat().st_mtime_ns)


@lru_cache(maxsize=256)
def _resources_at(folder: Path, mtime_ns: int) -> Resources:  # the mtime makes a changed folder a new key
    return load_resources(folder.parent)


class ShopDesk:
    """``answer(platform, query, shop=…)``: one decision from a shop's KB and the platform's."""

    def __init__(
        self,
        shops: Shops,
        encode: EncodeFn,
        tickets: ShopTickets | None,
        sessions: SessionStore | None = None,
        capacity: int = 256,
        webhook: OrderWebhook | None = None,
        model_id: str | None = None,
        dim: int | None = None,
    ) -> None:
        self.shops = shops
        self.encode = _SharedEncode(encode)
        self.tickets = tickets
        self.sessions = sessions or SessionStore()
        self.capacity = capacity
        self.webhook = webhook
        self.model_id = model_id
        self.dim = dim
        self._loaded: OrderedDict[str, LoadedShop] = OrderedDict()
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
            calibration=platform.calibration,
            synonyms=platform.synonyms,
            speller=platform.speller,
        )
        self._platform = (platform, variant)
        return variant

    def shop_answerer(self, shop: str, platform: Answerer) -> tuple[ShopRecord, Answerer]:
        """The shop's answerer for the build the registry names (loaded on first use, LRU)."""
        rec = self.shops.registry.require(check_shop_id(shop))
        with self._lock:
            loaded = self._loaded.get(shop)
            if loaded is not None and loaded.build_id == rec.build_id:
                self._loaded.move_to_end(shop)
                return rec, loaded.answerer
        answerer = self._load(rec, platform)
        with self._lock:
            self._loaded[shop] = LoadedShop(rec.build_id, answerer)
            self._loaded.move_to_end(shop)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return rec, answerer

    def _load(self, rec: ShopRecord, platform: Answerer) -> Answerer:
        store = self.shops.store(rec.dim)
        index = StoreIndex.open(self.shops.folder(rec), store, rec.id, self.model_id)
        own = _own_resources(Path(index.manifest.kb_root))
        speller = None
        if platform.speller is not None:  # typo correction is on: with the shop's own words
            userdict = own.userdict if own is not None else BUNDLED_USERDICT
            speller = Speller(index.norm_texts, list(_userdict_words(userdict)))
        return Answerer(
            index,
            self.encode,
            platform.sensitive,  # the rules are the platform's, so both sides fire alike
            platform.options,
            sessions=self.sessions,
            greetings=platform.greetings,
            synonyms=SynonymExpander(own.synonyms) if own is not None else platform.synonyms,
            speller=speller,
        )

    def loaded(self) -> int:
        return len(self._loaded)

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
        rec, shop_answerer = self.shop_answerer(shop, platform)
        k = platform.options.top_k if top_k is None else top_k
        if k < 1:
            raise InputError(f"top_k={k} must be ≥ 1")
        sid = session_id or SessionStore.new_id()
        own = Side.of(Route.SHOP, shop_answerer.answer(query, session_id=sid, top_k=k, history=history))
        other: Side | None = None
        if own.answer.reason not in ("empty_query", "greeting"):  # nothing to search for
            variant = self.platform_variant(platform)
            other = Side.of(Route.PLATFORM, variant.answer(query, session_id=sid, top_k=k, history=history))
        return self._merge(query, rec, own, other, k, sid, t0)

    def _merge(self, query: str, rec: ShopRecord, own: Side, other: Side | None, k: int, sid: str, t0: float) -> Answer:
        sides = [own] if other is None else [own, other]
        lead = max(sides, key=lambda s: s.confidence)
        a = own.answer
        decision, reason, message = a.decision, a.reason, a.message
        answers: list[AnswerItem] = []
        suggestions: list[AnswerItem] = []
        if a.reason in RULE_REASONS:
            # a rule fired (on both sides alike): candidates of both, best first
            answers = by_score(*(owned(s.answer.answers, s.owner) for s in sides))[: len(a.answers)]
            suggestions = by_score(*(owned(s.answer.suggestions, s.owner) for s in sides))[:SUGGESTIONS]
        else:
            answering = [s for s in sides if s.answer.decision == "answer"]
            clarifying = [s for s in sides if s.answer.decision == "clarify"]
            if answering:
                ordered = sorted(answering, key=lambda s: -s.confidence)
                lead = ordered[0]
                decision, reason, message = "answer", None, None
                answers = [i for s in ordered for i in owned(s.answer.answers, s.owner)][:k]
            elif clarifying:
                ordered = sorted(clarifying, key=lambda s: -s.confidence)
                lead = ordered[0]
                decision, reason, message = "clarify", "ambiguous", lead.answer.message
                answers = [i for s in ordered for i in owned(s.answer.answers, s.owner)][:CLARIFY_CHOICES]
            else:
                decision, reason, message = "handoff", "low_confidence", None
                suggestions = by_score(*(owned(s.answer.suggestions, s.owner) for s in sides))[:SUGGESTIONS]
        handoff = None
        route: Route | None = None
        trace: dict[str, Any] = {
            **lead.answer.trace,
            "shop": rec.id,
            "shop_build": rec.build_id,
            "lead": lead.owner.value,
            "sides": {
                s.owner.value: {
                    "decision": s.answer.decision,
                    "reason": s.answer.reason,
                    "confidence": round(s.confidence, 4),
                    "build": s.answer.trace.get("build"),
                }
                for s in sides
            },
        }
        if decision == "handoff":
            route = route_for(reason, query, own, other)
            trace["route"] = route.value
            ticket_id = "-"
            if self.tickets is not None and reason != "empty_query":
                cands = by_score(*(owned(s.answer.answers or s.answer.suggestions, s.owner) for s in sides))
                ranked = [
                    {"id": i.id, "score": round(i.score, 4), "owner": i.source.owner} for i in cands[:TICKET_CANDIDATES]
                ]
                if not ranked:  # the answers of a handoff are not always shown: take the trace's candidates
                    ranked = [
                        {"id": c["id"], "score": c["score"], "owner": s.owner.value}
                        for s in sides
                        for c in s.answer.trace.get("candidates", [])[:2]
                    ]
                ticket_id = self.tickets.create(query, reason or "low_confidence", sid, ranked, rec.id, route).id
            handoff_message = a.handoff.message if a.handoff is not None else ""
            handoff = HandoffInfo(ticket_id=ticket_id, message=handoff_message, route=route.value)
            if reason == "needs_order" and self.webhook is not None:
                event = OrderEvent(query, a.normalized_query, sid, ticket_id, tuple(i.id for i in suggestions))
                trace["webhook"] = self.webhook.send(event).describe()
        return Answer(
            query=query,
            normalized_query=a.normalized_query,
            decision=decision,
            reason=reason,
            answers=answers,
            handoff=handoff,
            suggestions=suggestions,
            message=message,
            session_id=sid,
            elapsed_ms=round((time.perf_counter() - t0) * 1000, 2),
            trace=trace,
        )
