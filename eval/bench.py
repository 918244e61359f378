"""``make bench``: latency against the encoder floor, a naive baseline, HTTP load, builds, scale.

Writes docs/benchmarks.md (and docs/benchmarks.json). Every figure is a median of repeated runs
with its spread (min–max) so noise is visible. Run on a quiet machine.

This module runs the parts and writes the report; the parts are measured in eval/bench_measure.py,
the HTTP ones on a server that eval/bench_server.py starts.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval import bench_shops
from eval.bench_measure import RATIO_BLOCK, REPEATS, builds, http_load, in_process, scale
from kb.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _http_section(http: dict[str, Any] | None, s: Callable[[dict[str, float] | None], str]) -> list[str]:
    if http is None:
        return []
    workers = http.get("workers", 1)
    lines = [f"## HTTP (`kefu serve --workers {workers}`, loopback, wrk)", ""]
    if "levels" not in http:
        return [*lines, f"not measured: {http}", ""]
    lines += [
        f"Ready {http['ready_seconds']} s after start; server RSS after load {http['server_rss_mb']} MB "
        f"(all worker processes).",
        "",
        "| clients | requests/s | p50 ms | p99 ms | errors | server CPU % |",
        "|---|---|---|---|---|---|",
    ]
    for c, v in http["levels"].items():
        row = [c, s(v["rps"]), s(v["p50_ms"]), s(v["p99_ms"]), v["errors"], s(v["cpu_percent"])]
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return [*lines, ""]


def write_markdown(data: dict[str, Any]) -> Path:
    ip, b, sc = data["in_process"], data["builds"], data["scale"]

    def s(d: dict[str, float] | None, unit: str = "") -> str:
        if not d:
            return "–"
        return f"{d['median']}{unit} ({d['min']}–{d['max']})"

    lines = [
        "# kefu benchmarks",
        "",
        f"{data['date']} · {data['machine']} · model `{data['model']}` · median of {REPEATS} runs (min–max).",
        "Reproduce: `make bench` (writes this file and docs/benchmarks.json).",
        "",
        "## In-process answer latency (test split queries, one at a time)",
        "",
        "| | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
        f"| kefu `Answerer.answer` | {s(ip['answer']['p50'])} | {s(ip['answer']['p95'])} | {s(ip['answer']['p99'])} |",
        f"| encoder only (the floor) | {s(ip['encoder']['p50'])} | {s(ip['encoder']['p95'])} | "
        f"{s(ip['encoder']['p99'])} |",
        *(
            [
                f"| kefu, with an earlier customer turn as `history` | {s(hist['p50'])} | {s(hist['p95'])} | "
                f"{s(hist['p99'])} |"
            ]
            if (hist := ip.get("answer_with_history"))
            else []
        ),
        f"| encoder, library `encode()` in float32 | {s(ip['encoder_library_fp32']['p50'])} | "
        f"{s(ip['encoder_library_fp32']['p95'])} | {s(ip['encoder_library_fp32']['p99'])} |",
        f"| naive: library `encode()` + `semantic_search` | {s(ip['naive']['p50'])} | {s(ip['naive']['p95'])} | "
        f"{s(ip['naive']['p99'])} |",
        "",
        f"The encoder row is kefu's query path: {data.get('query_path', 'see README')} "
        "(`KEFU_QUERY_RUNTIME`, `KEFU_QUERY_INT8`); documents (answers, clauses, passages) are encoded in the "
        "build, in bfloat16 where the CPU does it natively (`KEFU_DOC_PRECISION`). "
        f"Answers and encoder-only calls alternate in blocks of {RATIO_BLOCK} queries, so drift of the machine "
        "falls on both.",
        "",
        f"p50 ratio kefu / encoder-only: **{ip['ratio_p50_answer_to_encoder']}** (target ≤ 1.3; "
        f"per run {', '.join(str(r) for r in ip.get('ratio_p50_per_run', []))}); "
        f"kefu / naive baseline: {ip['ratio_p50_answer_to_naive']}. Process peak RSS {ip['rss_mb']} MB.",
        "",
    ]
    for key in ("http", "http_2_workers"):
        lines += _http_section(data.get(key), s)
    lines += [
        "",
        "## Index build (bundled KB)",
        "",
        f"Model load {b['model_load_seconds']} s; cold build {s(b['cold_seconds'], ' s')}; "
        f"warm rebuild with the embedding cache {s(b['warm_seconds'], ' s')}.",
        "",
        "## Scale (synthetic clustered 384-d unit vectors, 200 queries, k=10)",
        "",
        "| vectors | index | search ms/query | recall@10 vs exact | index MB | build s |",
        "|---|---|---|---|---|---|",
    ]
    for n, row in sc.items():
        for kind, v in row.items():
            lines.append(
                f"| {int(n):,} | {kind} (built as {v['built_as']}) | {s(v['search_ms'])} | {v['recall@10']} | "
                f"{v['index_mb']} | {v['build_s']} |"
            )
    DOCS.mkdir(exist_ok=True)
    path = DOCS / "benchmarks.md"
    lines += bench_shops.markdown(data.get("shops")) or _kept_section(path)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    (DOCS / "benchmarks.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), "utf-8")
    return path


def _kept_section(path: Path) -> list[str]:
    """The many-shops section of an existing docs/benchmarks.md (it is measured on its own)."""
    if not path.is_file():
        return []
    text = path.read_text("utf-8")
    start = text.find(bench_shops.SECTION)
    return [*text[start:].rstrip("\n").split("\n"), ""] if start >= 0 else []


def write_section(lines: list[str], data: dict[str, Any]) -> Path:
    """Replace (or append) the many-shops section of docs/benchmarks.md; its data beside it."""
    path = DOCS / "benchmarks.md"
    text = path.read_text("utf-8") if path.is_file() else "# kefu benchmarks\n"
    start = text.find(bench_shops.SECTION)
    head = text[:start] if start >= 0 else text.rstrip("\n") + "\n\n"
    path.write_text(head + "\n".join(lines) + "\n", "utf-8")
    (DOCS / "benchmarks_shops.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), "utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eval.bench", description="kefu benchmarks (docs/benchmarks.md)")
    parser.add_argument(
        "--only",
        choices=("in_process", "http", "http_2_workers", "builds", "scale", "shops"),
        help="run one part; print it, write nothing (shops, which a full run leaves out: writes its section of "
        "docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    from indexer.encoder import load_encoder

    encoder = load_encoder(settings)
    data: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "model": encoder.model_id,
        "query_path": f"{getattr(encoder, 'query_runtime', 'torch')}, "
        f"{'int8' if getattr(encoder, 'query_int8', False) else 'float32'}",
    }
    del encoder  # each part loads what it measures
    steps = (
        ("in_process", lambda: in_process(settings)),
        ("http", lambda: http_load(settings)),
        ("http_2_workers", lambda: http_load(settings, workers=2, levels=(32,))),
        ("builds", lambda: builds(settings)),
        ("scale", scale),
        ("shops", lambda: bench_shops.run()),
    )
    for name, fn in steps:
        if args.only and name != args.only:
            continue
        if name == "shops" and not args.only:  # hours of work: `--only shops` measures it on its own
            continue
        print(f"bench: {name} …", flush=True)
        data[name] = fn()
    if args.only == "shops":  # hours of work: its section is kept, not redone by the next full run
        print(write_section(bench_shops.markdown(data["shops"]), data["shops"]))
    if args.only:
        print(json.dumps(data, ensure_ascii=False, indent=1))
        return
    print(write_markdown(data))


if __name__ == "__main__":
    main()
