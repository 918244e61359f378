"""Assemble the heavy objects once: encoder, index, detectors, stores → an Answerer.

This is where ``Settings`` meets the components: each takes plain keyword arguments, and the
functions here (``options_from``, ``micro_batcher``, ``order_webhook``, ``sensitive_detector``,
``Runtime``; ``indexer.encoder.load_encoder`` for the encoder) map the settings onto them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from indexer.build import describe_calibration, question_path, questions_match
from indexer.encoder import Encoder, load_encoder
from indexer.index import Index
from indexer.normalize import normalize
from indexer.store import IndexStore
from kb.loader import load_resources
from kb.settings import BUNDLED_KB, Settings
from service.answerer import Answerer, AnswererOptions
from service.batcher import MicroBatcher
from service.detect import is_bot_failure, is_greeting
from service.kb_rules import KBRules
from service.merchant import MerchantRules
from service.orders import OrderRules
from service.policy import Calibration
from service.sensitive import SensitiveDetector
from service.sessions import SessionStore
from service.speller import speller_for
from service.synonyms import SynonymExpander
from service.tickets import TicketStore
from service.webhook import OrderWebhook

log = logging.getLogger("kefu.runtime")
R = TypeVar("R", bound=KBRules)


def sensitive_detector(settings: Settings, kb_root: Path | None = None) -> SensitiveDetector:
    if settings.sensitive_terms:
        return SensitiveDetector.from_terms(settings.sensitive_terms)
    for root in (kb_root, BUNDLED_KB):
        if root is not None and (root / "resources" / "sensitive.yaml").is_file():
            return SensitiveDetector.from_file(root / "resources" / "sensitive.yaml")
    return SensitiveDetector.from_file(BUNDLED_KB / "resources" / "sensitive.yaml")


def kb_sensitive(settings: Settings, index: Index, kb_root: Path | None = None) -> SensitiveDetector:
    """The sensitive detector for ``index``'s KB: the configured terms less those the KB's own FAQ
    questions use (``SensitiveDetector.for_kb``), which the log names."""
    detector = sensitive_detector(settings, kb_root).for_kb(normalize(e.question) for e in index.entries.values())
    if detector.kb_topics:
        log.info(
            "build %s: sensitive terms its own FAQ questions use are this KB's topics, not alarms: %s",
            index.manifest.build_id,
            ", ".join(f"{t.term} ({t.entries})" for t in detector.kb_topics),
        )
    return detector


def kb_rules(index: Index, rules: type[R], reason: str) -> R:
    """``reason``'s wording rules for ``index``'s KB: those its own FAQ questions match are off
    (``KBRules.for_kb``), which the log names."""
    found = rules.for_kb(normalize(e.question) for e in index.entries.values())
    if found.kb_topics:
        log.info(
            "build %s: %s rules its own FAQ questions match are this KB's topics, not handoffs: %s",
            index.manifest.build_id,
            reason,
            ", ".join(f"{rule} ({n})" for rule, n in found.kb_topics),
        )
    return found


def kb_orders(index: Index) -> OrderRules:
    return kb_rules(index, OrderRules, "needs_order")


def kb_merchant(index: Index) -> MerchantRules:
    return kb_rules(index, MerchantRules, "merchant")


def _small_talk(norm: str) -> bool:
    return is_greeting(norm) or is_bot_failure(norm)


def kb_small_talk(index: Index) -> bool:
    """Whether ``index``'s KB answers small talk itself: some of its own FAQ questions are greetings,
    closings or complaints to the bot (a phone assistant's 你好你好, 谢谢你了, 我说话你都听不懂). Then
    they are that KB's topic and go to it rather than to the greeting rule or a person, as order
    wordings do (``kb_orders``); the log says so."""
    own = [e.question for e in index.entries.values() if _small_talk(normalize(e.question))]
    if own:
        log.info(
            "build %s: %d of its own FAQ questions are small talk (%s): they are this KB's topic, "
            "so greetings and complaints to the bot are answered from it",
            index.manifest.build_id,
            len(own),
            "、".join(own[:3]),
        )
    return bool(own)


def resources_root(index: Index) -> Path:
    """Where a build's resources are read from: its own folder (builds carry them), else, for a
    build made before they did, the KB it was built from, else the bundled KB."""
    if index.folder is not None and (index.folder / "resources").is_dir():
        return index.folder
    kb_root = Path(index.manifest.kb_root)
    if index.folder is None:  # built in memory (evaluation, training): its KB is right there
        return kb_root if kb_root.is_dir() else BUNDLED_KB
    log.warning(
        "build %s carries no resources/ (an older kefu built it): reading them from %s; run `kefu build --force`",
        index.manifest.build_id,
        kb_root if kb_root.is_dir() else "the bundled KB",
    )
    return kb_root if kb_root.is_dir() else BUNDLED_KB


def options_from(settings: Settings) -> AnswererOptions:
    return AnswererOptions(
        top_k=settings.top_k,
        max_query_chars=settings.max_query_chars,
        handoff_message=settings.handoff_message,
        retrieval=settings.retrieval,
        expand_synonyms=settings.expand_synonyms,
        see_also=settings.see_also,
        correct_typos=settings.correct_typos,
        order_detection=settings.order_detection,
        merchant_detection=settings.merchant_detection,
        handoff_candidates=settings.handoff_candidates,
    )


def micro_batcher(
    settings: Settings, encoder: Encoder, on_batch: Callable[[int, float], None] | None = None
) -> MicroBatcher:
    """The micro-batcher in front of ``encoder`` (KEFU_MICROBATCH_WAIT_MS, KEFU_MICROBATCH_MAX)."""
    return MicroBatcher.for_encoder(
        encoder, wait_ms=settings.microbatch_wait_ms, max_batch=settings.microbatch_max, on_batch=on_batch
    )


def order_webhook(settings: Settings) -> OrderWebhook | None:
    """The needs_order webhook, when KEFU_ORDER_WEBHOOK names one."""
    if settings.order_webhook is None:
        return None
    return OrderWebhook(settings.order_webhook, settings.order_webhook_timeout_s)


@dataclass
class Runtime:
    """What a process needs to answer: built once (CLI command, API lifespan), then shared."""

    settings: Settings
    encoder: Encoder
    store: IndexStore
    sessions: SessionStore
    tickets: TicketStore

    @classmethod
    def create(cls, settings: Settings, encoder: Encoder | None = None) -> Runtime:
        return cls(
            settings=settings,
            encoder=encoder or load_encoder(settings),
            store=IndexStore(settings.index_home, settings.keep_builds),
            sessions=SessionStore(settings.session_ttl_s, settings.session_max),
            tickets=TicketStore(settings.tickets_path),
        )

    def answerer(  # type: ignore[no-untyped-def]
        self, index: Index | None = None, encode=None, calibration: Calibration | None = None
    ) -> Answerer:
        """The answerer over ``index`` (default: the current build) with the build's calibration
        unless ``calibration`` is given."""
        index = index or self.store.load_current(self.encoder.model_id)
        index.set_dense_int8(self.settings.dense_int8)
        built, now = index.manifest.question_path, question_path(self.encoder)
        if not questions_match(built, self.encoder):  # it answers, but a stored question no longer matches itself typed
            log.warning(
                "index %s encoded its questions as %s, and queries are now encoded as %s: run "
                "`kefu build` to re-encode them (answers and documents come from the cache)",
                index.manifest.build_id,
                built or "an older kefu did",
                now,
            )
        m = index.manifest
        log.info("build %s: %s", m.build_id, describe_calibration(m.calibration or {}))
        fitted_for = (m.calibration or {}).get("kb_hash")
        if fitted_for and fitted_for != m.kb_hash:  # written by hand or by an older kefu: say it is stale
            log.warning(
                "build %s: its calibration was fitted for another KB (%s); run `kefu build --force`",
                m.build_id,
                fitted_for[:8],
            )
        root = resources_root(index)
        resources = load_resources(root)
        return Answerer(
            index=index,
            encode=encode or self.encoder.encode_queries,
            sensitive=kb_sensitive(self.settings, index, root),
            orders=kb_orders(index),
            merchant=kb_merchant(index),
            small_talk=kb_small_talk(index),
            options=options_from(self.settings),
            sessions=self.sessions,
            tickets=self.tickets,
            greetings=resources.greetings + resources.thanks,
            thanks=resources.thanks,
            examples=resources.examples,
            replies=resources.replies,
            synonyms=SynonymExpander(resources.synonyms),
            calibration=calibration,
            speller=speller_for(index.norm_texts, resources.userdict) if self.settings.correct_typos else None,
            webhook=order_webhook(self.settings),
        )


def dump(answer: object) -> str:
    return json.dumps(answer, ensure_ascii=False)
