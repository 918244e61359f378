"""In-memory conversation sessions with a TTL and a size bound (least recently used evicted)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from kb.errors import ConfigError

MAX_TURNS = 10  # turns kept per session: the last question is what a follow-up reads; ten is plenty


@dataclass(frozen=True)
class Turn:
    query: str  # the normalised question used for retrieval (never the answer text)
    order: bool = False  # it was handed off as needing the shopper's order: the chat is about that order
    message: str = ""  # as the shopper typed it: a later handoff's ticket shows it, masked ("": not known)


class SessionStore:
    def __init__(self, ttl_s: float = 1800, max_sessions: int = 10000) -> None:
        if ttl_s <= 0 or max_sessions < 1:
            raise ConfigError(f"session ttl {ttl_s} must be > 0 and max {max_sessions} ≥ 1")
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._data: OrderedDict[str, tuple[float, list[Turn]]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return "S" + uuid.uuid4().hex[:16]

    def last(self, session_id: str) -> Turn | None:
        with self._lock:
            turns = self._live(session_id)
            return turns[-1] if turns else None

    def turns(self, session_id: str) -> tuple[Turn, ...]:
        """The session's turns, oldest first (none once it expired)."""
        with self._lock:
            return tuple(self._live(session_id))

    def messages(self, session_id: str) -> tuple[str, ...]:
        """The session's messages as typed (the normalised question where that is not known), oldest first."""
        return tuple(t.message or t.query for t in self.turns(session_id))

    def _live(self, session_id: str) -> list[Turn]:
        """The turns of an unexpired session (an expired one is dropped); hold the lock."""
        item = self._data.get(session_id)
        if item is None:
            return []
        stamp, turns = item
        if time.monotonic() - stamp > self.ttl_s:
            del self._data[session_id]
            return []
        return turns

    def add(self, session_id: str, turn: Turn) -> None:
        with self._lock:
            _, turns = self._data.pop(session_id, (0.0, []))
            turns = [*turns[-(MAX_TURNS - 1) :], turn]
            self._data[session_id] = (time.monotonic(), turns)
            while len(self._data) > self.max_sessions:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
