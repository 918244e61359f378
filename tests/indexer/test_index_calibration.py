"""Calibration across builds: kept by a rebuild of the same KB and model, never inherited from another KB,
shipped with the KB, and how its origin reads in old and new manifests."""

from __future__ import annotations

import json

import pytest

from indexer.encoder import FakeEncoder
from indexer.index import Index
from indexer.store import write_calibration
from tests.indexer.conftest import _add_entry, _build, _kb


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
