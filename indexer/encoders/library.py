"""Encoders over a sentence-transformers model.

``SentenceTransformerModel`` holds the model (loaded by ``load()``, not by its constructor) and
the lock that lets one forward pass run at a time. ``SentenceTransformerEncoder`` is what every
runtime over such a model shares: documents, and the float32 reference for queries, go through
the library's own ``encode``; each subclass chooses how queries run. ``LibraryEncoder`` runs
queries through the library too: the runtime of last resort, for a model whose modules cannot
be run directly.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from indexer.encoders.base import Profile, QueryPolicy, empty
from kb.errors import ConfigError, ModelError
from kb.modes import DocPrecision, QueryRuntime

CPUINFO = Path("/proc/cpuinfo")
# CPU flags with which oneDNN multiplies bfloat16 in hardware (Linux names them in /proc/cpuinfo)
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16). Read from the CPU's
    flags rather than from torch, so asking costs no torch import; False where they cannot be read
    (not Linux), which keeps float32: emulated bfloat16 is slower than float32."""
    try:
        text = cpuinfo.read_text("utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not NATIVE_BF16_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def resolve_doc_precision(precision: DocPrecision | str) -> DocPrecision:
    """``auto`` made concrete for this machine (bf16 where native, else fp32); the others as given."""
    mode = DocPrecision.parse(precision)
    if mode is DocPrecision.AUTO:
        return DocPrecision.BF16 if native_bf16() else DocPrecision.FP32
    return mode


class SentenceTransformerModel:
    """A sentence-transformers model on CPU, loaded once by ``load()`` (the first caller loads it)."""

    def __init__(self, path: str, threads: int = 1, doc_precision: DocPrecision | str = DocPrecision.FP32) -> None:
        if threads < 1:
            raise ConfigError(f"threads={threads} must be ≥ 1")
        self.path = path
        self.threads = threads
        # what encode_docs runs in: resolved here from the CPU's flags (cheap), never by torch
        self.doc_precision = resolve_doc_precision(doc_precision)
        self._st: Any = None
        self._load_lock = threading.Lock()
        # One forward pass at a time: torch already uses every core for a single batch, and
        # interleaving two batches only adds contention. The lock also keeps documents off the
        # int8 layers while queries have them swapped in (torch_direct.LayerSwap).
        self.lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model (and torch) has been loaded in this process."""
        return self._st is not None

    def load(self) -> Any:
        """The loaded model; loads it on the first call (seconds, and torch's import)."""
        if self._st is None:
            with self._load_lock:
                if self._st is None:
                    self._st = load_st(self.path, self.threads)
        return self._st

    def dimension(self) -> int:
        st = self.load()
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = getter()
        if not dim:
            raise ModelError(f"model {self.path!r} does not report an embedding dimension")
        return int(dim)

    def encode(
        self, texts: Sequence[str], prompt: str, batch_size: int, progress: bool = False, bf16: bool = False
    ) -> np.ndarray:
        """The library's own ``encode``: normalised float32 rows. With ``bf16`` the matrix products
        run in bfloat16 under torch's autocast: much faster on a CPU with AMX, the vectors close to
        float32's (docs/speed.md)."""
        st = self.load()
        with self.lock, _bf16_autocast() if bf16 else nullcontext():
            out = st.encode(
                list(texts),
                prompt=prompt or None,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


class SentenceTransformerEncoder(ABC):
    """An encoder over a ``SentenceTransformerModel``, producing normalised float32 vectors.

    The constructor only stores its arguments; ``prepare()`` does the heavy work and says whether
    this runtime can serve the model (``load_encoder`` falls back to the next one when not).
    """

    def __init__(self, model: SentenceTransformerModel, model_id: str, profile: Profile, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be ≥ 1")
        self._model = model
        self._model_id = model_id
        self._profile = profile
        self._batch_size = batch_size
        self._dim: int | None = None

    def prepare(self) -> bool:
        """Load the model and read its dimension."""
        self._dim = self._model.dimension()
        return True

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise RuntimeError(f"{type(self).__name__} is not prepared: call prepare() first")
        return self._dim

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def model_path(self) -> str:
        """The sentence-transformers model this encoder serves (a folder, or a hub id in the local cache)."""
        return self._model.path

    @property
    def model_loaded(self) -> bool:
        """Whether the sentence-transformers model (and torch) has been loaded in this process."""
        return self._model.loaded

    @property
    @abstractmethod
    def query_runtime(self) -> QueryRuntime: ...

    @property
    @abstractmethod
    def query_int8(self) -> bool: ...

    @property
    @abstractmethod
    def query_policy(self) -> QueryPolicy: ...

    def _path(self, suffix: str = "") -> str:
        return f"{self.query_runtime}-{'int8' if self.query_int8 else 'fp32'}{suffix}"

    @abstractmethod
    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        """``encode_queries`` for at least one text."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return empty(self.dim)
        return self._encode_queries(list(texts))

    @property
    def doc_precision(self) -> DocPrecision:
        """What ``encode_docs`` runs in (``KEFU_DOC_PRECISION`` made concrete for this CPU)."""
        return self._model.doc_precision

    def encode_docs(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        bf16 = self._model.doc_precision is DocPrecision.BF16
        return self._library(texts, self._profile.doc_prompt, progress, bf16)

    def encode_queries_reference(self, texts: Sequence[str]) -> np.ndarray:
        """Queries through the library's own ``encode`` in float32: the oracle for the faster
        paths, and the naive baseline of ``make bench``."""
        return self._library(texts, self._profile.query_prompt, False)

    def _library(self, texts: Sequence[str], prompt: str, progress: bool, bf16: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return empty(self.dim)
        return self._model.encode(texts, prompt, self._batch_size, progress, bf16=bf16)


class LibraryEncoder(SentenceTransformerEncoder):
    """Queries, like documents, through the library's own ``encode`` in float32."""

    @property
    def query_runtime(self) -> QueryRuntime:
        return QueryRuntime.TORCH

    @property
    def query_int8(self) -> bool:
        return False

    @property
    def query_policy(self) -> QueryPolicy:
        return QueryPolicy(path=self._path("-library"), batch_invariant=True, parallelism=1, max_batch=self._batch_size)

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode_queries_reference(texts)


def load_st(model_path: str, threads: int) -> Any:
    """A fresh sentence-transformers model from ``model_path`` on the CPU, from local files only."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # a weight-loading bar per process start is noise
    try:
        # Cache only, never the network: weights are not downloaded at run time, and a hub id not
        # in the cache fails at once instead of after a minute of retries on a machine offline.
        with hub_offline():
            st = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    except Exception as exc:  # the library raises many kinds; all mean "cannot load"
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # one line
        raise ModelError(
            f"cannot load sentence-transformers model {model_path!r}: {why} "
            "Use a local folder, or a hub id already in the local Hugging Face cache "
            "(kefu only looks there: it never downloads a model while it runs)."
        ) from exc
    st.eval()  # once, so the direct query paths need not (see torch_direct.direct_forward)
    return st


@contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face's offline mode (``HF_HUB_OFFLINE``) for the duration: no request at all.
    ``local_files_only`` alone still lets huggingface_hub fetch a registry for its request headers,
    and the variable is read once, at import, so the module's flag is what a running process sets."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _bf16_autocast() -> Any:
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)
