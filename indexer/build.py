"""Build an index from a knowledge base: chunk, embed (with cache), verify, swap in."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from indexer.chunking import QUESTION_KINDS, Chunk, chunk_kb, units_of
from indexer.embcache import EmbeddingCache
from indexer.encoder import Encoder, policy_of
from indexer.encoders.base import doc_precision_of
from indexer.folder import EntryInfo, Manifest, now_iso
from indexer.index import Index
from indexer.normalize import normalize
from indexer.store import IndexStore, calibration_note
from indexer.vectors import VectorIndex
from kb.errors import IndexStateError
from kb.modes import DocPrecision
from kb.schema import KnowledgeBase

ProgressFn = Callable[[int, int], None]
# Fits a calibration for a freshly built index that has none of its own (the self-calibration,
# which lives in the service layer): returns the calibration (as stored in the manifest) and one
# line saying what it is.
CalibrateFn = Callable[[Index], tuple[dict[str, Any] | None, str]]
ENCODE_BATCH = 64  # texts per encoder call during builds: bounded memory, frequent progress


@dataclass(frozen=True)
class BuildSummary:
    build_id: str
    path: str
    entries: int
    documents: int
    chunks: int
    vectors: int
    anchors: int
    cache_hits: int
    seconds: float
    unchanged: bool
    calibration: str = ""  # one line: which calibration the build serves with, and why


def _encode_all(
    encoder: Encoder,
    cache: EmbeddingCache | None,
    texts: Sequence[str],
    as_query: bool,
    progress: ProgressFn | None,
    done: list[int],
    total: int,
) -> tuple[np.ndarray, int]:
    prompt = encoder.profile.query_prompt if as_query else encoder.profile.doc_prompt
    fn = encoder.encode_queries if as_query else encoder.encode_docs
    key_id = encoder.model_id
    precision = doc_precision_of(encoder)
    if not as_query and precision is not DocPrecision.FP32:
        # bf16 vectors are close to float32's, not equal: each precision keeps its own (a float32
        # key stays the bare model id, so caches from before the setting still serve)
        key_id = f"{encoder.model_id}\x1f{precision}"
    if as_query:
        # A stored question must get the vector a shopper typing it would get: queries are encoded
        # one per call, and an int8 path's vectors depend on the rest of the batch. The path is
        # in the cache key: vectors of another runtime or precision are not these.
        policy = policy_of(encoder)
        key_id = f"{encoder.model_id}\x1f{policy.path}"
        if not policy.batch_invariant:
            fn = partial(_encode_alone, encoder)
    parts: list[np.ndarray] = []
    hits = 0
    for i in range(0, len(texts), ENCODE_BATCH):
        batch = list(texts[i : i + ENCODE_BATCH])
        if cache is None:
            vecs = fn(batch)
        else:
            vecs, h = cache.get_or_encode(key_id, prompt, batch, fn, encoder.dim)
            hits += h
        parts.append(vecs)
        done[0] += len(batch)
        if progress:
            progress(done[0], total)
    if not parts:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0
    return np.vstack(parts).astype(np.float32), hits


def question_path(encoder: Encoder) -> str:
    """How ``build_index`` encodes stored questions with ``encoder``: its query path, and whether
    one text per call. An index whose questions were encoded otherwise is rebuilt."""
    policy = policy_of(encoder)
    return policy.path if policy.batch_invariant else f"{policy.path}, one per call"


def questions_match(built: str | None, encoder: Encoder) -> bool:
    """Whether stored questions encoded as ``built`` are what ``encoder`` gives a shopper typing
    them: the same path, or that path one per call when the encoder is batch-invariant anyway."""
    now = question_path(encoder)
    return built == now or (policy_of(encoder).batch_invariant and built == f"{now}, one per call")


def _encode_alone(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """``encode_queries`` one text per call, as queries arrive, on ``parallelism`` threads (an
    ONNX call is single-threaded and releases the interpreter lock)."""
    if not texts:
        return encoder.encode_queries([])
    with ThreadPoolExecutor(policy_of(encoder).parallelism) as pool:
        return np.vstack(list(pool.map(lambda t: encoder.encode_queries([t]), texts)))


def anchor_texts(kb: KnowledgeBase) -> tuple[list[str], list[str]]:
    """Negative anchors: out-of-scope examples, labelled by group."""
    texts, labels = [], []
    for group, examples in kb.resources.out_of_scope.items():
        for ex in examples:
            texts.append(normalize(ex))
            labels.append(group)
    return texts, labels


def build_index(
    kb: KnowledgeBase,
    encoder: Encoder,
    chunk_chars: int,
    index_kind: str = "flat",
    cache: EmbeddingCache | None = None,
    progress: ProgressFn | None = None,
    build_id: str | None = None,
) -> Index:
    """Chunk and embed ``kb`` into an in-memory Index (not yet saved)."""
    t0 = time.perf_counter()
    chunks: list[Chunk] = chunk_kb(kb, chunk_chars)
    if not chunks:
        raise IndexStateError("the knowledge base produced no chunks; nothing to index")
    texts = [c.embed_text for c in chunks]
    is_q = [c.kind in QUESTION_KINDS for c in chunks]
    a_texts, a_labels = anchor_texts(kb)
    total = len(texts) + len(a_texts)
    done = [0]
    q_idx = [i for i, q in enumerate(is_q) if q]
    d_idx = [i for i, q in enumerate(is_q) if not q]
    vectors = np.zeros((len(chunks), encoder.dim), dtype=np.float32)
    qv, h1 = _encode_all(encoder, cache, [texts[i] for i in q_idx], True, progress, done, total)
    dv, h2 = _encode_all(encoder, cache, [texts[i] for i in d_idx], False, progress, done, total)
    if q_idx:
        vectors[q_idx] = qv
    if d_idx:
        vectors[d_idx] = dv
    anchors, h3 = _encode_all(encoder, cache, a_texts, True, progress, done, total)
    vindex = VectorIndex.build(vectors, index_kind)
    entries = {
        e.id: EntryInfo(
            e.id, e.question, e.answer, e.category, tuple(e.related), tuple(e.replaces), tuple(e.rules), e.source_id
        )
        for e in kb.entries
    }
    bid = build_id or new_build_id(kb.content_hash)
    manifest = Manifest(
        build_id=bid,
        model_id=encoder.model_id,
        dim=encoder.dim,
        query_prompt=encoder.profile.query_prompt,
        doc_prompt=encoder.profile.doc_prompt,
        question_path=question_path(encoder),
        doc_precision=str(doc_precision_of(encoder)),
        kb_hash=kb.content_hash,
        kb_root=str(kb.root),
        counts={
            "entries": len(kb.entries),
            "documents": len(kb.documents),
            "chunks": len(chunks),
            "vectors": int(vectors.shape[0]),
            "anchors": int(anchors.shape[0]),
        },
        index_kind=vindex.kind,
        chunk_chars=chunk_chars,
        built_at=now_iso(),
        build_seconds=round(time.perf_counter() - t0, 3),
        cache_hits=h1 + h2 + h3,
    )
    return Index(manifest, vectors, vindex, chunks, anchors, a_labels, entries, doc_units=units_of(kb))


def new_build_id(kb_hash: str) -> str:
    """Sortable and unique: UTC time to the microsecond (no DST jumps), then the KB hash."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int((now % 1) * 1e6):06d}Z"
    return f"{stamp}-{kb_hash[:8]}"


def verify(index: Index) -> None:
    """Reloaded-index checks: counts agree, and each probed vector finds itself first."""
    n = index.vectors.shape[0]
    if n == 0 or index.vindex.size != n or len(index.chunks) != n:
        raise IndexStateError(f"build verification failed: {n} vectors, {index.vindex.size} indexed")
    probe = np.unique(np.linspace(0, n - 1, num=min(n, 16)).astype(int))
    for row, hits in zip(probe, index.search(index.vectors[probe], 1), strict=True):
        if not hits or hits[0].score < 0.99:
            raise IndexStateError(f"build verification failed: vector {row} does not retrieve itself")


def build_and_swap(
    kb: KnowledgeBase,
    encoder: Encoder,
    store: IndexStore,
    chunk_chars: int,
    index_kind: str = "flat",
    progress: ProgressFn | None = None,
    force: bool = False,
    calibrate: CalibrateFn | None = None,
) -> BuildSummary:
    """Build into a temporary folder, verify, then make it current; keep the old one on failure.
    One build at a time per index home (``IndexStore.build_lock``). A calibration fitted for this
    very KB is carried over; otherwise ``calibrate`` fits one before the build is committed."""
    with store.build_lock():
        return _build_and_swap(kb, encoder, store, chunk_chars, index_kind, progress, force, calibrate)


def _build_and_swap(
    kb: KnowledgeBase,
    encoder: Encoder,
    store: IndexStore,
    chunk_chars: int,
    index_kind: str,
    progress: ProgressFn | None,
    force: bool,
    calibrate: CalibrateFn | None = None,
) -> BuildSummary:
    t0 = time.perf_counter()
    if not force:
        current = _current_manifest(store, encoder.model_id, intact=True)
        if (
            current is not None
            and current.kb_hash == kb.content_hash
            and current.model_id == encoder.model_id
            and questions_match(current.question_path, encoder)
            and (current.doc_precision or DocPrecision.FP32) == doc_precision_of(encoder)
            and current.index_kind == index_kind
            and current.chunk_chars == chunk_chars
        ):
            c = current.counts
            return BuildSummary(
                current.build_id,
                str(store.current_path()),
                c["entries"],
                c["documents"],
                c["chunks"],
                c["vectors"],
                c["anchors"],
                0,
                time.perf_counter() - t0,
                True,
                calibration_note(current),
            )
    cache = EmbeddingCache(store.cache_path)
    try:
        index = build_index(kb, encoder, chunk_chars, index_kind, cache, progress)
    finally:
        cache.close()
    calibration, why = inherited_calibration(_current_manifest(store), kb, encoder.model_id)
    if calibration is None and calibrate is not None:
        calibration, fitted = calibrate(index)
        why = f"{why}; {fitted}" if why else fitted
    index.manifest.calibration = calibration
    # kept with the build: `kefu index info`, /readyz and `kefu serve` repeat this very line
    note = why or describe_calibration(calibration or {})
    index.manifest.calibration_note = note
    tmp = store.new_tmp(index.manifest.build_id)
    index.save(tmp)
    copy_resources(kb, tmp)
    verify(Index.load(tmp, encoder.model_id))
    final = store.commit(tmp, index.manifest.build_id)
    m = index.manifest
    return BuildSummary(
        m.build_id,
        str(final),
        m.counts["entries"],
        m.counts["documents"],
        m.counts["chunks"],
        m.counts["vectors"],
        m.counts["anchors"],
        m.cache_hits,
        time.perf_counter() - t0,
        False,
        note,
    )


SHIPPED_CALIBRATION = "calibration.json"


def copy_resources(kb: KnowledgeBase, folder: Path) -> None:
    """The resource files the KB was built with (its own or the bundled ones) into the build
    folder, which the service reads them from: the build serves as built, wherever the KB went."""
    target = folder / "resources"
    target.mkdir(parents=True, exist_ok=True)
    for name, path in kb.resources.files:
        shutil.copyfile(path, target / name)


def calibration_origin(cal: dict[str, Any] | None) -> str:
    """``default``, ``self``, ``labelled`` or ``shipped``; manifests written before provenance was
    recorded say it through ``inherited_from`` (shipped) or not at all (a labelled fit)."""
    if not cal:
        return "default"
    if cal.get("origin"):
        return str(cal["origin"])
    return "shipped" if str(cal.get("inherited_from", "")).startswith("shipped") else "labelled"


def describe_calibration(cal: dict[str, Any]) -> str:
    """One line: where a build's calibration came from and what it predicts."""
    origin = calibration_origin(cal)
    if origin == "default":
        return "calibration: none (default thresholds on the raw cosine; answers are not calibrated for this KB)"
    line = f"calibration: {origin}"
    predicted = cal.get("predicted") or {}
    if predicted:
        line += (
            f", predicts answered precision {predicted.get('answered_precision', 0):.2f} "
            f"at coverage {predicted.get('coverage', 0):.2f}"
        )
    metrics = cal.get("metrics") or {}
    if origin != "self" and "answered_precision" in metrics:
        line += f" (dev: precision {metrics['answered_precision']:.2f}, coverage {metrics.get('coverage', 0):.2f})"
    return line


def inherited_calibration(
    previous: Manifest | None, kb: KnowledgeBase, model_id: str
) -> tuple[dict[str, Any] | None, str]:
    """(calibration, why) for a new build: the serving build's, else the KB's shipped file, but only
    when it was fitted for this very KB (same ``kb_hash``) and model. A calibration and its ranker
    learnt one KB's questions; carried to another they would answer with its thresholds.
    ``None`` with the reason when there is none to carry over (the caller then self-calibrates).
    """
    why = ""
    if previous is not None and previous.calibration is not None and previous.model_id == model_id:
        fitted_for = previous.calibration.get("kb_hash") or previous.kb_hash
        if fitted_for == kb.content_hash:
            cal = {**previous.calibration, "inherited_from": previous.build_id}
            return cal, f"{describe_calibration(cal)}; kept from build {previous.build_id} (same KB)"
        why = f"the serving build's calibration was fitted for another KB ({fitted_for[:8]}), not carried over"
    shipped = kb.root / SHIPPED_CALIBRATION
    if shipped.is_file():
        try:
            data = json.loads(shipped.read_text("utf-8"))
        except ValueError:
            return None, f"{SHIPPED_CALIBRATION} is not valid JSON, ignored"
        ok = isinstance(data, dict) and isinstance(data.get("calibration"), dict)
        if ok and data.get("model_id") == model_id and data.get("kb_hash") == kb.content_hash:
            cal = {**data["calibration"], "origin": "shipped", "inherited_from": f"shipped {SHIPPED_CALIBRATION}"}
            return cal, f"{describe_calibration(cal)} ({SHIPPED_CALIBRATION}, fitted for this KB and model)"
        why = f"{SHIPPED_CALIBRATION} was fitted for another KB or model, not used"
    return None, why


def _current_manifest(store: IndexStore, model_id: str | None = None, intact: bool = False) -> Manifest | None:
    """The serving build's manifest; with ``intact``, only if the whole build loads cleanly."""
    try:
        if intact:
            return Index.load(store.current_path(), model_id).manifest
        return Index.read_manifest(store.current_path())
    except IndexStateError:
        return None
