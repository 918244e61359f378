"""Fit the KB-agnostic ranker shipped as ``service/models/general_ranker.json``.

``python -m eval.train_ranker [SUITE ...]`` (default: every suite in ``../shared/foreign``): the
bundled KB's alternative questions (each left out of the index in turn) and its labelled dev
split, plus the ``dev`` split of every foreign suite, never a ``test`` split. Each source weighs
the same in the fit, so a large suite does not decide for the rest. It prints the
leave-one-suite-out ranking beside the bare question match, which is how the features were
chosen (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from eval.calibrate import dev_groups, kb_groups
from eval.dataset import load_split
from indexer.build import build_index
from indexer.embcache import EmbeddingCache
from indexer.index import POOL_FEATURES
from kb.loader import load_kb
from kb.settings import BUNDLED_KB, Settings
from service.policy import Calibration
from service.ranker import Group, Ranker, fit_ranker
from service.runtime import Runtime
from service.selfcal import GENERAL_RANKER

FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "foreign"
SOURCE_WEIGHT = 1000.0  # total weight of each source's queries in the fit


def suite_groups(rt: Runtime, settings: Settings, kb_path: Path, dev_dir: Path | None, alts: bool) -> list[Group]:
    """Training queries of one source: its dev split's in-scope queries (and its alternatives)."""
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
    return groups


def _mrr_hit(ranker: Ranker, groups: Sequence[Group]) -> tuple[float, float]:
    hit = mrr = 0.0
    for g in groups:
        rel = g.relevant[np.argsort(-ranker.scores(g.x), kind="stable")][:10]
        first = np.flatnonzero(rel)
        hit += bool(rel[0])
        mrr += 1.0 / (first[0] + 1) if first.size else 0.0
    return hit / max(1, len(groups)), mrr / max(1, len(groups))


def weighted(groups: list[Group]) -> list[Group]:
    w = SOURCE_WEIGHT / max(1, len(groups))
    return [replace(g, weight=w) for g in groups]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", type=Path, help="suite folders (kb/, dev.jsonl)")
    ap.add_argument("--out", type=Path, default=GENERAL_RANKER)
    args = ap.parse_args(argv)
    suites = args.suites or sorted(p for p in FOREIGN.glob("*") if (p / "kb").is_dir())
    if not suites:
        print(f"no suites given and none found in {FOREIGN}; pass suite folders", file=sys.stderr)
        return 2
    settings = Settings()
    rt = Runtime.create(settings.with_overrides(tickets_db=Path(tempfile.gettempdir()) / "kefu-train-tickets.db"))
    sources = {"bundled": weighted(suite_groups(rt, settings, BUNDLED_KB, None, alts=True))}
    for folder in suites:
        print(f"pools: {folder.name}", file=sys.stderr, flush=True)
        sources[folder.name] = weighted(suite_groups(rt, settings, folder / "kb", folder, alts=False))
    question = fit_ranker([g for gs in sources.values() for g in gs], ("question",))
    print(f"{'left out':14s} {'question hit@1/MRR':>20s} {'ranker hit@1/MRR':>18s}")
    for name, groups in sources.items():
        rest = [g for n, gs in sources.items() if n != name for g in gs]
        b, r = _mrr_hit(question, groups), _mrr_hit(fit_ranker(rest, POOL_FEATURES), groups)
        print(f"{name:14s} {b[0]:10.3f}/{b[1]:.3f} {r[0]:10.3f}/{r[1]:.3f}")
    ranker = fit_ranker([g for gs in sources.values() for g in gs], POOL_FEATURES)
    ranker = replace(ranker, meta={**ranker.meta, "kind": "general", "sources": sorted(sources)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(ranker.to_json(), ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
