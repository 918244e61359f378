"""What the many-shops benchmark measures: latency, agreement across backends, serving during builds, HTTP."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_server import (
    WRK_SCRIPT,
    free_port,
    proc_rss,
    process_tree,
    start_server,
    stop_server,
    wait_ready,
    wrk_summary,
)
from eval.bench_shops_fleet import SEED, shop_questions

SCORE_TOLERANCE = 0.002  # the bound on a score's difference between backends
HTTP_CLIENTS = 32
HTTP_SECONDS = 15
HTTP_REPEATS = 3


def _rss_tree_mb(pid: int | None = None) -> float:
    """Resident memory of a process and its children (MB)."""
    return round(sum(proc_rss(p) for p in process_tree(pid or os.getpid())), 1)


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values``, rounded to 0.01 ms (NaN when there are none)."""
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def rss_split_mb() -> tuple[float, float]:
    """(this process, its children) resident memory in MB."""
    me = os.getpid()
    return round(proc_rss(me), 1), round(sum(proc_rss(p) for p in process_tree(me) if p != me), 1)


def measure(shops: Any, desk: Any, platform: Any, ids: list[str], n: int, rng: random.Random) -> dict[str, Any]:
    """Answer ``n`` random (shop, query) pairs one at a time; latency, LRU hits, decisions."""
    from service.selfcal_queries import perturb

    questions: dict[str, list[str]] = {}
    lat: list[float] = []
    hits = 0
    owners = {"shop": 0, "platform": 0}
    failed = 0
    for _ in range(n):
        shop = rng.choice(ids)
        qs = questions.get(shop) or questions.setdefault(shop, shop_questions(shops, shop))
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
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "loaded_share": round(hits / max(1, len(lat)), 3),
        "first_answer_owner": owners,
        "failed": failed,
        "queries": len(lat),
        "load_average": round(os.getloadavg()[0], 1),
    }


def same_answers_sample(shops: Any, desk: Any, platform: Any, ids: list[str], n: int) -> list[dict[str, Any]]:
    """``n`` fixed (shop, query) pairs and what each answered: decision, top answer, its score, the
    confidence (the same pairs on every backend: the seed does not depend on the backend)."""
    from service.selfcal_queries import perturb

    rng = random.Random(SEED + 1)
    out = []
    for _ in range(n):
        shop = rng.choice(sorted(ids))
        qs = shop_questions(shops, shop)
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
    qs = shop_questions(shops, other)

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

    wrk = sh.which("wrk")
    if wrk is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    from service.selfcal_queries import perturb

    rng = random.Random(SEED + 2)
    pairs = []
    for _ in range(5_000):
        shop = rng.choice(ids)
        pairs.append((shop, perturb(rng.choice(shop_questions(shops, shop)), rng) or shop))
    bodies = work / "http_bodies.jsonl"
    bodies.write_text("".join(json.dumps({"query": q, "shop": s}, ensure_ascii=False) + "\n" for s, q in pairs))
    plain = work / "http_platform.jsonl"  # the same queries without a shop: the platform alone
    plain.write_text("".join(json.dumps({"query": q}, ensure_ascii=False) + "\n" for _, q in pairs))
    script = work / "bench.lua"
    script.write_text(WRK_SCRIPT, "utf-8")
    env = {
        **os.environ,
        "KEFU_INDEX_DIR": str(home),
        "KEFU_VECTOR_STORE": kind,
        "KEFU_TICKETS_DB": str(work / "http_tickets.db"),
        "KEFU_RATE_LIMIT_PER_MINUTE": "0",
        "KEFU_BENCH_QUERIES": str(bodies),
    }
    env.pop("KEFU_SHOP_CACHE", None)
    port = free_port()
    server = start_server(port, env, workers=1)
    try:
        if wait_ready(f"http://127.0.0.1:{port}", timeout_s=120) is None:
            return {"error": "server did not become ready in 120 s"}

        def run(seconds: int, queries: Path = bodies) -> dict[str, Any]:
            cmd = [wrk, "-t", "2", "-c", str(HTTP_CLIENTS), "-d", f"{seconds}s", "--timeout", "5s"]
            res = subprocess.run(
                [*cmd, "-s", str(script), f"http://127.0.0.1:{port}"],
                env={**env, "KEFU_BENCH_QUERIES": str(queries)},
                capture_output=True,
                text=True,
            )
            got = wrk_summary(res.stdout)
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
        rss = {p: proc_rss(p) for p in process_tree(server.pid)}
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
        stop_server(server)
