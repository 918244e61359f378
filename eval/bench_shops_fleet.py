"""The many-shops benchmark's synthetic shops: cut from foreign FAQ tables, written, cloned."""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "foreign"
MIN_ENTRIES, MAX_ENTRIES = 20, 50
ALTERNATIVES = 2
SEED = 20261206


@dataclass(frozen=True)
class PoolEntry:
    suite: str
    id: str
    question: str
    answer: str


def foreign_pool(root: Path = FOREIGN) -> dict[str, list[PoolEntry]]:
    """Each suite's FAQ entries from its ``kb/faq.csv`` (nothing else of the suite is read)."""
    pool: dict[str, list[PoolEntry]] = {}
    for faq in sorted(root.glob("*/kb/faq.csv")):
        suite = faq.parent.parent.name
        with faq.open(encoding="utf-8", newline="") as f:
            pool[suite] = [PoolEntry(suite, r["id"], r["question"], r["answer"]) for r in csv.DictReader(f)]
    return pool


def alternatives(question: str, n: int = ALTERNATIVES) -> list[str]:
    """``n`` chat-style variants of a question, the same every time for the same question (so the
    embedding cache serves them to every shop that has the entry)."""
    from service.selfcal_queries import perturb

    rng = random.Random(f"{SEED}:{question}")
    out: list[str] = []
    for _ in range(4 * n):
        alt = perturb(question, rng)
        if alt and alt != question and alt not in out:
            out.append(alt)
        if len(out) == n:
            break
    return out


def write_shop(folder: Path, shop: int, pool: dict[str, list[PoolEntry]], entries: int | None = None) -> Path:
    """Shop ``shop``'s KB: one suite, a run of 20-50 consecutive entries, as an FAQ table."""
    rng = random.Random(SEED + shop)
    suite = rng.choice(sorted(pool))
    rows = pool[suite]
    n = entries or rng.randint(MIN_ENTRIES, MAX_ENTRIES)
    start = rng.randrange(0, max(1, len(rows) - n))
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "faq.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "alt_questions"])
        for e in rows[start : start + n]:
            w.writerow([e.id, e.question, e.answer, "|".join(alternatives(e.question))])
    return folder


def clone_shop(shops: Any, source: str, shop: str) -> None:
    """Register ``shop`` as a copy of ``source``'s serving build: its own build folder, its own
    rows in the vector store, its own registry row."""
    rec = shops.registry.require(source)
    src = shops.home / source
    dst = shops.home / shop
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".build.lock"))
    vectors = np.load(shops.folder(rec) / "vectors.npy", allow_pickle=False)
    shops.store(rec.dim).upsert(shop, rec.build_id, range(vectors.shape[0]), vectors)
    shops.registry.put(replace(rec, id=shop, created=time.time(), updated=time.time(), has_token=False))


def shop_questions(shops: Any, shop: str) -> list[str]:
    """The questions of ``shop``'s serving build (what the benchmark perturbs into queries)."""
    rec = shops.registry.require(shop)
    entries = json.loads((shops.folder(rec) / "entries.json").read_text("utf-8"))
    return [str(e["question"]) for e in entries.values()]
