"""Which answer-log messages ``kefu gaps`` counts as unserved (see ``service/gaps.py``), read from the stores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kb.learn_journal import states
from kb.loadstate import question_key
from service.pii import mask_pii
from service.tickets import AnswerLog, FeedbackStore, LoggedAnswer

GapKind = Literal["low_confidence", "abandoned_clarify", "voted_down"]
KINDS: tuple[GapKind, ...] = ("low_confidence", "abandoned_clarify", "voted_down")
ABANDON_S = 600.0  # a clarify not followed by an answer in its session within 10 minutes was abandoned
MAX_ROWS = 200_000  # unserved messages read per report (the newest are dropped past it)


@dataclass(frozen=True)
class GapMessage:
    """One message kefu did not serve (text masked, as the answer log keeps it)."""

    answer_id: str
    created: float
    session_id: str | None
    text: str
    kind: GapKind
    top_id: str | None
    confidence: float | None


def select_unserved(
    rows: Iterable[LoggedAnswer], votes: Mapping[str, str], now: float, abandon_s: float = ABANDON_S
) -> list[GapMessage]:
    """The unserved messages among ``rows``, oldest first (see ``service/gaps.py``). ``rows`` must hold every
    ``answer`` of the clarified sessions after their clarifies; ``votes``: answer id → current vote."""
    rows = sorted({r.answer_id: r for r in rows}.values(), key=lambda r: (r.created, r.answer_id))
    answered: dict[str, list[float]] = {}
    for r in rows:
        if r.decision == "answer" and r.session_id is not None:
            answered.setdefault(r.session_id, []).append(r.created)
    out = []
    for r in rows:
        kind: GapKind | None = None
        if votes.get(r.answer_id) == "down" and (
            r.decision == "answer"
            or (r.decision, r.reason) in (("clarify", "ambiguous"), ("handoff", "low_confidence"))
        ):
            kind = "voted_down"
        elif r.decision == "handoff" and r.reason == "low_confidence":
            kind = "low_confidence"
        elif r.decision == "clarify" and r.reason == "ambiguous" and now - r.created >= abandon_s:
            later = answered.get(r.session_id or "", ())
            if not any(r.created < t <= r.created + abandon_s for t in later):
                kind = "abandoned_clarify"
        if kind is not None and r.query.strip():
            out.append(
                GapMessage(r.answer_id, r.created, r.session_id, mask_pii(r.query), kind, r.top_id, r.confidence)
            )
    return out


def read_unserved(
    log: AnswerLog,
    feedback: FeedbackStore,
    since: float | None,
    now: float,
    abandon_s: float = ABANDON_S,
    shop: str | None = None,
) -> list[GapMessage]:
    """``select_unserved`` over the answer log: the candidates (``shop``: asked in that shop), their
    votes, and the answers that followed the clarifies in their sessions."""
    rows = log.gap_candidates(since, now, MAX_ROWS, shop)
    sessions = [r.session_id for r in rows if r.decision == "clarify" and r.session_id is not None]
    first = min((r.created for r in rows), default=now)
    follow = log.in_sessions(sessions, first, "answer") if sessions else []
    votes = feedback.votes_on([r.answer_id for r in rows])
    return select_unserved([*rows, *follow], votes, now, abandon_s)


def decided_keys(root: Path) -> set[str]:
    """``question_key`` of every message in a live (not undone) decision of the KB at ``root``."""
    return {question_key(m) for s in states(root).values() if s.status != "undone" for m in s.decision.messages}
