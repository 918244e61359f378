"""Encoders, as the rest of kefu imports them: the classes live in ``indexer.encoders``.

Tests replace ``load_encoder`` here (``monkeypatch.setattr(indexer.encoder, "load_encoder", …)``),
so callers import it from this module when they call it.
"""

from indexer.encoders import (
    CAUTIOUS_POLICY,
    INT8_KEEP_LAST,
    ONNX_QUERY_BATCH,
    PROFILES,
    Encoder,
    FakeEncoder,
    LayerSwap,
    LibraryEncoder,
    OnnxEncoder,
    Profile,
    QueryPolicy,
    QueryRuntime,
    SentenceTransformerEncoder,
    SentenceTransformerModel,
    StandaloneOnnxEncoder,
    TorchEncoder,
    build_encoder,
    detect_profile,
    load_encoder,
    policy_of,
    resolve_profile,
)

__all__ = [
    "CAUTIOUS_POLICY",
    "INT8_KEEP_LAST",
    "ONNX_QUERY_BATCH",
    "PROFILES",
    "Encoder",
    "FakeEncoder",
    "LayerSwap",
    "LibraryEncoder",
    "OnnxEncoder",
    "Profile",
    "QueryPolicy",
    "QueryRuntime",
    "SentenceTransformerEncoder",
    "SentenceTransformerModel",
    "StandaloneOnnxEncoder",
    "TorchEncoder",
    "build_encoder",
    "detect_profile",
    "load_encoder",
    "policy_of",
    "resolve_profile",
]
