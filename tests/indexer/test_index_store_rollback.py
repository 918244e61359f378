"""Keeping, pruning and rolling back index builds."""

from __future__ import annotations

import pytest

import indexer.build as build_module
from indexer.index import Index
from indexer.store import IndexStore
from kb.errors import (
    NotFoundError,
)
from tests.indexer.conftest import _add_entry, _build, _Clock, _kb


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
