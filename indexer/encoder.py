"""Encoders: text → L2-normalised float32 vectors.

``Encoder`` is the one interface the rest of kefu sees. ``SentenceTransformerEncoder`` wraps
any sentence-transformers model (the built-in conversion, a hub id, a local path);
``FakeEncoder`` is deterministic and model-free, for fast unit tests.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from indexer.model.builtin import is_builtin, prepare_builtin
from indexer.model.onnx_query import (
    MIN_COSINE,
    PROBE_TEXTS,
    OnnxQueryEncoder,
    StandaloneTokenizer,
    load_or_export,
    load_standalone,
    worst_probe_cosine,
    write_sidecar,
)
from kb.errors import ConfigError, ModelError
from kb.settings import Settings

log = logging.getLogger("kefu.encoder")


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


def resolve_profile(settings: Settings) -> Profile:
    if settings.model_profile is not None:
        if settings.model_profile not in PROFILES:
            raise ConfigError(
                f"KEFU_MODEL_PROFILE={settings.model_profile!r} is unknown; allowed: {', '.join(PROFILES)}"
            )
        base = PROFILES[settings.model_profile]
    else:
        base = detect_profile(settings.model)
    return Profile(
        base.name,
        settings.query_prompt if settings.query_prompt is not None else base.query_prompt,
        settings.doc_prompt if settings.doc_prompt is not None else base.doc_prompt,
    )


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit-length vectors of ``dim`` floats."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def profile(self) -> Profile: ...

    @property
    def parallelism(self) -> int:
        """How many ``encode_queries`` calls are worth running at once."""
        ...

    @property
    def query_batch(self) -> int:
        """How many queries one call should take when requests are coalesced."""
        ...

    @property
    def query_path(self) -> str:
        """How queries are encoded (runtime and precision, e.g. ``onnx-int8``): vectors from one
        path are not interchangeable with another's, so caches key on it."""
        ...

    @property
    def batch_invariant(self) -> bool:
        """Whether ``encode_queries`` gives every text the vector it gets alone. int8 activations
        are quantised per call, over every token of the batch (padding included), so batching
        moves each vector (cosine 0.977–0.99 against the same text alone)."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)


class SentenceTransformerEncoder:
    """A sentence-transformers model, on CPU, producing normalised float32 vectors."""

    def __init__(
        self,
        model_path: str,
        model_id: str,
        profile: Profile,
        batch_size: int = 32,
        query_int8: bool = False,
        query_runtime: str = "torch",
        onnx_cache: Path | None = None,
        threads: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be ≥ 1")
        if query_runtime not in QUERY_RUNTIMES:
            raise ConfigError(f"query_runtime={query_runtime!r} is unknown; allowed: {', '.join(QUERY_RUNTIMES)}")
        if query_runtime == "onnx" and onnx_cache is None:
            raise ConfigError("query_runtime='onnx' needs onnx_cache, the folder that keeps the exported graph")
        if threads < 1:
            raise ConfigError(f"threads={threads} must be ≥ 1")
        self._model_path = model_path
        self._model_id = model_id
        self._profile = profile
        self._batch_size = batch_size
        self._threads = threads
        # One forward pass at a time: torch already uses every core for a single batch, and
        # interleaving two batches only adds contention. The lock also makes the layer swap
        # of int8 query encoding safe.
        self._lock = threading.Lock()
        self._st_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer's padding state is not thread-safe
        self._st_model: Any = None
        self._onnx: OnnxQueryEncoder | None = None
        self._tokenize: StandaloneTokenizer | None = None
        self._int8: _LayerSwap | None = None
        if query_runtime == "onnx":
            assert onnx_cache is not None
            standalone = load_standalone(model_path, model_id, onnx_cache, query_int8, profile.query_prompt)
            if standalone is not None:  # serving needs neither torch nor the model: see onnx_query
                self._onnx, self._tokenize = standalone.session, standalone.tokenize
                self._dim, self._fast = standalone.dim, True
                return
        st = self._st  # loads the model
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = getter()
        if not dim:
            raise ModelError(f"model {model_path!r} does not report an embedding dimension")
        self._dim = int(dim)
        self._fast = hasattr(st, "preprocess") and self._fast_path_agrees()
        if query_runtime == "onnx" and self._fast:
            assert onnx_cache is not None
            self._onnx = self._load_onnx(onnx_cache, query_int8)
        if query_runtime == "onnx" and self._onnx is None:
            log.warning("ONNX query encoding is not available for %s; queries run in torch", model_id)
        # int8 needs the direct path: ST's encode() would be the slow part again.
        if query_int8 and self._fast and self._onnx is None:
            self._int8 = _LayerSwap.build(st)
        if query_int8 and self._int8 is None and self._onnx is None:
            log.warning(
                "int8 query encoding is not available for %s (no encoder.layer stack, or the direct "
                "path disagrees with sentence-transformers); queries are encoded in float32",
                model_id,
            )

    @property
    def _st(self) -> Any:
        """The sentence-transformers model, loaded on first use: a server whose ONNX graph is
        prepared never needs it (documents are encoded by ``kefu build``)."""
        with self._st_lock:
            if self._st_model is None:
                self._st_model = _load_st(self._model_path, self._threads)
            return self._st_model

    @property
    def model_loaded(self) -> bool:
        """Whether the sentence-transformers model (and torch) has been loaded in this process."""
        return self._st_model is not None

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
    def query_int8(self) -> bool:
        return self._int8 is not None or (self._onnx is not None and self._onnx.variant == "int8")

    @property
    def query_runtime(self) -> str:
        return "onnx" if self._onnx is not None else "torch"

    @property
    def query_path(self) -> str:
        fast = "" if self._fast else "-library"
        return f"{self.query_runtime}-{'int8' if self.query_int8 else 'fp32'}{fast}"

    @property
    def batch_invariant(self) -> bool:
        """ONNX runs one text at a time; torch's int8 layers share one activation scale per batch."""
        return self._onnx is not None or not self.query_int8

    @property
    def parallelism(self) -> int:
        """How many ``encode_queries`` calls are worth running at once: one per thread with
        ONNX (each call is single-threaded and releases the interpreter lock), else one."""
        return self._threads if self._onnx is not None else 1

    @property
    def query_batch(self) -> int:
        """Torch gains several-fold from batching; a one-thread ONNX call hardly does, and a big
        batch holds its callers back. HTTP at 32 clients with ONNX, micro-batches of at most
        1 / 2 / 4 / 8 / 16 texts: 185 / 201 / 210 / 200 / 183 req/s, p99 243 / 208 / 217 / 238 /
        342 ms (2026-11-25)."""
        return ONNX_QUERY_BATCH if self._onnx is not None else self._batch_size

    def _load_onnx(self, cache: Path, int8: bool) -> OnnxQueryEncoder | None:
        """Export (once) and check the ONNX graph against the library's float32 vectors."""
        try:
            onnx = load_or_export(self._st, self._model_path, self._model_id, cache, int8)
            probe = list(PROBE_TEXTS)
            reference = self.encode_queries_reference(probe)
            got = self._onnx_forward(onnx, probe, self._profile.query_prompt)
        except Exception as exc:  # export is model-dependent: any failure means "use torch"
            log.warning("cannot export %s to ONNX (%s: %s)", self._model_id, type(exc).__name__, exc)
            return None
        worst, agrees = worst_probe_cosine(got, reference, onnx.variant)
        if not agrees:
            log.warning("the ONNX graph disagrees with the model (cosine %.4f < %.4f)", worst, MIN_COSINE[onnx.variant])
            return None
        if not Path(self._model_path).is_dir():
            return onnx  # a hub id: serving loads the model anyway (load_standalone needs a folder)
        try:
            write_sidecar(self._st, onnx, self._profile.query_prompt, self._dim, reference)
        except OSError as exc:  # a read-only cache still serves, only with the model loaded
            log.warning("cannot write the ONNX sidecar next to %s: %s", onnx.path, exc)
        return onnx

    def _onnx_forward(self, onnx: OnnxQueryEncoder, texts: list[str], prompt: str) -> np.ndarray:
        """One graph run per text, on its own tokens: an int8 graph quantises activations with one
        scale per run, so a text run beside others (or padded to their length) would get another
        vector. One row per run is also faster here than padded batches (docs/speed.md)."""
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            rows = list(range(start, min(start + self._batch_size, len(texts))))
            with self._tokenizer_lock:  # one tokenizer call per sub-batch; runs are cut to each row's tokens
                if self._tokenize is not None:
                    features: dict[str, Any] = self._tokenize([prompt + texts[i] for i in rows])
                else:
                    features = self._st.preprocess([texts[i] for i in rows], prompt=prompt or None)
            arrays = {name: np.asarray(features[name]) for name in onnx.input_names}
            mask = arrays.get("attention_mask")
            for j, i in enumerate(rows):
                # The row's own tokens wherever the padding is (left or right padded tokenizers).
                keep = slice(None) if mask is None else mask[j].astype(bool)
                out[i] = onnx.run({name: a[j : j + 1][:, keep] for name, a in arrays.items()})[0]
        return out

    def _library_encode(self, texts: Sequence[str], prompt: str, progress: bool) -> np.ndarray:
        if len(texts) == 0:
            return _empty(self._dim)
        with self._lock:
            out = self._st.encode(
                list(texts),
                prompt=prompt or None,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(out, dtype=np.float32)

    def _forward(self, texts: list[str], prompt: str) -> np.ndarray:
        """Tokenise and run the modules directly, length-sorted in sub-batches.

        ``SentenceTransformer.encode`` spends about 4 ms per call on bookkeeping (switching every
        module to eval mode, finding the device), as long as the forward pass of a short query
        in int8. The model is put in eval mode once, in the constructor.
        """
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per sub-batch
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self._batch_size):
                rows = order[start : start + self._batch_size]
                features = self._st.preprocess([texts[i] for i in rows], prompt=prompt or None)
                emb = self._st(features)["sentence_embedding"]
                out[rows] = torch.nn.functional.normalize(emb.float(), p=2, dim=1).numpy()
        return out

    def encode_queries_reference(self, texts: Sequence[str]) -> np.ndarray:
        """Queries through the library's own ``encode`` in float32: the oracle for the direct int8
        path, and the naive baseline of ``make bench``."""
        return self._library_encode(texts, self._profile.query_prompt, False)

    def _fast_path_agrees(self) -> bool:
        """The direct path must give ST's own vectors (checked once, on a probe text)."""
        probe = ["快递三天没有更新物流信息了怎么办？ Where is my parcel"]
        try:
            reference = self.encode_queries_reference(probe)
            fast = self._forward(probe, self._profile.query_prompt)
        except Exception:  # an unusual model: keep to the library's own path
            return False
        return bool(float(np.dot(reference[0], fast[0])) > 0.9999)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return _empty(self._dim)
        if not self._fast:
            return self.encode_queries_reference(texts)
        if self._onnx is not None:  # no lock: the session runs one call per thread, in parallel
            return self._onnx_forward(self._onnx, list(texts), self._profile.query_prompt)
        with self._lock, self._int8.active() if self._int8 is not None else nullcontext():
            return self._forward(list(texts), self._profile.query_prompt)

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self._library_encode(texts, self._profile.doc_prompt, progress)


QUERY_RUNTIMES = ("onnx", "torch")
ONNX_QUERY_BATCH = 4  # micro-batch size for the ONNX runtime (measured: see query_batch)
# Layers left in float32 at the end of the stack in torch's int8 path: quantising all 12 cost
# 3 of 347 dev top-1 answers (hit@1 0.839 → 0.830); keeping the last two exact cost none.
INT8_KEEP_LAST = 2


class _LayerSwap:
    """A dynamic-int8 copy of a transformer's layer stack, swapped in while queries encode.

    Documents are encoded with the float32 layers, so an index is the same whatever the query
    setting; queries go through int8 Linear layers (weights per output channel), which is about
    twice as fast on this CPU. Embeddings are shared, so the copy costs tens of MB, not hundreds.
    """

    def __init__(self, owner: Any, fp32: Any, int8: Any) -> None:
        self._owner, self._fp32, self._int8 = owner, fp32, int8

    @classmethod
    def build(cls, st: Any) -> _LayerSwap | None:
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


class FakeEncoder:
    """Deterministic, model-free encoder for fast tests.

    Hashes character unigrams and bigrams into ``dim`` buckets (signed), so texts that share
    characters are close and unrelated texts are nearly orthogonal.
    """

    def __init__(
        self, dim: int = 64, model_id: str = "fake:hash-64", query_path: str = "fake", batch_invariant: bool = True
    ) -> None:
        if dim < 8:
            raise ConfigError(f"FakeEncoder dim={dim} must be ≥ 8")
        self._dim = dim
        self._model_id = model_id
        self._query_path = query_path  # tests of other query paths set these two
        self._batch_invariant = batch_invariant
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
    def parallelism(self) -> int:
        return 1

    @property
    def query_batch(self) -> int:
        return 32

    @property
    def query_path(self) -> str:
        return self._query_path

    @property
    def batch_invariant(self) -> bool:
        return self._batch_invariant

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
            return _empty(self._dim)
        return np.stack([self._vec(t) for t in texts])

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.encode_queries(texts)


def _load_st(model_path: str, threads: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # a weight-loading bar per process start is noise
    try:
        st = SentenceTransformer(model_path, device="cpu")
    except Exception as exc:  # the library raises many kinds; all mean "cannot load"
        raise ModelError(
            f"cannot load sentence-transformers model {model_path!r}: {exc}. "
            "Use a local folder, or a hub id already in the local Hugging Face cache "
            "(this machine may have no network)."
        ) from exc
    st.eval()  # once, so the query path need not (see _forward)
    return st


def _set_threads(settings: Settings) -> int:
    from threadpoolctl import threadpool_limits

    threads = settings.torch_threads or (os.cpu_count() or 1)
    # numpy's OpenBLAS keeps its own thread pool spinning after each call; next to torch's pool
    # that oversubscribes the cores (measured: answer 60 ms vs 26 ms on 2 cores). Our numpy work
    # is small matrix·vector products, so one BLAS thread is plenty.
    threadpool_limits(1, user_api="blas")
    return threads


def load_encoder(settings: Settings) -> SentenceTransformerEncoder:
    """Build the configured encoder, preparing the built-in model first if needed."""
    threads = _set_threads(settings)
    profile = resolve_profile(settings)

    def make(model_path: str, model_id: str) -> SentenceTransformerEncoder:
        return SentenceTransformerEncoder(
            model_path,
            model_id,
            profile,
            settings.batch_size,
            query_int8=settings.query_int8,
            query_runtime=settings.query_runtime,
            onnx_cache=settings.model_cache,
            threads=threads,
        )

    if is_builtin(settings.model):
        prepared = prepare_builtin(settings.model, settings.model_cache)
        return make(str(prepared.path), f"{settings.model}@{prepared.weights_sha256[:16]}")
    path = Path(settings.model).expanduser()
    if path.exists():
        resolved = str(path.resolve())
        return make(resolved, resolved)
    if settings.model.startswith((".", "/", "~")):
        raise ModelError(f"KEFU_MODEL={settings.model!r} looks like a path but does not exist")
    return make(settings.model, settings.model)
