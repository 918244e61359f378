"""``kefu serve`` on loopback for the benchmarks and the soak: start, wait, load with wrk, stop, /proc figures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WRK_SCRIPT = r"""
local queries = {}
for line in io.lines(os.getenv("KEFU_BENCH_QUERIES")) do table.insert(queries, line) end
local i = 0
request = function()
  i = i + 1
  local q = queries[(i % #queries) + 1]
  return wrk.format("POST", "/v1/answer", {["Content-Type"] = "application/json"}, q)
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout
  io.write(string.format('KEFU {"requests": %d, "seconds": %.3f, "errors": %d, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, errors, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def write_queries(path: Path, queries: list[str]) -> Path:
    """One JSON request body per line, for the wrk scripts (KEFU_BENCH_QUERIES)."""
    path.write_text("".join(json.dumps({"query": q}, ensure_ascii=False) + "\n" for q in queries), "utf-8")
    return path


def wrk_summary(stdout: str) -> dict[str, Any] | None:
    """The JSON object a wrk script's done() prints after ``KEFU ``, or None if it printed none."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("KEFU ")), None)
    return json.loads(line[5:]) if line else None


def start_server(port: int, env: dict[str, str], workers: int | None = None) -> subprocess.Popen[bytes]:
    """`kefu serve` on a loopback port, output discarded; ``workers`` None leaves it to the settings."""
    cmd = [sys.executable, "-m", "kefu_cli", "serve", "--port", str(port)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(base: str, timeout_s: float = 60.0) -> float | None:
    """Seconds until ``/readyz`` answers 200, or None if it does not within ``timeout_s``."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return None


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Ask the server to shut down; kill it if it does not within 10 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


def process_tree(pid: int) -> list[int]:
    """A process and its children (uvicorn's worker processes)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we looked
    return [pid, *kids]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process and its children have used so far."""
    return sum(_proc_cpu(p) for p in process_tree(pid))


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> float:
    """Resident memory of one process in MB (0.0 when /proc does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
