"""``make soak``: a bounded soak at a steady rate, then a burst beyond capacity, on loopback.

Starts `kefu serve` on a free loopback port, sends a steady stream of real eval queries
(default 10 minutes at 40 requests/s — well inside capacity on 2 cores), records errors,
latency per minute and server RSS; then opens many concurrent clients at once to check that
overload is shed quickly (429/503) rather than queued without bound, and that service recovers.
Every loop is bounded in count and time; only 127.0.0.1 is contacted. Writes
docs/reliability.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from eval.bench import _free_port, _proc_rss, stop_server
from eval.dataset import load_split
from eval.metrics import percentile

DOCS = Path(__file__).resolve().parents[1] / "docs"


async def _steady(base: str, queries: list[str], rate: float, seconds: float, pid: int) -> dict[str, Any]:
    interval = 1.0 / rate
    results: list[tuple[float, int, float]] = []  # (t, status, latency ms)
    rss: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=10.0, limits=limits) as client:
        t0 = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            start = time.perf_counter()
            try:
                r = await client.post("/v1/answer", json={"query": queries[i % len(queries)]})
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            results.append((start - t0, status, (time.perf_counter() - start) * 1000))

        i = 0
        next_rss = 0.0
        while (now := time.perf_counter() - t0) < seconds:
            if now >= next_rss:
                rss.append((now, _proc_rss(pid)))
                next_rss += 10.0
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    per_minute: dict[int, list[float]] = {}
    for t, status, ms in results:
        if status == 200:
            per_minute.setdefault(int(t // 60), []).append(ms)
    errors = sum(s != 200 for _, s, _ in results)
    first_rss = statistics.mean(v for _, v in rss[1:4]) if len(rss) > 3 else rss[0][1]
    last_rss = statistics.mean(v for _, v in rss[-3:])
    return {
        "seconds": seconds,
        "rate": rate,
        "requests": len(results),
        "errors": errors,
        "p50_ms": round(percentile([ms for _, s, ms in results if s == 200], 50), 2),
        "p99_ms": round(percentile([ms for _, s, ms in results if s == 200], 99), 2),
        "per_minute_p50_ms": {m: round(percentile(v, 50), 2) for m, v in sorted(per_minute.items())},
        "per_minute_p99_ms": {m: round(percentile(v, 99), 2) for m, v in sorted(per_minute.items())},
        "rss_mb_start": round(first_rss, 1),
        "rss_mb_end": round(last_rss, 1),
        "rss_growth_percent": round(100 * (last_rss - first_rss) / first_rss, 2),
    }


async def _burst(base: str, queries: list[str], clients: int, per_client: int) -> dict[str, Any]:
    """Many clients at once, each sending back-to-back: overload must be shed, fast."""
    statuses: list[int] = []
    latencies: dict[int, list[float]] = {}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:

        async def worker(w: int) -> None:
            for j in range(per_client):
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/answer", json={"query": queries[(w * per_client + j) % len(queries)]})
                    s = r.status_code
                except httpx.HTTPError:
                    s = 0
                statuses.append(s)
                latencies.setdefault(s, []).append((time.perf_counter() - start) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        seconds = time.perf_counter() - t0
        # recovery: after the burst, ordinary requests succeed again
        await asyncio.sleep(2.0)
        rec = [(await client.post("/v1/answer", json={"query": q})).status_code for q in queries[:20]]
    counts = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return {
        "clients": clients,
        "requests": len(statuses),
        "seconds": round(seconds, 2),
        "status_counts": counts,
        "shed_p50_ms": round(percentile(latencies.get(503, []) + latencies.get(429, []), 50), 2),
        "ok_p99_ms": round(percentile(latencies.get(200, []), 99), 2),
        "recovered": all(s == 200 for s in rec),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=40.0, help="steady requests per second")
    ap.add_argument("--burst-clients", type=int, default=400)
    ap.add_argument("--max-inflight", type=int, default=64, help="server KEFU_MAX_INFLIGHT during the test")
    args = ap.parse_args()
    queries = [it.query for it in load_split("test")]
    port = _free_port()
    tmp = Path(tempfile.mkdtemp())
    env = {
        **os.environ,
        "KEFU_RATE_LIMIT_PER_MINUTE": "0",
        "KEFU_TICKETS_DB": str(tmp / "t.db"),
        "KEFU_MAX_INFLIGHT": str(args.max_inflight),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "kefu_cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("server did not become ready within 60 s")
        steady = asyncio.run(_steady(base, queries, args.rate, args.minutes * 60, server.pid))
        print("steady:", json.dumps(steady))
        burst = asyncio.run(_burst(base, queries, args.burst_clients, 5))
        print("burst:", json.dumps(burst))
    finally:
        stop_server(server)
    DOCS.mkdir(exist_ok=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "steady": steady, "burst": burst, "args": vars(args)}
    (DOCS / "reliability.json").write_text(json.dumps(out, ensure_ascii=False, indent=1), "utf-8")
    print(f"wrote {DOCS / 'reliability.json'}")


if __name__ == "__main__":
    main()
