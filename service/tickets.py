"""Handoff tickets in an embedded SQLite database (WAL: survives restarts and crashes mid-write)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.errors import ConfigError
from service.pii import mask_pii

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    session_id TEXT,
    query TEXT NOT NULL,
    reason TEXT NOT NULL,
    candidates TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_created ON tickets (created);
"""


@dataclass(frozen=True)
class Ticket:
    id: str
    created: float
    session_id: str | None
    query: str  # personal data masked
    reason: str
    candidates: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.created)),
            "session_id": self.session_id,
            "query": self.query,
            "reason": self.reason,
            "candidates": self.candidates,
        }


class TicketStore:
    """Thread-safe; several processes may share one file (SQLite locking, busy timeout)."""

    def __init__(self, path: Path) -> None:
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the tickets folder {path.parent}: {exc}; set KEFU_TICKETS_DB") from exc
        self.path = path
        self._local = threading.local()
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._local.conn = conn
        return conn

    def create(self, query: str, reason: str, session_id: str | None, candidates: list[dict[str, Any]]) -> Ticket:
        t = Ticket(
            id="T" + uuid.uuid4().hex[:16],
            created=time.time(),
            session_id=session_id,
            query=mask_pii(query),
            reason=reason,
            candidates=candidates,
        )
        self._conn().execute(
            "INSERT INTO tickets (id, created, session_id, query, reason, candidates) VALUES (?, ?, ?, ?, ?, ?)",
            (t.id, t.created, t.session_id, t.query, t.reason, json.dumps(t.candidates, ensure_ascii=False)),
        )
        return t

    def list(self, limit: int = 50, reason: str | None = None) -> list[Ticket]:
        if limit < 1:
            raise ConfigError(f"limit={limit} must be ≥ 1")
        q = "SELECT id, created, session_id, query, reason, candidates FROM tickets"
        args: tuple[Any, ...] = ()
        if reason:
            q += " WHERE reason = ?"
            args = (reason,)
        q += " ORDER BY created DESC LIMIT ?"
        rows = self._conn().execute(q, (*args, limit)).fetchall()
        return [Ticket(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM tickets").fetchone()[0])
