"""``python -m eval.bench --only shops``: many shops on each vector store, beside the platform help center.

Synthetic shops are cut from the FAQ tables of ``../shared/foreign/*/kb/faq.csv`` (their KB files
only, never their labelled splits): 20-50 entries of one suite each, every entry with two
alternative questions made the way chat mangles a question (``service.selfcal.perturb``). The
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
QUERIES = 600  # random (shop, query) pairs answered per fleet size and backend, cold and warm each
SAME_QUERIES = 1_000  # fixed (shop, query) pairs answered on every backend and compared
SCORE_TOLERANCE = 0.002  # the bound on a score's difference between backends
HTTP_CLIENTS = 32
HTTP_SECONDS = 15
HTTP_REPEATS = 3
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
        "load_average": round(os.getloadavg()[0], 1),
    }


def same_answers_sample(shops: Any, desk: Any, platform: Any, ids: list[str], n: int) -> list[dict[str, Any]]:
    """``n`` fixed (shop, query) pairs and what each answered: decision, top answer, its score, the
    confidence (the same pairs on every backend: the seed does not depend on the backend)."""
    from service.selfcal import perturb

    rng = random.Random(SEED + 1)
    out = []
    for _ in range(n):
        shop = rng.choice(sorted(ids))
        qs = _questions(shops, shop)
        q = perturb(rng.choice(qs), rng) or qs[0]
        a = desk.answer(platform, q, shop)
        top = (a.answers or a.suggestions or [None])[0]
        out.append(
            {
                "shop": shop,
                "query": q,
                "decision": a.decision,
                "top": None if top is None else top.id,
                "score": None if top is None else round(float(top.score), 6),
                "confidence": a.trace.get("confidence"),
            }
        )
    return out


def compare_samples(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """How two backends' answers to the same pairs agree (same top answer, decision, scores)."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if (x["shop"], x["query"]) == (y["shop"], y["query"])]
    diffs = [abs(x["score"] - y["score"]) for x, y in pairs if x["score"] is not None and y["score"] is not None]
    return {
        "pairs": len(pairs),
        "same_top": sum(x["top"] == y["top"] for x, y in pairs),
        "same_decision": sum(x["decision"] == y["decision"] for x, y in pairs),
        "max_score_diff": round(max(diffs, default=0.0), 6),
        "within_tolerance": sum(d <= SCORE_TOLERANCE for d in diffs),
        "scored": len(diffs),
    }


def while_serving(shops: Any, desk: Any, platform: Any, shop: str, work: Callable[[], Any]) -> dict[str, Any]:
    """Run ``work`` (an add or a rebuild of ``shop``) while another thread keeps asking ``shop``
    (and, until it exists, another loaded shop); count failed answers."""
    stop = threading.Event()
    asked, failed = [0], [0]
    other = next(iter(desk._loaded))
    qs = _questions(shops, other)

    def ask() -> None:
        i = 0
        while not stop.is_set():
            target = shop if shops.registry.get(shop) is not None else other
            try:
                desk.answer(platform, qs[i % len(qs)], target)
            except Exception:
                failed[0] += 1
            asked[0] += 1
            i += 1

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    time.sleep(0.2)  # a few answers on the new build
    stop.set()
    t.join()
    return {"seconds": round(seconds, 2), "answers_meanwhile": asked[0], "failed": failed[0]}


def http_random_shops(
    kind: str, home: Path, work: Path, ids: list[str], shops: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    """``kefu serve`` on this index home, wrk at HTTP_CLIENTS connections posting random (shop,
    query) pairs: a warm-up run (the server preloads shops from its first shop question on), then
    HTTP_REPEATS measured runs."""
    import json
    import shutil as sh
    import subprocess

    from eval import bench

    wrk = sh.which("wrk")
    if wrk is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    from service.selfcal import perturb

    rng = random.Random(SEED + 2)
    pairs = []
    for _ in range(5_000):
        shop = rng.choice(ids)
        pairs.append((shop, perturb(rng.choice(_questions(shops, shop)), rng) or shop))
    bodies = work / "http_bodies.jsonl"
    bodies.write_text("".join(json.dumps({"query": q, "shop": s}, ensure_ascii=False) + "\n" for s, q in pairs))
    plain = work / "http_platform.jsonl"  # the same queries without a shop: the platform alone
    plain.write_text("".join(json.dumps({"query": q}, ensure_ascii=False) + "\n" for _, q in pairs))
    script = work / "bench.lua"
    script.write_text(bench.WRK_SCRIPT, "utf-8")
    env = {
        **os.environ,
        "KEFU_INDEX_DIR": str(home),
        "KEFU_VECTOR_STORE": kind,
        "KEFU_TICKETS_DB": str(work / "http_tickets.db"),
        "KEFU_RATE_LIMIT_PER_MINUTE": "0",
        "KEFU_BENCH_QUERIES": str(bodies),
    }
    env.pop("KEFU_SHOP_CACHE", None)
    port = bench._free_port()
    server = bench.start_server(port, env, workers=1)
    try:
        if bench.wait_ready(f"http://127.0.0.1:{port}", timeout_s=120) is None:
            return {"error": "server did not become ready in 120 s"}

        def run(seconds: int, queries: Path = bodies) -> dict[str, Any]:
            cmd = [wrk, "-t", "2", "-c", str(HTTP_CLIENTS), "-d", f"{seconds}s", "--timeout", "5s"]
            res = subprocess.run(
                [*cmd, "-s", str(script), f"http://127.0.0.1:{port}"],
                env={**env, "KEFU_BENCH_QUERIES": str(queries)},
                capture_output=True,
                text=True,
            )
            got = bench.wrk_summary(res.stdout)
            if got is None:
                return {"error": (res.stdout + res.stderr)[-300:]}
            got["rps"] = round(got["requests"] / got["seconds"], 1)
            return got

        warm_s = max(20, int(len(ids) * (0.03 if kind == "milvus" else 0.01)))
        warm = run(warm_s)
        log(f"{kind}: HTTP warm-up {warm_s} s: {warm.get('rps')} req/s")
        runs = [run(HTTP_SECONDS) for _ in range(HTTP_REPEATS)]
        alone = run(HTTP_SECONDS, plain)
        ok = [r for r in runs if "rps" in r]
        rss = {p: bench._proc_rss(p) for p in bench._tree(server.pid)}
        return {
            "clients": HTTP_CLIENTS,
            "warmup_seconds": warm_s,
            "rps": [r["rps"] for r in ok],
            "p50_ms": [r["p50_ms"] for r in ok],
            "p99_ms": [r["p99_ms"] for r in ok],
            "errors": sum(r["errors"] for r in ok) + len(runs) - len(ok),
            "platform_alone": {k: alone.get(k) for k in ("rps", "p50_ms", "p99_ms", "errors")},
            "server_rss_mb": round(rss.pop(server.pid, 0.0), 1),
            "server_children_rss_mb": round(sum(rss.values()), 1),
        }
    finally:
        bench.stop_server(server)


def _rss_split_mb() -> tuple[float, float]:
    """(this process, its children) resident memory in MB."""
    from eval.bench import _proc_rss, _tree

    me = os.getpid()
    return round(_proc_rss(me), 1), round(sum(_proc_rss(p) for p in _tree(me) if p != me), 1)


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
            kefu_mb, milvus_mb = _rss_split_mb()
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
        out["build_seconds"] = {"p50": _pct(secs, 50), "p90": _pct(secs, 90), "max": round(max(secs), 2)}
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
        "so its memory is in the milvus rows; a child process would be shown after the +). Figures before "
        "the shop pack and the memory-sized LRU: [scaling](scaling.md#what-was-measured).",
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
                f"| {kind} | {int(size):,} | {_ms(c)} | {c['loaded_share']} | {_ms(w)} | {m['loaded']:,} "
                f"({m['loaded_mb']:,}) | {m['rss_mb']:,} (+ {m['milvus_rss_mb']:,}) | {m['preload']['ms_per_shop']} "
                f"| {c['failed'] + w['failed']} |"
            )
    http = [(k, size, m["http"]) for k, b in data["backends"].items() for size, m in b["fleets"].items() if "http" in m]
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
        lines.append(f"| {kind} | {bs['p50']} / {bs['p90']} / {bs['max']} | {cells[0]} | {cells[1]} |")
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
