"""Evaluate on a dataset in the BEIR layout with a temporary index built from its corpus."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from eval.dataset import EvalItem
from eval.runner import RunResult, evaluate
from indexer.build import build_index
from kb.errors import ConfigError, KBError
from kb.loader import load_resources
from kb.schema import Document, ImportedEntry, KnowledgeBase, Source, entry_slug
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


CORPUS_KINDS = ("auto", "faq", "doc")
FAQ_MAX_MEDIAN_CHARS = 64  # auto: a corpus whose median text is this short is a list of questions


def corpus_kind(corpus: list[dict[str, Any]], kind: str = "auto") -> str:
    """``faq`` (each corpus text is a question: an FAQ entry) or ``doc`` (passages to chunk)."""
    if kind not in CORPUS_KINDS:
        raise ConfigError(f"--corpus {kind!r} is unknown; allowed: {', '.join(CORPUS_KINDS)}")
    if kind != "auto":
        return kind
    lengths = sorted(len(str(d.get("text", ""))) for d in corpus)
    return "faq" if lengths and lengths[len(lengths) // 2] <= FAQ_MAX_MEDIAN_CHARS else "doc"


def load_beir(folder: Path, kind: str = "auto") -> tuple[KnowledgeBase, list[EvalItem]]:
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
    kind = corpus_kind(corpus, kind)
    entries = tuple(
        ImportedEntry(
            id=entry_slug(str(d["_id"])),
            category="beir",
            question=str(d.get("title") or d.get("text") or d["_id"]),
            answer=str(d.get("text") or d.get("title") or d["_id"]),
            source_id=str(d["_id"]) if entry_slug(str(d["_id"])) != str(d["_id"]) else None,
        )
        for d in corpus
        if kind == "faq"
    )
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
        if kind == "doc"
    )
    kb = KnowledgeBase(folder, entries, docs, load_resources(BUNDLED_KB), {}, f"beir:{folder.name}:{kind}")
    # an FAQ entry's id is the slug of the corpus id; labels name the corpus id
    name = entry_slug if kind == "faq" else str
    items = [
        EvalItem(
            id=str(q["_id"]),
            query=str(q["text"]),
            relevant=tuple(name(r) for r in qrels.get(str(q["_id"]), ())),
            expect="answer" if str(q["_id"]) in qrels else "handoff",
            reason=None if str(q["_id"]) in qrels else "low_confidence",
            tags=(),
            category="beir",
        )
        for q in queries
    ]
    return kb, items


def run_beir(
    folder: Path, runtime: Any, settings: Settings, limit: int | None, console: Any, kind: str = "auto"
) -> RunResult:
    """Build the corpus as a KB (no index home touched), self-calibrate it as `kefu build` would,
    and evaluate its queries."""
    from service.policy import Calibration
    from service.selfcal import build_calibrator

    kb, items = load_beir(folder, kind)
    if limit:
        items = items[:limit]
    index = build_index(kb, runtime.encoder, settings.chunk_chars, settings.index_kind)
    cal, why = build_calibrator(settings, runtime.encoder)(index)
    if console is not None:
        console.print(why, highlight=False, soft_wrap=True)
    answerer = runtime.answerer(index=index, calibration=Calibration.from_json(cal))
    return evaluate(answerer, items)
