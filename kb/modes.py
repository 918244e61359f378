"""The modes a setting can name, as enums: a bad value is refused with the allowed ones listed.

They live here, below every layer that reads them (kb ← indexer ← service ← eval), so that
``Settings`` declares its fields with them and the components check what they are given with
the same ``parse``: ``KEFU_RETRIEVAL=nope`` and ``search_units_fused(..., mode="nope")`` both say
which values exist.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from kb.errors import ConfigError


class _Mode(StrEnum):
    """A StrEnum whose ``parse`` names the setting and the allowed values in its error."""

    @classmethod
    def parse(cls, value: str) -> Self:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ConfigError(f"{cls._setting()} {value!r} is unknown; allowed: {allowed}") from None

    @classmethod
    def _setting(cls) -> str:
        return cls.__name__


class RetrievalMode(_Mode):
    """How answer units are ranked (``KEFU_RETRIEVAL``): dense cosines alone, BM25 alone, or a
    fusion of both (reciprocal-rank fusion, or a weighted sum). rrf won on the dev split."""

    DENSE = "dense"
    LEXICAL = "lexical"
    RRF = "rrf"
    WEIGHTED = "weighted"

    @classmethod
    def _setting(cls) -> str:
        return "retrieval mode"


class IndexKind(_Mode):
    """The FAISS index a build writes (``KEFU_INDEX_KIND``) and the served dense pass reads:
    flat scores every row (int8 or float32 full scan); hnsw and ivf are approximate and score only
    the rows they find (``indexer.dense``)."""

    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"

    @classmethod
    def _setting(cls) -> str:
        return "index kind"


class QueryRuntime(_Mode):
    """Where queries are encoded (``KEFU_QUERY_RUNTIME``): an exported ONNX Runtime graph, or the
    model in torch; onnx falls back to torch when a model cannot be exported (``indexer.encoders``)."""

    ONNX = "onnx"
    TORCH = "torch"

    @classmethod
    def _setting(cls) -> str:
        return "query runtime"


class DocPrecision(_Mode):
    """How answers and document passages are embedded at build time (``KEFU_DOC_PRECISION``):
    float32, or bfloat16 matrix products under torch's autocast (sums, norms and softmax stay
    float32). auto takes bf16 where the CPU multiplies it natively (AMX or AVX-512 BF16) and
    float32 elsewhere, where emulated bf16 would be slower. Queries are not affected."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"

    @classmethod
    def _setting(cls) -> str:
        return "document precision"
