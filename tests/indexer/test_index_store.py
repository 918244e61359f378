"""Index builds: build, verify, swap, rollback, prune, manifests, and refusal of stale indexes."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import indexer.build as build_module
import indexer.store as store_module
from indexer.build import anchor_texts, build_and_swap
from indexer.encoder import FakeEncoder
from indexer.folder import FORMAT_VERSION
from indexer.index import Index
from indexer.lexical import char_bigrams, jaccard
from indexer.normalize import NORMALIZER_VERSION, normalize
from indexer.pool import POOL_FEATURES, POOL_VOTE_VECTORS
from indexer.store import IndexStore, write_calibration
from indexer.units import ANSWER_WEIGHT
from kb.errors import (
    BuildInProgressError,
    ConfigError,
    IndexMismatchError,
    IndexMissingError,
    IndexStateError,
    NotFoundError,
)
from kb.loader import load_kb
from tests.indexer.oracle import unit_rule

CHUNK = 60
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

EXTRA_FAQ = """
category: 售后服务
entries:
  - id: extra-{n}
    category: 售后服务
    question: 第{n}个额外的问题应该怎么处理？
    alt_questions: [额外说法甲{n}, 额外说法乙{n}, 额外说法丙{n}]
    answer: {answer}
"""


EXTRA_ANSWER = (
    "这是第{n}个额外问题的答案。请在「我的订单」找到对应订单，点击「申请售后」并按页面提示填写原因、"
    "上传凭证后提交，卖家会在四十八小时内处理。"
)


class _Clock:
    """Stands in for ``time`` in indexer.build: each build one second later, or — frozen — within
    the same second (a microsecond apart), as two quick builds would be."""

    BASE = 1_780_000_000.0

    def __init__(self, frozen: bool = False) -> None:
        self.n = 0
        self.frozen = frozen

    def time(self) -> float:
        self.n += 1
        return self.BASE + (self.n * 1e-6 if self.frozen else float(self.n))

    def __getattr__(self, name: str):
        return getattr(time, name)  # perf_counter and anything else: the real clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(build_module, "time", c)
    return c


@pytest.fixture
def store(tiny_settings) -> IndexStore:
    return IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)


def _kb(kb_dir: Path):
    return load_kb(kb_dir, strict=False)


def _add_entry(kb_dir: Path, n: int) -> None:
    (kb_dir / "faq" / f"extra-{n}.yaml").write_text(EXTRA_FAQ.format(n=n, answer=EXTRA_ANSWER.format(n=n)), "utf-8")


def _build(kb_dir: Path, encoder, store: IndexStore, **kw):
    return build_and_swap(_kb(kb_dir), encoder, store, CHUNK, **kw)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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


def test_kb_change_makes_new_build_and_previous_stays_until_keep_limit(tiny_kb_dir, fake_encoder, tiny_settings, clock):
    store = IndexStore(tiny_settings.index_home, keep=2)
    a = _build(tiny_kb_dir, fake_encoder, store)
    _add_entry(tiny_kb_dir, 1)
    b = _build(tiny_kb_dir, fake_encoder, store)
    assert not b.unchanged and b.build_id != a.build_id
    assert b.entries == a.entries + 1
    assert store.current_id() == b.build_id
    assert [x.build_id for x in store.list()] == [b.build_id, a.build_id]
    assert Index.load(store.builds / a.build_id, fake_encoder.model_id).manifest.counts["entries"] == a.entries

    _add_entry(tiny_kb_dir, 2)
    c = _build(tiny_kb_dir, fake_encoder, store)
    listed = store.list()
    assert [x.build_id for x in listed] == [c.build_id, b.build_id]  # the oldest one went
    assert [x.current for x in listed] == [True, False]
    assert not (store.builds / a.build_id).exists()


def test_default_keep_builds_is_respected(tiny_kb_dir, fake_encoder, store, clock):
    ids = []
    for n in range(5):
        _add_entry(tiny_kb_dir, n)
        ids.append(_build(tiny_kb_dir, fake_encoder, store).build_id)
    assert store.keep == 3
    assert [b.build_id for b in store.list()] == ids[::-1][:3]


def test_prune_keeps_current_even_when_it_is_the_oldest(tiny_kb_dir, fake_encoder, tiny_settings, clock):
    store = IndexStore(tiny_settings.index_home, keep=3)
    ids = []
    for n in range(3):
        _add_entry(tiny_kb_dir, n)
        ids.append(_build(tiny_kb_dir, fake_encoder, store).build_id)
    store.set_current(ids[0])
    IndexStore(tiny_settings.index_home, keep=1).prune()
    assert [b.build_id for b in store.list()] == [ids[0]]
    assert store.current_id() == ids[0]
    store.load_current(fake_encoder.model_id)  # still loads


def test_rollback_to_previous_and_to_named_build(tiny_kb_dir, fake_encoder, store, clock):
    a = _build(tiny_kb_dir, fake_encoder, store)
    _add_entry(tiny_kb_dir, 1)
    b = _build(tiny_kb_dir, fake_encoder, store)
    _add_entry(tiny_kb_dir, 2)
    c = _build(tiny_kb_dir, fake_encoder, store)

    assert store.rollback() == b.build_id
    assert store.current_id() == b.build_id
    assert store.rollback() == a.build_id
    assert store.load_current(fake_encoder.model_id).manifest.build_id == a.build_id
    with pytest.raises(NotFoundError, match="no earlier verified build"):
        store.rollback()
    assert store.current_id() == a.build_id

    assert store.rollback(c.build_id) == c.build_id
    assert store.load_current(fake_encoder.model_id).manifest.counts["entries"] == c.entries


def test_rollback_skips_builds_without_manifest(tiny_kb_dir, fake_encoder, store, clock):
    a = _build(tiny_kb_dir, fake_encoder, store)
    _add_entry(tiny_kb_dir, 1)
    b = _build(tiny_kb_dir, fake_encoder, store)
    _add_entry(tiny_kb_dir, 2)
    c = _build(tiny_kb_dir, fake_encoder, store)
    (store.builds / b.build_id / "manifest.json").unlink()
    broken = {x.build_id: x.problem for x in store.list()}
    assert broken[b.build_id] is not None and "manifest" in broken[b.build_id]
    assert broken[c.build_id] is None
    assert store.rollback() == a.build_id


def test_rollback_with_no_earlier_build_raises_not_found(tiny_kb_dir, fake_encoder, store, clock):
    with pytest.raises(NotFoundError):
        store.rollback()  # nothing built at all
    only = _build(tiny_kb_dir, fake_encoder, store)
    with pytest.raises(NotFoundError, match="kefu index list"):
        store.rollback()
    assert store.current_id() == only.build_id


def test_rollback_to_unknown_build_raises_not_found(tiny_kb_dir, fake_encoder, store, clock):
    only = _build(tiny_kb_dir, fake_encoder, store)
    with pytest.raises(NotFoundError, match="no build"):
        store.rollback("20000101-000000-deadbeef")
    assert store.current_id() == only.build_id


def test_calibration_is_kept_by_a_rebuild_of_the_same_kb_and_model(tiny_kb_dir, fake_encoder, store, clock):
    a = _build(tiny_kb_dir, fake_encoder, store)
    write_calibration(store.builds / a.build_id, {"answer": 0.7})
    b = _build(tiny_kb_dir, fake_encoder, store, force=True)
    assert Index.read_manifest(store.builds / b.build_id).calibration == {"answer": 0.7, "inherited_from": a.build_id}
    assert f"kept from build {a.build_id}" in b.calibration
    c = _build(tiny_kb_dir, FakeEncoder(dim=128, model_id="fake:other"), store)
    assert Index.read_manifest(store.builds / c.build_id).calibration is None


def test_calibration_of_another_kb_is_never_inherited(tiny_kb_dir, fake_encoder, store, clock):
    a = _build(tiny_kb_dir, fake_encoder, store)
    write_calibration(store.builds / a.build_id, {"answer": 0.7, "kb_hash": a.build_id.split("-")[-1] + "x"})
    _add_entry(tiny_kb_dir, 1)  # another KB now: its calibration and ranker were fitted for the old one
    asked: list[str] = []

    def fit(index):
        asked.append(index.manifest.kb_hash)
        return {"answer_at": 0.8, "origin": "self", "kb_hash": index.manifest.kb_hash}, "calibration: self"

    b = _build(tiny_kb_dir, fake_encoder, store, calibrate=fit)
    got = Index.read_manifest(store.builds / b.build_id)
    assert asked == [got.kb_hash]
    assert got.calibration == {"answer_at": 0.8, "origin": "self", "kb_hash": got.kb_hash}
    assert "fitted for another KB" in b.calibration and b.calibration.endswith("calibration: self")


def test_a_build_without_calibration_says_so(tiny_kb_dir, fake_encoder, store, clock):
    summary = _build(tiny_kb_dir, fake_encoder, store)
    assert summary.calibration.startswith("calibration: none")


SAME_MODEL = object()
SAME_KB = object()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"model_id": SAME_MODEL, "kb_hash": SAME_KB, "calibration": {"answer": 0.6}}, {"answer": 0.6}),
        ({"model_id": SAME_MODEL, "kb_hash": "another-kb", "calibration": {"answer": 0.6}}, None),
        ({"model_id": SAME_MODEL, "calibration": {"answer": 0.6}}, None),  # no KB hash: not known to fit
        ({"model_id": "another/model", "kb_hash": SAME_KB, "calibration": {"answer": 0.6}}, None),
        ({"model_id": SAME_MODEL, "kb_hash": SAME_KB, "calibration": [0.6]}, None),
        ("{not json", None),
    ],
)
def test_shipped_calibration_of_the_kb(tiny_kb_dir, fake_encoder, store, clock, content, expected):
    if isinstance(content, dict):
        model = fake_encoder.model_id if content["model_id"] is SAME_MODEL else content["model_id"]
        kb_hash = _kb(tiny_kb_dir).content_hash if content.get("kb_hash") is SAME_KB else content.get("kb_hash")
        content = json.dumps({**content, "model_id": model, "kb_hash": kb_hash})
    (tiny_kb_dir / "calibration.json").write_text(content, "utf-8")
    summary = _build(tiny_kb_dir, fake_encoder, store)
    got = Index.read_manifest(store.builds / summary.build_id).calibration
    if expected is None:
        assert got is None
        assert "calibration.json" in summary.calibration
    else:
        assert got == {**expected, "origin": "shipped", "inherited_from": "shipped calibration.json"}
        assert summary.calibration.startswith("calibration: shipped")


# --- the current pointer -----------------------------------------------------------------------
def test_current_pointer_is_replaced_atomically(tiny_kb_dir, fake_encoder, store, clock, monkeypatch):
    a = _build(tiny_kb_dir, fake_encoder, store)
    _add_entry(tiny_kb_dir, 1)
    b = _build(tiny_kb_dir, fake_encoder, store)

    real_replace = os.replace
    seen: list[tuple[str, str]] = []

    def spy(src, dst):
        # At the moment of the swap the new pointer is complete and the old one is still intact.
        seen.append((Path(src).read_text("utf-8"), Path(dst).read_text("utf-8")))
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "replace", spy)
    store.set_current(a.build_id)
    assert seen == [(a.build_id + "\n", b.build_id + "\n")]
    assert store.pointer.read_text("utf-8") == a.build_id + "\n"
    assert store.current_id() == a.build_id
    assert not list(store.home.glob(".current-*"))  # no staging file left behind


def test_set_current_to_missing_build_leaves_pointer(tiny_kb_dir, fake_encoder, store, clock):
    a = _build(tiny_kb_dir, fake_encoder, store)
    with pytest.raises(NotFoundError):
        store.set_current("missing")
    assert store.pointer.read_text("utf-8") == a.build_id + "\n"


def test_missing_or_empty_pointer_means_no_index(store):
    assert store.current_id() is None
    with pytest.raises(IndexMissingError, match="kefu build"):
        store.current_path()
    store.home.mkdir(parents=True)
    store.pointer.write_text("\n", "utf-8")
    assert store.current_id() is None
    with pytest.raises(IndexMissingError):
        store.load_current(None)


def test_pointer_to_vanished_build_is_a_state_error(tiny_kb_dir, fake_encoder, store, clock):
    _build(tiny_kb_dir, fake_encoder, store)
    store.pointer.write_text("20000101-000000-gone\n", "utf-8")
    with pytest.raises(IndexStateError, match="rollback"):
        store.current_path()


# --- refusing stale or damaged indexes ---------------------------------------------------------
def test_load_refuses_a_different_model_id(tiny_index, fake_encoder):
    folder = tiny_index.folder
    with pytest.raises(IndexMismatchError, match="kefu build") as err:
        Index.load(folder, "another/model")
    assert "another/model" in str(err.value) and fake_encoder.model_id in str(err.value)
    assert Index.load(folder, None).manifest.model_id == fake_encoder.model_id  # None: no model check


def test_load_refuses_a_different_normalizer_version(tiny_index, fake_encoder):
    folder = tiny_index.folder
    with pytest.raises(IndexMismatchError, match="kefu build"):
        Index.load(folder, fake_encoder.model_id, normalizer_version=NORMALIZER_VERSION + ".next")
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    manifest["normalizer_version"] = "0"
    (folder / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(IndexMismatchError, match=r"normaliser v0.*kefu build"):
        Index.load(folder, fake_encoder.model_id)


def test_load_refuses_a_different_format_version(tiny_index, fake_encoder):
    folder = tiny_index.folder
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    manifest["format_version"] = FORMAT_VERSION + 1
    (folder / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(IndexMismatchError, match="kefu build"):
        Index.load(folder, fake_encoder.model_id)


def test_stale_index_is_rebuilt_not_reused(tiny_kb_dir, fake_encoder, store, clock):
    first = _build(tiny_kb_dir, fake_encoder, store)
    manifest_path = store.builds / first.build_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text("utf-8"))
    manifest["normalizer_version"] = "0"
    manifest_path.write_text(json.dumps(manifest), "utf-8")
    second = _build(tiny_kb_dir, fake_encoder, store)
    assert not second.unchanged and second.build_id != first.build_id
    assert Index.read_manifest(store.current_path()).normalizer_version == NORMALIZER_VERSION


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_vectors_is_an_index_state_error(tiny_index, fake_encoder, keep):
    path = tiny_index.folder / "vectors.npy"
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(IndexStateError, match="kefu build"):
        Index.load(tiny_index.folder, fake_encoder.model_id)


@pytest.mark.parametrize("name", ["vectors.npy", "anchors.npy"])
def test_zero_byte_npy_is_an_index_state_error(tiny_index, fake_encoder, name):
    (tiny_index.folder / name).write_bytes(b"")
    with pytest.raises(IndexStateError):
        Index.load(tiny_index.folder, fake_encoder.model_id)


def test_build_replaces_a_current_build_with_an_empty_vectors_file(tiny_kb_dir, fake_encoder, store, clock):
    first = _build(tiny_kb_dir, fake_encoder, store)
    (store.builds / first.build_id / "vectors.npy").write_bytes(b"")
    second = _build(tiny_kb_dir, fake_encoder, store)
    assert not second.unchanged
    store.load_current(fake_encoder.model_id)


def test_vectors_with_wrong_row_count_are_an_index_state_error(tiny_index, fake_encoder):
    np.save(tiny_index.folder / "vectors.npy", tiny_index.vectors[:-1])
    with pytest.raises(IndexStateError, match="shape"):
        Index.load(tiny_index.folder, fake_encoder.model_id)


@pytest.mark.parametrize("cut", ["mid-line", "line-boundary", "mid-character"])
def test_truncated_chunks_is_an_index_state_error(tiny_index, fake_encoder, cut):
    path = tiny_index.folder / "chunks.jsonl"
    raw = path.read_bytes()
    if cut == "mid-line":
        data = raw[: len(raw) // 2]
    elif cut == "line-boundary":
        data = b"".join(raw.splitlines(keepends=True)[:-1])
    else:
        data = raw[: raw.index("退".encode()) + 1]  # half of a UTF-8 sequence
    path.write_bytes(data)
    with pytest.raises(IndexStateError, match="kefu build"):
        Index.load(tiny_index.folder, fake_encoder.model_id)


def test_missing_and_unreadable_manifest(tiny_index, fake_encoder, tmp_path):
    with pytest.raises(IndexMissingError, match="kefu build"):
        Index.load(tmp_path / "nowhere", fake_encoder.model_id)
    (tiny_index.folder / "manifest.json").write_text('{"build_id": ', "utf-8")
    with pytest.raises(IndexStateError, match="unreadable"):
        Index.load(tiny_index.folder, fake_encoder.model_id)


def test_truncated_faiss_file_is_an_index_state_error(tiny_index, fake_encoder):
    path = tiny_index.folder / "index.faiss"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexStateError):
        Index.load(tiny_index.folder, fake_encoder.model_id)


# --- interrupted and failed builds -------------------------------------------------------------
def _assert_serving(store: IndexStore, build_id: str, snapshot: dict[str, bytes], model_id: str) -> None:
    assert store.current_id() == build_id
    assert _snapshot(store.builds / build_id) == snapshot
    assert store.load_current(model_id).manifest.build_id == build_id


def test_interrupted_save_leaves_previous_build_serving(tiny_kb_dir, fake_encoder, store, clock, monkeypatch):
    good = _build(tiny_kb_dir, fake_encoder, store)
    before = _snapshot(store.builds / good.build_id)
    real_save = Index.save

    def half_save(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        raise OSError("disk full")

    _add_entry(tiny_kb_dir, 1)
    monkeypatch.setattr(Index, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        _build(tiny_kb_dir, fake_encoder, store)
    _assert_serving(store, good.build_id, before, fake_encoder.model_id)
    assert [b.build_id for b in store.list()] == [good.build_id]
    assert len(list(store.home.glob(".tmp-*"))) == 1  # the unfinished build, never read

    monkeypatch.setattr(Index, "save", real_save)
    after = _build(tiny_kb_dir, fake_encoder, store)
    assert not after.unchanged and store.current_id() == after.build_id
    assert not list(store.home.glob(".tmp-*"))
    assert [b.build_id for b in store.list()] == [after.build_id, good.build_id]


def test_encoder_failure_midway_leaves_previous_build_serving(tiny_kb_dir, fake_encoder, store, clock):
    good = _build(tiny_kb_dir, fake_encoder, store)
    before = _snapshot(store.builds / good.build_id)

    class Failing(FakeEncoder):
        def encode_queries(self, texts):
            if self.calls >= 1:
                raise RuntimeError("encoder died")
            return super().encode_queries(texts)

    _add_entry(tiny_kb_dir, 1)
    with pytest.raises(RuntimeError, match="encoder died"):
        _build(tiny_kb_dir, Failing(dim=128), store)
    _assert_serving(store, good.build_id, before, fake_encoder.model_id)
    assert [b.build_id for b in store.list()] == [good.build_id]

    after = _build(tiny_kb_dir, fake_encoder, store)
    assert store.current_id() == after.build_id != good.build_id
    assert not list(store.home.glob(".tmp-*"))


def test_build_failing_verification_never_becomes_current(tiny_kb_dir, fake_encoder, store, clock, monkeypatch):
    good = _build(tiny_kb_dir, fake_encoder, store)
    before = _snapshot(store.builds / good.build_id)
    real_save = Index.save

    def corrupt_save(self, folder):
        real_save(self, folder)
        faiss_file = folder / "index.faiss"
        faiss_file.write_bytes(faiss_file.read_bytes()[:64])

    _add_entry(tiny_kb_dir, 1)
    monkeypatch.setattr(Index, "save", corrupt_save)
    with pytest.raises(IndexStateError):
        _build(tiny_kb_dir, fake_encoder, store)
    _assert_serving(store, good.build_id, before, fake_encoder.model_id)
    assert [b.build_id for b in store.list()] == [good.build_id]


def test_a_build_while_another_runs_is_refused_and_leaves_it_alone(tiny_kb_dir, fake_encoder, store, clock):
    good = _build(tiny_kb_dir, fake_encoder, store)
    before = _snapshot(store.builds / good.build_id)
    _add_entry(tiny_kb_dir, 1)
    with store.build_lock():  # the first build, still running: its unfinished folder must survive
        unfinished = store.home / ".tmp-running"
        unfinished.mkdir()
        with pytest.raises(BuildInProgressError, match=r"another build is running on .*\(pid \d+\); wait"):
            _build(tiny_kb_dir, fake_encoder, store)
        assert unfinished.is_dir()
        _assert_serving(store, good.build_id, before, fake_encoder.model_id)
    after = _build(tiny_kb_dir, fake_encoder, store)  # once it is done, building works again
    assert store.current_id() == after.build_id != good.build_id
    assert not list(store.home.glob(".tmp-*"))


def test_first_build_interrupted_leaves_no_current(tiny_kb_dir, fake_encoder, store, clock, monkeypatch):
    def failing_save(self, folder):
        raise OSError("disk full")

    monkeypatch.setattr(Index, "save", failing_save)
    with pytest.raises(OSError):
        _build(tiny_kb_dir, fake_encoder, store)
    assert store.current_id() is None
    assert store.list() == []


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


def test_rollback_after_two_builds_in_the_same_second(tiny_kb_dir, tmp_path, fake_encoder, store, monkeypatch):
    import shutil

    other_dir = tmp_path / "kb-other"
    shutil.copytree(tiny_kb_dir, other_dir)
    _add_entry(other_dir, 1)
    # Build the KB whose hash sorts last first, so that the newer build has the smaller id.
    first_dir, second_dir = sorted([tiny_kb_dir, other_dir], key=lambda d: _kb(d).content_hash[:8], reverse=True)
    monkeypatch.setattr(build_module, "time", _Clock(frozen=True))
    first = _build(first_dir, fake_encoder, store)
    second = _build(second_dir, fake_encoder, store)
    assert store.current_id() == second.build_id
    assert store.rollback() == first.build_id


# --- searching per answer unit -----------------------------------------------------------------
def _q(encoder, text: str) -> np.ndarray:
    return encoder.encode_queries([normalize(text)])[0]


def _oracle_unit(index: Index, q: np.ndarray, unit: str, w: float) -> tuple[float, float, int]:
    """(score, question_score, best row) of one unit, computed by brute force over all its vectors."""
    rows = index.units[unit]
    return unit_rule(index, rows, index.vectors[rows] @ q, w)


def test_search_units_aggregates_per_unit(tiny_index, fake_encoder):
    q = _q(fake_encoder, "退货运费谁出")  # an alternative question of refund-shipping-fee, verbatim
    units = tiny_index.search_units(q, k_units=50)
    ids = [u.unit_id for u in units]
    assert len(ids) == len(set(ids)) == len(tiny_index.units)  # every unit once (all vectors retrieved)
    assert ids[0] == "refund-shipping-fee"
    assert units[0].question_score == pytest.approx(1.0, abs=1e-5)
    assert tiny_index.chunks[units[0].best_chunk].text == "退货运费谁出"
    assert [u.rank for u in units] == list(range(len(units)))
    scores = [u.score for u in units]
    assert scores == sorted(scores, reverse=True)
    for u in units:
        score, qs, best_row = _oracle_unit(tiny_index, q, u.unit_id, ANSWER_WEIGHT)
        assert u.score == pytest.approx(score, abs=1e-5)
        assert u.question_score == pytest.approx(qs, abs=1e-5)
        assert u.best_chunk == best_row
        assert u.votes == len(tiny_index.units[u.unit_id])  # every vector retrieved, every one votes


def test_search_units_scores_faq_on_question_and_answer(tiny_index, fake_encoder):
    entry = tiny_index.entries["logistics-track"]
    q = _q(fake_encoder, entry.answer)  # the answer text itself: the best vector is the answer
    top = tiny_index.search_units(q, k_units=1)[0]
    assert top.unit_id == "logistics-track"
    assert tiny_index.chunks[top.best_chunk].kind == "answer"
    assert top.question_score < 0.9
    expected, question_score, _ = _oracle_unit(tiny_index, q, "logistics-track", ANSWER_WEIGHT)
    assert top.question_score == pytest.approx(question_score, abs=1e-5)
    assert top.score == pytest.approx(expected, abs=1e-5)
    assert top.score < (top.question_score + ANSWER_WEIGHT * 1.0) / (1 + ANSWER_WEIGHT) + 1e-6


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_search_units_answer_weight(tiny_index, fake_encoder, w):
    q = _q(fake_encoder, "寄回去的运费谁出")
    units = tiny_index.search_units(q, k_units=50, answer_weight=w)
    for u in units:
        score, _, _ = _oracle_unit(tiny_index, q, u.unit_id, w)
        assert u.score == pytest.approx(score, abs=1e-5)
        if w == 0.0 and len(tiny_index.units[u.unit_id]) == 1:
            assert u.score == pytest.approx(u.question_score, abs=1e-6)


def test_search_units_limits_units_and_counts_votes(tiny_index, fake_encoder):
    q = _q(fake_encoder, "七天无理由退货")
    assert len(tiny_index.search_units(q, k_units=2)) == 2
    units = tiny_index.search_units(q, k_units=50, k_vectors=5)
    assert sum(u.votes for u in units) == 5
    assert len({u.unit_id for u in units}) == len(units) <= 5
    assert all(u.votes >= 1 for u in units)
    top5 = {tiny_index.chunks[h.chunk_id].unit_id for h in tiny_index.search(q, 5)[0]}
    assert {u.unit_id for u in units} == top5  # only units found among the nearest vectors
    assert units == tiny_index.search_units(q[None, :], k_units=50, k_vectors=5)  # 1-D or 1×d alike


def test_search_units_finds_a_rules_clause(tiny_index):
    rows = [i for i, c in enumerate(tiny_index.chunks) if c.kind == "rules"]
    row = rows[-1]
    top = tiny_index.search_units(tiny_index.vectors[row], k_units=1)[0]
    assert top.unit_id == tiny_index.chunks[row].unit_id == "rules-return.3"
    assert top.best_chunk == row
    assert top.score == pytest.approx(1.0, abs=1e-5) and top.question_score == top.score
    assert top.votes == 1


def test_anchor_scores(tiny_index):
    a = tiny_index.anchor_scores(tiny_index.anchors[3])
    assert a.shape == (tiny_index.anchors.shape[0],)
    np.testing.assert_allclose(a, tiny_index.anchors @ tiny_index.anchors[3], atol=1e-6)
    assert a[3] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("text", ["寄回去的运费谁出", "怎么查物流", "第三条 运费", "完全无关的内容"])
def test_vectorised_unit_scores_match_the_per_unit_rule(tiny_index, fake_encoder, text):
    q = _q(fake_encoder, text)
    cos = tiny_index.vectors @ q
    layout = tiny_index._layout
    scores, q_best, _ = layout.scores(np.append(cos, -np.inf).astype(np.float32), ANSWER_WEIGHT)
    for i, unit in enumerate(layout.ids):
        rows = tiny_index.units[unit]
        expected = unit_rule(tiny_index, rows, cos[rows], ANSWER_WEIGHT)
        assert scores[i] == pytest.approx(expected[0], abs=1e-6)
        assert q_best[i] == pytest.approx(expected[1], abs=1e-6)
        assert layout.max_per_unit(cos)[i] == pytest.approx(cos[rows].max(), abs=1e-6)


def test_fused_modes_rank_every_unit_once(tiny_index, fake_encoder):
    q = _q(fake_encoder, "退货运费谁出")
    for mode in ("lexical", "rrf", "weighted"):
        units = tiny_index.search_units_fused(q, "退货运费谁出", 50, mode)
        assert sorted(u.unit_id for u in units) == sorted(tiny_index.units)
        assert units[0].unit_id == "refund-shipping-fee"
    with pytest.raises(ConfigError, match="retrieval mode 'nope' is unknown; allowed: dense, lexical, rrf, weighted"):
        tiny_index.search_units_fused(q, "x", 5, "nope")


@pytest.fixture(scope="module")
def wide_index(tmp_path_factory):
    """The tiny KB plus 30 extra entries: more vectors than the 64 that votes count."""
    from kb.settings import Settings
    from tests.conftest import TINY_FAQ

    root = tmp_path_factory.mktemp("wide")
    kb_dir = root / "kb"
    (kb_dir / "faq").mkdir(parents=True)
    (kb_dir / "faq" / "tiny.yaml").write_text(TINY_FAQ, "utf-8")
    for n in range(30):
        _add_entry(kb_dir, n)
    encoder = FakeEncoder(dim=128)
    settings = Settings(kb_dir=kb_dir, data_dir=root / "data", model="fake:hash-128")
    store = IndexStore(settings.index_home, settings.keep_builds)
    _build(kb_dir, encoder, store)
    index = store.load_current(encoder.model_id)
    assert index.vectors.shape[0] > 64
    return index, encoder


@pytest.mark.parametrize("mode", ["lexical", "rrf", "weighted"])
@pytest.mark.parametrize("k", [1, 3, 10_000])
@pytest.mark.parametrize("text", ["退货运费谁出", "第3号额外问题怎么办"])
def test_fused_hits_carry_each_units_own_evidence(wide_index, mode, k, text):
    """Brute-force oracle: every fused hit's score, question score, best row and votes are what
    the per-unit rule gives for that unit, whatever the fused order."""
    index, encoder = wide_index
    q = _q(encoder, text)
    cos = index.vectors @ q
    units = index.search_units_fused(q, text, k, mode)
    assert len(units) == min(k, len(index.units))
    k_vec = min(len(cos), max(64, k * 12))
    kth = float(np.sort(cos)[::-1][k_vec - 1])  # votes count the vectors at least this close
    for r, u in enumerate(units):
        rows = index.units[u.unit_id]
        score, q_side, best = unit_rule(index, rows, cos[rows], ANSWER_WEIGHT)
        assert u.rank == r
        assert u.score == pytest.approx(score, abs=1e-6) and u.question_score == pytest.approx(q_side, abs=1e-6)
        assert u.best_chunk == best
        # the fake encoder makes exact ties; rounding may put a tied vector on either side
        assert int((cos[rows] > kth + 1e-6).sum()) <= u.votes <= int((cos[rows] >= kth - 1e-6).sum())
    if k >= len(index.units):
        assert sum(u.votes for u in units) >= k_vec


def _pool_oracle(index: Index, q: np.ndarray, text: str, exclude: int | None) -> dict[str, dict[str, Any]]:
    """POOL_FEATURES of every unit by brute force over its own rows (``exclude`` left out),
    with ranks as (count strictly better, count at least as good - 1): the fake encoder ties."""
    cos = index.vectors @ q
    bm = index.lexical.scores(text)
    rows_of = {u: [r for r in rows if r != exclude] for u, rows in index.units.items()}
    rows_of = {u: rows for u, rows in rows_of.items() if rows}
    dense = {u: unit_rule(index, rows, cos[rows], ANSWER_WEIGHT)[0] for u, rows in rows_of.items()}
    lex = {u: float(bm[rows].max()) for u, rows in rows_of.items()}
    lex_max = max(max(lex.values()), 1e-9)
    grams = char_bigrams(text)
    n = max(1, len(grams))
    is_q = index._is_question
    out = {}
    for u, rows in rows_of.items():
        q_rows = [r for r in rows if is_q[r]]
        a_rows = [r for r in rows if not is_q[r]]
        cover = {r: len(grams & index.norm_bigrams[r]) / n for r in rows}
        out[u] = {
            "dense": dense[u],
            "question": float(cos[q_rows].max()) if q_rows else float(cos[rows].max()),
            "answer": float(cos[a_rows].max()) if a_rows else dense[u],
            "lexical": lex[u] / lex_max,
            "lexical_question": float(bm[q_rows].max()) / lex_max if q_rows else 0.0,
            "dense_rank": (
                sum(d > dense[u] + 1e-6 for d in dense.values()),
                sum(d >= dense[u] - 1e-6 for d in dense.values()) - 1,
            ),
            "lexical_rank": (
                sum(v > lex[u] + 1e-9 for v in lex.values()),
                sum(v >= lex[u] - 1e-9 for v in lex.values()) - 1,
            ),
            "cover_question": max((cover[r] for r in q_rows), default=0.0),
            "cover_answer": max((cover[r] for r in a_rows), default=0.0),
            "cover_unit": len(grams & frozenset().union(*(index.norm_bigrams[r] for r in rows))) / n,
        }
    return out


def _check_pool(index: Index, q: np.ndarray, text: str, size: int, exclude: int | None = None) -> None:
    pool = index.candidate_pool(q, text, size, exclude_row=exclude)
    oracle = _pool_oracle(index, q, text, exclude)
    assert pool.x.shape == (min(size, len(index.units)), len(POOL_FEATURES))
    assert [u.rank for u in pool.units] == list(range(len(pool.units)))
    cos = index.vectors @ q
    if exclude is not None:
        cos[exclude] = -np.inf
    kth = float(np.sort(cos)[::-1][min(len(cos), POOL_VOTE_VECTORS) - 1])
    for u, row in zip(pool.units, pool.x, strict=True):
        want = oracle[u.unit_id]
        got = dict(zip(POOL_FEATURES, row.tolist(), strict=True))
        for name in (
            "dense",
            "question",
            "answer",
            "lexical",
            "lexical_question",
            "cover_question",
            "cover_answer",
            "cover_unit",
        ):
            assert got[name] == pytest.approx(want[name], abs=1e-5), (u.unit_id, name)
        for name in ("dense_rank", "lexical_rank"):
            lo, hi = want[name]
            assert np.log1p(lo) - 1e-9 <= got[name] <= np.log1p(hi) + 1e-9, (u.unit_id, name)
        rows = [r for r in index.units[u.unit_id] if r != exclude]
        assert int((cos[rows] > kth + 1e-6).sum()) <= u.votes <= int((cos[rows] >= kth - 1e-6).sum())
        assert got["votes"] == pytest.approx(np.log1p(u.votes))
        assert u.best_chunk != exclude


@pytest.mark.parametrize("size", [1, 5, 10_000])
@pytest.mark.parametrize("text", ["退货运费谁出", "第3号额外问题怎么办", "完全无关的内容"])
def test_candidate_pool_features_match_a_brute_force_oracle(wide_index, size, text):
    index, encoder = wide_index
    text = normalize(text)
    q = _q(encoder, text)
    _check_pool(index, q, text, size)
    # the pool is the fused search's rrf order
    fused = index.search_units_fused(q, text, min(size, 10), "rrf")
    assert [u.unit_id for u in index.candidate_pool(q, text, size).units[: len(fused)]] == [u.unit_id for u in fused]


@pytest.mark.parametrize("which", [0, 7, -1])
def test_candidate_pool_leaves_the_excluded_row_out_of_every_channel(wide_index, which):
    """A stored alternative searched for itself, as ranker training does: its own vector, BM25
    and bigrams must not count, or it would find itself."""
    index, _ = wide_index
    alts = [r for r, c in enumerate(index.chunks) if c.kind == "alt"]
    row = alts[which]
    _check_pool(index, index.vectors[row], index.norm_texts[row], 10_000, exclude=row)


def test_candidate_pool_refuses_an_empty_pool(tiny_index):
    with pytest.raises(ValueError, match="pool size must be ≥ 1, got 0"):
        tiny_index.candidate_pool(tiny_index.vectors[0], "退货", 0)


@pytest.mark.parametrize("text", ["退货运费谁出", "第3号额外问题怎么办", "完全无关的内容", "", "a"])
def test_bigram_jaccard_matches_the_set_formula_for_every_row(wide_index, text):
    index, _ = wide_index
    text = normalize(text)
    grams = char_bigrams(text)
    got = index.bigram_jaccard(text)
    want = [jaccard(grams, index.norm_bigrams[r]) for r in range(len(index.chunks))]
    assert got.tolist() == want  # the same ratio of the same integers: equal, not just close


@pytest.mark.parametrize("exclude", [None, 7])
def test_candidate_pool_reuses_lexical_evidence_and_refuses_evidence_for_another_query(wide_index, exclude):
    index, encoder = wide_index
    text = normalize("退货运费谁出")
    q = _q(encoder, text)
    evidence = index.lexical_evidence(text, exclude)
    want = index.bigram_jaccard(text)
    if exclude is not None:
        want[exclude] = 0.0
    assert evidence.jaccard.tolist() == want.tolist()
    given = index.candidate_pool(q, text, 10, exclude_row=exclude, lexical=evidence)
    own = index.candidate_pool(q, text, 10, exclude_row=exclude)
    assert [u.unit_id for u in given.units] == [u.unit_id for u in own.units]
    np.testing.assert_array_equal(given.x, own.x)
    with pytest.raises(ValueError, match="lexical evidence is for query"):
        index.candidate_pool(q, normalize("发票怎么开"), 10, exclude_row=exclude, lexical=evidence)
    with pytest.raises(ValueError, match="exclude_row"):
        index.candidate_pool(q, text, 10, exclude_row=3, lexical=evidence)


@pytest.mark.parametrize(
    ("cal", "origin"),
    [
        (None, "default"),
        ({}, "default"),
        ({"origin": "self", "answer_at": 0.5}, "self"),
        ({"answer_at": 0.7, "inherited_from": "shipped calibration.json"}, "shipped"),  # before provenance
        ({"answer_at": 0.7, "inherited_from": "20260101T000000000000Z-deadbeef"}, "labelled"),
    ],
)
def test_calibration_origin_reads_old_manifests_too(cal, origin):
    from indexer.build import calibration_origin, describe_calibration

    assert calibration_origin(cal) == origin
    assert describe_calibration(cal or {}).startswith(f"calibration: {'none' if origin == 'default' else origin}")


def test_with_rows_is_a_flat_copy_of_those_rows(tiny_index):
    keep = [i for i, c in enumerate(tiny_index.chunks) if c.kind != "alt"]
    sub = tiny_index.with_rows(keep)
    assert [c.text for c in sub.chunks] == [tiny_index.chunks[i].text for i in keep]
    assert sub.vectors.shape == (len(keep), tiny_index.vectors.shape[1])
    assert sub.manifest.counts["vectors"] == len(keep) and sub.dense_int8 == tiny_index.dense_int8
    assert len(tiny_index.chunks) > len(keep)  # the original is untouched
