"""Handoff tickets, the answer log and shoppers' feedback in one embedded SQLite database
(WAL: survives restarts and crashes mid-write; several processes may share the file). The file itself
(schema, migration, connections) is service/tickets_db.py."""

from __future__ import annotations

import builtins
import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kb.errors import ConfigError, NotFoundError
from service.pii import mask_pii
from service.schemas import MAX_HISTORY_TURNS, MAX_TURN_CHARS, Answer, HistoryTurn, Vote
from service.tickets_db import Database, shop_filter, window

TurnSource = Literal["session", "request"]


@dataclass(frozen=True)
class TicketTurn:
    """One turn of the conversation that led to a handoff (personal data masked)."""

    role: Literal["customer", "agent"]
    text: str
    # session: a message kefu answered earlier in the session; request: a turn of the caller's ``history``
    source: TurnSource

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text, "source": self.source}


@dataclass(frozen=True)
class Prior:
    """The chat before a handoff, as whoever opens its ticket has it: the session's earlier messages
    (as typed, oldest first) and the turns the request carried in ``history``."""

    earlier: tuple[str, ...] = ()
    history: tuple[HistoryTurn, ...] = ()

    def turns(self) -> tuple[TicketTurn, ...]:
        """The ticket's conversation, masked: the earlier messages, then the history turns, each
        source held to the request's limits (its last ``MAX_HISTORY_TURNS`` turns, ``MAX_TURN_CHARS``
        characters each)."""
        out = [TicketTurn("customer", _bounded(m), "session") for m in self.earlier[-MAX_HISTORY_TURNS:] if m.strip()]
        for t in self.history[-MAX_HISTORY_TURNS:]:
            if t.text.strip():
                out.append(TicketTurn(t.role, _bounded(t.text), "request"))
        return tuple(out)


def _bounded(text: str) -> str:
    # masked before it is cut: a cut through a phone number would leave digits the patterns miss
    masked = mask_pii(text.strip())
    return masked if len(masked) <= MAX_TURN_CHARS else masked[: MAX_TURN_CHARS - 1] + "…"


def _turns(raw: str | None) -> tuple[TicketTurn, ...]:
    return tuple(TicketTurn(t["role"], t["text"], t["source"]) for t in json.loads(raw)) if raw else ()


@dataclass(frozen=True)
class Ticket:
    id: str
    created: float
    session_id: str | None
    query: str  # personal data masked
    reason: str
    candidates: list[dict[str, Any]]
    history: tuple[TicketTurn, ...] = ()  # the conversation before it (none on a ticket from before history)

    @classmethod
    def of_row(cls, r: Sequence[Any]) -> Ticket:
        """A ticket from a row of ``TICKET_COLUMNS``."""
        return cls(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), _turns(r[6]))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.created)),
            "session_id": self.session_id,
            "query": self.query,
            "reason": self.reason,
            "candidates": self.candidates,
            "history": [t.to_json() for t in self.history],
        }


TICKET_COLUMNS = ("id", "created", "session_id", "query", "reason", "candidates", "history")


class TicketStore(Database):
    """Thread-safe; several processes may share one file (SQLite locking, busy timeout)."""

    def create(
        self, query: str, reason: str, session_id: str | None, candidates: list[dict[str, Any]], prior: Prior = Prior()
    ) -> Ticket:
        """Open a ticket, with the chat before it (``Prior.turns``)."""
        t = Ticket(
            id="T" + uuid.uuid4().hex[:16],
            created=time.time(),
            session_id=session_id,
            query=mask_pii(query),
            reason=reason,
            candidates=candidates,
            history=prior.turns(),
        )
        self._conn().execute(
            f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                t.id,
                t.created,
                t.session_id,
                t.query,
                t.reason,
                json.dumps(t.candidates, ensure_ascii=False),
                json.dumps([x.to_json() for x in t.history], ensure_ascii=False),
            ),
        )
        return t

    def list(self, limit: int = 50, reason: str | None = None) -> list[Ticket]:
        if limit < 1:
            raise ConfigError(f"limit={limit} must be ≥ 1")
        q = f"SELECT {', '.join(TICKET_COLUMNS)} FROM tickets"
        args: tuple[Any, ...] = ()
        if reason:
            q += " WHERE reason = ?"
            args = (reason,)
        q += " ORDER BY created DESC LIMIT ?"
        rows = self._conn().execute(q, (*args, limit)).fetchall()
        return [Ticket.of_row(r) for r in rows]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM tickets").fetchone()[0])


@dataclass(frozen=True)
class LoggedAnswer:
    """One answer the API served, as the answer log keeps it."""

    answer_id: str
    created: float  # unix time
    session_id: str | None
    query: str  # personal data masked
    decision: str
    reason: str | None
    top_id: str | None  # the first answer (or, on a handoff, the first suggestion)
    confidence: float | None  # absent when a rule decided before the confidence model
    elapsed_ms: float
    ticket_id: str | None
    shop: str | None = None  # the request's shop (None: the platform's own help center)


_ANSWER_COLUMNS = (
    "answer_id, created, session_id, query, decision, reason, top_id, confidence, elapsed_ms, ticket_id, shop"
)


class AnswerLog(Database):
    """Every answer served, so a vote can name it and `kefu stats`/`kefu gaps` can read them."""

    def record(self, answer: Answer, shop: str | None = None) -> LoggedAnswer:
        """Log ``answer``, served for ``shop`` (None: without one), now (``AnswerWriter`` batches)."""
        row = self.row(answer, shop)
        self.insert([row])
        return row

    @staticmethod
    def row(answer: Answer, shop: str | None = None) -> LoggedAnswer:
        """What is logged of ``answer`` (the query with PII masked)."""
        top = answer.answers or answer.suggestions
        confidence = answer.trace.get("confidence")
        ticket = answer.handoff.ticket_id if answer.handoff is not None and answer.handoff.ticket_id != "-" else None
        return LoggedAnswer(
            answer_id=answer.answer_id,
            created=time.time(),
            session_id=answer.session_id,
            query=mask_pii(answer.query),
            decision=answer.decision,
            reason=answer.reason,
            top_id=top[0].id if top else None,
            confidence=float(confidence) if isinstance(confidence, int | float) else None,
            elapsed_ms=answer.elapsed_ms,
            ticket_id=ticket,
            shop=shop,
        )

    def insert(self, rows: Sequence[LoggedAnswer]) -> None:
        """Write ``rows`` in one transaction (all or none)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO answers ({_ANSWER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [dataclasses.astuple(r) for r in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get(self, answer_id: str) -> LoggedAnswer | None:
        r = self._conn().execute(f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
        return LoggedAnswer(*r) if r else None

    def list(self, since: float | None = None, limit: int = 1000) -> list[LoggedAnswer]:
        """Answers served at or after ``since`` (unix time), newest first."""
        tail, args = window(since, limit, "created")
        rows = self._conn().execute(f"SELECT {_ANSWER_COLUMNS} FROM answers{tail}", args).fetchall()
        return [LoggedAnswer(*r) for r in rows]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    # --- read by `kefu gaps` and `kefu stats` (service/gaps.py, service/stats.py) ---------------------------------
    def gap_candidates(
        self, since: float | None, until: float, limit: int, shop: str | None = None
    ) -> builtins.list[LoggedAnswer]:
        """Answers that may have left the shopper unserved, oldest first: low-confidence handoffs,
        clarifies, and answers whose current vote is 👎 (service/gaps.py decides which count);
        ``shop``: that shop's only."""
        where, args = shop_filter(shop)
        rows = (
            self._conn()
            .execute(
                f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE created >= ? AND created < ?{where} AND ("
                "(decision = 'handoff' AND reason = 'low_confidence') OR decision = 'clarify' "
                "OR answer_id IN (SELECT answer_id FROM feedback WHERE vote = 'down')) ORDER BY created LIMIT ?",
                (since if since is not None else float("-inf"), until, *args, limit),
            )
            .fetchall()
        )
        return [LoggedAnswer(*r) for r in rows]

    def in_sessions(
        self, session_ids: Sequence[str], since: float | None, decision: str
    ) -> builtins.list[LoggedAnswer]:
        """The answers of one ``decision`` served at or after ``since`` in these sessions, oldest first."""
        out: builtins.list[LoggedAnswer] = []
        ids = sorted(set(session_ids))
        for i in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            batch = ids[i : i + 500]
            out += [
                LoggedAnswer(*r)
                for r in self._conn().execute(
                    f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE created >= ? AND decision = ? "
                    f"AND session_id IN ({','.join('?' * len(batch))}) ORDER BY created",
                    (since if since is not None else float("-inf"), decision, *batch),
                )
            ]
        return sorted(out, key=lambda a: a.created)

    def daily(
        self, since: float | None, until: float, shop: str | None = None
    ) -> builtins.list[tuple[str, str, str | None, int]]:
        """(local day YYYY-MM-DD, decision, reason, answers) for the answers served in [since, until);
        ``shop``: that shop's only."""
        where, args = shop_filter(shop)
        rows = self._conn().execute(
            "SELECT date(created, 'unixepoch', 'localtime') AS day, decision, reason, COUNT(*) FROM answers "
            f"WHERE created >= ? AND created < ?{where} GROUP BY day, decision, reason ORDER BY day",
            (since if since is not None else float("-inf"), until, *args),
        )
        return [(str(d), str(dec), r, int(n)) for d, dec, r, n in rows]


@dataclass(frozen=True)
class Feedback:
    """A shopper's current vote on one answer (a later vote replaced any earlier one)."""

    answer_id: str
    created: float  # first vote
    updated: float  # latest vote
    session_id: str
    vote: Vote
    comment: str | None  # personal data masked


@dataclass(frozen=True)
class VoteResult:
    feedback: Feedback
    previous: Vote | None  # the vote this one replaced; None for a first vote


_FEEDBACK_COLUMNS = "answer_id, created, updated, session_id, vote, comment"


class FeedbackStore(Database):
    """👍/👎 per answer: one row per answer, so voting again replaces the vote instead of adding one."""

    def vote(self, answer_id: str, session_id: str, vote: Vote, comment: str | None = None) -> VoteResult:
        """Store ``vote`` on a logged answer of ``session_id``; NotFoundError for any other id (an answer
        of another session is reported the same way, so ids cannot be probed)."""
        now = time.time()
        masked = mask_pii(comment) if comment else None
        conn = self._conn()
        # IMMEDIATE: the read and the write below are one step even with several processes.
        conn.execute("BEGIN IMMEDIATE")
        try:
            owner = conn.execute("SELECT session_id FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
            if owner is None or owner[0] != session_id:
                raise NotFoundError(
                    f"no answer {answer_id!r} in session {session_id!r}; vote with the answer_id and session_id "
                    "of an answer from POST /v1/answer"
                )
            old = conn.execute(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE answer_id = ?", (answer_id,)).fetchone()
            created = old[1] if old else now
            conn.execute(
                f"INSERT OR REPLACE INTO feedback ({_FEEDBACK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (answer_id, created, now, session_id, vote, masked),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return VoteResult(Feedback(answer_id, created, now, session_id, vote, masked), old[4] if old else None)

    def get(self, answer_id: str) -> Feedback | None:
        r = (
            self._conn()
            .execute(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE answer_id = ?", (answer_id,))
            .fetchone()
        )
        return Feedback(*r) if r else None

    def list(self, since: float | None = None, limit: int = 1000) -> list[Feedback]:
        """Votes cast or changed at or after ``since`` (unix time), latest first."""
        tail, args = window(since, limit, "updated")
        rows = self._conn().execute(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback{tail}", args).fetchall()
        return [Feedback(*r) for r in rows]

    def counts(self) -> dict[Vote, int]:
        """Current votes by kind (each answer counted once)."""
        got = dict(self._conn().execute("SELECT vote, COUNT(*) FROM feedback GROUP BY vote").fetchall())
        return {"up": int(got.get("up", 0)), "down": int(got.get("down", 0))}

    def votes_on(self, answer_ids: Sequence[str]) -> dict[str, Vote]:
        """The current vote of each of these answers that has one."""
        out: dict[str, Vote] = {}
        ids = sorted(set(answer_ids))
        for i in range(0, len(ids), 500):
            batch = ids[i : i + 500]
            q = f"SELECT answer_id, vote FROM feedback WHERE answer_id IN ({','.join('?' * len(batch))})"
            out.update({str(a): v for a, v in self._conn().execute(q, batch)})
        return out

    def daily(self, since: float | None, until: float, shop: str | None = None) -> builtins.list[tuple[str, Vote, int]]:
        """(local day the answer was served, vote, answers) for the answers served in [since, until):
        each answer's current vote, counted on the day of the answer (a rate per day of traffic);
        ``shop``: the votes on that shop's answers only."""
        where, args = shop_filter(shop, "a.shop")
        rows = self._conn().execute(
            "SELECT date(a.created, 'unixepoch', 'localtime') AS day, f.vote, COUNT(*) FROM feedback f "
            f"JOIN answers a ON a.answer_id = f.answer_id WHERE a.created >= ? AND a.created < ?{where} "
            "GROUP BY day, f.vote ORDER BY day",
            (since if since is not None else float("-inf"), until, *args),
        )
        return [(str(d), v, int(n)) for d, v, n in rows]
