"""``kefu eval suite``: a foreign knowledge base built and evaluated zero-label, beside the bare model.

A suite folder holds ``kb/`` (any KB kefu loads), ``dev.jsonl`` and ``test.jsonl`` (the
``eval/data`` format). Each suite is built the way a user's ``kefu build`` builds it (its own
self-calibration included) into a temporary index home, and its test split is evaluated with no
labels; with ``calibrate`` the dev split then refines the calibration (``kefu eval calibrate
--data``) and the test split is evaluated again. The bare model is measured in the same run with
the same encoder: each FAQ question encoded as a query, cosine ranking, no kefu in between.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.dataset import EvalItem, load_split, resolve_labels
from eval.metrics import Ranked, hit_at, mrr_at, recall_at
from eval.runner import evaluate
from indexer.build import build_and_swap, calibration_origin
from indexer.encoder import Encoder
from indexer.index import Index
from indexer.store import IndexStore
from kb.errors import ConfigError, KBError
from kb.loader import load_kb
from kb.settings import Settings

ORACLE_PRECISIONS = (0.8, 0.9)  # the bare model's best single-threshold coverage at these precisions
# Headline columns of one evaluation, as RunResult.metrics["headline"] names them.
KEFU_COLUMNS = ("hit@1", "mrr@10", "recall@5", "answered_precision", "coverage", "oos_handoff_recall")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BareFigures:
    """The bare model on one split: dense ranking over the FAQ questions, nothing else."""

    hit1: float
    recall5: float
    mrr10: float
    oracle_coverage: dict[float, float]  # precision → best coverage one top-1 cosine threshold reaches


@dataclass(frozen=True)
class SuiteResult:
    name: str
    n_in: int
    n_out: int
    bare: BareFigures
    kefu: dict[str, float]  # KEFU_COLUMNS, zero labels
    predicted: dict[str, float]  # what the build's calibration predicted (precision, coverage)
    calibration: str  # where the zero-label calibration came from (``calibration_origin``)
    calibrated: dict[str, float] | None  # KEFU_COLUMNS after calibrating on dev, when asked
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "test_in": self.n_in,
            "test_out": self.n_out,
            "bare": {
                "hit@1": self.bare.hit1,
                "recall@5": self.bare.recall5,
                "mrr@10": self.bare.mrr10,
                **{f"oracle_coverage@{p}": c for p, c in self.bare.oracle_coverage.items()},
            },
            "kefu": self.kefu,
            "predicted": self.predicted,
            "calibration": self.calibration,
            "calibrated_on_dev": self.calibrated,
            "seconds": round(self.seconds, 1),
        }


def suite_kb_path(folder: Path) -> Path:
    kb = folder / "kb"
    if not kb.exists():
        raise KBError(f"suite folder {folder} has no kb/ (expected kb/, dev.jsonl, test.jsonl)")
    return kb


def oracle_coverage(top1: np.ndarray, correct: np.ndarray, in_scope: np.ndarray, precision: float) -> float:
    """Best coverage (in-scope queries answered / in-scope queries) of a rule "answer when the
    top-1 score ≥ t", over every t whose answered precision (right answers / answered) ≥
    ``precision``. Chosen on the very split it is measured on: an upper bound for a hand-set
    threshold, not something a deployment could reach."""
    order = np.argsort(-top1, kind="stable")
    right = np.cumsum(correct[order])
    answered = np.arange(1, len(order) + 1)
    covered = np.cumsum(in_scope[order])
    # only cut between distinct scores: a threshold answers all queries with equal scores alike
    last_of_tie = np.append(top1[order][1:] != top1[order][:-1], True)
    ok = (right / answered >= precision) & last_of_tie
    n_in = max(1, int(in_scope.sum()))
    return float(covered[ok].max() / n_in) if ok.any() else 0.0


def bare_figures(index: Index, encoder: Encoder, items: Sequence[EvalItem]) -> BareFigures:
    """The bare model on ``items``: the raw query encoded by ``encoder``, cosine against every FAQ
    question as stored (encoded as a query), entries ranked by it. A KB of articles (no FAQ
    questions) is ranked the same way over its chunks, each document by its best chunk."""
    rows = [i for i, c in enumerate(index.chunks) if c.kind == "question"]
    if rows:
        units = [index.chunks[i].unit_id for i in rows]
    else:
        rows = list(range(len(index.chunks)))
        units = [index.chunks[i].doc_id for i in rows]
    matrix = index.vectors[rows]
    hits, recalls, mrrs, top1, correct, in_scope = [], [], [], [], [], []
    for it in items:
        cos = matrix @ encoder.encode_queries([it.query])[0]
        ranking, seen = [], set()
        for i in np.argsort(-cos, kind="stable"):
            if units[i] not in seen:  # a unit (entry or document) counts once, at its best row
                seen.add(units[i])
                ranking.append(Ranked(units[i], units[i]))
                if len(ranking) == 10:
                    break
        top1.append(float(cos.max()))
        in_scope.append(it.in_scope)
        correct.append(it.in_scope and hit_at(ranking, it.relevant, 1) > 0)
        if it.in_scope:
            hits.append(hit_at(ranking, it.relevant, 1))
            recalls.append(recall_at(ranking, it.relevant, 5))
            mrrs.append(mrr_at(ranking, it.relevant, 10))
    t, c, s = np.array(top1), np.array(correct, dtype=float), np.array(in_scope, dtype=float)
    return BareFigures(
        hit1=round(float(np.mean(hits)), 4) if hits else 0.0,
        recall5=round(float(np.mean(recalls)), 4) if recalls else 0.0,
        mrr10=round(float(np.mean(mrrs)), 4) if mrrs else 0.0,
        oracle_coverage={p: round(oracle_coverage(t, c, s, p), 4) for p in ORACLE_PRECISIONS},
    )


def run_suite(
    folder: Path,
    settings: Settings,
    runtime_for: Callable[[Settings], Any],
    calibrate: Callable[[Any, list[EvalItem]], None] | None = None,
    say: Progress | None = None,
    build_hook: Callable[..., Any] | None = None,
    split: str = "test",
) -> SuiteResult:
    """Build ``folder``'s KB in a temporary index home, evaluate its ``split`` zero-label (and
    after calibrating on dev, with ``calibrate``), and measure the bare model beside it. Methods
    are chosen with ``split="dev"``; the figures reported are the test split's.

    ``runtime_for(settings)`` gives a Runtime for the temporary home (sharing the encoder);
    ``build_hook`` is what ``kefu build`` passes to ``build_and_swap`` (the self-calibration)."""
    t0 = time.perf_counter()
    name = folder.resolve().name
    log = say or (lambda _m: None)
    kb = load_kb(suite_kb_path(folder))
    if calibrate is not None and split == "dev":
        raise ConfigError("--calibrate fits on the dev split, so it evaluates the test split; drop --split dev")
    test = load_split(split, folder)
    with tempfile.TemporaryDirectory(prefix=f"kefu-suite-{name}-") as home:
        s = settings.with_overrides(index_dir=Path(home) / "index", data_dir=Path(home))
        rt = runtime_for(s)
        log(f"{name}: building {len(kb.entries):,} entries, {len(kb.documents):,} documents")
        # the user's embedding cache: a second run of a suite encodes nothing again
        store = IndexStore(s.index_home, s.keep_builds, IndexStore(settings.index_home).cache_path)
        store.cache_path.parent.mkdir(parents=True, exist_ok=True)
        build_and_swap(kb, rt.encoder, store, s.chunk_chars, s.index_kind, calibrate=build_hook)
        answerer = rt.answerer()
        test = resolve_labels(test, answerer.index.aliases)
        manifest_cal = answerer.index.manifest.calibration or {}
        log(f"{name}: evaluating {len(test):,} {split} queries (zero labels)")
        zero = evaluate(answerer, test).metrics["headline"]
        calibrated = None
        if calibrate is not None:
            log(f"{name}: calibrating on dev")
            calibrate(rt, load_split("dev", folder))
            calibrated = _columns(evaluate(rt.answerer(), test).metrics["headline"])
        log(f"{name}: bare model")
        bare = bare_figures(answerer.index, rt.encoder, test)
    predicted = manifest_cal.get("predicted") or {}
    return SuiteResult(
        name=name,
        n_in=sum(it.in_scope for it in test),
        n_out=sum(not it.in_scope for it in test),
        bare=bare,
        kefu=_columns(zero),
        predicted={k: float(v) for k, v in predicted.items() if k in ("answered_precision", "coverage")},
        calibration=calibration_origin(manifest_cal),
        calibrated=calibrated,
        seconds=time.perf_counter() - t0,
    )


def no_prediction(calibration: str) -> str:
    """The predicted column of a build that predicts nothing: a small KB's prior alone, or a
    calibration from elsewhere (labelled, shipped)."""
    return "– (prior only)" if calibration == "self" else f"– ({calibration})" if calibration else "–"


def _columns(headline: dict[str, Any]) -> dict[str, float]:
    return {k: float(headline.get(k, 0.0)) for k in KEFU_COLUMNS}


SUITES_FILE = "suites.json"  # written by `kefu eval suite` (test split) next to the eval report


def suites_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The foreign-suite table of the eval report, from ``SuiteResult.to_json`` rows."""
    if not rows:
        return []
    head = (
        "| suite | in/out | hit@1 bare → kefu | MRR@10 bare → kefu | recall@5 bare → kefu "
        "| oracle coverage @0.8 / @0.9 | kefu precision | coverage | out-of-scope handoff "
        "| predicted precision / coverage |"
    )
    out = [head, "|" + "---|" * 10]
    for r in rows:
        b, k, p = r["bare"], r["kefu"], r.get("predicted") or {}
        pred = f"{p['answered_precision']:.2f} / {p['coverage']:.2f}" if p else no_prediction(r.get("calibration", ""))
        oos = f"{k['oos_handoff_recall']:.3f}" if r["test_out"] else "– (none asked)"
        out.append(
            f"| {r['suite']} | {r['test_in']}/{r['test_out']} | {b['hit@1']:.3f} → {k['hit@1']:.3f} "
            f"| {b['mrr@10']:.3f} → {k['mrr@10']:.3f} | {b['recall@5']:.3f} → {k['recall@5']:.3f} "
            f"| {b['oracle_coverage@0.8']:.3f} / {b['oracle_coverage@0.9']:.3f} | {k['answered_precision']:.3f} "
            f"| {k['coverage']:.3f} | {oos} | {pred} |"
        )
    return out
