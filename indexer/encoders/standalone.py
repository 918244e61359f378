"""The ONNX query encoder served without torch or the model.

Importing torch and sentence-transformers and loading the model takes about 5.5 s and 600 MB,
and a server needs neither for queries: ``OnnxEncoder.prepare`` left the graph and a sidecar (the
tokenizer, the prompt, the dimension, the library's vectors of the probe texts) in the cache.
Documents, and the float32 reference, still load the model on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from indexer.encoders.onnx_graph import OnnxEncoder
from indexer.model.onnx_standalone import StandaloneTokenizer, load_standalone


class StandaloneOnnxEncoder(OnnxEncoder):
    """``OnnxEncoder`` with its graph and tokenizer from the sidecar: the same vectors, no model."""

    _tokenizer: StandaloneTokenizer | None = None  # set by prepare()

    def prepare(self) -> bool:
        """Load the graph and tokenizer named by a valid sidecar and check them against its probe
        vectors; False when there is none (or it does not check out): then the model is needed."""
        found = load_standalone(self._model.path, self._model_id, self._cache, self._int8, self._profile.query_prompt)
        if found is None:
            return False
        self._graph, self._tokenizer, self._dim = found.graph, found.tokenize, found.dim
        return True

    def _tokenize(self, texts: list[str]) -> Mapping[str, Any]:
        if self._tokenizer is None:
            raise RuntimeError("StandaloneOnnxEncoder is not prepared: call prepare() first")
        prompt = self._profile.query_prompt
        return self._tokenizer([prompt + t for t in texts])
