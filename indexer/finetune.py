"""Fine-tune the embedding model on the knowledge base itself, with no labelled queries.

Every FAQ entry already says how shoppers ask its question (``alt_questions``) and what the
answer is, so it supplies its own positive pairs:

* ``alt → question``  — a paraphrase should land on the canonical question;
* ``alt → answer``    — a paraphrase should land on the answer text;
* ``question → answer``.

Training uses sentence-transformers' ``MultipleNegativesRankingLoss`` (in-batch negatives). A
batch holds pairs of one kind only, at most one pair per entry and no repeated text, so no
in-batch "negative" is secretly a positive. Texts are normalised with
:func:`indexer.normalize.normalize` and prefixed with the same prompts the index uses (e5:
``query: `` on the question side, ``passage: `` on answers), so training sees exactly what
retrieval will see.

Only the knowledge base is read: never evaluation data. The run is seeded (python and torch
RNGs, forked so the caller's RNG state is untouched) and the model is written to a temporary
sibling folder first, then renamed into place, so ``out_dir`` is never half-written.

Note for users of the result: kefu picks prompts from the model *name*; a local folder whose
name does not contain ``e5`` gets no prompts unless ``KEFU_MODEL_PROFILE=e5`` is set. The
embedding cache is keyed by the model path, so write each fine-tuned model to a new folder
(or clear the cache) rather than overwriting a folder an index was already built from.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from indexer.normalize import normalize
from kb.errors import ConfigError
from kb.schema import KnowledgeBase

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PairKind = Literal["alt-question", "alt-answer", "question-answer"]
PAIR_KINDS: tuple[PairKind, ...] = ("alt-question", "alt-answer", "question-answer")

# Prompts of the e5 family, the same ones the index uses (indexer.encoder.PROFILES["e5"]):
# questions and alternatives are embedded as queries, answers as passages.
QUERY_PROMPT = "query: "
PASSAGE_PROMPT = "passage: "

# Best of the configurations measured on the dev set (KB-only training, 2-core CPU):
# one epoch at 3e-5 gave the best dev MRR@10 within the ~8-minute training budget.
DEFAULT_EPOCHS = 1
DEFAULT_LR = 3e-5

# Token limit while training only. Answers average ~170 tokens (max ~240); the first 128 carry
# the topic, and cutting there makes an answer batch ~2x cheaper on CPU. The saved model keeps
# the base model's own limit, so the index still embeds whole answers.
TRAIN_MAX_TOKENS = 128
# Share of steps spent warming the learning rate up from 0 (then linear decay to 0): the
# usual sentence-transformers recipe, avoids wrecking the pretrained geometry on step one.
WARMUP_FRACTION = 0.1
# AdamW weight decay and gradient clipping: sentence-transformers' fit() defaults.
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
# MNRL similarity scale (1/temperature): the library default, suits cosine in [-1, 1].
MNRL_SCALE = 20.0
# A trailing batch smaller than this share of batch_size is dropped: with few in-batch
# negatives its loss is near zero and only adds noise.
MIN_BATCH_FRACTION = 0.5
# Parameters frozen during training. The word-embedding table is 96M of the model's 118M
# parameters (250k-token multilingual vocabulary); the KB touches a tiny slice of it, and
# freezing it cuts optimiser memory and step time and guards against overfitting the KB vocabulary.
FROZEN_PREFIXES: tuple[str, ...] = ("embeddings.",)
# Written next to the model weights so a fine-tuned folder says how it was made.
PROVENANCE_FILE = "kefu-finetune.json"


@dataclass(frozen=True)
class TrainingPair:
    """One (anchor, positive) pair taken from one FAQ entry; texts are prompted and normalised."""

    entry_id: str
    kind: PairKind
    anchor: str
    positive: str


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run produced: where the model is, how many pairs, epochs and seconds."""

    out_dir: Path
    pairs: int
    epochs: int
    seconds: float


def build_pairs(kb: KnowledgeBase, kinds: Sequence[PairKind] = PAIR_KINDS) -> list[TrainingPair]:
    """KB-only training pairs of the requested ``kinds``, in KB order, without trivial self-pairs.

    A pair whose two normalised texts are equal teaches nothing and is skipped.
    """
    unknown = set(kinds) - set(PAIR_KINDS)
    if unknown:
        raise ConfigError(f"unknown pair kinds {sorted(unknown)}; allowed: {', '.join(PAIR_KINDS)}")
    pairs: list[TrainingPair] = []
    for e in kb.entries:
        question = normalize(e.question)
        answer = normalize(e.answer)
        alts = [normalize(a) for a in e.alt_questions]
        raw: list[tuple[PairKind, str, str, str]] = []
        if "alt-question" in kinds:
            raw += [("alt-question", a, question, QUERY_PROMPT) for a in alts]
        if "alt-answer" in kinds:
            raw += [("alt-answer", a, answer, PASSAGE_PROMPT) for a in alts]
        if "question-answer" in kinds:
            raw.append(("question-answer", question, answer, PASSAGE_PROMPT))
        for kind, anchor, positive, positive_prompt in raw:
            if anchor and positive and anchor != positive:
                pairs.append(TrainingPair(e.id, kind, QUERY_PROMPT + anchor, positive_prompt + positive))
    return pairs


def make_batches(pairs: Sequence[TrainingPair], batch_size: int, rng: random.Random) -> list[list[TrainingPair]]:
    """One epoch of batches: shuffled, one pair kind per batch, each entry and text at most once.

    Pairs that would collide with the batch being filled wait for a later batch; the batches
    of all kinds are then shuffled together. Trailing batches smaller than
    ``MIN_BATCH_FRACTION * batch_size`` are dropped (a different shuffle next epoch).
    """
    if batch_size < 2:
        raise ConfigError(f"batch_size={batch_size} must be ≥ 2: in-batch negatives need company")
    min_size = max(2, math.ceil(batch_size * MIN_BATCH_FRACTION))
    batches: list[list[TrainingPair]] = []
    for kind in PAIR_KINDS:
        pending = [p for p in pairs if p.kind == kind]
        rng.shuffle(pending)
        while pending:
            batch: list[TrainingPair] = []
            entries: set[str] = set()
            texts: set[str] = set()
            rest: list[TrainingPair] = []
            for p in pending:
                if len(batch) < batch_size and p.entry_id not in entries and not {p.anchor, p.positive} & texts:
                    batch.append(p)
                    entries.add(p.entry_id)
                    texts.update((p.anchor, p.positive))
                else:
                    rest.append(p)
            if len(batch) < min_size:
                break
            batches.append(batch)
            pending = rest
    rng.shuffle(batches)
    return batches


def _linear_warmup_decay(total_steps: int) -> Callable[[int], float]:
    """LambdaLR multiplier for step ``step``: linear 0 → 1 over the warm-up, then linear 1 → 0."""
    warmup = max(1, int(total_steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _freeze(model: SentenceTransformer) -> None:
    """Stop gradients for the parameters listed in ``FROZEN_PREFIXES`` (of the transformer module)."""
    for name, param in model.named_parameters():
        # names look like "0.model.embeddings.word_embeddings.weight"
        if any(f".{prefix}" in f".{name}" for prefix in FROZEN_PREFIXES):
            param.requires_grad_(False)


def _save_atomically(model: SentenceTransformer, out_dir: Path, provenance: dict[str, object]) -> None:
    """Save into a temporary sibling folder, then rename it over ``out_dir``."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(str(tmp))
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, ensure_ascii=False, indent=1), encoding="utf-8")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)  # put the previous model back
        raise
    shutil.rmtree(old, ignore_errors=True)


def train_on_pairs(
    base_model_dir: Path,
    pairs: Sequence[TrainingPair],
    out_dir: Path,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
    lr: float = DEFAULT_LR,
    seed: int = 13,
    progress: bool = True,
) -> FinetuneResult:
    """Train a copy of ``base_model_dir`` on ``pairs`` with MNRL and save it to ``out_dir``.

    The caller's torch thread count is used as is (``torch.set_num_threads``).
    """
    if epochs < 1:
        raise ConfigError(f"epochs={epochs} must be ≥ 1")
    if not lr > 0:
        raise ConfigError(f"lr={lr} must be > 0")
    if not pairs:
        raise ConfigError("no training pairs: the knowledge base has no usable entries")

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    rng = random.Random(seed)
    plan = [make_batches(pairs, batch_size, rng) for _ in range(epochs)]
    total_steps = sum(len(b) for b in plan)
    if total_steps == 0:
        raise ConfigError(f"{len(pairs)} pairs do not fill a single batch of {batch_size}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SentenceTransformer(str(base_model_dir), device="cpu")
        full_max_tokens = model.max_seq_length
        model.max_seq_length = min(TRAIN_MAX_TOKENS, full_max_tokens or TRAIN_MAX_TOKENS)
        _freeze(model)
        loss_fn = MultipleNegativesRankingLoss(model, scale=MNRL_SCALE)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": WEIGHT_DECAY},
                {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
            ],
            lr=lr,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_warmup_decay(total_steps))

        model.train()
        bar = tqdm(total=total_steps, desc="fine-tuning", unit="batch", disable=not progress)
        for epoch_batches in plan:
            for batch in epoch_batches:
                features = [
                    model.preprocess([p.anchor for p in batch]),
                    model.preprocess([p.positive for p in batch]),
                ]
                loss = loss_fn(features, torch.arange(len(batch)))
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for _, p in trainable], MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        model.eval()
        model.max_seq_length = full_max_tokens

    kinds = sorted({p.kind for p in pairs})
    provenance: dict[str, object] = {
        "base_model": str(base_model_dir),
        "pairs": len(pairs),
        "pair_kinds": kinds,
        "epochs": epochs,
        "steps": total_steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_max_tokens": TRAIN_MAX_TOKENS,
        "frozen": list(FROZEN_PREFIXES),
        "query_prompt": QUERY_PROMPT,
        "passage_prompt": PASSAGE_PROMPT,
    }
    _save_atomically(model, out_dir, provenance)
    return FinetuneResult(out_dir=out_dir, pairs=len(pairs), epochs=epochs, seconds=time.perf_counter() - t0)


def finetune(
    base_model_dir: Path,
    kb: KnowledgeBase,
    out_dir: Path,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
    lr: float = DEFAULT_LR,
    seed: int = 13,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune the sentence-transformers model in ``base_model_dir`` on ``kb`` and save it to ``out_dir``.

    Builds every KB-only pair kind (alt → question, alt → answer, question → answer), trains
    with in-batch negatives, and returns where the model went, the pair count, epochs and
    wall-clock seconds. Deterministic for a given seed, KB, base model and thread count.
    """
    return train_on_pairs(
        base_model_dir,
        build_pairs(kb),
        out_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
    )
