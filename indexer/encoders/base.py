"""What every encoder shares: the protocol the rest of kefu sees, prompt profiles, and the query
policy an encoder reports to whoever feeds it queries (the micro-batcher, the build)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from indexer.model.builtin import is_builtin
from kb.errors import ConfigError
from kb.modes import DocPrecision


@dataclass(frozen=True)
class Profile:
    """How a model family wants its inputs prefixed."""

    name: str
    query_prompt: str
    doc_prompt: str


# Prompts per model family, from each family's model card.
PROFILES: dict[str, Profile] = {
    "e5": Profile("e5", "query: ", "passage: "),
    "bge-zh": Profile("bge-zh", "为这个句子生成表示以用于检索相关文章：", ""),
    "bge-en": Profile("bge-en", "Represent this sentence for searching relevant passages: ", ""),
    "plain": Profile("plain", "", ""),
}


def detect_profile(model: str) -> Profile:
    """Pick the prompt profile from a model name; unknown families get no prompts."""
    name = model.lower()
    if is_builtin(model) or "e5" in name:
        return PROFILES["e5"]
    if "bge" in name:
        return PROFILES["bge-zh"] if "zh" in name else PROFILES["bge-en"]
    return PROFILES["plain"]


def resolve_profile(
    model: str,
    *,
    model_profile: str | None = None,
    query_prompt: str | None = None,
    doc_prompt: str | None = None,
) -> Profile:
    """The prompt profile for ``model``: ``model_profile`` by name, else the one its family gets;
    ``query_prompt`` and ``doc_prompt``, when given, replace that profile's prompts."""
    if model_profile is not None:
        if model_profile not in PROFILES:
            raise ConfigError(f"KEFU_MODEL_PROFILE={model_profile!r} is unknown; allowed: {', '.join(PROFILES)}")
        base = PROFILES[model_profile]
    else:
        base = detect_profile(model)
    return Profile(
        base.name,
        query_prompt if query_prompt is not None else base.query_prompt,
        doc_prompt if doc_prompt is not None else base.doc_prompt,
    )


@dataclass(frozen=True)
class QueryPolicy:
    """How an encoder's queries are best fed, as the encoder reports it (``query_policy``).

    ``path``: how queries are encoded (runtime and precision, e.g. ``onnx-int8``); vectors from
    one path are not interchangeable with another's, so caches and builds key on it.
    ``batch_invariant``: whether ``encode_queries`` gives every text the vector it gets alone.
    int8 activations quantised once per call, over every token of the batch (padding included),
    move each vector when batched (cosine 0.977–0.99 against the same text alone).
    ``parallelism``: how many ``encode_queries`` calls are worth running at once.
    ``max_batch``: how many queries one call should take when requests are coalesced.
    """

    path: str
    batch_invariant: bool
    parallelism: int = 1
    max_batch: int = 32

    def __post_init__(self) -> None:
        if self.parallelism < 1 or self.max_batch < 1:
            raise ConfigError(
                f"a query policy needs parallelism ≥ 1 (got {self.parallelism}) "
                f"and max_batch ≥ 1 (got {self.max_batch})"
            )


# For an encoder that reports no policy: nothing is assumed about batching, so stored questions
# are encoded one per call (as a shopper's query is) and calls run one at a time.
CAUTIOUS_POLICY = QueryPolicy(path="unreported", batch_invariant=False)


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit-length vectors of ``dim`` floats.

    An encoder may also report a ``query_policy`` property (a ``QueryPolicy``); read it with
    ``policy_of``, which gives the cautious policy to an encoder that reports none.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def profile(self) -> Profile: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


def policy_of(encoder: Encoder) -> QueryPolicy:
    """The query policy ``encoder`` reports, or ``CAUTIOUS_POLICY``."""
    policy = getattr(encoder, "query_policy", None)
    return policy if isinstance(policy, QueryPolicy) else CAUTIOUS_POLICY


def doc_precision_of(encoder: Encoder) -> DocPrecision:
    """What ``encoder`` embeds documents in: its ``doc_precision``, or fp32 for one that does not say."""
    precision = getattr(encoder, "doc_precision", None)
    return precision if isinstance(precision, DocPrecision) else DocPrecision.FP32


def empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)
