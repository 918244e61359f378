"""Queries through the model's modules in torch, directly: float32, or int8 by a layer swap."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from indexer.encoders.base import Profile, QueryPolicy
from indexer.encoders.library import SentenceTransformerEncoder, SentenceTransformerModel
from kb.modes import QueryRuntime

log = logging.getLogger("kefu.encoder")

# Layers left in float32 at the end of the stack in torch's int8 path: quantising all 12 cost
# 3 of 347 dev top-1 answers (hit@1 0.839 → 0.830); keeping the last two exact cost none.
INT8_KEEP_LAST = 2
INT8_UNAVAILABLE = (
    "int8 query encoding is not available for %s (no encoder.layer stack, or the direct "
    "path disagrees with sentence-transformers); queries are encoded in float32"
)
# The direct path must reproduce the library's vector of this text before it is used.
_AGREEMENT_PROBE = "快递三天没有更新物流信息了怎么办？ Where is my parcel"


def direct_forward(st: Any, texts: list[str], prompt: str, batch_size: int, dim: int) -> np.ndarray:
    """Tokenise and run the modules directly, length-sorted in sub-batches.

    ``SentenceTransformer.encode`` spends about 4 ms per call on bookkeeping (switching every
    module to eval mode, finding the device), as long as the forward pass of a short query in
    int8. The model is put in eval mode once, when it is loaded.
    """
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per sub-batch
    out = np.empty((len(texts), dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = st.preprocess([texts[i] for i in rows], prompt=prompt or None)
            emb = st(features)["sentence_embedding"]
            out[rows] = torch.nn.functional.normalize(emb.float(), p=2, dim=1).numpy()
    return out


def direct_path_agrees(model: SentenceTransformerModel, prompt: str, batch_size: int) -> bool:
    """Whether the model's modules run directly give the library's own vectors (checked once, on a
    probe text). Both the torch and the ONNX query paths need it: they tokenise with
    ``preprocess`` and run the module chain themselves."""
    st = model.load()
    if not hasattr(st, "preprocess"):
        return False
    probe = [_AGREEMENT_PROBE]
    try:
        reference = model.encode(probe, prompt, batch_size)
        direct = direct_forward(st, probe, prompt, batch_size, model.dimension())
    except Exception:  # an unusual model: keep to the library's own path
        return False
    return bool(float(np.dot(reference[0], direct[0])) > 0.9999)


class TorchEncoder(SentenceTransformerEncoder):
    """Queries through the modules directly (float32, or int8 layers swapped in); documents
    through the library, always on the float32 layers."""

    def __init__(
        self,
        model: SentenceTransformerModel,
        model_id: str,
        profile: Profile,
        batch_size: int = 32,
        *,
        int8: bool = False,
    ) -> None:
        super().__init__(model, model_id, profile, batch_size)
        self._want_int8 = int8
        self._int8: LayerSwap | None = None

    def prepare(self) -> bool:
        """Load the model; with int8, build the quantised copy of its layers (or say why not)."""
        super().prepare()
        if self._want_int8:
            self._int8 = LayerSwap.build(self._model.load())
            if self._int8 is None:
                log.warning(INT8_UNAVAILABLE, self._model_id)
        return True

    @property
    def query_runtime(self) -> QueryRuntime:
        return QueryRuntime.TORCH

    @property
    def query_int8(self) -> bool:
        return self._int8 is not None

    @property
    def query_policy(self) -> QueryPolicy:
        # torch uses every core in one call, so calls run one at a time, and it gains several-fold
        # from batching; its int8 layers share one activation scale per batch.
        return QueryPolicy(
            path=self._path(), batch_invariant=not self.query_int8, parallelism=1, max_batch=self._batch_size
        )

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        st = self._model.load()
        with self._model.lock, self._int8.active() if self._int8 is not None else nullcontext():
            return direct_forward(st, texts, self._profile.query_prompt, self._batch_size, self.dim)


class LayerSwap:
    """A dynamic-int8 copy of a transformer's layer stack, swapped in while queries encode.

    Documents are encoded with the float32 layers, so an index is the same whatever the query
    setting; queries go through int8 Linear layers (weights per output channel), which is about
    twice as fast on this CPU. Embeddings are shared, so the copy costs tens of MB, not hundreds.
    Swap only under the model's lock: the stack is shared with document encoding.
    """

    def __init__(self, owner: Any, fp32: Any, int8: Any) -> None:
        self._owner, self._fp32, self._int8 = owner, fp32, int8

    @classmethod
    def build(cls, st: Any) -> LayerSwap | None:
        import torch
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        first = st[0] if len(st) else None
        model = getattr(first, "model", None) or getattr(first, "auto_model", None)
        owner = getattr(model, "encoder", None)
        stack = getattr(owner, "layer", None)
        if not isinstance(stack, torch.nn.ModuleList) or len(stack) <= INT8_KEEP_LAST:
            return None
        layers = list(stack)
        cut = len(layers) - INT8_KEEP_LAST
        with warnings.catch_warnings():  # torch.ao's eager quantisation says it is moving to torchao
            warnings.simplefilter("ignore")
            quantised = [
                quantize_dynamic(copy.deepcopy(layer), {torch.nn.Linear: per_channel_dynamic_qconfig})
                for layer in layers[:cut]
            ]
        return cls(owner, stack, torch.nn.ModuleList(quantised + layers[cut:]))

    @contextmanager
    def active(self) -> Iterator[None]:
        self._owner.layer = self._int8
        try:
            yield
        finally:
            self._owner.layer = self._fp32
