"""Building an index: the folder, pointer and manifest a build writes, what makes a new build
(settings, model, KB, force), and the embedding cache that spares re-encoding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

import indexer.build as build_module
from indexer.build import anchor_texts, build_and_swap
from indexer.encoder import FakeEncoder
from indexer.folder import FORMAT_VERSION
from indexer.index import Index
from indexer.normalize import NORMALIZER_VERSION
from tests.indexer.conftest import CHUNK, _add_entry, _build, _Clock, _kb

FILES = {
    "manifest.json",
    "vectors.npy",
    "index.faiss",
    "chunks.jsonl",
    "anchors.npy",
    "anchors.json",
    "entries.json",
    "units.json",
    "resources",
}


# --- build and manifest ------------------------------------------------------------------------
def test_build_creates_build_folder_pointer_and_manifest(tiny_kb_dir, fake_encoder, store, clock):
    kb = _kb(tiny_kb_dir)
    summary = build_and_swap(kb, fake_encoder, store, CHUNK)
    assert not summary.unchanged
    folder = store.builds / summary.build_id
    assert Path(summary.path) == folder and folder.is_dir()
    assert {p.name for p in folder.iterdir()} == FILES
    assert store.pointer.read_text("utf-8") == summary.build_id + "\n"
    assert store.current_id() == summary.build_id
    assert store.current_path() == folder

    m = Index.read_manifest(folder)
    n_anchors = len(anchor_texts(kb)[0])
    n_faq = sum(2 + len(e.alt_questions) for e in kb.entries)
    assert m.build_id == summary.build_id
    assert m.format_version == FORMAT_VERSION
    assert m.model_id == fake_encoder.model_id
    assert m.dim == fake_encoder.dim == 128
    assert m.normalizer_version == NORMALIZER_VERSION
    assert m.kb_hash == kb.content_hash
    assert m.kb_root == str(kb.root)
    assert m.query_prompt == fake_encoder.profile.query_prompt
    assert m.doc_prompt == fake_encoder.profile.doc_prompt
    assert m.index_kind == "flat" and m.chunk_chars == CHUNK
    assert m.counts == {
        "entries": 3,
        "documents": 1,
        "chunks": n_faq + 3,
        "vectors": n_faq + 3,
        "anchors": n_anchors,
    }
    assert n_anchors > 0
    built = dt.datetime.fromisoformat(m.built_at)
    assert built.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - built).total_seconds()) < 3600
    assert m.build_seconds >= 0
    assert (summary.entries, summary.documents, summary.vectors, summary.anchors) == (3, 1, n_faq + 3, n_anchors)

    index = store.load_current(fake_encoder.model_id)
    assert index.vectors.shape == (n_faq + 3, 128) and index.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, rtol=1e-5)
    assert index.anchors.shape == (n_anchors, 128)
    assert len(index.anchor_labels) == n_anchors
    assert set(index.entries) == {e.id for e in kb.entries}
    # Row i of the matrix is the embedding of chunk i (doc-side and query-side alike for the fake).
    expected = fake_encoder.encode_docs([c.embed_text for c in index.chunks])
    np.testing.assert_allclose(index.vectors, expected, atol=1e-6)


def test_second_build_without_change_is_unchanged(tiny_kb_dir, fake_encoder, store, clock):
    first = _build(tiny_kb_dir, fake_encoder, store)
    calls = fake_encoder.calls
    second = _build(tiny_kb_dir, fake_encoder, store)
    assert second.unchanged
    assert second.build_id == first.build_id
    assert second.vectors == first.vectors and second.anchors == first.anchors
    assert fake_encoder.calls == calls  # nothing encoded
    assert [b.build_id for b in store.list()] == [first.build_id]


@pytest.mark.parametrize(("chunk", "kind"), [(CHUNK + 20, "flat"), (CHUNK, "hnsw")])
def test_changed_build_settings_make_a_new_build(tiny_kb_dir, fake_encoder, store, clock, chunk, kind):
    first = _build(tiny_kb_dir, fake_encoder, store)
    second = build_and_swap(_kb(tiny_kb_dir), fake_encoder, store, chunk, index_kind=kind)
    assert not second.unchanged and second.build_id != first.build_id
    m = Index.read_manifest(store.current_path())
    assert (m.chunk_chars, m.index_kind) == (chunk, kind)
    assert store.load_current(fake_encoder.model_id).vindex.kind == kind


def test_other_model_makes_a_new_build(tiny_kb_dir, fake_encoder, store, clock):
    first = _build(tiny_kb_dir, fake_encoder, store)
    other = FakeEncoder(dim=128, model_id="fake:other")
    second = _build(tiny_kb_dir, other, store)
    assert not second.unchanged and second.build_id != first.build_id
    assert Index.read_manifest(store.current_path()).model_id == "fake:other"


# --- embedding cache during builds -------------------------------------------------------------
class _TextCounter(FakeEncoder):
    def __init__(self) -> None:
        super().__init__(dim=128)
        self.texts = 0

    def encode_queries(self, texts):
        self.texts += len(texts)
        return super().encode_queries(texts)


def test_forced_rebuild_reencodes_nothing(tiny_kb_dir, store, clock):
    enc = _TextCounter()
    first = _build(tiny_kb_dir, enc, store)
    assert first.cache_hits == 0 and enc.texts > 0
    enc.calls = enc.texts = 0
    second = _build(tiny_kb_dir, enc, store, force=True)
    assert not second.unchanged and second.build_id != first.build_id
    assert enc.calls == 0 and enc.texts == 0
    assert second.cache_hits == second.vectors + second.anchors
    assert Index.read_manifest(store.current_path()).cache_hits == second.cache_hits
    a = Index.load(store.builds / first.build_id, enc.model_id)
    b = Index.load(store.builds / second.build_id, enc.model_id)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.anchors, b.anchors)


class _BatchSensitive(FakeEncoder):
    """Like an int8 path: a text's vector depends on the rest of its batch (here, its size)."""

    def __init__(self, path: str = "fake-int8") -> None:
        super().__init__(dim=128, query_path=path, batch_invariant=False)
        self.batches: list[int] = []

    def encode_queries(self, texts):
        self.batches.append(len(texts))
        v = super().encode_queries(texts)
        if len(texts) > 1:
            v = v + 0.01 * len(texts)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v

    def encode_docs(self, texts, progress=False):
        return FakeEncoder.encode_queries(self, texts)  # documents are batched: they have one path


def test_questions_get_the_vector_a_lone_query_gets(tiny_kb_dir, store, clock):
    enc = _BatchSensitive()
    summary = _build(tiny_kb_dir, enc, store)
    assert set(enc.batches) == {1}  # every stored question and anchor encoded alone
    index = store.load_current(enc.model_id)
    assert index.manifest.question_path == "fake-int8, one per call"
    rows = [r for r, c in enumerate(index.chunks) if c.kind in ("question", "alt")]
    alone = np.vstack([enc.encode_queries([index.chunks[r].embed_text]) for r in rows])
    np.testing.assert_array_equal(index.vectors[rows], alone)
    # the same KB and model, but questions encoded another way: not up to date
    store_manifest = store.current_path() / "manifest.json"
    store_manifest.write_text(store_manifest.read_text("utf-8").replace("one per call", "batched"), "utf-8")
    assert not _build(tiny_kb_dir, enc, store).unchanged
    assert _build(tiny_kb_dir, enc, store).unchanged
    assert summary.vectors == len(index.chunks)


def test_question_vectors_are_cached_per_query_path(tiny_kb_dir, store, clock):
    _build(tiny_kb_dir, _BatchSensitive("onnx-int8"), store)
    other = _BatchSensitive("torch-fp32")
    second = _build(tiny_kb_dir, other, store, force=True)
    n_questions = sum(c.kind in ("question", "alt") for c in store.load_current(other.model_id).chunks)
    # answers and rules are shared (documents have one path); questions and anchors are not
    assert second.cache_hits == second.vectors - n_questions


def test_kb_change_encodes_only_new_texts(tiny_kb_dir, store, clock):
    enc = _TextCounter()
    _build(tiny_kb_dir, enc, store)
    enc.texts = 0
    _add_entry(tiny_kb_dir, 1)
    summary = _build(tiny_kb_dir, enc, store)
    new_texts = 1 + 3 + 1  # question, three alternatives, answer
    assert enc.texts == new_texts
    assert summary.cache_hits == summary.vectors + summary.anchors - new_texts


def test_forced_rebuild_in_the_same_second(tiny_kb_dir, fake_encoder, store, monkeypatch):
    monkeypatch.setattr(build_module, "time", _Clock(frozen=True))
    _build(tiny_kb_dir, fake_encoder, store)
    again = _build(tiny_kb_dir, fake_encoder, store, force=True)
    assert store.current_id() == again.build_id


def test_an_exports_original_ids_stay_names_of_its_entries_in_the_build(tmp_path: Path, fake_encoder):
    """An imported row's original id (not a slug) is kept in entries.json and is an alias of its
    entry, so labels and links in the export's ids still reach it; a slug id writes nothing more."""
    import json

    from indexer.store import IndexStore
    from kb.loader import load_kb
    from kb.schema import entry_slug

    kb_dir = tmp_path / "shop"
    kb_dir.mkdir()
    answer = "现货商品付款后四十八小时内发出，预售商品以商品页写明的发货日期为准，请耐心等待。"
    (kb_dir / "faq.csv").write_text(
        f"编号,问题,答案\nFAQ_12,下单后多久发货？,{answer}\n1024,可以开发票吗？,{answer}\n", "utf-8"
    )
    home = IndexStore(tmp_path / "index", 2)
    build_and_swap(load_kb(kb_dir), fake_encoder, home, CHUNK)
    index = home.load_current(fake_encoder.model_id)
    assert index.aliases == {"FAQ_12": entry_slug("FAQ_12")}
    assert index.resolve("FAQ_12") == entry_slug("FAQ_12") and index.resolve("1024") == "1024"
    saved = json.loads((home.current_path() / "entries.json").read_text("utf-8"))
    assert saved[entry_slug("FAQ_12")]["source_id"] == "FAQ_12" and "source_id" not in saved["1024"]
