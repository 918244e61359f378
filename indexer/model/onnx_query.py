"""The query encoder as an ONNX Runtime graph: exported once from the loaded model, cached, checked.

Why: in the server, torch's forward pass holds the interpreter lock between its hundreds of small
ops, so request threads and the encoder slow each other down (a batch took 145–180 ms in the
server against 96 ms alone). ``InferenceSession.run`` releases the lock for the whole pass, and a
session with one thread can be run from several threads at once, one per core, with no thread
pool to synchronise. Measured on this 2-core machine, eval queries, the fused int8 graph: one
call at a time 169 texts/s, two threads calling at once 329 texts/s.

The graph is the whole sentence-transformers module chain (transformer, pooling, normalize, …),
traced with the model's own tokenizer outputs as inputs, so any exportable model works. For a
BERT-family model, ONNX Runtime's optimiser then fuses attention, GELU and layer norms. Every
matrix product with a weight operand is quantised to int8 per output channel: unlike torch's
int8 layers (see ``indexer.encoders.torch_direct.INT8_KEEP_LAST``), all 12 layers in int8 stay as close to
float32 (dev queries: cosine min 0.989, mean 0.997) as torch's 10 do. Documents never go
through it: indexes stay float32 and unchanged whatever the query settings.

The cache file is named by the model and a fingerprint of its parameters, the variant and the
exporter's versions; it is written atomically, and replaces the model's older graphs.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import ModelError

log = logging.getLogger("kefu.onnx")

EXPORT_FORMAT = 2  # bump when the exported graph changes, so caches are rebuilt
OPSET = 17
# Families whose layers ONNX Runtime's transformer optimiser fuses (attention, GELU, layer norm);
# on this CPU the fused int8 graph encodes a query in 5.7 ms against 7.2 ms unfused (one thread).
FUSABLE = {"bert": "bert"}
# The exported graph must agree with the library's float32 vectors on the probe texts: int8
# stays above 0.985 on real queries (dev min 0.988, mean 0.998); float32 is exact up to rounding.
MIN_COSINE = {"int8": 0.98, "fp32": 0.9999}


def worst_probe_cosine(got: np.ndarray, reference: np.ndarray, variant: str) -> tuple[float, bool]:
    """The lowest cosine between a graph's probe vectors and the library's, and whether it
    clears ``MIN_COSINE`` for ``variant`` (the one check behind every graph this module serves)."""
    worst = float(np.min(np.sum(np.asarray(got) * np.asarray(reference), axis=1)))
    return worst, worst >= MIN_COSINE[variant]


PROBE_TEXTS = (
    "快递三天没有更新物流信息了怎么办？ Where is my parcel",
    "退貨運費誰出",
    "88vip怎么取消自动续费",
    "我要转人工",
)


def _versions(variant: str) -> hashlib._Hash:
    from importlib.metadata import version

    return hashlib.sha256(f"{EXPORT_FORMAT}|{variant}|{version('onnxruntime')}|{version('torch')}".encode())


def folder_key(model_path: str, variant: str) -> str | None:
    """Identify a model folder without loading it: every file's name, size and mtime.

    This is what lets a server find the graph, and run on it, without importing torch.
    """
    root = Path(model_path)
    if not root.is_dir():
        return None
    h = _versions(variant)
    for f in sorted(root.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def fingerprint(st: Any, variant: str) -> str:
    """Identify a loaded model (a hub id has no folder of ours): names, shapes and a sample of
    every tensor. Hashing all 470 MB would add about a second to every start."""
    import torch

    h = _versions(variant)
    for name, tensor in st.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        h.update(flat[::step].to(torch.float32).numpy().tobytes())
    h.update(type(st).__name__.encode())
    return h.hexdigest()[:16]


def input_names(st: Any) -> list[str]:
    features = st.preprocess(["probe"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]


def _hf_model(st: Any) -> Any:
    first = st[0] if len(st) else None
    return getattr(first, "auto_model", None) or getattr(first, "model", None)


@contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Trace plain attention (not SDPA), whose pattern the optimiser can fuse; restore after."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if before is None or before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _fuse(source: Path, target: Path, model: Any) -> bool:
    """Fuse a known family's layers into ONNX Runtime's contrib ops; False when not applicable."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(model, "config", None)
    family = FUSABLE.get(getattr(config, "model_type", ""))
    if family is None or config is None:
        return False
    fused = optimize_model(
        str(source),
        model_type=family,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,  # graph fusions only; the session applies the rest when it loads
    )
    if not fused.get_fused_operator_statistics().get("Attention"):
        return False  # the pattern was not recognised: keep the plain graph
    fused.save_model_to_file(str(target))
    return True


def export(st: Any, target: Path, int8: bool) -> None:
    """Trace the module chain to ONNX (fuse and quantise it) into ``target``, atomically."""
    import torch

    names = input_names(st)
    model = _hf_model(st)

    class Chain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            out = self.st(dict(zip(names, inputs, strict=True)))["sentence_embedding"]
            return torch.nn.functional.normalize(out.float(), p=2, dim=1)

    sample = st.preprocess(list(PROBE_TEXTS[:2]))
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings(), torch.inference_mode(), _eager_attention(model):
            warnings.simplefilter("ignore")  # tracer warnings about constant shapes: axes are dynamic
            torch.onnx.export(
                Chain().eval(),
                args,
                str(raw),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter needs no onnxscript and traces ST modules as they run
            )
        fused = Path(tmp) / "fused.onnx"
        result = fused if _fuse(raw, fused, model) else raw
        if int8:
            _quantise(result, Path(tmp) / "int8.onnx")
            result = Path(tmp) / "int8.onnx"
        os.replace(result, target)  # same folder: atomic; a half-written file never has the final name


def _quantise(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    # Only products with a weight operand (and fused attention, whose QKV projection is one):
    # attention's activation × activation products stay float.
    chosen = [
        n.name
        for n in graph.node
        if n.op_type == "Attention" or (n.op_type == "MatMul" and any(i in weights for i in n.input))
    ]
    if not chosen:
        raise ModelError("the exported graph has no weight matrix products to quantise")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic advises "pre-processing" on the root logger; not needed here
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_quantize=chosen,
            extra_options={"DefaultTensorType": 1},  # FLOAT, for nodes shape inference cannot type
        )
    finally:
        root.setLevel(level)


class OnnxQueryGraph:
    """Runs the exported graph. Thread-safe: ``run`` may be called from several threads at once."""

    def __init__(self, path: Path, input_names: Sequence[str], variant: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread per call; concurrency comes from calling it from one thread per core
        # (service.batcher), which avoids a thread pool's spin and sync per op.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: the optimiser's notes are not for users
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt cache file: the caller exports again
            raise ModelError(f"cannot load the ONNX query graph {path}: {exc}") from exc
        self._names = list(input_names)
        self.input_names = tuple(self._names)
        self.path = path
        self.variant = variant

    def run(self, features: dict[str, Any]) -> np.ndarray:
        """``features``: the tokenizer's outputs by input name, torch tensors or numpy arrays."""
        feeds = {n: np.ascontiguousarray(np.asarray(features[n]), dtype=np.int64) for n in self._names}
        (out,) = self._session.run(["embedding"], feeds)
        return np.asarray(out, dtype=np.float32)


_export_lock = threading.Lock()


def _stem(model_id: str, variant: str) -> str:
    return f"query-{variant}-{re.sub(r'[^A-Za-z0-9._-]+', '_', model_id)[-80:]}"


def remove_graphs(cache_root: Path, model_id: str) -> int:
    """Delete the cached graphs and sidecars of ``model_id`` (a model folder being removed); how many went."""
    files = [f for v in ("int8", "fp32") for f in (cache_root / "onnx").glob(f"{glob.escape(_stem(model_id, v))}-*")]
    for f in files:
        f.unlink(missing_ok=True)
    return len(files)


def graph_path(cache_root: Path, model_id: str, variant: str, key: str) -> Path:
    """Where a model's graph lives: one name for exporting it and for serving it without torch."""
    return cache_root / "onnx" / f"{_stem(model_id, variant)}-{key}.onnx"


def load_or_export(st: Any, model_path: str, model_id: str, cache_root: Path, int8: bool) -> OnnxQueryGraph:
    """The cached graph for this model, exporting it first if there is none (or it is unreadable)."""
    variant = "int8" if int8 else "fp32"
    stem = _stem(model_id, variant)
    path = graph_path(cache_root, model_id, variant, folder_key(model_path, variant) or fingerprint(st, variant))
    names = input_names(st)
    with _export_lock:
        if path.is_file():
            try:
                return OnnxQueryGraph(path, names, variant)
            except ModelError as exc:
                log.warning("%s; exporting it again", exc)
                path.unlink(missing_ok=True)
        log.info("exporting the query encoder to ONNX (%s), once per model: %s", variant, path)
        export(st, path, int8)
        for old in path.parent.glob(f"{stem}-*"):  # this model's graphs from older versions
            if old.stem != path.stem:
                old.unlink(missing_ok=True)
        return OnnxQueryGraph(path, names, variant)
