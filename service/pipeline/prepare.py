"""Prepare: a message as the later stages read it. Rules read it normalised; retrieval searches it
with its greeting stripped and its typos put back, and a follow-up also with what came before."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from indexer.normalize import normalize
from kb.errors import InputError
from kb.settings import MAX_TOP_K
from service.detect import is_followup, strip_greeting
from service.orders import agent_on_order, match_order_request, match_reply
from service.schemas import MAX_HISTORY_TURNS, HistoryTurn
from service.sessions import SessionStore
from service.speller import Correction, Spelled, Speller


@dataclass(frozen=True)
class Prepared:
    """One message made ready for the rules (``norm``) and for retrieval (``text``, ``readings``)."""

    query: str  # as typed
    norm: str  # normalised: what the rules read
    text: str  # what is searched: greeting stripped, typos put back
    corrections: tuple[Correction, ...]  # the typos put back in ``text``
    readings: tuple[str, ...]  # a follow-up read with what came before (empty for other messages)
    session_id: str
    # the conversation before it is about the shopper's own order (service/orders.py)
    order_context: bool = False
    # any other message read with what came before: searched only when the message alone is not
    # confident enough to answer (``Retriever.run``), so a standalone question costs no more encodes
    late_readings: tuple[str, ...] = ()


def check_request(
    query: object, top_k: int | None, history: Sequence[HistoryTurn] | None, max_query_chars: int
) -> None:
    """The limits every caller gets (the API's schema checks them too): text, length, top_k (unless
    None), history."""
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. from a JSON "\ud800" escape
        raise InputError("query is not valid Unicode text (it contains a lone surrogate); send UTF-8 text") from exc
    if len(query) > max_query_chars:
        raise InputError(f"query has {len(query)} characters; the limit is {max_query_chars} (KEFU_MAX_QUERY_CHARS)")
    if top_k is not None and not 1 <= top_k <= MAX_TOP_K:
        raise InputError(f"top_k={top_k} is not allowed: use 1 to {MAX_TOP_K} (the most answers a request can get)")
    check_history(history)


def check_history(history: Sequence[HistoryTurn] | None) -> None:
    """The API validates history with its schema; a library or CLI caller gets the same limits."""
    if history is None:
        return
    if len(history) > MAX_HISTORY_TURNS:
        raise InputError(f"history has {len(history)} turns; send at most the last {MAX_HISTORY_TURNS}")
    for i, turn in enumerate(history):
        if not isinstance(turn, HistoryTurn):
            raise InputError(f"history[{i}] must be a turn with role (customer|agent) and text, got {turn!r}")


class Preparer:
    """Normalise, strip the greeting, put typos back, and read a follow-up with its context."""

    def __init__(
        self,
        *,
        sessions: SessionStore,
        speller: Speller | None = None,
        normalize_queries: bool = True,
        strip_greetings: bool = True,
        correct_typos: bool = True,
        use_context: bool = True,
    ) -> None:
        self.sessions = sessions
        self.speller = speller if correct_typos else None
        self.normalize_queries = normalize_queries
        self.strip_greetings = strip_greetings
        self.use_context = use_context

    def run(self, query: str, session_id: str, history: Sequence[HistoryTurn] | None = None) -> Prepared:
        """``query`` (already checked by ``check_request``) prepared; reads the session, never writes it."""
        norm = self.normalize(query)
        spelled = self.spell(self.strip(norm))
        readings: list[str] = []
        late: list[str] = []
        if self.use_context:
            # Real chat continues a topic in whole sentences too (我还没买，不过价钱很诱人 after a
            # question about 价保): every message has its context readings, a follow-up's searched
            # at once, any other's only when the message alone is not confident enough to answer.
            context = self.readings(spelled.text, session_id, history)
            readings, late = (context, []) if is_followup(spelled.text) else ([], context)
        return Prepared(
            query,
            norm,
            spelled.text,
            spelled.corrections,
            tuple(readings),
            session_id,
            self.order_context(session_id, history),
            tuple(late),
        )

    def order_context(self, session_id: str, history: Sequence[HistoryTurn] | None) -> bool:
        """Whether the chat so far is about the shopper's own order: in the caller's history a
        customer turn that needs it or an agent turn that asks for or acts on it; without history,
        the session's last message was handed off as needing it."""
        if history:
            return any(
                match_order_request(self.normalize(t.text)) is not None or match_reply(t.text) is not None
                if t.role == "customer"
                else agent_on_order(t.text)
                for t in history
            )
        prev = self.sessions.last(session_id)
        return prev is not None and prev.order

    def text(self, query: str) -> str:
        """The text ``query`` is searched as: normalised, greeting stripped, typos put back."""
        return self.spell(self.strip(self.normalize(query))).text

    def normalize(self, query: str) -> str:
        return normalize(query) if self.normalize_queries else query.strip()

    def strip(self, norm: str) -> str:
        return strip_greeting(norm) if self.strip_greetings else norm

    def spell(self, text: str) -> Spelled:
        return self.speller.correct(text) if self.speller is not None else Spelled(text)

    def readings(self, text: str, session_id: str, history: Sequence[HistoryTurn] | None) -> list[str]:
        """The message read with what came before: the caller's history when given (the previous
        customer turn, and the agent's reply after it, where there is one), else the session's
        previous question."""
        if history:
            last = max((i for i, t in enumerate(history) if t.role == "customer"), default=-1)
            customer = history[last] if last >= 0 else None
            agent = next((t for t in reversed(history[last + 1 :]) if t.role == "agent"), None)
            readings = []
            if customer is not None:
                readings.append(f"{self.strip(self.normalize(customer.text))} {text}")
            if agent is not None:  # 「那几点能到?」 after 「预计明天送达」: the agent named the topic
                readings.append(f"{self.strip(self.normalize(agent.text))} {text}")
            return readings
        prev = self.sessions.last(session_id)
        return [f"{prev.query} {text}"] if prev is not None else []
