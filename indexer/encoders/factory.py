"""Which encoder serves a model: the runtime asked for when it can, else the next one down.

ONNX, with a valid sidecar: ``StandaloneOnnxEncoder`` (no torch, no model). ONNX otherwise:
the model is loaded and ``OnnxEncoder`` exports and checks the graph. Torch, or ONNX that
failed: ``TorchEncoder`` (int8 by a layer swap when asked). A model whose modules cannot be
run directly: ``LibraryEncoder``. Every encoder is prepared here, never in a constructor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from indexer.encoders.base import Profile, resolve_profile
from indexer.encoders.library import LibraryEncoder, SentenceTransformerEncoder, SentenceTransformerModel
from indexer.encoders.onnx_graph import ONNX_UNAVAILABLE, OnnxEncoder
from indexer.encoders.standalone import StandaloneOnnxEncoder
from indexer.encoders.torch_direct import INT8_UNAVAILABLE, TorchEncoder, direct_path_agrees
from indexer.model.builtin import is_builtin, prepare_builtin
from kb.errors import ConfigError, ModelError
from kb.modes import DocPrecision, QueryRuntime
from kb.settings import Settings

log = logging.getLogger("kefu.encoder")


def build_encoder(
    model_path: str,
    model_id: str,
    profile: Profile,
    *,
    batch_size: int = 32,
    query_int8: bool = False,
    query_runtime: QueryRuntime | str = QueryRuntime.TORCH,
    onnx_cache: Path | None = None,
    threads: int = 1,
    doc_precision: DocPrecision | str = DocPrecision.FP32,
) -> SentenceTransformerEncoder:
    """The prepared encoder for the sentence-transformers model at ``model_path`` (a folder or a
    hub id); ``onnx_cache`` keeps the exported graphs and is needed for the ONNX runtime;
    ``doc_precision`` is what documents are embedded in (``auto`` resolved for this CPU)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be ≥ 1")
    runtime = QueryRuntime.parse(query_runtime)
    if runtime is QueryRuntime.ONNX and onnx_cache is None:
        raise ConfigError("query_runtime='onnx' needs onnx_cache, the folder that keeps the exported graph")
    model = SentenceTransformerModel(model_path, threads, doc_precision)
    if runtime is QueryRuntime.ONNX:
        assert onnx_cache is not None
        standalone = StandaloneOnnxEncoder(model, model_id, profile, batch_size, cache=onnx_cache, int8=query_int8)
        if standalone.prepare():
            return standalone
    library = LibraryEncoder(model, model_id, profile, batch_size)
    library.prepare()  # loads the model: every other runtime needs it from here on
    if not direct_path_agrees(model, profile.query_prompt, batch_size):
        if runtime is QueryRuntime.ONNX:
            log.warning(ONNX_UNAVAILABLE, model_id)
        if query_int8:
            log.warning(INT8_UNAVAILABLE, model_id)
        return library
    if runtime is QueryRuntime.ONNX:
        assert onnx_cache is not None
        onnx = OnnxEncoder(model, model_id, profile, batch_size, cache=onnx_cache, int8=query_int8)
        if onnx.prepare():
            return onnx
        log.warning(ONNX_UNAVAILABLE, model_id)
    direct = TorchEncoder(model, model_id, profile, batch_size, int8=query_int8)
    direct.prepare()
    return direct


def _set_threads(torch_threads: int) -> int:
    from threadpoolctl import threadpool_limits

    threads = torch_threads or (os.cpu_count() or 1)
    # numpy's OpenBLAS keeps its own thread pool spinning after each call; next to torch's pool
    # that oversubscribes the cores (measured: answer 60 ms vs 26 ms on 2 cores). Our numpy work
    # is small matrix·vector products, so one BLAS thread is plenty.
    threadpool_limits(1, user_api="blas")
    return threads


def open_encoder(
    model: str,
    *,
    model_cache: Path,
    profile: Profile,
    batch_size: int,
    query_int8: bool,
    query_runtime: QueryRuntime | str,
    torch_threads: int,
    doc_precision: DocPrecision | str,
) -> SentenceTransformerEncoder:
    """The prepared encoder for ``model`` (``builtin:…``, a hub id or a local path), from plain
    keyword arguments; the built-in model is converted into ``model_cache`` first if needed.
    ``torch_threads`` 0 means one per core. No defaults here: ``Settings`` declares them, and
    ``load_encoder`` is the one place that maps it onto these arguments."""
    threads = _set_threads(torch_threads)
    if is_builtin(model):
        prepared = prepare_builtin(model, model_cache)
        model_path, model_id = str(prepared.path), f"{model}@{prepared.weights_sha256[:16]}"
    else:
        path = Path(model).expanduser()
        if path.exists():
            model_path = model_id = str(path.resolve())
        elif model.startswith((".", "/", "~")):
            raise ModelError(f"KEFU_MODEL={model!r} looks like a path but does not exist")
        else:
            model_path = model_id = model
    return build_encoder(
        model_path,
        model_id,
        profile,
        batch_size=batch_size,
        query_int8=query_int8,
        query_runtime=query_runtime,
        onnx_cache=model_cache,
        threads=threads,
        doc_precision=doc_precision,
    )


def load_encoder(settings: Settings) -> SentenceTransformerEncoder:
    """The configured encoder: ``Settings`` mapped onto ``open_encoder``."""
    return open_encoder(
        settings.model,
        model_cache=settings.model_cache,
        profile=resolve_profile(
            settings.model,
            model_profile=settings.model_profile,
            query_prompt=settings.query_prompt,
            doc_prompt=settings.doc_prompt,
        ),
        batch_size=settings.batch_size,
        query_int8=settings.query_int8,
        query_runtime=settings.query_runtime,
        torch_threads=settings.torch_threads,
        doc_precision=settings.doc_precision,
    )
