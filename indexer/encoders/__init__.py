"""Encoders: text → L2-normalised float32 vectors, one class per runtime behind ``load_encoder``.

``base``: the ``Encoder`` protocol, prompt profiles, ``QueryPolicy``. ``library``: the model
holder and the library encoder. ``torch_direct``, ``onnx_graph``, ``standalone``: the faster
query runtimes. ``factory``: which one serves. ``fake``: a model-free encoder for tests.
"""

from indexer.encoders.base import (
    CAUTIOUS_POLICY,
    PROFILES,
    Encoder,
    Profile,
    QueryPolicy,
    detect_profile,
    policy_of,
    resolve_profile,
)
from indexer.encoders.factory import build_encoder, load_encoder
from indexer.encoders.fake import FakeEncoder
from indexer.encoders.library import LibraryEncoder, SentenceTransformerEncoder, SentenceTransformerModel
from indexer.encoders.onnx_graph import ONNX_QUERY_BATCH, OnnxEncoder
from indexer.encoders.standalone import StandaloneOnnxEncoder
from indexer.encoders.torch_direct import INT8_KEEP_LAST, LayerSwap, TorchEncoder
from kb.modes import QueryRuntime

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
