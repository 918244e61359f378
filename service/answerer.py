"""``Answerer``: one façade over the answer pipeline (``service/pipeline/``).

prepare → route → retrieve → decide → respond. The rules route a message before any encoding;
``explain`` returns the typed ``Decision`` (what eval and calibration read), ``answer`` renders
it as the API's ``Answer`` and records the session turn, ticket and webhook.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.index import Index
from indexer.pool import CandidatePool, LexicalEvidence
from indexer.units import UnitHit
from kb.errors import ConfigError
from kb.schema import Replies
from service.merchant import MerchantRules
from service.orders import OrderRules
from service.pipeline.decide import Decider, Decision
from service.pipeline.prepare import Preparer, check_history, check_request
from service.pipeline.respond import (
    CLARIFY_CHOICES,
    CLARIFY_PROMPT,
    DEFAULT_HANDOFF_MESSAGE,
    SUGGESTIONS,
    Responder,
    empty_reply,
    greeting_reply,
)
from service.pipeline.retrieve import CANDIDATE_UNITS, EncodeFn, Retrieval, Retriever, blend, see_also
from service.pipeline.route import Router
from service.policy import Calibration, Features
from service.ranker import Ranker
from service.schemas import Answer, HistoryTurn, Welcome
from service.sensitive import SensitiveDetector
from service.sessions import SessionStore
from service.speller import Speller
from service.synonyms import SynonymExpander
from service.tickets import TicketStore
from service.webhook import OrderWebhook

__all__ = [
    "CANDIDATE_UNITS",
    "CLARIFY_CHOICES",
    "CLARIFY_PROMPT",
    "SUGGESTIONS",
    "Answerer",
    "AnswererOptions",
    "Decision",
    "EncodeFn",
    "Retrieval",
    "blend",
    "check_history",
    "empty_reply",
    "greeting_reply",
    "see_also",
]


@dataclass(frozen=True)
class AnswererOptions:
    """What ``Settings`` sets for the pipeline (``service.runtime.options_from``) and ablations vary."""

    top_k: int = 3
    max_query_chars: int = 500
    handoff_message: str = DEFAULT_HANDOFF_MESSAGE
    use_context: bool = True
    strip_greetings: bool = True
    normalize_queries: bool = True  # off only in ablations: shows what normalisation buys
    expand_synonyms: bool = False  # KEFU_EXPAND_SYNONYMS; the ablation row shows what it buys on dev
    retrieval: str = "rrf"  # dense | lexical | rrf | weighted; the eval ablations decide the default
    rerank: bool = True  # apply the calibration's learned ranker (rrf only); off in an ablation row
    see_also: bool = False  # the first candidate's related entries after the two best (SEE_ALSO_AFTER)
    blend_context: bool = True  # a follow-up's list interleaves its other reading's candidates (blend)
    correct_typos: bool = True  # KEFU_CORRECT_TYPOS: pinyin homophone typos fixed before retrieval (service/speller)
    order_detection: bool = True  # KEFU_ORDER_DETECTION: messages that need the shopper's order → needs_order
    merchant_detection: bool = True  # KEFU_MERCHANT_DETECTION: a seller's messages → merchant
    # A request for a person or a sensitive message is also searched, so its handoff shows the
    # agent the best candidates (as answers and in the ticket). Off: it is decided without
    # encoding (about 0.1 ms instead of an encoder call and a candidate pool).
    handoff_candidates: bool = False


@dataclass(frozen=True)
class _Stages:
    prepare: Preparer
    route: Router
    retrieve: Retriever
    decide: Decider
    respond: Responder


class Answerer:
    """The pipeline's parts and options. Its attributes may be swapped (tests, ``kefu ask``
    without a ticket store): the stages are rebuilt from them on the next call."""

    def __init__(
        self,
        index: Index,
        encode: EncodeFn,
        sensitive: SensitiveDetector,
        options: AnswererOptions,
        sessions: SessionStore | None = None,
        tickets: TicketStore | None = None,
        greetings: Sequence[str] = (),
        calibration: Calibration | None = None,
        thanks: Sequence[str] = (),
        synonyms: SynonymExpander | None = None,
        speller: Speller | None = None,
        webhook: OrderWebhook | None = None,
        ranker: Ranker | None = None,
        orders: OrderRules | None = None,
        merchant: MerchantRules | None = None,
        examples: Sequence[str] = (),
        replies: Replies | None = None,
        small_talk: bool = False,
    ) -> None:
        self.index = index
        self.encode = encode
        self.sensitive = sensitive
        self.orders = orders or OrderRules()  # needs_order's rules for this KB (OrderRules.for_kb)
        self.merchant = merchant or MerchantRules()  # the merchant rules for this KB (MerchantRules.for_kb)
        self.options = options
        # ``is None``, not ``or``: an empty store is falsy (``__len__``), and the caller's must be the one
        # used (a shop desk reads the sessions its shops' answerers write)
        self.sessions = sessions if sessions is not None else SessionStore()
        self.tickets = tickets
        self.greetings = tuple(greetings)
        self.thanks = tuple(thanks)  # greetings.yaml's thanks: they get the closing reply
        self.small_talk = small_talk  # the KB answers greetings itself (``runtime.kb_small_talk``)
        self.examples = tuple(examples)  # what the greeting suggests asking; none: the KB's own are picked
        self.replies = replies or Replies()  # what kefu says in the KB's own words (greetings.yaml)
        self.calibration = calibration or Calibration.from_json(index.manifest.calibration)
        self.synonyms = synonyms or SynonymExpander({})
        self.speller = speller
        self.webhook = webhook  # told of each needs_order handoff (KEFU_ORDER_WEBHOOK)
        # The ranker is fitted with the calibration (same dev run, same KB and model) and reorders
        # the rrf pool; a confidence model that reads its probability cannot run without it.
        # ``ranker`` replaces it (cross-fitting ranks each dev fold with a ranker fitted without it).
        use_ranker = bool(self.calibration.ranker) and options.rerank and options.retrieval == "rrf"
        if ranker is None and use_ranker:
            ranker = Ranker.from_json(self.calibration.ranker or {})
        self.ranker: Ranker | None = ranker
        if self.ranker is None and "rank_prob" in self.calibration.names:
            raise ConfigError(
                f"the calibration's confidence model reads the learned ranker, which runs with rrf retrieval "
                f"(retrieval is {options.retrieval!r}, rerank {options.rerank}); use rrf, or run "
                "`kefu eval calibrate --no-ranker` to fit thresholds without it"
            )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        self.__dict__.pop("_stages", None)  # a part was swapped: rebuild the stages on the next call

    @property
    def stages(self) -> _Stages:
        """The pipeline's stages over the current parts and options (built on first use)."""
        stages: _Stages | None = self.__dict__.get("_stages")
        if stages is None:
            o = self.options
            stages = _Stages(
                prepare=Preparer(
                    sessions=self.sessions,
                    speller=self.speller,
                    normalize_queries=o.normalize_queries,
                    strip_greetings=o.strip_greetings,
                    correct_typos=o.correct_typos,
                    use_context=o.use_context,
                ),
                route=Router(
                    sensitive=self.sensitive,
                    greetings=self.greetings,
                    thanks=self.thanks,
                    greeting_detection=not self.small_talk,
                    order_detection=o.order_detection,
                    merchant_detection=o.merchant_detection,
                    handoff_candidates=o.handoff_candidates,
                    orders=self.orders,
                    merchant=self.merchant,
                ),
                retrieve=Retriever(
                    index=self.index,
                    encode=self.encode,
                    calibration=self.calibration,
                    ranker=self.ranker,
                    synonyms=self.synonyms,
                    retrieval=o.retrieval,
                    expand_synonyms=o.expand_synonyms,
                    see_also=o.see_also,
                    blend_context=o.blend_context,
                ),
                decide=Decider(calibration=self.calibration, build=self.index.manifest.build_id),
                respond=Responder(
                    index=self.index,
                    sessions=self.sessions,
                    tickets=self.tickets,
                    webhook=self.webhook,
                    handoff_message=o.handoff_message,
                    examples=self.examples,
                    replies=self.replies,
                ),
            )
            self.__dict__["_stages"] = stages  # not through __setattr__, which would drop it again
        return stages

    def variant(
        self,
        index: Index | None = None,
        calibration: Calibration | None = None,
        ranker: Ranker | None = None,
        **options: Any,
    ) -> Answerer:
        """An answerer like this one (encoder, detectors, synonyms, speller) with another index,
        calibration, ranker or options, and sessions of its own and no ticket store or webhook:
        for ablations, cross-fitting and side-by-side comparisons."""
        return Answerer(
            index or self.index,
            self.encode,
            self.sensitive,
            dataclasses.replace(self.options, **options),
            greetings=self.greetings,
            thanks=self.thanks,
            calibration=calibration or self.calibration,
            synonyms=self.synonyms,
            speller=self.speller,
            ranker=ranker,
            orders=self.orders,
            merchant=self.merchant,
            examples=self.examples,
            replies=self.replies,
            small_talk=self.small_talk,
        )

    # --- the two verbs ---------------------------------------------------------------------------
    def explain(
        self, query: str, session_id: str | None = None, history: Sequence[HistoryTurn] | None = None
    ) -> Decision:
        """The decision for ``query`` and everything behind it, without its effects: no session
        turn is recorded, no ticket opened. ``history`` as for ``answer``."""
        check_request(query, None, history, self.options.max_query_chars)
        return self._decide(query, session_id or SessionStore.new_id(), history)

    def answer(
        self,
        query: str,
        session_id: str | None = None,
        top_k: int | None = None,
        history: Sequence[HistoryTurn] | None = None,
    ) -> Answer:
        """One decision for ``query``. ``history`` (the platform's record of the conversation,
        oldest first) stands in for kefu's own session memory when reading a follow-up."""
        started = time.perf_counter()
        k = self.options.top_k if top_k is None else top_k
        check_request(query, k, history, self.options.max_query_chars)
        decision = self._decide(query, session_id or SessionStore.new_id(), history)
        return self.stages.respond.run(decision, k, started, history)

    def respond(
        self,
        decision: Decision,
        top_k: int | None = None,
        history: Sequence[HistoryTurn] | None = None,
        started: float | None = None,
    ) -> Answer:
        """The answer to a decision ``explain`` made, with its effects (the session turn, a
        ticket): what ``answer`` returns for the same message, for a caller that decided first
        and answers only if it still needs to (a shop's desk, beside the shop's load)."""
        k = self.options.top_k if top_k is None else top_k
        check_request(decision.prepared.query, k, history, self.options.max_query_chars)
        return self.stages.respond.run(decision, k, time.perf_counter() if started is None else started, history)

    def welcome(self) -> Welcome:
        """What a chat opens with: the greeting reply and the KB's own example questions."""
        return self.stages.respond.welcome()

    def _decide(self, query: str, session_id: str, history: Sequence[HistoryTurn] | None) -> Decision:
        s = self.stages
        prepared = s.prepare.run(query, session_id, history)
        rule = s.route.run(prepared)
        searched = s.retrieve.run(prepared) if rule is None or rule.search else None
        return s.decide.run(prepared, rule, searched)

    # --- the stages' parts, for eval, calibration and the API's warm-up ----------------------------
    def prepare(self, query: str) -> str:
        """The text a query is searched as: normalised, greeting stripped, typos put back."""
        return self.stages.prepare.text(query)

    def retrieve(self, texts: list[str]) -> list[Retrieval]:
        """Each text encoded alone and searched, with its evidence and confidence."""
        return self.stages.retrieve.retrieve(texts)

    def evidence(
        self,
        text: str,
        vec: np.ndarray,
        *,
        search: str | None = None,
        lexical: LexicalEvidence | None = None,
        ranker: Ranker | None = None,
        exclude_row: int | None = None,
        exclude_unit: str | None = None,
    ) -> Retrieval:
        """The learned ranker's candidates for ``text`` with their evidence (``Retriever.evidence``)."""
        return self.stages.retrieve.evidence(
            text, vec, search=search, lexical=lexical, ranker=ranker, exclude_row=exclude_row, exclude_unit=exclude_unit
        )

    def features(
        self,
        text: str,
        qvec: np.ndarray,
        units: list[UnitHit],
        rank_prob: float = 0.0,
        lexical: LexicalEvidence | None = None,
    ) -> Features | None:
        """The decision evidence for ``units`` (``Retriever.features``)."""
        return self.stages.retrieve.features(text, qvec, units, rank_prob, lexical)

    def candidate_pools(self, queries: list[str], size: int) -> list[CandidatePool]:
        """The candidate pool each query's own retrieval would rerank (no session context): what a
        ranker is trained on. Each query is encoded alone, as ``answer`` does: int8 activations
        are quantised per call, so a batch would shift the vectors a little."""
        return self.stages.retrieve.candidate_pools([self.prepare(q) for q in queries], size)
