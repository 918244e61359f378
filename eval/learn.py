"""``kefu learn``: apply the operators' pending decisions, rebuild, recalibrate, and ship only if
nothing got worse.

One run, under the KB's lock (kb/learned.py) and the index home's build lock:

1. plan the pending decisions against the KB and load the KB as it will be, from a staged copy
   (the KB folder itself is not written yet);
2. build the candidate index (incremental: the embedding cache encodes only the new texts);
3. recalibrate on the learned dev examples and any labelled dev set (``recalibrate``), or, with
   too few of them, self-calibrate as ``kefu build`` does;
4. compare the served build and the candidate on the learned test examples and on the labelled
   test set: a loss above the tolerance on either refuses the run (``--force`` ships anyway) and
   leaves the KB files and the served index as they were;
5. ship: announce the changes in the journal, write the KB files (each atomically; re-running
   completes an interrupted write), then save, verify and swap in the build (the last good one
   stays until the swap, an atomic rename).

A learned answer example is also an alternative question in the index, so each calibration item
is asked with its own alternative row left out (5 folds): the confidence model then sees the
evidence a new shopper's message gets, not an exact match.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.calibrate import calibrate, kb_groups
from eval.dataset import EvalItem, stable_hash
from eval.runner import ItemResult, run
from indexer.build import build_index, verify
from indexer.embcache import EmbeddingCache
from indexer.encoder import Encoder
from indexer.index import Index
from indexer.store import IndexStore
from indexer.vectors import VectorIndex
from kb.errors import ConfigError, IndexStateError
from kb.learned import (
    Plan,
    append_journal,
    kb_lock,
    now_iso,
    plan_apply,
    read_examples,
    whoami,
    write_plan,
)
from kb.loader import LEARNED, SIDECAR, load_kb, load_resources, question_key
from kb.schema import KnowledgeBase
from kb.settings import BUNDLED_KB, Settings
from service.answerer import Answerer
from service.policy import Calibration
from service.ranker import Ranker, fit_ranker

DEFAULT_TOLERANCE = 0.02
FOLDS = 5
# A labelled calibration needs this many in-scope and out-of-scope examples; with fewer the
# build self-calibrates. Without out-of-scope examples the fit would never hand anything off.
MIN_IN_SCOPE = 20
MIN_OUT_OF_SCOPE = 10
MIN_RANKER_ALTS = 50  # alternatives before a ranker fitted on this KB is tried against the shipped one
TICK_S = 5.0  # progress line interval when the output is not a terminal
Say = Callable[[str], None]


@dataclass(frozen=True)
class Figures:
    """One set evaluated by one build."""

    n_in: int
    n_out: int
    hit1: float
    precision: float | None  # answered precision; None when nothing was answered
    coverage: float
    oos_recall: float | None  # out-of-scope handoff recall; None without out-of-scope items

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> Figures:
        ins = [r for r in results if r.item.in_scope]
        oos = [r for r in results if r.item.reason == "low_confidence"]
        answered = [r for r in results if r.decision == "answer"]
        right = sum(r.item.in_scope and r.top1_correct for r in answered)
        return cls(
            n_in=len(ins),
            n_out=len(oos),
            hit1=round(sum(r.top1_correct for r in ins) / len(ins), 4) if ins else 0.0,
            precision=round(right / len(answered), 4) if answered else None,
            coverage=round(sum(r.decision == "answer" for r in ins) / len(ins), 4) if ins else 0.0,
            oos_recall=round(sum(r.decision == "handoff" for r in oos) / len(oos), 4) if oos else None,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Comparison:
    name: str
    before: Figures | None  # None: no build was served
    after: Figures

    def losses(self, tolerance: float) -> list[str]:
        """Guarded figures that fell by more than ``tolerance``: hit@1, precision, OOS recall."""
        b, a = self.before, self.after
        if b is None:
            return []
        out = []
        pairs = (
            ("hit@1", b.hit1 if b.n_in else None, a.hit1 if a.n_in else None),
            ("answered precision", b.precision, a.precision),
            ("out-of-scope handoff recall", b.oos_recall, a.oos_recall),
        )
        for label, was, now in pairs:
            if was is not None and now is not None and was - now > tolerance:
                out.append(f"{self.name}: {label} {was:.3f} → {now:.3f}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json(),
        }


@dataclass(frozen=True)
class Recalibration:
    calibration: Calibration
    how: str  # one line for people
    report: dict[str, Any]  # calibrate()'s report, stored next to the build as calibration_report.json


@dataclass(frozen=True)
class LearnResult:
    plan: Plan
    build_id: str | None
    shipped: bool
    refused: tuple[str, ...]  # the losses that refused it (empty when shipped or nothing to do)
    comparisons: tuple[Comparison, ...]
    calibration: str
    seconds: float

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
            "seconds": round(self.seconds, 1),
        }


class Ticker:
    """Progress for long loops: every call on a terminal, else a line every ``TICK_S`` seconds."""

    def __init__(self, say: Say, label: str) -> None:
        self.say, self.label = say, label
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= (0.5 if self.tty else TICK_S):
            self.last = now
            self.say(f"{self.label}: {done:,}/{total:,}")


def kb_folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def learned_items(root: Path, split: str) -> list[EvalItem]:
    """The learned examples of one split as labelled items (eval/data's format)."""
    return [
        EvalItem(
            e.id, e.query, e.relevant, e.expect, "low_confidence" if e.expect == "handoff" else None, (), e.category
        )
        for e in read_examples(root)
        if e.split == split
    ]


def stage(kb_path: Path, plan: Plan, strict: bool | None) -> KnowledgeBase:
    """The KB as it will be once ``plan`` is written, loaded from a copy (the KB is not touched),
    with the real folder as its root (the manifest and resources name it)."""
    root = kb_folder(kb_path)
    with tempfile.TemporaryDirectory(prefix="kefu-learn-stage-") as tmp:
        copy = Path(tmp) / "kb"
        if kb_path.is_dir():
            shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".*"))
        else:  # one table or YAML file: it and the learning files beside it
            copy.mkdir()
            for name in (kb_path.name, SIDECAR, LEARNED):
                if (root / name).is_file():
                    shutil.copy2(root / name, copy / name)
        for rel, text in plan.files.items():
            target = copy / rel
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, "utf-8")
        staged = load_kb(copy if kb_path.is_dir() else copy / kb_path.name, strict=strict, log_changes=False)
    return dataclasses.replace(staged, root=root, resources=load_resources(root))


def without_rows(index: Index, rows: set[int]) -> Index:
    """``index`` as if the vector rows ``rows`` were not in it (a flat copy; the original is kept)."""
    if not rows:
        return index
    keep = [i for i in range(len(index.chunks)) if i not in rows]
    vectors = index.vectors[keep]
    counts = {**index.manifest.counts, "vectors": len(keep), "chunks": len(keep)}
    sub = Index(
        index.manifest.model_copy(update={"counts": counts}),
        vectors,
        VectorIndex.build(vectors, "flat"),
        [index.chunks[i] for i in keep],
        index.anchors,
        index.anchor_labels,
        index.entries,
        index.folder,
        index.doc_units,
    )
    sub.set_dense_int8(index.dense_int8)
    return sub


def _fold(item_id: str) -> int:
    return int(stable_hash(item_id), 16) % FOLDS


def recalibrate(
    base: Answerer,
    items: Sequence[EvalItem],
    precision: float = 0.95,
    oos_recall: float = 0.95,
    say: Say | None = None,
) -> Recalibration | str:
    """A labelled calibration of ``base``'s index from ``items`` (learned dev examples and any
    labelled dev set), or the reason there is none. Each item is asked in its fold's index, without
    the alternative rows that are its own text; the ranker is the shipped KB-agnostic one or one
    fitted on this KB's alternatives, whichever ranks the items better in that cross-fitting."""
    from service.selfcal import general_ranker

    log = say or (lambda _m: None)
    n_in = sum(it.in_scope for it in items)
    n_out = sum(it.reason == "low_confidence" for it in items)
    if n_in < MIN_IN_SCOPE or n_out < MIN_OUT_OF_SCOPE:
        return (
            f"{n_in} in-scope and {n_out} out-of-scope labelled dev examples; a labelled calibration "
            f"needs {MIN_IN_SCOPE} and {MIN_OUT_OF_SCOPE}"
        )
    index = base.index
    alt_rows = [r for r, c in enumerate(index.chunks) if c.kind == "alt"]
    rows_of: dict[str, list[int]] = {}
    for r in alt_rows:
        rows_of.setdefault(question_key(index.chunks[r].text), []).append(r)
    by_fold: list[list[EvalItem]] = [[] for _ in range(FOLDS)]
    for it in items:
        by_fold[_fold(it.id)].append(it)
    held = [{r for it in fold for r in rows_of.get(question_key(it.query), ())} for fold in by_fold]
    subs = [without_rows(index, h) for h in held]
    candidates: list[tuple[str, Ranker | None, list[Ranker | None]]] = []
    general = general_ranker()
    if general is not None:
        candidates.append(("shipped ranker", general, [general] * FOLDS))
    if len(alt_rows) >= MIN_RANKER_ALTS:
        groups = kb_groups(index, progress=Ticker(log, "ranker: KB alternatives"))
        try:
            full = fit_ranker(groups)
            per: list[Ranker | None] = [
                fit_ranker([g for g, r in zip(groups, alt_rows, strict=True) if r not in h]) for h in held
            ]
            candidates.append(("ranker fitted on the KB's alternatives", full, per))
        except ConfigError as exc:
            log(f"no ranker fitted on this KB: {exc}")
    if not candidates:
        candidates.append(("no ranker", None, [None] * FOLDS))
    best: tuple[float, str, Ranker | None, list[ItemResult]] | None = None
    for name, full_ranker, per_fold in candidates:
        by_id: dict[str, ItemResult] = {}
        tick = Ticker(log, f"calibration items, {name}")
        done = 0
        for k in range(FOLDS):
            r_k = per_fold[k]
            cal = Calibration(ranker=r_k.to_json()) if r_k is not None else Calibration()
            answerer = base.variant(index=subs[k], calibration=cal)
            for res in run(answerer, by_fold[k]):
                by_id[res.item.id] = res
                done += 1
                tick(done, len(items))
        results = [by_id[it.id] for it in items]
        hit1 = float(np.mean([r.top1_correct for r in results if r.item.in_scope]))
        log(f"{name}: cross-fitted hit@1 {hit1:.3f} on {n_in} labelled dev examples")
        if best is None or hit1 > best[0]:
            best = (hit1, name, full_ranker, results)
    assert best is not None
    hit1, name, ranker, results = best
    try:
        cal, report = calibrate(results, precision, oos_recall, ranker=ranker)
    except ConfigError as exc:
        return str(exc)
    cal = dataclasses.replace(cal, origin="labelled", kb_hash=index.manifest.kb_hash)
    report["learned"] = {"ranker": name, "cross_fitted_hit@1": round(hit1, 4), "items": len(items)}
    op = report["operating_point_cv"]
    how = (
        f"calibration: labelled on {n_in} + {n_out} dev examples ({name}); dev cross-validated precision "
        f"{op['answered_precision']:.3f}, coverage {op['coverage']:.3f}, "
        f"out-of-scope handoff {op['oos_handoff_recall']:.3f}"
    )
    return Recalibration(cal, how, report)


def _served(store: IndexStore, model_id: str) -> Index | None:
    try:
        return store.load_current(model_id)
    except IndexStateError:
        return None


def learn(
    settings: Settings,
    encoder: Encoder,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    force: bool = False,
    precision: float = 0.95,
    oos_recall: float = 0.95,
    labelled_dev: Sequence[EvalItem] = (),
    labelled_test: Sequence[EvalItem] = (),
    who: str | None = None,
    say: Say | None = None,
    cache: Path | None = None,
) -> LearnResult:
    """Apply the pending decisions of the KB at ``settings.kb_dir`` and ship the result if it does
    not lose more than ``tolerance`` on the learned or the labelled test set (see the module).
    ``cache``: another embedding cache than the index home's (experiments share the user's)."""
    from service.runtime import Runtime
    from service.selfcal import build_calibrator

    if not 0.0 <= tolerance <= 1.0:
        raise ConfigError(f"tolerance={tolerance} must be within [0, 1]")
    t0 = time.perf_counter()
    log = say or (lambda _m: None)
    kb_path = Path(settings.kb_dir).expanduser()
    root = kb_folder(kb_path)
    strict = True if root.resolve() == BUNDLED_KB.resolve() else None
    with kb_lock(root, wait_s=0):
        kb = load_kb(kb_path, strict=strict, log_changes=False)
        plan = plan_apply(kb)
        staged = stage(kb_path, plan, strict)
        store = IndexStore(settings.index_home, settings.keep_builds, cache)
        served = _served(store, encoder.model_id)
        if not plan.changes and served is not None and served.manifest.kb_hash == staged.content_hash:
            log("nothing to learn: no pending decisions, and the served build is of this KB")
            return LearnResult(plan, None, False, (), (), "", time.perf_counter() - t0)
        log(
            f"applying {len(plan.changes)} decisions: {plan.alternatives} alternative questions, "
            f"{plan.examples} labelled examples, {plan.drafts} drafts"
        )
        rt = Runtime.create(settings, encoder=encoder)
        with store.build_lock():
            embcache = EmbeddingCache(store.cache_path)
            try:
                index = build_index(
                    staged, encoder, settings.chunk_chars, settings.index_kind, embcache, Ticker(log, "embedding")
                )
            finally:
                embcache.close()
            base = rt.answerer(index=index, calibration=Calibration()).variant()  # variant: no tickets
            staged_root = _StagedExamples(root, plan)
            dev = [*staged_root.items("dev"), *labelled_dev]
            got = recalibrate(base, dev, precision, oos_recall, log)
            if isinstance(got, Recalibration):
                cal, how, report = got.calibration, got.how, got.report
            else:
                log(f"no labelled calibration ({got}); self-calibrating from the KB as `kefu build` does")
                fitted, how = build_calibrator(settings, encoder, Ticker(log, "self-calibration"))(index)
                cal, report = Calibration.from_json(fitted), {}
            index.manifest.calibration = cal.to_json()
            after = base.variant(calibration=cal)
            before = rt.answerer(index=served).variant() if served is not None else None
            sets = (("learned test", staged_root.items("test")), ("labelled test", list(labelled_test)))
            comparisons = []
            for name, items in sets:
                if not items:
                    continue
                log(f"comparing on {len(items)} {name} examples")
                b = Figures.of(run(before, items)) if before is not None else None
                comparisons.append(Comparison(name, b, Figures.of(run(after, items))))
            losses = tuple(loss for c in comparisons for loss in c.losses(tolerance))
            bid = index.manifest.build_id
            at, by = now_iso(), who or whoami()
            if losses and not force:
                append_journal(
                    root,
                    {
                        "event": "refused",
                        "who": by,
                        "at": at,
                        "decisions": [c.decision for c in plan.changes],
                        "losses": list(losses),
                        "comparisons": [c.to_json() for c in comparisons],
                    },
                )
                return LearnResult(plan, bid, False, losses, tuple(comparisons), how, time.perf_counter() - t0)
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
    return LearnResult(plan, bid, True, losses if force else (), tuple(comparisons), how, time.perf_counter() - t0)


class _StagedExamples:
    """The learned examples as they will be after the plan: the file's, plus the plan's version."""

    def __init__(self, root: Path, plan: Plan) -> None:
        self.root, self.plan = root, plan

    def items(self, split: str) -> list[EvalItem]:
        text = self.plan.files.get(LEARNED)
        if LEARNED not in self.plan.files:
            return learned_items(self.root, split)
        with tempfile.TemporaryDirectory(prefix="kefu-learned-") as tmp:
            if text is not None:
                (Path(tmp) / LEARNED).write_text(text, "utf-8")
            return learned_items(Path(tmp), split)
