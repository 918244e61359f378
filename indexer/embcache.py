"""Embedding cache keyed by (model id, prompt, normalised text): rebuilds re-encode only what changed."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def cache_key(model_id: str, prompt: str, text: str) -> str:
    return hashlib.sha256("\x1f".join((model_id, prompt, text)).encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A small SQLite store of float32 vectors. Safe to delete at any time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    def close(self) -> None:
        self._db.close()

    def get_or_encode(
        self,
        model_id: str,
        prompt: str,
        texts: Sequence[str],
        encode: Callable[[list[str]], np.ndarray],
        dim: int,
    ) -> tuple[np.ndarray, int]:
        """Return vectors for ``texts`` (cached or freshly encoded) and the number of cache hits."""
        keys = [cache_key(model_id, prompt, t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):  # SQLite limits the number of bound parameters
            batch = keys[i : i + 500]
            q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(batch))})"
            for key, blob in self._db.execute(q, batch):
                if len(blob) != dim * 4:  # a vector of another model or a damaged row: re-encode
                    continue
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape == (dim,):
                    found[key] = vec
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=lambda i: keys[i])
        unique_missing: dict[str, int] = {}
        for i in missing:
            unique_missing.setdefault(keys[i], i)
        if unique_missing:
            idx = list(unique_missing.values())
            vecs = encode([texts[i] for i in idx])
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                    [(keys[i], np.asarray(v, dtype=np.float32).tobytes()) for i, v in zip(idx, vecs, strict=True)],
                )
            for i, v in zip(idx, vecs, strict=True):
                found[keys[i]] = np.asarray(v, dtype=np.float32)
        hits = len(keys) - len(missing)
        out = np.stack([found[k] for k in keys]) if keys else np.zeros((0, dim), dtype=np.float32)
        return out, hits
