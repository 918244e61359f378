"""One answer from a shop's side and the platform's: which side leads, what is shown, where a handoff goes."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.answerer import CLARIFY_CHOICES, SUGGESTIONS
from service.schemas import RULE_HANDOFF_REASONS, Answer, AnswerItem, HandoffInfo
from service.shops_registry import ShopRecord
from service.shops_tickets import ShopTickets
from service.tickets import Prior
from service.webhook import OrderEvent, OrderWebhook

# Decided by a rule before any confidence: the same on both sides, taken once.
RULE_REASONS = frozenset({*RULE_HANDOFF_REASONS, "greeting"})
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


def route_for(reason: str | None, query: str, shop: Side, platform: Side | None) -> Route:
    """Whom a handoff goes to (see ``service/shops_answer.py``)."""
    if reason in ("sensitive", "merchant") or PLATFORM_TERMS.search(query):
        return Route.PLATFORM
    if reason == "low_confidence" and platform is not None and platform.confidence > shop.confidence:
        return Route.PLATFORM
    return Route.SHOP


def owned(items: Sequence[AnswerItem], owner: Route) -> list[AnswerItem]:
    return [i.model_copy(update={"source": i.source.model_copy(update={"owner": owner.value})}) for i in items]


def by_score(*lists: Sequence[AnswerItem]) -> list[AnswerItem]:
    """Items of both sides, best score first (both sides score on the same cosine scale)."""
    return sorted((i for items in lists for i in items), key=lambda i: -i.score)


def merge(
    query: str,
    rec: ShopRecord,
    own: Side,
    other: Side | None,
    k: int,
    sid: str,
    t0: float,
    *,
    tickets: ShopTickets | None,
    webhook: OrderWebhook | None,
    before: Prior = Prior(),
) -> Answer:
    """The one answer of ``ShopDesk.answer`` from the shop's side (``own``) and the platform's
    (``other``, None when there was nothing to search for); a handoff opens its one ticket in
    ``tickets`` (with ``before``: the session's earlier messages and the caller's history)
    and, when it needs an order, sends ``webhook`` the event."""
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
        if tickets is not None and reason != "empty_query":
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
            ticket_id = tickets.create(query, reason or "low_confidence", sid, ranked, rec.id, route, before).id
        handoff_message = a.handoff.message if a.handoff is not None else ""
        handoff = HandoffInfo(ticket_id=ticket_id, message=handoff_message, route=route.value)
        if reason == "needs_order" and webhook is not None:
            event = OrderEvent(query, a.normalized_query, sid, ticket_id, tuple(i.id for i in suggestions))
            trace["webhook"] = webhook.send(event).describe()
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
