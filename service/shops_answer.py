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
"""

from __future__ import annotations

import logging
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
from indexer.vectorstore_index import StoreIndex, read_pack
from kb.errors import InputError, KefuError
from kb.loader import load_resources
from kb.schema import Resources
from kb.settings import BUNDLED_KB, Settings
from service.answerer import CLARIFY_CHOICES, SUGGESTIONS, Answerer
from service.schemas import Answer, AnswerItem, HandoffInfo, HistoryTurn
from service.sessions import SessionStore
from service.shops import ShopRecord, Shops, write_shop_pack
from service.shops_tickets import ShopTickets
from service.speller import KNOWN_AT, MIN_COUNT, RATIO, Speller, jieba_words, read_userdict, readings
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
# The LRU of loaded shops holds at most this share of the memory the process may use, and never
# more than SHOP_MEMORY_CAP: with the model (~1 GB) that keeps a serving process under 3 GB.
SHOP_MEMORY_SHARE = 0.25
SHOP_MEMORY_CAP = 2 << 30
SHOP_OVERHEAD = 48 << 10  # a loaded shop's answerer, calibration and speller tables besides its index
PRELOAD_FILL = 0.9  # ShopDesk.preload stops when the loaded shops hold this share of the budget

log = logging.getLogger("kefu.shops")


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
    nbytes: int  # what it holds in memory, roughly (``StoreIndex.nbytes`` + SHOP_OVERHEAD)


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


class PairCounts:
    """The speller's character-pair counts as a sorted array, read as its ``Counter`` is: 12 bytes a
    pair, no Python string or dict entry for each of a loaded shop's ~1,500 pairs."""

    def __init__(self, pairs: np.ndarray, counts: np.ndarray) -> None:
        self._pairs, self._counts = pairs, counts

    def get(self, pair: str, default: int = 0) -> int:
        i = int(self._pairs.searchsorted(pair))
        return int(self._counts[i]) if i < self._pairs.size and self._pairs[i] == pair else default

    def __getitem__(self, pair: str) -> int:
        return self.get(pair)


class PairsAtLeast:
    """The pairs counted at least ``n`` times (a set's ``in``), read from the counts themselves."""

    def __init__(self, counts: PairCounts, n: int) -> None:
        self._counts, self._n = counts, n

    def __contains__(self, pair: object) -> bool:
        return isinstance(pair, str) and self._counts.get(pair) >= self._n


class PackedSpeller(Speller):
    """``Speller`` from the pair counts a shop's pack carries (``write_shop_pack``): the same tables
    as ``Speller(texts, words)`` builds, without reading the texts."""

    def __init__(  # the parent's constructor counts the pairs of texts: not called
        self,
        pairs: np.ndarray,
        counts: np.ndarray,
        words: frozenset[str],
        min_count: int = MIN_COUNT,
        ratio: float = RATIO,
        known_at: int = KNOWN_AT,
    ) -> None:
        self.ratio = ratio
        self.pairs = PairCounts(pairs, counts)  # type: ignore[assignment]  # read as a Counter
        self.dictionary = jieba_words()
        self.extra = words
        self._known_pairs = PairsAtLeast(self.pairs, known_at)  # type: ignore[assignment,arg-type]  # read as a set
        self._after: dict[tuple[str, str], list[str]] = {}
        self._before: dict[tuple[str, str], list[str]] = {}
        for pair in pairs[counts >= min_count].tolist():  # sorted, as the parent's loop
            if not self.is_word(pair):
                continue
            for r in readings(pair[1]):
                self._after.setdefault((pair[0], r), []).append(pair[1])
            for r in readings(pair[0]):
                self._before.setdefault((r, pair[1]), []).append(pair[0])


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
def _userdict_words(path: Path | None) -> frozenset[str]:
    """A user dictionary's words, one set shared by every shop that uses it."""
    return frozenset(read_userdict(path if path is not None and path.is_file() else None))


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
        loaded = self._load(rec, platform)
        with self._lock:
            old = self._loaded.pop(shop, None)
            self._bytes += loaded.nbytes - (old.nbytes if old is not None else 0)
            self._loaded[shop] = loaded
            while len(self._loaded) > 1 and (
                self._bytes > self.budget or (self.capacity is not None and len(self._loaded) > self.capacity)
            ):
                self._bytes -= self._loaded.popitem(last=False)[1].nbytes
        return rec, loaded.answerer

    def _load(self, rec: ShopRecord, platform: Answerer) -> LoadedShop:
        """The shop's answerer from its build's pack (written now if the build has none) and its
        vectors read from the store once."""
        store = self.shops.store(rec.dim)
        folder = self.shops.folder(rec)
        pack = read_pack(folder)
        if pack is None or pack.header.get("build_id") != rec.build_id:
            index = StoreIndex.open(folder, store, rec.id, self.model_id)
            try:  # a build from before packs: write its pack, so this is the last slow load
                write_shop_pack(index, folder)
                pack = read_pack(folder)
            except (OSError, ValueError) as exc:
                log.warning("shop %s: cannot write the pack of build %s (%s)", rec.id, rec.build_id, exc)
        if pack is not None:
            index = StoreIndex.from_pack(pack, folder, store, rec.id, self.model_id)
        index.fetch_vectors()
        own = _own_resources(Path(index.manifest.kb_root))
        speller: Speller | None = None
        if platform.speller is not None:  # typo correction is on: with the shop's own words
            words = _userdict_words(own.userdict if own is not None else BUNDLED_USERDICT)
            extras = pack.extras if pack is not None else {}
            if "speller_pairs" in extras:
                speller = PackedSpeller(extras["speller_pairs"], extras["speller_counts"], words)
            else:
                speller = Speller(index.norm_texts, words)
        answerer = Answerer(
            index,
            self.encode,
            platform.sensitive,  # the rules are the platform's, so both sides fire alike
            platform.options,
            sessions=self.sessions,
            greetings=platform.greetings,
            synonyms=SynonymExpander(own.synonyms) if own is not None else platform.synonyms,
            speller=speller,
        )
        return LoadedShop(rec.build_id, answerer, index.nbytes + SHOP_OVERHEAD)

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
