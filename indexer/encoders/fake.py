"""A deterministic, model-free encoder for fast tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from indexer.encoders.base import PROFILES, Profile, QueryPolicy, empty
from kb.errors import ConfigError


class FakeEncoder:
    """Hashes character unigrams and bigrams into ``dim`` buckets (signed), so texts that share
    characters are close and unrelated texts are nearly orthogonal.

    ``query_path`` and ``batch_invariant`` go into its query policy: tests of other query paths
    set them.
    """

    def __init__(
        self, dim: int = 64, model_id: str = "fake:hash-64", query_path: str = "fake", batch_invariant: bool = True
    ) -> None:
        if dim < 8:
            raise ConfigError(f"FakeEncoder dim={dim} must be ≥ 8")
        self._dim = dim
        self._model_id = model_id
        self._policy = QueryPolicy(path=query_path, batch_invariant=batch_invariant, parallelism=1, max_batch=32)
        self._profile = PROFILES["plain"]
        self.calls = 0  # number of encode calls, so tests can check caching and batching

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def query_policy(self) -> QueryPolicy:
        return self._policy

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float32)
        grams = list(text) + [text[i : i + 2] for i in range(len(text) - 1)]
        for g in grams:
            h = int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little")
            v[h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = float(np.linalg.norm(v))
        if n == 0.0:
            v[0] = 1.0  # the empty text still gets a unit vector
            return v
        return v / n

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if len(texts) == 0:
            return empty(self._dim)
        return np.stack([self._vec(t) for t in texts])

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode_queries(texts)
