"""Respond: the ``Answer`` for a decision, and its effects. The session remembers the question,
a handoff opens a ticket (with the conversation that led to it), and a needs_order handoff tells
the order webhook."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence

from indexer.chunking import DocUnit
from indexer.folder import EntryInfo
from indexer.index import Index
from kb.clauses import PATH_SEP
from kb.schema import Replies
from kb.settings import HANDOFF_MESSAGE
from service.documents import depends_on_query, view
from service.pipeline.decide import TRACE_DECIMALS, Decision
from service.pipeline.retrieve import Candidate
from service.schemas import Answer, AnswerItem, Cite, HandoffInfo, HistoryTurn, SourceRef, Welcome
from service.sessions import SessionStore, Turn
from service.tickets import Prior, TicketStore
from service.webhook import OrderEvent, OrderWebhook

CLARIFY_PROMPT = "您是不是想问以下问题？请回复序号或换个说法描述："
# A question asked in a chat about the shopper's own order, offered instead of answered (``held``
# order_context): the article may not settle their order, so say how to reach a person too.
ORDER_CLARIFY_PROMPT = "如需处理您的这笔订单，请回复“转人工”；如果想了解的是以下问题，请回复序号："
# To thanks, an acknowledgement or the chat's end (好的谢谢, 嗯嗯, 没有了): greetings.yaml replies.closing
CLOSING_REPLY = "好的，如果还有其他问题，随时问我。"
# The greeting and empty-message replies give examples of what to ask, taken from the KB served
# (``welcome_examples``): a tea shop's shoppers must not be told to ask about refunds of a
# marketplace. At most this many, each at most WELCOME_MAX_CHARS wide (a Chinese character is one, a
# Latin letter or space half: "How do I reset my password" is 13).
WELCOME_EXAMPLES = 2
WELCOME_MAX_CHARS = 16
# Of a category's questions, the one nearest this width: a whole short question (退款多久能到账), not
# a keyword fragment an imported table may hold as a question (社保 借呗, 运费).
WELCOME_WIDTH = 8
# A seller's message (reason merchant): say who will take it, not "your question" as to a shopper.
MERCHANT_MESSAGE = "您好，商家（卖家）的问题将由人工客服为您处理，正在为您转接，请稍候。"
DEFAULT_HANDOFF_MESSAGE = HANDOFF_MESSAGE  # declared once, with the settings (KEFU_HANDOFF_MESSAGE)
CLARIFY_CHOICES = 3
SUGGESTIONS = 3  # best candidates a low-confidence or needs_order handoff carries as suggestions
# A low-confidence handoff's candidates are worth the shopper's look while they wait (not sure
# enough to answer); a rule's handoff says whether its are (``Rule.suggest``: needs_order, an
# escalated dispute).
# Unless the message is plainly about something else: nearer the general out-of-scope examples than
# the KB's best candidate by more than this (Features.anchor_gap), a low-confidence handoff suggests
# nothing (今天股市怎么样 asked of a tea shop: -0.08; its own topics: -0.01 and up). Dev, low-confidence
# handoffs whose top 3 hold a right entry: 11 of 11 keep suggestions, 25 of the 60 that hold none
# lose theirs; real-traffic dev: 14 of 14, and 44 of 560. The ticket keeps its candidates either way.
SUGGEST_MIN_ANCHOR_GAP = -0.03
# Handoffs that show their candidates (when searched) as answers: context for the human agent.
AGENT_CONTEXT_REASONS = ("user_requested", "sensitive")
AGENT_CONTEXT = 3  # at most this many (and at most top_k)
TICKET_CANDIDATES = 5  # candidates a ticket records for the agent who picks it up


class Responder:
    """Render a ``Decision`` as the API's ``Answer``; record the session turn, ticket and webhook."""

    def __init__(
        self,
        *,
        index: Index,
        sessions: SessionStore,
        tickets: TicketStore | None = None,
        webhook: OrderWebhook | None = None,
        handoff_message: str = DEFAULT_HANDOFF_MESSAGE,
        examples: Sequence[str] = (),
        replies: Replies | None = None,
    ) -> None:
        self.index = index
        self.sessions = sessions
        self.tickets = tickets
        self.webhook = webhook  # told of each needs_order handoff (KEFU_ORDER_WEBHOOK)
        self.replies = replies or Replies()  # the greeting, empty, clarify and handoff texts in the KB's words
        self.handoff_message = self.replies.handoff or handoff_message  # the KB's before KEFU_HANDOFF_MESSAGE
        # what the greeting suggests asking: the KB's choice (greetings.yaml ``examples:``), else picked from it
        self.examples = tuple(examples) or welcome_examples(index.entries.values(), doc_units=index.doc_units.values())
        # What an answer item shows besides its score, for every unit whose view does not depend on
        # the query (all but a long section's passage): cites parsed and models built once, not in
        # every answer. By FAQ entry, or by document unit and best row (which row it shows).
        self._shown: dict[tuple[str, int | None], tuple[str, str, str, SourceRef, tuple[Cite, ...]]] = {}

    def welcome(self) -> Welcome:
        """What a chat opens with: the reply a greeting gets and the questions it names."""
        return Welcome(message=greeting_reply(self.examples, self.replies.greeting), examples=list(self.examples))

    def run(self, d: Decision, top_k: int, started: float, history: Sequence[HistoryTurn] | None = None) -> Answer:
        """The answer to ``d`` showing up to ``top_k`` answers; ``elapsed_ms`` counts from ``started``.
        ``history``: the caller's turns of the request, which a ticket keeps."""
        # nothing for an agent to pick up in an empty message
        ticketed = d.outcome == "handoff" and self.tickets is not None and d.reason != "empty_query"
        earlier = self.sessions.messages(d.session_id) if ticketed else ()  # read before this message joins them
        if d.remembered is not None:
            turn = Turn(d.remembered, order=d.reason == "needs_order", message=d.query)
            self.sessions.add(d.session_id, turn)
        cands = d.candidates
        trace = d.trace()
        items: list[AnswerItem] = []
        suggestions: list[AnswerItem] = []
        message: str | None = None
        handoff = None
        if d.outcome == "answer":
            items = [self.item(c, d.search_text) for c in cands[:top_k]]
        elif d.outcome == "clarify" and d.reason == "greeting" and d.fired == "closing":
            message = self.replies.closing or CLOSING_REPLY
        elif d.outcome == "clarify" and d.reason == "greeting":
            message = greeting_reply(self.examples, self.replies.greeting)
        elif d.outcome == "clarify":
            items = [self.item(c, d.search_text) for c in cands[:CLARIFY_CHOICES]]
            if d.held == "order_context":
                message = self.replies.clarify_order or ORDER_CLARIFY_PROMPT
            else:
                message = self.replies.clarify or CLARIFY_PROMPT
        else:
            ticket_id = "-"
            if ticketed and self.tickets is not None:
                ranked = [{"id": c.id, "score": round(c.score, TRACE_DECIMALS)} for c in cands[:TICKET_CANDIDATES]]
                reason = d.reason or "low_confidence"
                prior = Prior(earlier, tuple(history or ()))
                ticket_id = self.tickets.create(d.query, reason, d.session_id, ranked, prior).id
            if d.reason == "empty_query":
                said = empty_reply(self.examples, self.replies.empty)
            elif d.reason == "merchant":
                said = self.replies.merchant or MERCHANT_MESSAGE
            else:
                said = self.handoff_message
            handoff = HandoffInfo(ticket_id=ticket_id, message=said)
            if d.rule.suggest if d.rule is not None else d.reason == "low_confidence" and _on_topic(d):
                suggestions = [self.item(c, d.search_text) for c in cands[:SUGGESTIONS]]
            elif d.reason in AGENT_CONTEXT_REASONS:
                items = [self.item(c, d.search_text) for c in cands[: min(AGENT_CONTEXT, top_k)]]
            if d.reason == "needs_order" and self.webhook is not None:
                event = OrderEvent(d.query, d.prepared.norm, d.session_id, ticket_id, tuple(i.id for i in suggestions))
                trace["webhook"] = self.webhook.send(event).describe()
        return Answer(
            query=d.query,
            normalized_query=d.prepared.norm,
            decision=d.outcome,
            reason=d.reason,
            answers=items,
            handoff=handoff,
            suggestions=suggestions,
            message=message,
            session_id=d.session_id,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
            trace=trace,
        )

    def item(self, c: Candidate, query: str) -> AnswerItem:
        """A candidate as shown: an FAQ entry with the clauses it cites, a whole rules clause, or
        the passage of an article section that answers ``query``."""
        key = (c.id, None if c.id in self.index.entries else c.row)
        shown = self._shown.get(key)
        if shown is None:
            v = view(self.index, c.id, c.row, query)
            source = SourceRef(doc_id=v.doc_id, section=v.section, kind=v.kind, clause=v.clause)
            shown = (v.id, v.title, v.text, source, tuple(Cite(**vars(x)) for x in v.cites))
            if not depends_on_query(self.index, c.id):
                self._shown[key] = shown
        unit_id, title, text, source, cites = shown
        return AnswerItem(
            id=unit_id,
            title=title,
            text=text,
            score=round(float(c.score), TRACE_DECIMALS),
            source=source,
            cites=list(cites),
        )


def _on_topic(d: Decision) -> bool:
    """Whether a low-confidence message is near enough the KB for its candidates to be worth a look."""
    f = d.searched.features if d.searched is not None else None
    return f is None or f.anchor_gap >= SUGGEST_MIN_ANCHOR_GAP


def welcome_examples(
    entries: Iterable[EntryInfo], n: int = WELCOME_EXAMPLES, doc_units: Iterable[DocUnit] = ()
) -> tuple[str, ...]:
    """Up to ``n`` of the KB's own FAQ questions to suggest asking: of each of the largest
    categories in turn (a category's first entry breaks a tie), the question nearest WELCOME_WIDTH
    wide, without the closing question mark; none wider than WELCOME_MAX_CHARS. A KB of help
    articles alone suggests their section headings the same way, article by article (发货时间,
    退款时间); rules clauses have none."""
    questions = [(e.category, e.question.strip().rstrip("？?。.！!～~ ")) for e in entries]
    picks = _best_of_largest(questions, n)
    if picks or not doc_units:
        return picks
    headings = []
    for u in doc_units:
        heading = u.section.split(PATH_SEP)[-1]
        if u.kind == "doc" and heading != u.title:
            headings.append((u.doc_id, _NUMBERING.sub("", heading).strip()))
    return _best_of_largest(headings, n)


# A heading's own numbering (一、 1. （二） 第三节), which an example question does not say.
_NUMBERING = re.compile(
    r"^(?:[（(]?[一二三四五六七八九十\d]+[)）、.．](?!\d)|第[一二三四五六七八九十\d]+[章节部分])\s*"
)


def _best_of_largest(texts: Iterable[tuple[str, str]], n: int) -> tuple[str, ...]:
    """Up to ``n`` texts of (group, text) pairs: the best fit (``_fit``) of each group, largest group
    first (the group met first breaks a tie), then each group's next best; none wider than
    WELCOME_MAX_CHARS."""
    groups: dict[str, list[str]] = {}
    for group, text in texts:
        if 0 < _width(text) <= WELCOME_MAX_CHARS:
            groups.setdefault(group, []).append(text)
    ranked = [sorted(g, key=_fit) for g in sorted(groups.values(), key=len, reverse=True)]  # both stable
    picks: list[str] = []
    for round_ in range(n):  # a KB of one or two groups gives its next best ones
        for best in ranked:
            if round_ < len(best) and best[round_] not in picks:
                picks.append(best[round_])
            if len(picks) == n:
                return tuple(picks)
    return tuple(picks)


def _width(text: str) -> float:
    return sum(0.5 if c.isascii() else 1.0 for c in text)


def _fit(text: str) -> tuple[float, float]:
    """Nearest WELCOME_WIDTH first; of two as near, the shorter."""
    return abs(_width(text) - WELCOME_WIDTH), _width(text)


def greeting_reply(examples: Sequence[str], template: str | None = None) -> str:
    """The reply to a greeting: what kefu is and, where the KB has them, what to ask. ``template``:
    the KB's own wording (greetings.yaml ``replies.greeting``), its ``{examples}`` filled."""
    if template is not None:
        return _fill(template, examples)
    like = f"，例如{_quoted(examples)}" if examples else ""
    return f"您好！我是智能客服，请直接描述您遇到的问题{like}。"


def empty_reply(examples: Sequence[str], template: str | None = None) -> str:
    """The reply to an empty message. It opens no ticket (nothing for an agent to read), so it
    asks for the question and promises no person. ``template``: the KB's own wording."""
    if template is not None:
        return _fill(template, examples[:1])
    like = f"，例如{_quoted(examples[:1])}" if examples else ""
    return f"没有看到您的问题内容，请直接输入您想咨询的问题{like}。"


def _quoted(examples: Sequence[str]) -> str:
    """The questions quoted one after another: “A”“B”."""
    return "".join(f"“{q}”" for q in examples)


def _fill(template: str, examples: Sequence[str]) -> str:
    """``template`` with ``{examples}`` as the questions quoted (replace, not format: a KB's text may
    hold other braces)."""
    return template.replace("{examples}", _quoted(examples)).strip()
