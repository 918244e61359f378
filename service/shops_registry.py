"""The shops registry (``shops/registry.sqlite`` under the index home; see service/shops.py): one row
per shop with its KB, the build it serves, its counts and the hash of its admin token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from indexer.vectorstore import check_shop_id
from kb.errors import ConfigError, NotFoundError

TOKEN_PREFIX = "kshop_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shops (
    id TEXT PRIMARY KEY,
    kb_root TEXT NOT NULL,
    build_id TEXT NOT NULL,
    store TEXT NOT NULL,
    dim INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    vectors INTEGER NOT NULL,
    calibration TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    token_sha256 TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS shops_token ON shops (token_sha256);
"""


@dataclass(frozen=True)
class ShopRecord:
    """One registered shop and the build it serves."""

    id: str
    kb_root: str  # the KB path it was added (or last rebuilt) with, a folder or a file; rebuilds load it
    build_id: str
    store: str  # the vector store kind its vectors were written to
    dim: int
    entries: int
    vectors: int
    calibration: str  # one line: where its calibration came from
    created: float
    updated: float
    has_token: bool


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ShopRegistry:
    """The shops table (SQLite, WAL): thread-safe, shared by CLI and server processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the shops folder {self.path.parent}: {exc}") from exc
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    _COLUMNS = "id, kb_root, build_id, store, dim, entries, vectors, calibration, created, updated, token_sha256"

    @staticmethod
    def _record(row: tuple[object, ...]) -> ShopRecord:
        values = list(row)
        values[-1] = values[-1] is not None
        return ShopRecord(*values)  # type: ignore[arg-type]

    def get(self, shop: str) -> ShopRecord | None:
        row = self._conn().execute(f"SELECT {self._COLUMNS} FROM shops WHERE id = ?", (shop,)).fetchone()
        return None if row is None else self._record(row)

    def require(self, shop: str) -> ShopRecord:
        """The shop's record, or a NotFoundError (404) saying how to add it."""
        check_shop_id(shop)
        rec = self.get(shop)
        if rec is None:
            raise NotFoundError(
                f"no shop {shop!r}; add it with `kefu shops add {shop} --kb PATH` (see `kefu shops list`)"
            )
        return rec

    def list(self) -> list[ShopRecord]:
        rows = self._conn().execute(f"SELECT {self._COLUMNS} FROM shops ORDER BY id").fetchall()
        return [self._record(r) for r in rows]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM shops").fetchone()[0])

    def put(self, rec: ShopRecord) -> None:
        """Insert or point the shop at a new build (one atomic write; the token is kept)."""
        self._conn().execute(
            "INSERT INTO shops (id, kb_root, build_id, store, dim, entries, vectors, calibration, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET kb_root=excluded.kb_root, "
            "build_id=excluded.build_id, store=excluded.store, dim=excluded.dim, entries=excluded.entries, "
            "vectors=excluded.vectors, calibration=excluded.calibration, updated=excluded.updated",
            (
                rec.id,
                rec.kb_root,
                rec.build_id,
                rec.store,
                rec.dim,
                rec.entries,
                rec.vectors,
                rec.calibration,
                rec.created,
                rec.updated,
            ),
        )

    def delete(self, shop: str) -> None:
        self._conn().execute("DELETE FROM shops WHERE id = ?", (shop,))

    def new_token(self, shop: str) -> str:
        """A new admin token for ``shop`` (replacing its previous one); only its hash is stored."""
        self.require(shop)
        token = TOKEN_PREFIX + secrets.token_urlsafe(24)
        self._conn().execute("UPDATE shops SET token_sha256 = ? WHERE id = ?", (_token_hash(token), shop))
        return token

    def shop_of_token(self, token: str) -> str | None:
        """The shop whose admin token this is, or None. The lookup is by hash, so its timing says
        nothing about the token; the hashes are compared in constant time once more anyway."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _token_hash(token)
        row = self._conn().execute("SELECT id, token_sha256 FROM shops WHERE token_sha256 = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(str(row[1]), digest):
            return None
        return str(row[0])
