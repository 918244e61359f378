"""The SQLite file the ticket store, the answer log and the votes share (service/tickets.py): its
schema, the in-place migration of a file an older kefu created, one connection per thread, and the
SQL fragments the stores' queries share."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from kb.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    session_id TEXT,
    query TEXT NOT NULL,
    reason TEXT NOT NULL,
    candidates TEXT NOT NULL,
    history TEXT
);
CREATE INDEX IF NOT EXISTS tickets_created ON tickets (created);
CREATE TABLE IF NOT EXISTS answers (
    answer_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    session_id TEXT,
    query TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT,
    top_id TEXT,
    confidence REAL,
    elapsed_ms REAL NOT NULL,
    ticket_id TEXT,
    shop TEXT
);
CREATE INDEX IF NOT EXISTS answers_created ON answers (created);
CREATE TABLE IF NOT EXISTS feedback (
    answer_id TEXT PRIMARY KEY REFERENCES answers (answer_id),
    created REAL NOT NULL,
    updated REAL NOT NULL,
    session_id TEXT NOT NULL,
    vote TEXT NOT NULL CHECK (vote IN ('up', 'down')),
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_updated ON feedback (updated);
"""
# Columns added since the first release, with the tables above: a database an older kefu created
# gets them in place (ALTER TABLE … ADD COLUMN), and its old rows read as no history, no shop.
_ADDED_COLUMNS = (("tickets", "history", "TEXT"), ("answers", "shop", "TEXT"))
_ADDED_INDEXES = "CREATE INDEX IF NOT EXISTS answers_shop ON answers (shop, created);"


class Database:
    """One connection per thread to the shared file; the schema of all three tables is created
    by whichever store opens the file first."""

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
            _migrate(c)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._local.conn = conn
        return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a database from an older kefu lacks. Checked again inside one write
    transaction: two processes opening the same old file must not both add a column."""

    def missing() -> list[tuple[str, str, str]]:
        have = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in {t for t, _, _ in _ADDED_COLUMNS}}
        return [(t, c, kind) for t, c, kind in _ADDED_COLUMNS if c not in have[t]]

    if missing():
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, column, kind in missing():
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    conn.executescript(_ADDED_INDEXES)


def shop_filter(shop: str | None, column: str = "shop") -> tuple[str, tuple[Any, ...]]:
    """`` AND <column> = ?`` and its argument when ``shop`` is given, else nothing."""
    return ("", ()) if shop is None else (f" AND {column} = ?", (shop,))


def window(since: float | None, limit: int, column: str) -> tuple[str, tuple[Any, ...]]:
    """The WHERE/ORDER/LIMIT tail shared by the list methods: newest first, ``since`` inclusive."""
    if limit < 1:
        raise ConfigError(f"limit={limit} must be ≥ 1")
    where, args = ("", ()) if since is None else (f" WHERE {column} >= ?", (since,))
    return f"{where} ORDER BY {column} DESC LIMIT ?", (*args, limit)
