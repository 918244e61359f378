"""A build folder on disk: its manifest, entries and other parts, read, written and checked for compatibility.

Layout of one build folder::

    manifest.json   format, model id, dimension, prompts, normaliser version, KB hash, counts,
                    build time, calibration (written by ``kefu eval calibrate``)
    vectors.npy     float32 [n, dim], unit length, row i ↔ chunks.jsonl line i
    index.faiss     the FAISS index over vectors.npy
    chunks.jsonl    one Chunk per line (text, unit id, document id, heading path …)
    anchors.npy     out-of-scope example vectors (negative anchors) + anchors.json labels
    entries.json    the FAQ entries (id → question, answer, category, cited clauses) for answers
    units.json      the documents' answer units (id → document, title, heading path, clause
                    number, whole text): a clause is answered and cited whole, not by its rows
    resources/      the KB's resource files as built (greetings, synonyms, out-of-scope, sensitive
                    terms, jieba userdict): the service reads them here, not from the KB's path
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from indexer.chunking import Chunk, DocUnit
from indexer.normalize import NORMALIZER_VERSION
from indexer.vectors import VectorIndex
from kb.errors import IndexMismatchError, IndexMissingError, IndexStateError

# 2: documents answer by clause or section (units ``doc-id.5`` / ``doc-id.s1`` of several rows,
# units.json), not row by row (``doc-id#3``); FAQ entries carry their cited clauses.
FORMAT_VERSION = 2


class Manifest(BaseModel):
    """What an index folder says about itself."""

    format_version: int = FORMAT_VERSION
    build_id: str
    model_id: str
    dim: int
    query_prompt: str
    doc_prompt: str
    question_side: str = Field("query", description="prompt used for stored questions (query-to-query)")
    question_path: str | None = Field(
        None, description="how stored questions were encoded (``question_path``); an index without it predates it"
    )
    doc_precision: str | None = Field(
        None, description="what answers and passages were embedded in (fp32 or bf16); None: before it was kept (fp32)"
    )
    normalizer_version: str = NORMALIZER_VERSION
    kb_hash: str
    kb_root: str
    counts: dict[str, int]
    index_kind: str
    chunk_chars: int
    built_at: str
    build_seconds: float
    cache_hits: int = 0
    calibration: dict[str, Any] | None = None
    calibration_note: str | None = Field(
        None,
        description="the line `kefu build` printed about the calibration (which one, and why); None in a build "
        "from before it was kept, or whose calibration was replaced since (``indexer.store.calibration_note``)",
    )


@dataclass(frozen=True)
class EntryInfo:
    """What an answer needs of one FAQ entry (entries.json)."""

    id: str
    question: str
    answer: str
    category: str
    related: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()  # ids of entries merged into this one (``FAQEntry.replaces``)
    rules: tuple[str, ...] = ()  # clauses the answer cites, as ``doc-id#5`` (``FAQEntry.rules``)
    source_id: str | None = None  # an imported row's original id, when its id is a slug made from it

    def to_json(self) -> dict[str, Any]:
        """entries.json's record; ``source_id`` only when there is one (a KB of slugs writes what it did before)."""
        data = dict(vars(self))  # a copy: never the instance's own __dict__
        if self.source_id is None:
            del data["source_id"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryInfo:
        seqs = {k: tuple(data.get(k, ())) for k in ("related", "replaces", "rules")}
        return cls(**{**data, **seqs})


@dataclass(frozen=True)
class BuildParts:
    """What a build folder holds besides its vectors (a vector store may hold those)."""

    chunks: list[Chunk]
    anchors: np.ndarray
    anchor_labels: list[str]
    entries: dict[str, EntryInfo]
    units: dict[str, DocUnit]


def read_parts(folder: Path) -> BuildParts:
    """Chunks, anchors, entries and document units of a build folder; IndexStateError if damaged."""
    try:
        chunks = [
            Chunk.from_json(json.loads(line))
            for line in (folder / "chunks.jsonl").read_text("utf-8").splitlines()
            if line.strip()
        ]
        anchors = np.load(folder / "anchors.npy", allow_pickle=False)
        labels = json.loads((folder / "anchors.json").read_text("utf-8"))
        entries = {
            k: EntryInfo.from_json(v) for k, v in json.loads((folder / "entries.json").read_text("utf-8")).items()
        }
        units = {k: DocUnit.from_json(v) for k, v in json.loads((folder / "units.json").read_text("utf-8")).items()}
    except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise IndexStateError(f"index at {folder} is truncated or corrupt ({exc}); run `kefu build`") from exc
    return BuildParts(chunks, anchors, labels, entries, units)


def write_parts(folder: Path, parts: BuildParts) -> None:
    """Write what ``read_parts`` reads into an existing ``folder`` (not the vectors, not the manifest)."""
    with (folder / "chunks.jsonl").open("w", encoding="utf-8") as f:
        for c in parts.chunks:
            f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
    np.save(folder / "anchors.npy", parts.anchors)
    (folder / "anchors.json").write_text(json.dumps(parts.anchor_labels, ensure_ascii=False), "utf-8")
    (folder / "entries.json").write_text(
        json.dumps({k: v.to_json() for k, v in parts.entries.items()}, ensure_ascii=False), "utf-8"
    )
    (folder / "units.json").write_text(
        json.dumps({k: u.to_json() for k, u in parts.units.items()}, ensure_ascii=False), "utf-8"
    )


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a build folder; IndexMissingError without one, IndexStateError if unreadable."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise IndexMissingError(f"no index at {folder} (no manifest.json); run `kefu build`")
    try:
        return Manifest.model_validate_json(path.read_text("utf-8"))
    except ValueError as exc:
        raise IndexStateError(f"index manifest {path} is unreadable ({exc}); run `kefu build`") from exc


def read_vectors(folder: Path, manifest: Manifest) -> tuple[np.ndarray, VectorIndex]:
    """The vectors and FAISS index of a build folder, checked against its manifest; IndexStateError if damaged."""
    try:
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        vindex = VectorIndex.load(folder / "index.faiss")
    except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise IndexStateError(f"index at {folder} is truncated or corrupt ({exc}); run `kefu build`") from exc
    if vectors.ndim != 2 or vectors.shape[1] != manifest.dim or vectors.shape[0] != manifest.counts.get("vectors"):
        raise IndexStateError(
            f"index at {folder} has vectors of shape {vectors.shape}, manifest says "
            f"{manifest.counts.get('vectors')}×{manifest.dim}; run `kefu build`"
        )
    return vectors, vindex


def check_compatible(manifest: Manifest, model_id: str | None, normalizer_version: str, folder: Path) -> None:
    """IndexMismatchError unless this kefu can serve the build: same format, model and normaliser."""
    if manifest.format_version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"index at {folder} has format {manifest.format_version}, this kefu reads {FORMAT_VERSION}; "
            "run `kefu build` to rebuild it"
        )
    if model_id is not None and manifest.model_id != model_id:
        raise IndexMismatchError(
            f"index at {folder} was built with model {manifest.model_id!r} but the configured model is "
            f"{model_id!r}; run `kefu build` to rebuild for this model, or set KEFU_MODEL back"
        )
    if manifest.normalizer_version != normalizer_version:
        raise IndexMismatchError(
            f"index at {folder} was built with normaliser v{manifest.normalizer_version}, this kefu uses "
            f"v{normalizer_version}; run `kefu build` to rebuild"
        )


def now_iso() -> str:
    """The current UTC time to the second, as a build records it (``Manifest.built_at``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
