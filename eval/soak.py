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
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from eval.bench_server import free_port, proc_rss, start_server, stop_server, wait_ready, write_queries, wrk_summary
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
                rss.append((now, proc_rss(pid)))
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


BURST_LUA = r"""
local queries = {}
for line in io.lines(os.getenv("KEFU_BENCH_QUERIES")) do table.insert(queries, line) end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) i = 0; ok = 0; shed = 0; other = 0; backoff = 0 end
-- Clients honour Retry-After: 1 as real ones do; each shed response delays one later request.
function delay()
  if backoff > 0 then backoff = backoff - 1; return 1000 end
  return 0
end
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/answer", {["Content-Type"] = "application/json"}, queries[(i % #queries) + 1])
end
response = function(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 or status == 429 then shed = shed + 1; backoff = backoff + 1
  else other = other + 1 end
end
done = function(summary, latency, requests)
  local o, s, x = 0, 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); s = s + t:get("shed"); x = x + t:get("other") end
  io.write(string.format('KEFU {"requests": %d, "ok": %d, "shed": %d, "other": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.2f, "p99_ms": %.2f}\n', summary.requests, o, s, x,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
PROBE_REQUESTS = 60  # sequential probe requests sent while the burst runs


def _burst(base: str, queries: list[str], clients: int, seconds: int) -> dict[str, Any]:
    """wrk opens ``clients`` connections sending back-to-back; meanwhile a probe sends one request
    at a time and times its own answers, so shed latency is what a newcomer sees (not the load
    generator's own queueing). Overload must be shed with 429/503 fast, and service recover."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    tmp = Path(tempfile.mkdtemp())
    write_queries(tmp / "q.jsonl", queries)
    (tmp / "burst.lua").write_text(BURST_LUA, "utf-8")
    cmd = [
        wrk,
        "-t",
        "2",
        "-c",
        str(clients),
        "-d",
        f"{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(tmp / "burst.lua"),
        base,
    ]
    hammer = subprocess.Popen(
        cmd, env={**os.environ, "KEFU_BENCH_QUERIES": str(tmp / "q.jsonl")}, stdout=subprocess.PIPE, text=True
    )
    probe: dict[int, list[float]] = {}
    with httpx.Client(base_url=base, timeout=30.0) as client:
        time.sleep(min(3.0, seconds / 4))  # let the burst build up first
        for i in range(PROBE_REQUESTS):
            t0 = time.perf_counter()
            try:
                status = client.post("/v1/answer", json={"query": queries[i % len(queries)]}).status_code
            except httpx.HTTPError:
                status = 0
            probe.setdefault(status, []).append((time.perf_counter() - t0) * 1000)
            if hammer.poll() is not None:
                break
        out, _ = hammer.communicate(timeout=seconds + 60)
        totals = wrk_summary(out) or {"error": out[-300:]}
        time.sleep(2.0)  # recovery: after the burst, ordinary requests succeed again
        rec = [client.post("/v1/answer", json={"query": q}).status_code for q in queries[:20]]
    shed = probe.get(503, []) + probe.get(429, [])
    return {
        "clients": clients,
        "seconds": seconds,
        "wrk": totals,
        "probe_status_counts": {str(k): len(v) for k, v in sorted(probe.items())},
        "probe_shed_p50_ms": round(percentile(shed, 50), 2) if shed else None,
        "probe_shed_max_ms": round(max(shed), 2) if shed else None,
        "probe_ok_p50_ms": round(percentile(probe.get(200, []), 50), 2) if probe.get(200) else None,
        "probe_ok_max_ms": round(max(probe[200]), 2) if probe.get(200) else None,
        "recovered": all(s == 200 for s in rec),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=40.0, help="steady requests per second")
    ap.add_argument("--burst-clients", type=int, default=400)
    ap.add_argument("--burst-seconds", type=int, default=30)
    ap.add_argument("--max-inflight", type=int, default=64, help="server KEFU_MAX_INFLIGHT during the test")
    args = ap.parse_args()
    queries = [it.query for it in load_split("test")]
    port = free_port()
    tmp = Path(tempfile.mkdtemp())
    env = {
        **os.environ,
        "KEFU_RATE_LIMIT_PER_MINUTE": "0",
        "KEFU_TICKETS_DB": str(tmp / "t.db"),
        "KEFU_MAX_INFLIGHT": str(args.max_inflight),
    }
    server = start_server(port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        if wait_ready(base) is None:
            raise SystemExit("server did not become ready within 60 s")
        steady = asyncio.run(_steady(base, queries, args.rate, args.minutes * 60, server.pid))
        print("steady:", json.dumps(steady))
        burst = _burst(base, queries, args.burst_clients, args.burst_seconds)
        print("burst:", json.dumps(burst))
    finally:
        stop_server(server)
    DOCS.mkdir(exist_ok=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "steady": steady, "burst": burst, "args": vars(args)}
    (DOCS / "reliability.json").write_text(json.dumps(out, ensure_ascii=False, indent=1), "utf-8")
    print(f"wrote {DOCS / 'reliability.json'}")


if __name__ == "__main__":
    main()
