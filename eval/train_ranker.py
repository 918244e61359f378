"""Fit the KB-agnostic ranker and confidence model shipped in ``service/models/``.

``python -m eval.train_ranker [SUITE ...]`` (default: every suite in ``../shared/foreign``): the
bundled KB's alternative questions (each left out of the index in turn) and its labelled dev
split, plus the ``dev`` split of every foreign suite, never a ``test`` split; with ``--unit-queries``
also pseudo-queries for every source's document units (rules clauses, article sections:
``eval.ranker_training.unit_groups``, each weighing ``UNIT_WEIGHT`` alternatives, as ``kefu eval
calibrate`` weighs them), which the shipped ranker is fitted without. Each source
weighs the same in the fit, so a large suite does not decide for the rest. It prints the
leave-one-suite-out ranking beside the bare question match, which is how the features were
chosen (docs/experiments.md). The confidence model (probability that the ranker's first answer
is right, over the decision evidence) is then fitted on the same sources' dev queries, in scope
and out of scope, ranked by the final ranker: ``general_confidence.json``, the prior that a
self-calibrated KB answers with (``service/selfcal.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from eval.dataset import EvalItem, load_split, resolve_labels
from eval.ranker_training import dev_groups, kb_groups, unit_groups
from indexer.build import build_index
from indexer.embcache import EmbeddingCache
from indexer.pool import POOL_FEATURES
from kb.loader import load_kb
from kb.settings import BUNDLED_KB, Settings
from service.answerer import Answerer
from service.policy import RANKER_FEATURES, Calibration, fit_logistic
from service.ranker import Group, Ranker, fit_ranker
from service.runtime import Runtime
from service.selfcal import GENERAL_ANSWER_AT, GENERAL_CONFIDENCE, GENERAL_RANKER

FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "foreign"
SOURCE_WEIGHT = 1000.0  # total weight of each source's queries in the fit
CONFIDENCE_L2 = 1.0
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # features, first answer right, in scope


@dataclass
class Source:
    answerer: Answerer
    items: list[EvalItem]
    groups: list[Group]
    units: list[Group] = field(default_factory=list)  # its document units' pseudo-queries


def suite_source(
    rt: Runtime, settings: Settings, kb_path: Path, dev_dir: Path | None, alts: bool, units: bool = True
) -> Source:
    """Training queries of one source: its dev split's in-scope queries (and its alternatives,
    and with ``units`` its document units' pseudo-queries)."""
    cache = EmbeddingCache(settings.index_home / "embcache.sqlite")
    try:
        index = build_index(load_kb(kb_path), rt.encoder, settings.chunk_chars, "flat", cache)
    finally:
        cache.close()
    answerer = rt.answerer(index=index, calibration=Calibration())
    items = load_split("dev", dev_dir) if dev_dir is not None else load_split("dev")
    groups = list(dev_groups(answerer, items).values())
    if alts:
        groups += kb_groups(index)
    return Source(answerer, items, groups, unit_groups(answerer) if units else [])


def evidence_rows(source: Source, ranker: Ranker) -> Rows:
    """(features, first answer right, in scope) of every dev query without session context that
    reaches the decision (in scope, or out of scope for want of an answer), ranked by ``ranker``."""
    a = source.answerer
    items = resolve_labels(source.items, a.index.aliases)
    use = [it for it in items if not it.context and (it.in_scope or it.reason == "low_confidence")]
    x, right = [], []
    for it in use:
        text = a.prepare(it.query)
        got = a.evidence(text, a.encode([text])[0], ranker=ranker)
        assert got.features is not None
        x.append([getattr(got.features, f) for f in RANKER_FEATURES])
        right.append(it.in_scope and bool(got.units) and got.units[0].unit_id in it.relevant)
    return np.array(x), np.array(right, dtype=float), np.array([it.in_scope for it in use])


def fit_confidence(rows: dict[str, Rows]) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Logistic confidence over RANKER_FEATURES, each source weighing the same."""
    x = np.vstack([r[0] for r in rows.values()])
    y = np.concatenate([r[1] for r in rows.values()])
    w = np.concatenate([np.full(len(r[1]), SOURCE_WEIGHT / max(1, len(r[1]))) for r in rows.values()])
    return fit_logistic(x, y, CONFIDENCE_L2, sample_weight=w)


def _mrr_hit(ranker: Ranker, groups: Sequence[Group]) -> tuple[float, float]:
    hit = mrr = 0.0
    for g in groups:
        rel = g.relevant[np.argsort(-ranker.scores(g.x), kind="stable")][:10]
        first = np.flatnonzero(rel)
        hit += bool(rel[0])
        mrr += 1.0 / (first[0] + 1) if first.size else 0.0
    return hit / max(1, len(groups)), mrr / max(1, len(groups))


def weighted(groups: list[Group]) -> list[Group]:
    """``groups`` scaled to weigh SOURCE_WEIGHT together, keeping their relative weights (a
    document unit's pseudo-query weighs UNIT_WEIGHT of its source's other queries)."""
    total = sum(g.weight for g in groups)
    return [replace(g, weight=SOURCE_WEIGHT * g.weight / total) for g in groups] if total > 0 else []


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", type=Path, help="suite folders (kb/, dev.jsonl)")
    ap.add_argument("--out", type=Path, default=GENERAL_RANKER)
    ap.add_argument("--confidence-out", type=Path, default=GENERAL_CONFIDENCE)
    # Off by default, as the shipped ranker was fitted: with them, the real-answer FAQ suite left out
    # ranks far below its question match (unionpay_a 0.606 → 0.498 hit@1; docs/experiments.md).
    ap.add_argument(
        "--unit-queries",
        dest="units",
        action="store_true",
        help="also fit on pseudo-queries for document units (rules clauses, article sections)",
    )
    args = ap.parse_args(argv)
    suites = args.suites or sorted(p for p in FOREIGN.glob("*") if (p / "kb").is_dir())
    if not suites:
        print(f"no suites given and none found in {FOREIGN}; pass suite folders", file=sys.stderr)
        return 2
    settings = Settings()
    rt = Runtime.create(settings.with_overrides(tickets_db=Path(tempfile.gettempdir()) / "kefu-train-tickets.db"))
    found = {"bundled": suite_source(rt, settings, BUNDLED_KB, None, alts=True, units=args.units)}
    for folder in suites:
        print(f"pools: {folder.name}", file=sys.stderr, flush=True)
        found[folder.name] = suite_source(rt, settings, folder / "kb", folder, alts=False, units=args.units)
    sources = {name: weighted(src.groups + src.units) for name, src in found.items()}
    question = fit_ranker([g for gs in sources.values() for g in gs], ("question",))
    print(f"{'left out':14s} {'question hit@1/MRR':>20s} {'ranker hit@1/MRR':>18s}")
    for name, groups in sources.items():
        rest = [g for n, gs in sources.items() if n != name for g in gs]
        loso_ranker = fit_ranker(rest, POOL_FEATURES)
        n_units = len(found[name].units)  # the source's own queries first, then its units' (as added)
        own, units = groups[: len(groups) - n_units], groups[len(groups) - n_units :]
        for label, part in ((name, own), (f"{name} units", units)):
            if part:
                bare, loso = _mrr_hit(question, part), _mrr_hit(loso_ranker, part)
                print(f"{label:14s} {bare[0]:10.3f}/{bare[1]:.3f} {loso[0]:10.3f}/{loso[1]:.3f}")
    ranker = fit_ranker([g for gs in sources.values() for g in gs], POOL_FEATURES)
    ranker = replace(ranker, meta={**ranker.meta, "kind": "general", "sources": sorted(sources)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(ranker.to_json(), ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"written {args.out}")

    rows = {}
    for name, src in found.items():
        print(f"evidence: {name}", file=sys.stderr, flush=True)
        rows[name] = evidence_rows(src, ranker)
    head = f"{'precision':>10s} {'coverage':>9s} {'OOS handoff':>12s}"
    print(f"\nconfidence ≥ {GENERAL_ANSWER_AT}, leave one source out: {head}")
    for name, (x, y, ins) in rows.items():
        w, b, mean, scale = fit_confidence({n: r for n, r in rows.items() if n != name})
        p = 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ w + b)))
        answered = p >= GENERAL_ANSWER_AT
        precision = y[answered].sum() / max(1, answered.sum())
        coverage = (answered & ins).sum() / max(1, ins.sum())
        oos = (~answered[~ins]).mean() if (~ins).any() else float("nan")
        print(f"{name:14s} {'':27s} {precision:10.3f} {coverage:9.3f} {oos:12.3f}")
    w, b, mean, scale = fit_confidence(rows)
    model = {
        "features": list(RANKER_FEATURES),
        "weights": [float(v) for v in w],
        "bias": b,
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "answer_at": GENERAL_ANSWER_AT,
        "sources": sorted(rows),
    }
    args.confidence_out.write_text(json.dumps(model, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"written {args.confidence_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
