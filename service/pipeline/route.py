"""Route: the rules that decide before any encoding. An empty message, a greeting, a request for
a person, a sensitive message, a seller's message and one that needs the shopper's own order never
reach the confidence model, and only a rule whose handoff shows candidates has the message searched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.detect import is_bot_failure, is_closing, is_greeting, is_ok_emoji, is_user_request
from service.merchant import MerchantMatch, MerchantRules
from service.orders import OrderMatch, OrderRules, match_order_statement, match_reply
from service.pipeline.prepare import Prepared
from service.schemas import Decision as Outcome
from service.schemas import Reason
from service.sensitive import SUGGESTING_GROUPS, SensitiveDetector


@dataclass(frozen=True)
class Rule:
    """The rule that decided a message, and what its decision needs of the later stages."""

    reason: Reason  # empty_query | greeting | user_requested | sensitive | merchant | needs_order
    decision: Outcome  # handoff | clarify
    fired: str  # as the trace names it: the reason, "sensitive:<group>" or "merchant:<rule>"
    search: bool  # the message is still searched: its candidates go with the handoff
    remember: bool  # the message is the session's last question (not for an empty one or a greeting)
    order: OrderMatch | None = None  # needs_order: the wording that matched
    merchant: MerchantMatch | None = None  # merchant: the wording that matched
    suggest: bool = False  # a handoff whose candidates the shopper sees as suggestions while waiting


class Router:
    """The rules in order of precedence; ``run`` returns the first that fires, or None."""

    def __init__(
        self,
        *,
        sensitive: SensitiveDetector,
        greetings: Sequence[str] = (),
        thanks: Sequence[str] = (),
        greeting_detection: bool = True,
        order_detection: bool = True,
        merchant_detection: bool = True,
        handoff_candidates: bool = False,
        orders: OrderRules | None = None,
        merchant: MerchantRules | None = None,
    ) -> None:
        self.sensitive = sensitive
        self.greetings = tuple(greetings)
        self.thanks = tuple(thanks)  # the configured thanks (greetings.yaml): closings too
        self.greeting_detection = greeting_detection  # off for a KB whose own questions are greetings
        self.order_detection = order_detection
        self.orders = orders or OrderRules()  # the KB's own wording rules off (OrderRules.for_kb)
        self.merchant_detection = merchant_detection
        self.merchant = merchant or MerchantRules()  # likewise (MerchantRules.for_kb)
        # A request for a person or a sensitive message is handed off whatever the KB holds; its
        # candidates would only be context for the agent, at the price of an encoding.
        self.handoff_candidates = handoff_candidates

    def run(self, p: Prepared) -> Rule | None:
        norm = p.norm
        if not any(ch.isalnum() for ch in norm):
            if self.greeting_detection and is_ok_emoji(p.query):  # 👌, 👍: an acknowledgement
                return Rule("greeting", "clarify", "closing", search=False, remember=False)
            return Rule("empty_query", "handoff", "empty_query", search=False, remember=False)
        if self.greeting_detection and is_greeting(norm, self.greetings):
            fired = "closing" if is_closing(norm, self.thanks) else "greeting"
            return Rule("greeting", "clarify", fired, search=False, remember=False)
        # a KB that answers small talk answers being told it failed too (greeting_detection off)
        if is_user_request(norm, p.query) or (self.greeting_detection and is_bot_failure(norm)):
            return Rule("user_requested", "handoff", "user_requested", self.handoff_candidates, remember=True)
        hit = self.sensitive.match(norm)
        if hit is not None:
            suggest = hit.group in SUGGESTING_GROUPS  # searched so the dispute and fraud rules ride along
            search = self.handoff_candidates or suggest
            return Rule("sensitive", "handoff", f"sensitive:{hit.group}", search, remember=True, suggest=suggest)
        # A seller writing about their shop or their customer's order: no shoppers' article is for
        # them, and their ticket goes to whoever serves sellers (before the order rules, which a
        # seller's 这单顾客没收到 would match too)
        seller = self.merchant.match(norm) if self.merchant_detection else None
        if seller is not None:
            fired = f"merchant:{seller.rule}"
            return Rule("merchant", "handoff", fired, self.handoff_candidates, remember=True, merchant=seller)
        # Where is *my* parcel, refund *this* order: an article can explain, only the order can
        # answer. Still searched, so the article rides along as a suggestion.
        order = None
        if self.order_detection:
            order = self.orders.match(norm) or match_reply(p.query)
            if order is None and p.order_context:  # the chat is about the order: a statement describes it
                order = match_order_statement(norm)
        if order is not None:
            return Rule("needs_order", "handoff", "needs_order", search=True, remember=True, order=order, suggest=True)
        return None
