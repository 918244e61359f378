"""Queries through the exported ONNX Runtime graph (``indexer.model.onnx_query``); documents
through the library."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from indexer.encoders.base import Profile, QueryPolicy
from indexer.encoders.library import SentenceTransformerEncoder, SentenceTransformerModel
from indexer.model.onnx_query import (
    MIN_COSINE,
    PROBE_TEXTS,
    OnnxQueryGraph,
    load_or_export,
    worst_probe_cosine,
)
from indexer.model.onnx_standalone import write_sidecar
from kb.modes import QueryRuntime

log = logging.getLogger("kefu.encoder")

# Texts per micro-batch: torch gains several-fold from batching; a one-thread ONNX call hardly
# does, and a big batch holds its callers back. HTTP at 32 clients with ONNX, micro-batches of at
# most 1 / 2 / 4 / 8 / 16 texts: 185 / 201 / 210 / 200 / 183 req/s, p99 243 / 208 / 217 / 238 /
# 342 ms (2026-11-25).
ONNX_QUERY_BATCH = 4
ONNX_UNAVAILABLE = "ONNX query encoding is not available for %s; queries run in torch"


class OnnxEncoder(SentenceTransformerEncoder):
    """Queries through the exported graph, one run per text on its own tokens; documents through
    the library. ``prepare()`` exports the graph (once; it is cached), checks it against the
    library and writes the sidecar that lets later starts serve without torch (``standalone``)."""

    def __init__(
        self,
        model: SentenceTransformerModel,
        model_id: str,
        profile: Profile,
        batch_size: int = 32,
        *,
        cache: Path,
        int8: bool,
    ) -> None:
        super().__init__(model, model_id, profile, batch_size)
        self._cache = cache
        self._int8 = int8
        self._graph: OnnxQueryGraph | None = None
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer's padding state is not thread-safe

    def prepare(self) -> bool:
        """Load the model, export (or find) the graph and check it; False when it cannot serve."""
        super().prepare()
        st = self._model.load()
        try:
            graph = load_or_export(st, self._model.path, self._model_id, self._cache, self._int8)
            probe = list(PROBE_TEXTS)
            reference = self.encode_queries_reference(probe)
            got = self._run(graph, probe)
        except Exception as exc:  # export is model-dependent: any failure means "use torch"
            log.warning("cannot export %s to ONNX (%s: %s)", self._model_id, type(exc).__name__, exc)
            return False
        worst, agrees = worst_probe_cosine(got, reference, graph.variant)
        if not agrees:
            floor = MIN_COSINE[graph.variant]
            log.warning("the ONNX graph disagrees with the model (cosine %.4f < %.4f)", worst, floor)
            return False
        self._graph = graph
        if not Path(self._model.path).is_dir():
            return True  # a hub id: serving loads the model anyway (load_standalone needs a folder)
        try:
            write_sidecar(st, graph, self._profile.query_prompt, self.dim, reference)
        except OSError as exc:  # a read-only cache still serves, only with the model loaded
            log.warning("cannot write the ONNX sidecar next to %s: %s", graph.path, exc)
        return True

    @property
    def query_runtime(self) -> QueryRuntime:
        return QueryRuntime.ONNX

    @property
    def query_int8(self) -> bool:
        return self._ready().variant == "int8"

    @property
    def query_policy(self) -> QueryPolicy:
        # One run per text: a text's vector never depends on its batch-mates. Each run is
        # single-threaded and releases the interpreter lock, so one call per thread is worth it.
        return QueryPolicy(
            path=self._path(), batch_invariant=True, parallelism=self._model.threads, max_batch=ONNX_QUERY_BATCH
        )

    def _ready(self) -> OnnxQueryGraph:
        if self._graph is None:
            raise RuntimeError(f"{type(self).__name__} is not prepared: call prepare() first")
        return self._graph

    def _tokenize(self, texts: list[str]) -> Mapping[str, Any]:
        """The graph's inputs for ``texts`` with the query prompt, padded to the longest."""
        return self._model.load().preprocess(texts, prompt=self._profile.query_prompt or None)

    def _run(self, graph: OnnxQueryGraph, texts: list[str]) -> np.ndarray:
        """One graph run per text, on its own tokens: an int8 graph quantises activations with one
        scale per run, so a text run beside others (or padded to their length) would get another
        vector. One row per run is also faster here than padded batches (docs/speed.md)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            rows = list(range(start, min(start + self._batch_size, len(texts))))
            with self._tokenizer_lock:  # one tokenizer call per sub-batch; runs are cut to each row's tokens
                features = self._tokenize([texts[i] for i in rows])
            arrays = {name: np.asarray(features[name]) for name in graph.input_names}
            mask = arrays.get("attention_mask")
            for j, i in enumerate(rows):
                # The row's own tokens wherever the padding is (left or right padded tokenizers).
                keep = slice(None) if mask is None else mask[j].astype(bool)
                out[i] = graph.run({name: a[j : j + 1][:, keep] for name, a in arrays.items()})[0]
        return out

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        # No lock: the session runs one call per thread, in parallel.
        return self._run(self._ready(), texts)
