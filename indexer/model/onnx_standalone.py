"""Serving the query graph without torch: a sidecar next to the exported graph
(``indexer.model.onnx_query``) keeps the tokenizer, the prompt, the dimension and the library's own
float32 vectors of the probe texts; a server loads those and checks the graph against them."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.model.onnx_query import (
    PROBE_TEXTS,
    OnnxQueryGraph,
    folder_key,
    graph_path,
    input_names,
    worst_probe_cosine,
)

log = logging.getLogger("kefu.onnx")

# Importing torch and sentence-transformers and loading the model takes about 5.5 s and 600 MB
# here, and a server needs neither: queries run on the graph, and the tokenizer is a small Rust
# object. Next to the graph, a sidecar keeps the tokenizer, the prompt, the dimension and the
# library's own float32 vectors of the probe texts; a server loads those and checks the graph
# against the vectors. The model itself is loaded only if documents must be encoded.
SIDECAR_FORMAT = 2  # 2: texts are no longer stripped (sentence-transformers does not strip them)
# Beyond the probe texts, the tokenizer is checked on these: truncation and stray whitespace.
TOKENIZER_CHECKS = ("  带空格的问题  ", "退款" * 400, "ｆｕｌｌ－ｗｉｄｔｈ ABC 123 😊")


_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class StandaloneTokenizer:
    """The model's fast tokenizer, configured as sentence-transformers calls it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(spec["tokenizer"])
        self._tok.enable_truncation(max_length=int(spec["max_length"]))
        self._tok.enable_padding(pad_id=int(spec["pad_id"]), pad_token=str(spec["pad_token"]))
        self._names = list(spec["input_names"])

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        # One text (an answer's query): ``encode`` keeps the GIL; ``encode_batch`` releases it for
        # its thread pool and the answer's lexical thread holds it until the encoder gets it back
        # (answers 0.14 ms faster at the median). The same ids, mask and type ids either way.
        encs = [self._tok.encode(texts[0])] if len(texts) == 1 else self._tok.encode_batch(list(texts))
        return {n: np.array([getattr(e, _ENCODING_FIELDS[n]) for e in encs], dtype=np.int64) for n in self._names}


def _tokenizer_spec(st: Any) -> dict[str, Any] | None:
    tok: Any = getattr(st, "tokenizer", None)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or tok.pad_token_id is None or not getattr(st, "max_seq_length", None):
        return None
    return {
        "tokenizer": backend.to_str(),
        "max_length": int(st.max_seq_length),
        "pad_id": int(tok.pad_token_id),
        "pad_token": str(tok.pad_token),
        "input_names": input_names(st),
    }


def write_sidecar(st: Any, onnx: OnnxQueryGraph, prompt: str, dim: int, reference: np.ndarray) -> bool:
    """Write the sidecar if a standalone tokenizer gives sentence-transformers' own inputs."""
    spec = _tokenizer_spec(st)
    if spec is None:
        return False
    standalone = StandaloneTokenizer(spec)
    for text in (*PROBE_TEXTS, *TOKENIZER_CHECKS):
        want = st.preprocess([text], prompt=prompt or None)
        got = standalone([prompt + text])
        if any(not np.array_equal(np.asarray(want[n]), got[n]) for n in spec["input_names"]):
            log.info("the model's tokenizer does not run alone like sentence-transformers; serving loads the model")
            return False
    sidecar = {
        "format": SIDECAR_FORMAT,
        "graph": onnx.path.name,
        "variant": onnx.variant,
        "dim": dim,
        "prompt": prompt,
        "probe": {"texts": list(PROBE_TEXTS), "vectors": reference.astype(float).round(7).tolist()},
        **spec,
    }
    target = onnx.path.with_suffix(".json")
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sidecar, ensure_ascii=False), "utf-8")
    os.replace(tmp, target)
    return True


@dataclass(frozen=True)
class Standalone:
    graph: OnnxQueryGraph
    tokenize: StandaloneTokenizer
    dim: int


def load_standalone(model_path: str, model_id: str, cache_root: Path, int8: bool, prompt: str) -> Standalone | None:
    """The graph and tokenizer of a prepared local model, checked, without loading the model;
    None when there is no valid sidecar (then the caller loads the model as usual)."""
    variant = "int8" if int8 else "fp32"
    try:
        key = folder_key(model_path, variant)
    except ImportError as exc:  # onnxruntime missing from this environment: the caller falls back
        log.warning("ONNX Runtime is not installed (%s); install kefu's dependencies again", exc)
        return None
    if key is None:
        return None
    graph = graph_path(cache_root, model_id, variant, key)
    sidecar = graph.with_suffix(".json")
    if not (graph.is_file() and sidecar.is_file()):
        return None
    try:
        spec = json.loads(sidecar.read_text("utf-8"))
        if spec.get("format") != SIDECAR_FORMAT or spec.get("prompt") != prompt or spec.get("graph") != graph.name:
            return None
        session = OnnxQueryGraph(graph, spec["input_names"], variant)
        tokenize = StandaloneTokenizer(spec)
        texts = [prompt + t for t in spec["probe"]["texts"]]
        got = session.run(tokenize(texts))
        worst, agrees = worst_probe_cosine(got, np.asarray(spec["probe"]["vectors"], dtype=np.float32), variant)
    except Exception as exc:  # unreadable or inconsistent: load the model and export again
        log.warning("ignoring the ONNX sidecar %s (%s: %s)", sidecar, type(exc).__name__, exc)
        return None
    if not agrees:
        log.warning("the ONNX graph %s disagrees with its sidecar (cosine %.4f); loading the model", graph, worst)
        return None
    return Standalone(session, tokenize, int(spec["dim"]))
