"""``kefu learn``: apply the operators' pending decisions, rebuild, recalibrate, and ship only if
nothing got worse.

One run, under the KB's lock (kb/learned.py) and the index home's build lock:

1. plan the pending decisions against the KB and load the KB as it will be, from a staged copy
   (the KB folder itself is not written yet);
2. build the candidate index (incremental: the embedding cache encodes only the new texts);
3. recalibrate on the learned dev examples and any labelled dev set (``recalibrate``), or, with
   too few of them, self-calibrate as ``kefu build`` does;
4. compare the served build and the candidate on the learned test examples and on the labelled
   test set, and the candidate with and without the run's new alternative rows on the learned and
   labelled dev examples, each asked without its own row (eval/learn_rows.py, which also names the
   decisions whose rows took other entries' messages): a loss above the tolerance on any check
   refuses the run (``--force`` ships anyway) and leaves the KB files and the served index as they were;
5. ship: announce the changes in the journal, write the KB files (each atomically; re-running
   completes an interrupted write), then save, verify and swap in the build (the last good one
   stays until the swap, an atomic rename).

A learned answer example is also an alternative question in the index, so each calibration item
is asked with its own alternative row left out (5 folds): the confidence model then sees the
evidence a new shopper's message gets, not an exact match.

This module runs it; the staged KB is in eval/learn_stage.py, the labelled recalibration in
eval/learn_calibration.py and the before/after figures in eval/learn_guard.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.dataset import EvalItem
from eval.learn_calibration import Recalibration, recalibrate
from eval.learn_guard import Checks, Comparison, Figures
from eval.learn_rows import added_rows, new_alternative_rows, pulled_by, rows_check
from eval.learn_stage import staging
from eval.progress import Say, Ticker
from eval.runner import run
from indexer.build import build_index, copy_resources, verify
from indexer.embcache import EmbeddingCache
from indexer.encoder import Encoder
from indexer.index import Index
from indexer.store import IndexStore
from kb.errors import IndexStateError, KefuError
from kb.learn_journal import append_journal, now_iso, whoami
from kb.learned import Plan, write_plan
from kb.schema import KnowledgeBase
from kb.settings import Settings
from service.answerer import Answerer
from service.policy import Calibration
from service.runtime import Runtime


@dataclass(frozen=True)
class LearnResult:
    plan: Plan
    build_id: str | None
    shipped: bool
    refused: tuple[str, ...]  # the losses that refused it (empty when shipped or nothing to do)
    comparisons: tuple[Comparison, ...]
    calibration: str
    seconds: float
    # decisions whose new rows took more learned dev messages of other entries first than they won
    # for their own, with how many they took: where to look when the rows check loses
    pulling: tuple[tuple[str, int], ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return self.build_id is None and not self.refused

    def to_json(self) -> dict[str, Any]:
        return {
            "decisions": len(self.plan.changes),
            "alternatives_added": self.plan.alternatives,
            "examples_added": self.plan.examples,
            "drafts": self.plan.drafts,
            "build_id": self.build_id,
            "shipped": self.shipped,
            "refused": list(self.refused),
            "comparisons": [c.to_json() for c in self.comparisons],
            "calibration": self.calibration,
            "pulling": [{"decision": d, "took": n} for d, n in self.pulling],
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Candidate:
    """A KB built in memory and calibrated as ``kefu learn`` ships it."""

    index: Index  # its manifest carries the calibration
    answerer: Answerer  # calibrated; a variant, so it opens no tickets
    how: str  # the calibration, in one line
    report: dict[str, Any]  # the labelled calibration's report ({} when self-calibrated)


def candidate(
    rt: Runtime,
    kb: KnowledgeBase,
    store: IndexStore,
    dev: Sequence[EvalItem],
    checks: Checks,
    log: Say,
) -> Candidate:
    """``kb`` built with ``rt``'s encoder (the embedding cache of ``store`` encodes only new texts)
    and recalibrated on ``dev`` (``recalibrate``), or with too few labelled examples self-calibrated
    as ``kefu build`` does. The caller holds ``store``'s build lock."""
    from service.selfcal import build_calibrator

    settings, encoder = rt.settings, rt.encoder
    embcache = EmbeddingCache(store.cache_path)
    try:
        index = build_index(kb, encoder, settings.chunk_chars, settings.index_kind, embcache, Ticker(log, "embedding"))
    finally:
        embcache.close()
    base = rt.answerer(index=index, calibration=Calibration()).variant()  # variant: no tickets
    got = recalibrate(base, dev, checks.precision, checks.oos_recall, log)
    if isinstance(got, Recalibration):
        cal, how, report = got.calibration, got.how, got.report
    else:
        log(f"no labelled calibration ({got}); self-calibrating from the KB as `kefu build` does")
        fitted, how = build_calibrator(settings, encoder, Ticker(log, "self-calibration"))(index)
        cal, report = Calibration.from_json(fitted), {}
    index.manifest.calibration = cal.to_json()
    return Candidate(index, base.variant(calibration=cal), how, report)


def served_build(store: IndexStore, settings: Settings, encoder: Encoder, log: Say) -> tuple[Index, Runtime] | None:
    """The build served now and a runtime that answers with it: ``encoder``'s when the build is of
    its model, else one of the build's own model, opened from its manifest (the model was switched
    by configuration, e.g. to one `kefu learn tune` kept), so a switch is compared too. None when
    nothing is served, or the build's model cannot be opened here (then there is nothing to compare with)."""
    from indexer.encoder import load_encoder
    from indexer.model.builtin import is_builtin

    try:
        index = store.load_current(None)
    except IndexStateError:
        return None
    m = index.manifest
    if m.model_id == encoder.model_id:
        return index, Runtime.create(settings, encoder=encoder)
    model = m.model_id.split("@", 1)[0] if is_builtin(m.model_id) else m.model_id
    theirs = settings.with_overrides(model=model, query_prompt=m.query_prompt, doc_prompt=m.doc_prompt)
    try:
        other = load_encoder(theirs)
    except KefuError as exc:
        log(f"the served build {m.build_id} is of model {m.model_id}, which cannot be opened here ({exc})")
        return None
    if other.model_id != m.model_id:
        log(f"the served build {m.build_id} is of model {m.model_id}; {model} is now {other.model_id}")
        return None
    log(f"the served build {m.build_id} is of another model ({m.model_id}): compared as that model answers it")
    return index, Runtime.create(theirs, encoder=other)


def learn(
    settings: Settings,
    encoder: Encoder,
    checks: Checks = Checks(),
    *,
    who: str | None = None,
    say: Say | None = None,
    cache: Path | None = None,
    alternatives: bool = True,
) -> LearnResult:
    """Apply the pending decisions of the KB at ``settings.kb_dir`` and ship the result if it does
    not lose more than ``checks.tolerance`` on the learned or the labelled test set (see the
    module). ``cache``: another embedding cache than the index home's (experiments share the user's).
    ``alternatives`` False: attached messages become labelled examples only (``plan_apply``)."""
    t0 = time.perf_counter()
    log = say or (lambda _m: None)
    with staging(settings.kb_dir, alternatives) as st:
        root, plan, staged, staged_root = st.root, st.plan, st.kb, st.examples
        store = IndexStore(settings.index_home, settings.keep_builds, cache)
        served = served_build(store, settings, encoder, log)
        current = served[0].manifest if served is not None else None
        if (
            not plan.changes
            and current is not None
            and (current.model_id, current.kb_hash) == (encoder.model_id, staged.content_hash)
        ):
            log("nothing to learn: no pending decisions, and the served build is of this KB and this model")
            return LearnResult(plan, None, False, (), (), "", time.perf_counter() - t0)
        log(
            f"applying {len(plan.changes)} decisions: {plan.alternatives} alternative questions, "
            f"{plan.examples} labelled examples, {plan.drafts} drafts"
        )
        rt = Runtime.create(settings, encoder=encoder)
        with store.build_lock():
            dev = [*staged_root.items("dev"), *checks.labelled_dev]
            fitted = candidate(rt, staged, store, dev, checks, log)
            index, after, how, report = fitted.index, fitted.answerer, fitted.how, fitted.report
            check = rows_check(after, dev, new_alternative_rows(index, added_rows(plan)), log)
            # the decisions to look at first when the new rows lose: theirs took other entries' messages
            pulling = tuple(sorted(pulled_by(check, plan, index).items())) if check is not None else ()
            before = served[1].answerer(index=served[0]).variant() if served is not None else None
            sets = (("learned test", staged_root.items("test")), ("labelled test", list(checks.labelled_test)))
            comparisons = [check.comparison] if check is not None else []
            for name, items in sets:
                if not items:
                    continue
                log(f"comparing on {len(items)} {name} examples")
                b = Figures.of(run(before, items)) if before is not None else None
                comparisons.append(Comparison(name, b, Figures.of(run(after, items))))
            losses = tuple(loss for c in comparisons for loss in c.losses(checks.tolerance))
            bid = index.manifest.build_id
            at, by = now_iso(), who or whoami()
            if losses and not checks.force:
                append_journal(
                    root,
                    {
                        "event": "refused",
                        "who": by,
                        "at": at,
                        "decisions": [c.decision for c in plan.changes],
                        "pulling": [d for d, _ in pulling],
                        "losses": list(losses),
                        "comparisons": [c.to_json() for c in comparisons],
                    },
                )
                return LearnResult(plan, bid, False, losses, tuple(comparisons), how, time.perf_counter() - t0, pulling)
            # Announce, write the KB, then swap the index: a crash in between leaves valid KB files
            # (each replaced whole) and the last good build serving; the next run completes it.
            append_journal(
                root,
                *(
                    {"event": "applying", "decision": c.decision, "who": by, "at": at, "change": c.to_json()}
                    for c in plan.changes
                ),
            )
            write_plan(root, plan)
            tmp = store.new_tmp(bid)
            index.save(tmp)
            copy_resources(staged, tmp)  # the build serves as built, as `kefu build`'s does
            if report:
                (tmp / "calibration_report.json").write_text(json.dumps(report, ensure_ascii=False), "utf-8")
            verify(Index.load(tmp, encoder.model_id))
            store.commit(tmp, bid)
            append_journal(
                root,
                *(
                    {
                        "event": "applied",
                        "decision": c.decision,
                        "who": by,
                        "at": at,
                        "change": c.to_json(),
                        "build": bid,
                    }
                    for c in plan.changes
                ),
                {
                    "event": "learned",
                    "who": by,
                    "at": at,
                    "build": bid,
                    "forced": bool(losses),
                    "calibration": how,
                    "comparisons": [c.to_json() for c in comparisons],
                },
            )
    return LearnResult(
        plan, bid, True, losses if checks.force else (), tuple(comparisons), how, time.perf_counter() - t0, pulling
    )
