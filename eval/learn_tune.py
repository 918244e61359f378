"""``kefu learn tune``: the encoder tuned on a KB's learned examples, measured through the whole
pipeline before anyone serves it.

Learned messages added as alternative questions teach little beyond themselves; tuning the encoder
on them (indexer/tune.py) moves the space, and the rest of the KB's traffic with it. One run, under
the KB's lock, measuring the model change alone: the examples are the learned ones with the pending
decisions' staged, the KB it builds is the KB as it is (the pending decisions' alternatives are
``kefu learn``'s to apply or refuse, by its own checks):

1. the learned ``answer`` examples of the dev split (``kefu learn attach`` and ``confirm``), with
   any labelled dev set, each paired with its entry's question and its hardest wrong entry under
   the current model;
2. the model tuned on them, saved as a new sentence-transformers folder (named by its weights);
3. the KB built with the tuned model and calibrated as ``kefu learn`` calibrates a build
   (``eval.learn.candidate``), and asked the learned test examples and the labelled test set next
   to the build served now (or, with none of this model served, the KB built the same way with
   the current model): the tuned model is kept only if it loses no more than the tolerance on
   either (``--force`` keeps it anyway), else its folder is removed again.

Nothing is served from it until the operator says so: the model is one for the whole server (every
shop behind it shares it), so switching is configuration, ``KEFU_MODEL=<folder>``, then ``kefu
learn`` (which rebuilds and recalibrates with it, as measured here) and a restart.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.dataset import EvalItem
from eval.learn import candidate, served_build
from eval.learn_guard import Checks, Comparison, Figures
from eval.learn_stage import StagedExamples, as_it_is, staging
from eval.progress import Say, Ticker
from eval.runner import run
from indexer.build import describe_calibration
from indexer.encoder import load_encoder
from indexer.encoders.library import SentenceTransformerEncoder
from indexer.model.onnx_query import remove_graphs
from indexer.store import IndexStore
from indexer.tune import Tuned, TuneOptions, tune, with_hard_negatives
from kb.errors import ConfigError
from kb.learn_journal import append_journal, now_iso, whoami
from kb.schema import KnowledgeBase
from kb.settings import Settings
from service.runtime import Runtime

# Fewer examples than this teach the model a handful of entries, not the KB's wording (measured
# with ~180 on the bundled KB and ~300 on a bank FAQ: docs/experiments.md).
MIN_EXAMPLES = 50


@dataclass(frozen=True)
class TuneResult:
    tuned: Tuned
    kept: bool  # False: it lost more than the tolerance, and its folder was removed
    profile: str  # the prompt profile to serve it with (KEFU_MODEL_PROFILE)
    refused: tuple[str, ...]  # the losses beyond the tolerance (the model kept anyway when ``forced``)
    comparisons: tuple[Comparison, ...]
    calibration: tuple[str, str]  # current model, tuned model: one line each
    seconds: float

    @property
    def forced(self) -> bool:
        """Kept past losses (``--force``)."""
        return self.kept and bool(self.refused)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.tuned.folder),
            "kept": self.kept,
            "profile": self.profile,
            "examples": self.tuned.examples,
            "epochs": self.tuned.epochs,
            "epoch_loss": [round(x, 4) for x in self.tuned.epoch_loss],
            "tuning_seconds": round(self.tuned.seconds, 1),
            "refused": list(self.refused),
            "forced": self.forced,
            "comparisons": [c.to_json() for c in self.comparisons],
            "calibration": {"current": self.calibration[0], "tuned": self.calibration[1]},
            "seconds": round(self.seconds, 1),
        }


def tune_kb(
    settings: Settings,
    encoder: SentenceTransformerEncoder,
    checks: Checks = Checks(),
    *,
    options: TuneOptions | None = None,
    out_root: Path | None = None,
    who: str | None = None,
    say: Say | None = None,
    cache: Path | None = None,
) -> TuneResult:
    """Tune ``encoder``'s model on the learned examples of the KB at ``settings.kb_dir`` and keep it
    if ``checks`` pass (see the module); the folder goes under ``out_root`` (default: ``<model
    cache>/tuned``). ``cache``: another embedding cache than the index home's (experiments share the user's)."""
    if not hasattr(encoder, "model_path"):
        raise ConfigError(f"model {encoder.model_id} cannot be tuned: tuning needs a sentence-transformers model")
    t0 = time.perf_counter()
    log = say or (lambda _m: None)
    with staging(settings.kb_dir) as st:
        root, staged, learned = st.root, st.kb, st.examples
        current = as_it_is(settings.kb_dir)
        dev = [*learned.items("dev"), *checks.labelled_dev]
        questions = {e.id: e.question for e in staged.entries if e.question}
        examples = with_hard_negatives(encoder, [(it.query, it.relevant) for it in dev if it.in_scope], questions)
        if len(examples) < MIN_EXAMPLES:
            raise ConfigError(
                f"{len(examples)} answered dev examples with an FAQ entry; tuning needs {MIN_EXAMPLES}. Attach or "
                "confirm more messages (`kefu learn attach`, `kefu learn confirm`) and tune again"
            )
        log(f"tuning {encoder.model_id} on {len(examples)} examples")
        tuned = tune(
            encoder.model_path,
            encoder.profile.query_prompt,
            examples,
            out_root or Path(settings.model_cache) / "tuned",
            options,
            Ticker(log, "tuning"),
        )
        try:
            comparisons, hows = _compare(settings, encoder, tuned, current, learned, dev, checks, cache, log)
        except BaseException:
            _discard(tuned, settings)
            raise
        losses = tuple(loss for c in comparisons for loss in c.losses(checks.tolerance))
        if not comparisons:
            losses = ("nothing to compare on: no learned test examples yet and no labelled test set",)
        kept = checks.force or not losses
        if not kept:
            _discard(tuned, settings)
        append_journal(
            root,
            {
                "event": "tuned" if kept else "tuning refused",
                "who": who or whoami(),
                "at": now_iso(),
                "model": str(tuned.folder),
                "base": encoder.model_id,
                "examples": tuned.examples,
                "forced": bool(losses) and checks.force,
                "losses": list(losses),
                "comparisons": [c.to_json() for c in comparisons],
            },
        )
    return TuneResult(
        tuned,
        kept,
        encoder.profile.name,
        losses,
        tuple(comparisons),
        hows,
        time.perf_counter() - t0,
    )


def _discard(tuned: Tuned, settings: Settings) -> None:
    """Remove a tuned model made by this run (one of the same weights made earlier stays), and the
    query graphs exported for it."""
    if tuned.new:
        remove_graphs(Path(settings.model_cache), str(tuned.folder.resolve()))
        shutil.rmtree(tuned.folder, ignore_errors=True)


def _compare(
    settings: Settings,
    encoder: SentenceTransformerEncoder,
    tuned: Tuned,
    kb: KnowledgeBase,
    learned: StagedExamples,
    dev: Sequence[EvalItem],
    checks: Checks,
    cache: Path | None,
    log: Say,
) -> tuple[list[Comparison], tuple[str, str]]:
    """The served build (or ``kb`` built with the current model) against ``kb`` built and
    calibrated with the tuned model, on the learned and the labelled test examples."""
    tuned_settings = settings.with_overrides(model=str(tuned.folder), model_profile=encoder.profile.name)
    store = IndexStore(settings.index_home, settings.keep_builds, cache)
    served = served_build(store, settings, encoder, log)
    with store.build_lock():
        if served is not None:
            index, rt = served
            before = rt.answerer(index=index).variant()
            before_how = (
                f"served build {index.manifest.build_id}: {describe_calibration(index.manifest.calibration or {})}"
            )
        else:
            log("no build is served: the KB built with the current model, to compare with")
            fitted = candidate(Runtime.create(settings, encoder=encoder), kb, store, dev, checks, log)
            before, before_how = fitted.answerer, fitted.how
        log("the KB with the tuned model")
        rt = Runtime.create(tuned_settings, encoder=load_encoder(tuned_settings))
        after = candidate(rt, kb, store, dev, checks, log)
    comparisons = []
    for name, items in (("learned test", learned.items("test")), ("labelled test", list(checks.labelled_test))):
        if items:
            log(f"comparing on {len(items)} {name} examples")
            comparisons.append(Comparison(name, Figures.of(run(before, items)), Figures.of(run(after.answerer, items))))
    return comparisons, (before_how, after.how)
