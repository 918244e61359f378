"""Sessions kept in a SQLite file, ``<data_dir>/sessions.db``, for ``kefu ask --session``.

Each ``kefu ask`` is a process of its own, so the in-memory ``SessionStore`` forgets a session
between them. ``SessionFile`` keeps the same turns under the same bounds (``KEFU_SESSION_TTL_S``,
``KEFU_SESSION_MAX``, ``MAX_TURNS`` per session), in a file that two ``kefu ask`` running at once
share safely: a turn is added in one write transaction (read, append, trim, evict). The HTTP
server keeps the in-memory store with one worker (a file costs a disk write per message) and
uses the file with several (``for_server``): its workers are processes too. What reaches the
file is masked (``mask_pii``: phones, ID-card and bank-card numbers, emails), as tickets are: a
session outlives the process on disk, and the digits carry nothing a follow-up is read with.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from pathlib import Path

from kb.errors import ConfigError
from kb.settings import Settings
from service.pii import mask_pii
from service.sessions import MAX_TURNS, SessionStore, Turn

SESSIONS_FILE = "sessions.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    stamp REAL NOT NULL,
    turns TEXT NOT NULL,
    PRIMARY KEY (scope, id)
);
CREATE INDEX IF NOT EXISTS sessions_stamp ON sessions (scope, stamp);
"""


def sessions_path(settings: Settings) -> Path:
    """Where ``kefu ask --session`` keeps sessions: beside the tickets, under the data directory."""
    return settings.data_dir / SESSIONS_FILE


class SessionFile(SessionStore):
    """A ``SessionStore`` whose sessions live in a SQLite file, so they outlive the process.

    ``scope`` keeps apart stores that a server keeps apart in memory (the platform's answers, a
    shop desk's, the platform side of a shop desk): one session id may be in each. Time is the
    wall clock (processes do not share a monotonic one)."""

    def __init__(self, path: Path, ttl_s: float = 1800, max_sessions: int = 10000, scope: str = "platform") -> None:
        super().__init__(ttl_s, max_sessions)
        self.path = Path(path).expanduser()
        self.scope = scope
        self._conn_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise self._unusable(exc) from exc

    @classmethod
    def at(cls, settings: Settings, scope: str = "platform") -> SessionFile:
        """The session file of ``settings`` with its TTL and size bound."""
        return cls(sessions_path(settings), settings.session_ttl_s, settings.session_max, scope)

    @classmethod
    def for_server(cls, settings: Settings, scope: str = "platform") -> SessionFile | None:
        """The session file when ``kefu serve`` runs several worker processes (a follow-up may reach
        another worker than the question before it, and memory is per process); None for one
        worker, which keeps sessions in memory."""
        return cls.at(settings, scope) if settings.workers > 1 else None

    def _unusable(self, exc: Exception) -> ConfigError:
        return ConfigError(
            f"cannot use the session file {self.path}: {exc}; set KEFU_DATA_DIR to a writable folder, or delete "
            "the file (it holds only recent turns), or leave out `kefu ask --session` (`kefu serve`: run one worker)"
        )

    def turns(self, session_id: str) -> tuple[Turn, ...]:
        """The session's turns, oldest first (none once it expired)."""
        try:
            with self._conn_lock:
                row = self._conn.execute(
                    "SELECT stamp, turns FROM sessions WHERE scope = ? AND id = ?", (self.scope, session_id)
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        if row is None or time.time() - row[0] > self.ttl_s:
            return ()
        return _decode(row[1])

    def last(self, session_id: str) -> Turn | None:
        turns = self.turns(session_id)
        return turns[-1] if turns else None

    def add(self, session_id: str, turn: Turn) -> None:
        """Append ``turn`` (the last ``MAX_TURNS`` kept), drop expired sessions and, past the size
        bound, the least recently written: one transaction, so a concurrent add is never lost."""
        try:
            with self._conn_lock:
                c = self._conn
                c.execute("BEGIN IMMEDIATE")  # the write lock before the read: no lost update
                try:
                    now = time.time()
                    row = c.execute(
                        "SELECT stamp, turns FROM sessions WHERE scope = ? AND id = ?", (self.scope, session_id)
                    ).fetchone()
                    kept = _decode(row[1]) if row is not None and now - row[0] <= self.ttl_s else ()
                    turns = [*kept[-(MAX_TURNS - 1) :], turn]
                    c.execute(
                        "INSERT OR REPLACE INTO sessions (scope, id, stamp, turns) VALUES (?, ?, ?, ?)",
                        (self.scope, session_id, now, _encode(turns)),
                    )
                    c.execute("DELETE FROM sessions WHERE scope = ? AND stamp < ?", (self.scope, now - self.ttl_s))
                    if row is None:  # only a new session can pass the bound: count then, not on every turn
                        (n,) = c.execute("SELECT COUNT(*) FROM sessions WHERE scope = ?", (self.scope,)).fetchone()
                        if n > self.max_sessions:  # the least recently written go (the stamp index walks them)
                            c.execute(
                                "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE scope = ? "
                                "ORDER BY stamp, rowid LIMIT ?)",
                                (self.scope, n - self.max_sessions),
                            )
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc

    def __len__(self) -> int:
        with self._conn_lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM sessions WHERE scope = ? AND stamp >= ?", (self.scope, time.time() - self.ttl_s)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._conn_lock:
            self._conn.close()


def _encode(turns: list[Turn]) -> str:
    """The turns as stored: their text masked (masking is idempotent, so earlier turns pass again unchanged)."""
    masked = [dataclasses.replace(t, query=mask_pii(t.query), message=mask_pii(t.message)) for t in turns]
    return json.dumps([dataclasses.asdict(t) for t in masked], ensure_ascii=False)


def _decode(text: str) -> tuple[Turn, ...]:
    """The stored turns; a row this kefu cannot read counts as no turns (it only loses context)."""
    try:
        return tuple(Turn(**t) for t in json.loads(text))
    except (ValueError, TypeError):
        return ()
