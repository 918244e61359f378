"""Decide: the outcome of a message, from the rule that fired or from the calibrated confidence.

``Decision`` is the typed record of everything behind it (what eval and calibration read); the
response's JSON ``trace`` is a view of it (``Decision.trace``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from service.pipeline.prepare import Prepared
from service.pipeline.retrieve import Candidate, Searched
from service.pipeline.route import Rule
from service.policy import Calibration, Features, decide
from service.schemas import Decision as Outcome
from service.schemas import Reason

TRACE_DECIMALS = 4  # the trace rounds scores and features for people; Decision keeps them exact
FEATURE_NAMES = tuple(x.name for x in fields(Features))  # the trace's features, in their order
# The reason a confidence decision gives, by outcome.
CONFIDENCE_REASONS: dict[Outcome, Reason | None] = {"answer": None, "clarify": "ambiguous", "handoff": "low_confidence"}


@dataclass(frozen=True)
class Thresholds:
    """The calibration's cut-offs the decision was taken against."""

    answer_at: float
    clarify_at: float
    scope_at: float | None = None


@dataclass(frozen=True)
class Decision:
    """Why a message gets its outcome: the prepared message, the rule that fired (None: the
    confidence decided), what the search found (None: decided before any search), and the
    thresholds it was measured against."""

    prepared: Prepared
    outcome: Outcome  # answer | clarify | handoff
    reason: Reason | None
    rule: Rule | None
    searched: Searched | None
    scope: float | None  # the scope model's probability (a calibration with one, confidence decisions only)
    thresholds: Thresholds
    calibration: str  # the calibration's source
    build: str  # the index build that answered
    # why a confident answer was offered as options instead: "guessed_context" (understood only
    # with the earlier turns, and no follow-up) or "order_context" (asked in a chat about the
    # shopper's own order); None otherwise
    held: str | None = None

    @property
    def query(self) -> str:
        return self.prepared.query

    @property
    def session_id(self) -> str:
        return self.prepared.session_id

    @property
    def readings(self) -> tuple[str, ...]:
        """The readings with context that were searched (a follow-up's always, another message's
        only when it alone was not confident enough)."""
        return self.searched.readings if self.searched is not None else self.prepared.readings

    @property
    def fired(self) -> str:
        """The rule, or ``confidence→<outcome>``, as the trace names it."""
        return self.rule.fired if self.rule is not None else f"confidence→{self.outcome}"

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return self.searched.candidates if self.searched is not None else ()

    @property
    def features(self) -> Features | None:
        return self.searched.features if self.searched is not None else None

    @property
    def confidence(self) -> float | None:
        return self.searched.confidence if self.searched is not None else None

    @property
    def used_context(self) -> bool:
        return self.searched is not None and self.searched.used_context

    @property
    def remembered(self) -> str | None:
        """What the session keeps as this message's question for the next one (None: nothing)."""
        if self.rule is not None and not self.rule.remember:
            return None
        return self.searched.text if self.searched is not None else self.prepared.text

    @property
    def search_text(self) -> str:
        """The text the answer was searched with (a follow-up read with its context), else the message."""
        return self.searched.text if self.searched is not None else self.prepared.text

    def trace(self) -> dict[str, Any]:
        """The response's ``trace``: the signals and thresholds behind the decision, rounded."""
        t: dict[str, Any] = {"calibration": self.calibration, "build": self.build}
        s = self.searched
        if s is not None:  # what was searched and found; nothing for a rule decided before any search
            if self.prepared.corrections:
                t["spelling"] = [f"{c.typed}→{c.corrected} ({c.word})" for c in self.prepared.corrections]
            t["retrieval_text"] = s.text
            t["used_context"] = s.used_context
            if s.synonyms:
                t["synonyms"] = list(s.synonyms)
            t["confidence"] = round(s.confidence, TRACE_DECIMALS)
            t["answer_at"] = self.thresholds.answer_at
            t["clarify_at"] = self.thresholds.clarify_at
            f = s.features
            t["features"] = {x: round(getattr(f, x), TRACE_DECIMALS) for x in FEATURE_NAMES} if f else None
            t["candidates"] = [
                {"id": c.id, "doc_id": c.doc_id, "score": round(c.score, TRACE_DECIMALS)} for c in s.candidates
            ]
        if self.scope is not None:
            t["scope"] = round(self.scope, TRACE_DECIMALS)
            t["scope_at"] = self.thresholds.scope_at
        t["fired"] = self.fired
        if self.held is not None:
            t["held"] = self.held
        if self.rule is not None and self.rule.order is not None:
            t["order_rule"] = self.rule.order.rule
            t["order_match"] = self.rule.order.text
        if self.rule is not None and self.rule.merchant is not None:
            t["merchant_match"] = self.rule.merchant.text
        return t


class Decider:
    """The rule's outcome, or the calibration's: answer, clarify (the best few) or handoff."""

    def __init__(self, *, calibration: Calibration, build: str) -> None:
        self.calibration = calibration
        self.build = build

    def run(self, p: Prepared, rule: Rule | None, searched: Searched | None) -> Decision:
        cal = self.calibration
        thresholds = Thresholds(cal.answer_at, cal.clarify_at, cal.scope_at)
        if rule is not None:
            return Decision(p, rule.decision, rule.reason, rule, searched, None, thresholds, cal.source, self.build)
        if searched is None:
            raise ValueError("a message no rule decided must be searched before the confidence decides")
        scope = cal.scope(searched.features) if searched.features is not None else None
        outcome = decide(searched.confidence, cal, scope)
        held = None
        if outcome == "answer":
            # A bare answer only for a question kefu understood on its own terms. Understood only with
            # the earlier turns, or asked in a chat about the shopper's own order (能改下收货地址吗 after
            # the order number), an article may or may not settle it: the shopper is offered it among
            # 您是不是想问 options, and the answerable ones still get their entry (docs/experiments.md,
            # sessions 25 and 26).
            held = "guessed_context" if searched.guessed_context else "order_context" if p.order_context else None
            outcome = "clarify" if held else outcome
        return Decision(
            p, outcome, CONFIDENCE_REASONS[outcome], None, searched, scope, thresholds, cal.source, self.build, held
        )
