"""What the running HTTP service holds (``ServiceState``: runtime, micro-batcher, answerer, logs,
shops, metrics) and the FastAPI dependencies that reach it; ``service/api.py`` builds the app."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Histogram

from indexer.build import describe_calibration
from indexer.encoder import Encoder
from indexer.store import calibration_note
from kb.errors import IndexMissingError, IndexStateError, ModelError
from kb.settings import Settings
from service.answer_writer import AnswerWriter
from service.answerer import Answerer
from service.batcher import MicroBatcher
from service.runtime import Runtime, micro_batcher
from service.schemas import Answer
from service.sessions_store import SessionFile
from service.shops_api import ShopsState
from service.tickets import AnswerLog, FeedbackStore

log = logging.getLogger("kefu.api")


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
        self.answer_slots: anyio.CapacityLimiter | None = None  # answers computed at once (the batcher's)
        self.answerer: Answerer | None = None
        self.answer_log: AnswerLog | None = None
        self.answer_writer: AnswerWriter | None = None  # the answer path's side of the log
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
        self.answer_writer = AnswerWriter(self.answer_log)
        self.feedback = FeedbackStore(self.settings.tickets_path)
        try:
            self.runtime = Runtime.create(self.settings, encoder)
        except ModelError as exc:
            self.not_ready = f"model not loaded: {exc}"
            return
        shared = SessionFile.for_server(self.settings)
        if shared is not None:  # several workers: a follow-up finds its session in any of them
            self.runtime.sessions = shared
        self.batcher = micro_batcher(self.settings, self.runtime.encoder, self.metrics.encoder_batch)
        self.answer_slots = anyio.CapacityLimiter(self.batcher.answers_at_once)
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
        if self.answer_writer is not None:
            self.answer_writer.close()

    def logged_answers(self) -> AnswerLog | None:
        """The answer log with every answer served so far in it (a vote names one; stats read them)."""
        if self.answer_writer is not None:
            self.answer_writer.flush()
        return self.answer_log

    def log_answer(self, answer: Answer, shop: str | None = None) -> None:
        """Record a served answer (asked in ``shop``); a failing write is logged and the answer still goes out."""
        if self.answer_writer is None:
            return
        try:
            self.answer_writer.record(answer, shop)
        except sqlite3.Error as exc:
            log.warning("answer %s not logged (its 👍/👎 will get 404): %s", answer.answer_id, exc)


def readiness(answerer: Answerer) -> dict[str, Any]:
    """GET /readyz's body for the build ``answerer`` serves. ``calibration`` is the short summary
    it always gave; ``calibration_note`` the line `kefu build` printed (which calibration, and why),
    as `kefu index info` and `kefu serve` give it."""
    m = answerer.index.manifest
    return {
        "status": "ready",
        "build": m.build_id,
        "model": m.model_id,
        "entries": m.counts.get("entries"),
        "calibrated": m.calibration is not None,
        "calibration": describe_calibration(m.calibration or {}),
        "calibration_note": calibration_note(m),
    }


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
