"""Fine-tune a sentence-transformers encoder on a knowledge base's own traffic.

Each answered message is pulled toward the question of the entry that answers it, and away from
the other questions in its batch and from its hardest wrong entry under the model before tuning
(in-batch contrastive loss, as sentence-transformers' MultipleNegativesRankingLoss; columns of the
message's own entry are masked, so two messages of one entry are not each other's negatives). The
word embeddings stay frozen: training them too moved nothing on the KBs measured and took a third
longer (docs/experiments.md, session 23).

The result is a new model folder named by a hash of its weights, never an overwrite: builds, the
embedding cache and the exported query graphs key on the folder, so a changed model under an old
name would serve stale vectors.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.encoders.base import Encoder
from kb.errors import ConfigError, ModelError

Progress = Callable[[int, int], None]  # (batches done, batches in all)
_TUNED_SUFFIX = re.compile(r"-tuned-[0-9a-f]{12}$")


@dataclass(frozen=True)
class TuneExample:
    """One message and the question of the entry that answers it (``group``: that entry's id)."""

    query: str
    positive: str
    group: str
    negative: str | None = None  # the nearest wrong entry's question under the model before tuning


@dataclass(frozen=True)
class TuneOptions:
    epochs: int = 3
    learning_rate: float = 2e-5
    batch_size: int = 16
    # cosine → logit: e5's own training temperature (0.01). At 20 (sentence-transformers' default)
    # the tuning flattened the space (mean cosine of two queries 0.85 → 0.23), the int8 query graph
    # no longer agreed with the model and the shipped ranker's features lost their scale.
    scale: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"tuning needs epochs ≥ 1 and batch_size ≥ 2 (got {self.epochs}, {self.batch_size})")
        if not 0.0 < self.learning_rate < 1.0 or self.scale <= 0.0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be in (0, 1) and scale={self.scale} > 0")


@dataclass(frozen=True)
class Tuned:
    folder: Path  # a sentence-transformers model folder: serve it with KEFU_MODEL=<folder>
    examples: int
    epochs: int
    seconds: float
    epoch_loss: tuple[float, ...]  # mean training loss per epoch
    new: bool  # False: a folder of the very same weights was already there (and is left as it was)


def with_hard_negatives(
    encoder: Encoder, pairs: Sequence[tuple[str, Sequence[str]]], questions: Mapping[str, str]
) -> list[TuneExample]:
    """``pairs`` (message, the ids of the entries that answer it) as examples: the first of those
    entries with a question is the positive, the nearest other entry under ``encoder`` the negative."""
    ids = list(questions)
    if len(ids) < 2:
        raise ConfigError(f"tuning needs a KB of at least two FAQ entries with questions (it has {len(ids)})")
    known = [(m, [e for e in rel if e in questions]) for m, rel in pairs]
    known = [(m, rel) for m, rel in known if rel]
    if not known:
        return []
    q = encoder.encode_queries([questions[i] for i in ids])
    m = encoder.encode_queries([msg for msg, _ in known])
    out = []
    for (msg, rel), row in zip(known, m @ q.T, strict=True):
        wrong = next((ids[j] for j in np.argsort(-row, kind="stable") if ids[j] not in rel), None)
        out.append(TuneExample(msg, questions[rel[0]], rel[0], questions[wrong] if wrong is not None else None))
    return out


def tune(
    model_path: str,
    prompt: str,
    examples: Sequence[TuneExample],
    out_root: Path,
    options: TuneOptions | None = None,
    progress: Progress | None = None,
) -> Tuned:
    """The model at ``model_path`` tuned on ``examples`` (every text read with ``prompt``, the
    query prompt: messages and questions are both searched as queries), saved under ``out_root``."""
    import torch

    from indexer.encoders.library import load_st

    opts = options or TuneOptions()
    if len(examples) < 2:
        raise ConfigError(f"tuning needs at least two examples (got {len(examples)})")
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    st = load_st(model_path, os.cpu_count() or 1)
    for p in _word_embeddings(st).parameters():
        p.requires_grad = False
    trained = [p for p in st.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=opts.learning_rate, weight_decay=0.01)
    order = list(examples)
    per_epoch = -(-len(order) // opts.batch_size)
    losses: list[float] = []
    st.train()
    try:
        for epoch in range(opts.epochs):
            rng.shuffle(order)
            total, ran = 0.0, 0
            for b in range(per_epoch):
                batch = order[b * opts.batch_size : (b + 1) * opts.batch_size]
                if len(batch) < 2:  # one example alone has no in-batch negative
                    continue
                loss = _batch_loss(st, batch, prompt, opts.scale)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                ran += 1
                if progress is not None:
                    progress(epoch * per_epoch + b + 1, opts.epochs * per_epoch)
            losses.append(total / max(ran, 1))
    finally:
        st.eval()
    folder, new = _save(st, model_path, out_root)
    return Tuned(folder, len(examples), opts.epochs, time.perf_counter() - t0, tuple(losses), new)


def _word_embeddings(st: Any) -> Any:
    """The token embedding table of the model's transformer (BERT-like models name it so)."""
    auto = getattr(st[0], "auto_model", None)
    table = getattr(getattr(auto, "embeddings", None), "word_embeddings", None)
    if table is None:
        raise ModelError(
            f"cannot tune {type(auto).__name__}: tuning needs a BERT-like transformer (embeddings.word_embeddings)"
        )
    return table


def _batch_loss(st: Any, batch: Sequence[TuneExample], prompt: str, scale: float) -> Any:
    import torch

    n = len(batch)
    negatives = [e for e in batch if e.negative is not None]
    texts = [prompt + e.query for e in batch] + [prompt + e.positive for e in batch]
    texts += [prompt + str(e.negative) for e in negatives]
    features = (getattr(st, "preprocess", None) or st.tokenize)(texts)  # `tokenize` before sentence-transformers 5
    emb = torch.nn.functional.normalize(st(features)["sentence_embedding"], dim=-1)
    # each column's entry: the positives' own, and each negative's (the group of its question)
    group_of = {e.positive: e.group for e in batch}
    columns = [e.group for e in batch] + [group_of.get(str(e.negative), f"neg:{e.negative}") for e in negatives]
    same = torch.tensor([[columns[j] == batch[r].group and j != r for j in range(len(columns))] for r in range(n)])
    logits = (emb[:n] @ emb[n:].T * scale).masked_fill(same, -1e4)
    return torch.nn.functional.cross_entropy(logits, torch.arange(n))


def _save(st: Any, model_path: str, out_root: Path) -> tuple[Path, bool]:
    """Write the model to a fresh folder, then name it by its weights' hash (an existing folder of
    the same weights is kept as it is)."""
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = out_root / f".tuning-{uuid.uuid4().hex[:8]}"
    try:
        st.save(str(tmp))
        weights = sorted(tmp.rglob("*.safetensors")) or sorted(tmp.rglob("*.bin"))
        if not weights:
            raise ModelError(f"the tuned model saved no weights into {tmp}")
        h = hashlib.sha256()
        for w in weights:
            h.update(w.read_bytes())
        base = _TUNED_SUFFIX.sub("", re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_path).name or model_path))
        final = out_root / f"{base}-tuned-{h.hexdigest()[:12]}"
        if final.exists():
            shutil.rmtree(tmp)
            return final, False
        tmp.rename(final)
        return final, True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
