"""``python -m eval.bench --only shops``: many shops on each vector store, beside the platform help center.

Synthetic shops are cut from the FAQ tables of ``../shared/foreign/*/kb/faq.csv`` (their KB files
only, never their labelled splits): 20-50 entries of one suite each, every entry with two
alternative questions made the way chat mangles a question (``service.selfcal.perturb``). The
first ``DISTINCT`` shops are built for real (``Shops.add``: chunk, embed through the shared
embedding cache, self-calibrate, store): their times are the build figures. Larger fleets are
made of copies of those builds under new shop ids, each with its own build folder and its own
rows in the vector store, so the store, the registry and the LRU hold as many shops as the fleet
says (what latency and memory depend on) without building 5,000 shops' calibrations.

Per fleet size and backend: answer latency in-process over random (shop, query) pairs (the query
is a shop question perturbed again, so it is not a stored text), the share of questions whose
shop was already loaded, resident memory of this process and its children (Milvus Lite runs as
one), and the time to rebuild one 30-entry shop while another thread keeps answering.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kb.settings import Settings

FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "foreign"
SIZES = (100, 1_000, 5_000)
DISTINCT = 100  # shops built for real; larger fleets copy their builds under new ids
QUERIES = 600  # random (shop, query) pairs answered per fleet size and backend
MIN_ENTRIES, MAX_ENTRIES = 20, 50
ALTERNATIVES = 2
SEED = 20261206
SECTION = "## Many shops (`python -m eval.bench --only shops`)"  # the docs/benchmarks.md heading it owns


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
    from service.selfcal import perturb

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


def _rss_tree_mb(pid: int | None = None) -> float:
    """Resident memory of a process and its children (MB)."""
    from eval.bench import _proc_rss, _tree

    return round(sum(_proc_rss(p) for p in _tree(pid or os.getpid())), 1)


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


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


def _questions(shops: Any, shop: str) -> list[str]:
    import json

    rec = shops.registry.require(shop)
    entries = json.loads((shops.folder(rec) / "entries.json").read_text("utf-8"))
    return [str(e["question"]) for e in entries.values()]


def measure(shops: Any, desk: Any, platform: Any, ids: list[str], n: int, rng: random.Random) -> dict[str, Any]:
    """Answer ``n`` random (shop, query) pairs one at a time; latency, LRU hits, decisions."""
    from service.selfcal import perturb

    questions: dict[str, list[str]] = {}
    lat: list[float] = []
    hits = 0
    owners = {"shop": 0, "platform": 0}
    failed = 0
    for _ in range(n):
        shop = rng.choice(ids)
        qs = questions.get(shop) or questions.setdefault(shop, _questions(shops, shop))
        q = perturb(rng.choice(qs), rng) or qs[0]
        was_loaded = shop in desk._loaded
        t0 = time.perf_counter()
        try:
            a = desk.answer(platform, q, shop)
        except Exception:  # a failed answer is counted, not fatal to the benchmark
            failed += 1
            continue
        lat.append((time.perf_counter() - t0) * 1000)
        hits += was_loaded
        if a.answers:
            owners[a.answers[0].source.owner] += 1
    return {
        "p50_ms": _pct(lat, 50),
        "p90_ms": _pct(lat, 90),
        "p99_ms": _pct(lat, 99),
        "loaded_share": round(hits / max(1, len(lat)), 3),
        "first_answer_owner": owners,
        "failed": failed,
        "queries": len(lat),
    }


def rebuild_while_serving(shops: Any, desk: Any, platform: Any, shop: str, kb: Path) -> dict[str, Any]:
    """Rebuild ``shop`` (forced) while another thread keeps asking it; count failed answers."""
    stop = threading.Event()
    asked, failed = [0], [0]
    qs = _questions(shops, shop)

    def ask() -> None:
        i = 0
        while not stop.is_set():
            try:
                desk.answer(platform, qs[i % len(qs)], shop)
            except Exception:
                failed[0] += 1
            asked[0] += 1
            i += 1

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t0 = time.perf_counter()
    shops.rebuild(shop, kb, force=True)
    seconds = time.perf_counter() - t0
    time.sleep(0.2)  # a few answers on the new build
    stop.set()
    t.join()
    return {"seconds": round(seconds, 2), "answers_meanwhile": asked[0], "failed": failed[0]}


def run_backend(
    kind: str, settings: Settings, encoder: Any, sizes: tuple[int, ...], log: Callable[[str], None]
) -> dict[str, Any]:
    """Fleets of ``sizes`` shops on one backend, in a throw-away index home sharing the user's
    embedding cache and platform build."""
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from service.runtime import Runtime
    from service.selfcal import build_calibrator
    from service.shops import Shops
    from service.shops_answer import ShopDesk

    work = Path(tempfile.mkdtemp(prefix=f"kefu-shops-{kind}-"))
    try:
        home = work / "index"
        home.mkdir()
        s = settings.with_overrides(index_dir=home, vector_store=kind, tickets_db=work / "t.db")
        cache = settings.index_home / "embcache.sqlite"  # the user's: the texts may be embedded already
        # the platform help center, built in this home (embedded texts come from the cache)
        build_and_swap(
            load_kb(s.kb_dir),
            encoder,
            IndexStore(home, cache_path=cache),
            s.chunk_chars,
            calibrate=build_calibrator(s, encoder),
        )
        platform = Runtime.create(s, encoder).answerer()
        platform.tickets = None
        shops = Shops(s, encoder)
        shops.cache_path = cache
        pool = foreign_pool()
        out: dict[str, Any] = {"builds": [], "fleets": {}}
        ids: list[str] = []
        kbs = work / "kbs"
        rng = random.Random(SEED)
        for size in sizes:
            while len(ids) < min(size, DISTINCT):
                i = len(ids)
                shop = f"shop-{i:05d}"
                kb = write_shop(kbs / shop, i, pool)
                b = shops.add(shop, kb)
                out["builds"].append({"entries": b.entries, "vectors": b.vectors, "seconds": round(b.seconds, 3)})
                ids.append(shop)
                if i % 20 == 0:
                    log(f"{kind}: built {i + 1} shops ({b.seconds:.2f} s the last)")
            t0 = time.perf_counter()
            while len(ids) < size:
                i = len(ids)
                source = ids[i % DISTINCT]
                shop = f"{source}-c{i:05d}"
                clone_shop(shops, source, shop)
                ids.append(shop)
                if i % 100 == 0:  # Milvus Lite searches and writes slow down with unsealed rows
                    shops.store(encoder.dim).flush()
                if i % 500 == 0:
                    log(f"{kind}: {i} shops")
            shops.store(encoder.dim).flush()  # copies are upserted without one each
            fill_s = time.perf_counter() - t0
            desk = ShopDesk(
                shops, encoder.encode_queries, None, capacity=s.shop_cache, model_id=encoder.model_id, dim=encoder.dim
            )
            desk.warm_up()
            measure(shops, desk, platform, ids, 30, random.Random(1))  # warm the encoder and the platform
            m = measure(shops, desk, platform, ids, QUERIES, rng)
            m["rss_mb"] = _rss_tree_mb()
            m["copies_seconds"] = round(fill_s, 1)
            m["lru_capacity"] = s.shop_cache
            log(f"{kind}: {size} shops: p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms, RSS {m['rss_mb']} MB")
            out["fleets"][str(size)] = m
        kb30 = write_shop(kbs / "rebuilt", 7, pool, entries=30)
        target = ids[0]
        shops.rebuild(target, kb30)  # now a 30-entry shop
        out["rebuild_30_entries"] = rebuild_while_serving(shops, desk, platform, target, kb30)
        secs = [b["seconds"] for b in out["builds"]]
        out["build_seconds"] = {"p50": _pct(secs, 50), "p90": _pct(secs, 90), "max": round(max(secs), 2)}
        shops.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: tuple[int, ...] = SIZES, kinds: tuple[str, ...] = ("faiss", "milvus")) -> dict[str, Any]:
    from indexer.encoder import load_encoder

    settings = Settings()
    encoder = load_encoder(settings)

    def log(line: str) -> None:
        print(f"bench shops: {line}", flush=True)

    return {
        "sizes": list(sizes),
        "distinct": DISTINCT,
        "queries": QUERIES,
        "backends": {kind: run_backend(kind, settings, encoder, sizes, log) for kind in kinds},
    }


def markdown(data: dict[str, Any] | None) -> list[str]:
    """The docs/benchmarks.md section."""
    if not data:
        return []
    lines = [
        SECTION,
        "",
        f"Synthetic shops cut from the FAQ tables of ../shared/foreign (20-50 entries of one suite, two "
        f"alternative questions each); {data['distinct']} built for real, larger fleets copy their builds under "
        f"new ids (own build folder, own vector rows). {data['queries']} random (shop, query) pairs per row, one "
        "at a time, in-process, real model (the query encoded once for both sides); the shop's KB and the "
        "platform help center answer together. RSS: this process and its children (Milvus Lite's server).",
        *([f"Measured {data['date']}: {data['note']}."] if data.get("note") else []),
        "",
        "| backend | shops | answer p50 ms | p90 ms | p99 ms | shop already loaded | RSS MB | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, b in data["backends"].items():
        for size, m in b["fleets"].items():
            lines.append(
                f"| {kind} | {int(size):,} | {m['p50_ms']} | {m['p90_ms']} | {m['p99_ms']} | {m['loaded_share']} "
                f"(LRU {m['lru_capacity']}) | {m['rss_mb']} | {m['failed']} |"
            )
    lines += ["", "| backend | build s per shop p50 / p90 / max | rebuild one 30-entry shop while answering it |"]
    lines += ["|---|---|---|"]
    for kind, b in data["backends"].items():
        bs, rb = b["build_seconds"], b["rebuild_30_entries"]
        lines.append(
            f"| {kind} | {bs['p50']} / {bs['p90']} / {bs['max']} | {rb['seconds']} s, {rb['answers_meanwhile']} "
            f"answers meanwhile, {rb['failed']} failed |"
        )
    return [*lines, ""]
