"""The many-shops benchmark's report: which Milvus a milvus row ran on."""

from __future__ import annotations

from typing import Any

from eval.bench_shops import markdown


def fleet(p50: float) -> dict[str, Any]:
    phase = {"p50_ms": p50, "p99_ms": 2 * p50, "loaded_share": 0.5, "failed": 0}
    return {
        "cold": phase,
        "warm": phase,
        "loaded": 100,
        "loaded_mb": 38.0,
        "rss_mb": 1000.0,
        "milvus_rss_mb": 0.0,
        "preload": {"ms_per_shop": 3.0},
        "http": {"rps": [170.0], "p50_ms": [180.0], "p99_ms": [240.0], "errors": 0, "server_rss_mb": 2790.7},
    }


def backend(**extra: Any) -> dict[str, Any]:
    run = {"seconds": 0.4, "answers_meanwhile": 50, "failed": 0}
    return {
        "fleets": {"100": fleet(6.0)},
        "build_seconds": {"p50": 0.6, "p90": 0.8, "max": 4.1},
        "add_30_entries": run,
        "rebuild_30_entries": run,
        **extra,
    }


def test_milvus_rows_say_whether_a_server_or_lite_answered() -> None:
    backends = {"faiss": backend(), "milvus": backend(milvus="server")}
    data: dict[str, Any] = {"date": "2026-12-07", "distinct": 100, "queries": 600, "backends": backends}
    text = "\n".join(markdown(data))
    assert "| faiss | 100 |" in text
    assert "| milvus (server) | 100 |" in text  # the latency, HTTP and build tables alike
    assert text.count("| milvus (server) |") == 3
    backends["milvus"] = backend(milvus="Lite")
    assert "| milvus (Lite) | 100 |" in "\n".join(markdown(data))
