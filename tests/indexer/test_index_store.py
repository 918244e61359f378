"""Index builds kept safe: the atomic swap of the current pointer, refusal of stale or damaged indexes,
and failed or interrupted builds that leave the previous build serving."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import indexer.store as store_module
from indexer.encoder import FakeEncoder
from indexer.folder import FORMAT_VERSION
from indexer.index import Index
from indexer.normalize import NORMALIZER_VERSION
from indexer.store import IndexStore
from kb.errors import (
    BuildInProgressError,
    IndexMismatchError,
    IndexMissingError,
    IndexStateError,
    NotFoundError,
)
from tests.indexer.conftest import _add_entry, _build


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
