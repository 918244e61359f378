"""``python -m eval.bench --only shops``: many shops on each vector store, beside the platform help center.

Synthetic shops are cut from the FAQ tables of ``../shared/foreign/*/kb/faq.csv`` (their KB files
only, never their labelled splits): 20-50 entries of one suite each, every entry with two
alternative questions made the way chat mangles a question (``service.selfcal_queries.perturb``). The
first ``DISTINCT`` shops are built for real (``Shops.add``: chunk, embed through the shared
embedding cache, self-calibrate, pack, store): their times are the build figures. Larger fleets
are made of copies of those builds under new shop ids, each with its own build folder and its own
rows in the vector store, so the store, the registry and the LRU hold as many shops as the fleet
says (what latency and memory depend on) without building 5,000 shops' calibrations.

Per fleet size and backend, over random (shop, query) pairs (the query is a shop question
perturbed again, so it is not a stored text), one at a time, in-process:

- **cold**: a desk just started, so most shops are asked for the first time (and loaded);
- **warm**: after ``ShopDesk.preload`` loaded every shop the memory budget holds (what a serving
  process reaches once it has run a while, or after its background preload);
- resident memory of this process with every shop loaded (Milvus Lite 3 serves from threads of
  this process: its memory is in the figure; a child process would be counted apart);
- ``kefu serve`` over HTTP, wrk at 32 connections with random shops (after a warm-up run);
- the time to add, and to rebuild, one 30-entry shop while another thread keeps answering.

The first fleet also answers ``SAME_QUERIES`` fixed (shop, query) pairs on each backend: the
report compares top answers, decisions and scores across backends.

This module runs the fleets and writes the report; the shops are made in ``eval/bench_shops_fleet.py``
and measured in ``eval/bench_shops_measure.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.bench_shops_fleet import SEED, clone_shop, foreign_pool, write_shop
from eval.bench_shops_measure import (
    HTTP_CLIENTS,
    HTTP_REPEATS,
    HTTP_SECONDS,
    SCORE_TOLERANCE,
    compare_samples,
    http_random_shops,
    measure,
    pct,
    rss_split_mb,
    same_answers_sample,
    while_serving,
)
from indexer.vectorstore_milvus import is_server_uri
from kb.settings import Settings

SIZES = (100, 1_000, 5_000)
DISTINCT = 100  # shops built for real; larger fleets copy their builds under new ids
QUERIES = 600  # random (shop, query) pairs answered per fleet size and backend, cold and warm each
SAME_QUERIES = 1_000  # fixed (shop, query) pairs answered on every backend and compared
SECTION = "## Many shops (`python -m eval.bench --only shops`)"  # the docs/benchmarks.md heading it owns


def run_backend(
    kind: str,
    settings: Settings,
    encoder: Any,
    sizes: tuple[int, ...],
    log: Callable[[str], None],
    http: bool = True,
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
        if kind == "milvus":  # which Milvus answered: its memory is in this process only for Lite
            out["milvus"] = "server" if is_server_uri(s.milvus_uri or "") else "Lite"
        ids: list[str] = []
        kbs = work / "kbs"
        rng = random.Random(SEED)
        desk: Any = None
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
                if i % 100 == 0:  # Milvus Lite writes slow down with unsealed rows
                    shops.store(encoder.dim).flush()
                if i % 500 == 0:
                    log(f"{kind}: {i} shops")
            shops.store(encoder.dim).flush()  # copies are upserted without one each
            fill_s = time.perf_counter() - t0
            # a desk just started: the LRU sized by memory (KEFU_SHOP_CACHE unset), nothing loaded
            desk = ShopDesk(shops, encoder.encode_queries, None, model_id=encoder.model_id, dim=encoder.dim)
            desk.warm_up()
            measure(shops, desk, platform, ids[:1], 30, random.Random(1))  # warm the encoder and the platform
            desk._loaded.clear()
            desk._bytes = 0
            cold = measure(shops, desk, platform, ids, QUERIES, rng)
            t0 = time.perf_counter()
            preloaded = desk.preload(platform, pace=0)
            preload_s = time.perf_counter() - t0
            warm = measure(shops, desk, platform, ids, QUERIES, rng)
            kefu_mb, milvus_mb = rss_split_mb()
            m: dict[str, Any] = {
                "cold": cold,
                "warm": warm,
                "preload": {
                    "shops": preloaded,
                    "seconds": round(preload_s, 1),
                    "ms_per_shop": round(1000 * preload_s / max(1, preloaded), 2),
                },
                "loaded": desk.loaded(),
                "loaded_mb": round(desk.loaded_bytes() / 2**20, 1),
                "budget_mb": round(desk.budget / 2**20),
                "rss_mb": kefu_mb,
                "milvus_rss_mb": milvus_mb,
                "copies_seconds": round(fill_s, 1),
            }
            if size == sizes[0]:
                m["same_answers"] = same_answers_sample(shops, desk, platform, ids, SAME_QUERIES)
            log(
                f"{kind}: {size} shops: cold p50 {cold['p50_ms']} p99 {cold['p99_ms']} ms; warm p50 {warm['p50_ms']} "
                f"p99 {warm['p99_ms']} ms; {desk.loaded()} loaded ({m['loaded_mb']} MB est.), RSS {kefu_mb} MB "
                f"(+{milvus_mb} MB children); preload {m['preload']['ms_per_shop']} ms a shop"
            )
            if http:
                shops.close()  # Milvus Lite serves one process: the server opens the file itself
                m["http"] = http_random_shops(kind, home, work, ids, shops, log)
                log(f"{kind}: {size} shops over HTTP: {m['http']}")
            out["fleets"][str(size)] = m
        assert desk is not None
        kb30 = write_shop(kbs / "rebuilt", 7, pool, entries=30)
        target = ids[0]
        shops.rebuild(target, kb30)  # now a 30-entry shop
        out["rebuild_30_entries"] = while_serving(
            shops, desk, platform, target, lambda: shops.rebuild(target, kb30, force=True)
        )
        fresh = write_shop(kbs / "added", 8, pool, entries=30)
        out["add_30_entries"] = while_serving(
            shops, desk, platform, "shop-added", lambda: shops.add("shop-added", fresh)
        )
        secs = [b["seconds"] for b in out["builds"]]
        out["build_seconds"] = {"p50": pct(secs, 50), "p90": pct(secs, 90), "max": round(max(secs), 2)}
        shops.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(
    sizes: tuple[int, ...] = SIZES, kinds: tuple[str, ...] = ("faiss", "milvus"), http: bool = True
) -> dict[str, Any]:
    from indexer.encoder import load_encoder

    settings = Settings()
    encoder = load_encoder(settings)

    def log(line: str) -> None:
        print(f"bench shops: {line}", flush=True)

    backends = {kind: run_backend(kind, settings, encoder, sizes, log, http) for kind in kinds}
    loads = [
        m[phase]["load_average"] for b in backends.values() for m in b["fleets"].values() for phase in ("cold", "warm")
    ]
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "note": f"{os.cpu_count()} cores shared with other work (load average {min(loads, default=0)}-"
        f"{max(loads, default=0)} during the in-process runs)",
        "sizes": list(sizes),
        "distinct": DISTINCT,
        "queries": QUERIES,
        "cpus": os.cpu_count(),
        "backends": backends,
    }
    samples = {kind: b["fleets"][str(sizes[0])].pop("same_answers", None) for kind, b in backends.items() if sizes}
    if len(samples) == 2 and all(samples.values()):
        a, b = samples.values()
        out["same_answers"] = compare_samples(a, b)
    return out


def _label(kind: str, backend: dict[str, Any]) -> str:
    """The backend as the tables name it: milvus says which Milvus it ran on."""
    return f"{kind} ({backend['milvus']})" if backend.get("milvus") else kind


def _ms(m: dict[str, Any]) -> str:
    return f"{m['p50_ms']} / {m['p99_ms']}"


def markdown(data: dict[str, Any] | None) -> list[str]:
    """The docs/benchmarks.md section."""
    if not data:
        return []
    lines = [
        SECTION,
        "",
        f"Synthetic shops cut from the FAQ tables of ../shared/foreign (20-50 entries of one suite, two "
        f"alternative questions each); {data['distinct']} built for real, larger fleets copy their builds under "
        f"new ids (own build folder, own vector rows). {data['queries']} random (shop, query) pairs per row and "
        "phase, one at a time, in-process, real model (the query encoded once for both sides); the shop's KB and "
        "the platform help center answer together. *Cold*: a desk just started (most shops asked for the first "
        "time are loaded then); *warm*: after `ShopDesk.preload` loaded the shops the memory budget holds. RSS: "
        "this process with those shops loaded (Milvus Lite 3 runs its server as threads of the process using it, "
        "so its memory is in the rows of `milvus (Lite)`; a Milvus server's is its own process's, not in these "
        "figures; a child process would be shown after the +). Figures before the shop pack and the memory-sized "
        "LRU, and Milvus Lite at scale: [scaling](scaling.md#what-was-measured).",
        *([f"Measured {data['date']}: {data['note']}."] if data.get("note") else []),
        "",
        "| backend | shops | cold p50 / p99 ms | cold: shop loaded | warm p50 / p99 ms | shops loaded (est. MB) "
        "| RSS MB (+ children) | load ms a shop | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, b in data["backends"].items():
        for size, m in b["fleets"].items():
            c, w = m["cold"], m["warm"]
            lines.append(
                f"| {_label(kind, b)} | {int(size):,} | {_ms(c)} | {c['loaded_share']} | {_ms(w)} | {m['loaded']:,} "
                f"({m['loaded_mb']:,}) | {m['rss_mb']:,} (+ {m['milvus_rss_mb']:,}) | {m['preload']['ms_per_shop']} "
                f"| {c['failed'] + w['failed']} |"
            )
    http = [
        (_label(k, b), size, m["http"])
        for k, b in data["backends"].items()
        for size, m in b["fleets"].items()
        if "http" in m
    ]
    if http:
        lines += [
            "",
            f"Over HTTP (`kefu serve`, one worker, loopback): wrk at {HTTP_CLIENTS} connections posting random "
            f"(shop, query) pairs, {HTTP_REPEATS} runs of {HTTP_SECONDS} s after a warm-up run (the server loads "
            "shops in the background from its first shop question on); each run's figure.",
            "",
            "| backend | shops | requests/s | p50 ms | p99 ms | errors | server RSS MB | the same queries without "
            "a shop: requests/s, p50 / p99 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind, size, h in http:
            if "rps" not in h:
                lines.append(f"| {kind} | {int(size):,} | not measured: {h} |  |  |  |  |  |")
                continue
            alone = h.get("platform_alone") or {}
            lines.append(
                f"| {kind} | {int(size):,} | {', '.join(map(str, h['rps']))} | {', '.join(map(str, h['p50_ms']))} "
                f"| {', '.join(map(str, h['p99_ms']))} | {h['errors']} | {h['server_rss_mb']:,} "
                f"| {alone.get('rps')}, {alone.get('p50_ms')} / {alone.get('p99_ms')} |"
            )
    lines += [
        "",
        "| backend | build s per shop p50 / p90 / max | add one 30-entry shop while answering | rebuild one 30-entry "
        "shop while answering |",
        "|---|---|---|---|",
    ]
    for kind, b in data["backends"].items():
        bs = b["build_seconds"]
        cells = [
            f"{r['seconds']} s, {r['answers_meanwhile']} answers meanwhile, {r['failed']} failed"
            for r in (b["add_30_entries"], b["rebuild_30_entries"])
        ]
        lines.append(f"| {_label(kind, b)} | {bs['p50']} / {bs['p90']} / {bs['max']} | {cells[0]} | {cells[1]} |")
    same = data.get("same_answers")
    if same:
        lines += [
            "",
            f"Same answers on both backends ({same['pairs']:,} fixed (shop, query) pairs of the first fleet): same "
            f"top answer {same['same_top']:,}, same decision {same['same_decision']:,}, top scores within "
            f"{SCORE_TOLERANCE} {same['within_tolerance']:,} of {same['scored']:,} (largest difference "
            f"{same['max_score_diff']}).",
        ]
    return [*lines, ""]
