"""Evaluate on a dataset in the BEIR layout with a temporary index built from its corpus."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from eval.dataset import EvalItem
from eval.runner import RunResult, evaluate
from indexer.build import build_index
from kb.errors import KBError
from kb.loader import load_resources
from kb.schema import Document, KnowledgeBase, Source
from kb.settings import BUNDLED_KB, Settings


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise KBError(f"BEIR folder is missing {path.name} (expected corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    out = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise KBError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
    return out


def load_beir(folder: Path) -> tuple[KnowledgeBase, list[EvalItem]]:
    corpus = _jsonl(folder / "corpus.jsonl")
    queries = _jsonl(folder / "queries.jsonl")
    qrels_path = folder / "qrels" / "test.tsv"
    if not qrels_path.is_file():
        raise KBError(f"BEIR folder is missing qrels/test.tsv in {folder}")
    qrels: dict[str, list[str]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] in ("query-id", "query_id"):
                continue
            if float(row[2]) > 0:
                qrels.setdefault(row[0], []).append(row[1])
    docs = tuple(
        Document(
            id=str(d["_id"]),
            title=str(d.get("title") or d["_id"]),
            category="beir",
            body=str(d.get("text", "")),
            source=Source("corpus.jsonl", n),
            kind="doc",
        )
        for n, d in enumerate(corpus, 1)
    )
    kb = KnowledgeBase(folder, (), docs, load_resources(BUNDLED_KB), {}, f"beir:{folder.name}")
    items = [
        EvalItem(
            id=str(q["_id"]),
            query=str(q["text"]),
            relevant=tuple(qrels.get(str(q["_id"]), ())),
            expect="answer" if str(q["_id"]) in qrels else "handoff",
            reason=None if str(q["_id"]) in qrels else "low_confidence",
            tags=(),
            category="beir",
        )
        for q in queries
    ]
    return kb, items


def run_beir(folder: Path, runtime: Any, settings: Settings, limit: int | None, console: Any) -> RunResult:
    kb, items = load_beir(folder)
    if limit:
        items = items[:limit]
    with tempfile.TemporaryDirectory():
        index = build_index(kb, runtime.encoder, settings.chunk_chars, settings.index_kind)
    answerer = runtime.answerer(index=index)
    return evaluate(answerer, items)
