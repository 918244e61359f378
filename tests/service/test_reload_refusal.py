"""A corrupt or mismatched build is refused at start-up and at /admin/reload; the last good one keeps serving.

Builds are immutable folders and ``current`` is a pointer, so a bad build can only appear as a
new folder the pointer is moved to (a hand-copied build, a disk error, a build for another
model). The service must refuse to swap it in, say why (503 JSON, no trace), and keep answering
from the build it already holds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_and_swap
from indexer.encoder import FakeEncoder
from indexer.store import IndexStore, write_calibration
from kb.loader import load_kb
from kb.settings import Settings
from service.api import create_app
from tests.fakes import FAKE_CAL

TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tiny_settings: Settings, tiny_index) -> Settings:
    write_calibration(tiny_index.folder, FAKE_CAL.to_json())
    return tiny_settings.with_overrides(admin_token=TOKEN, rate_limit_per_minute=0)


def _truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def cut(folder: Path) -> None:
        raw = (folder / name).read_bytes()
        (folder / name).write_bytes(raw[: int(len(raw) * keep)])

    return cut


def _replace(name: str, data: bytes) -> Callable[[Path], None]:
    def overwrite(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return overwrite


CORRUPTIONS = {
    "intact-copy": None,  # control: a faithful copy is accepted, so the others fail for their damage
    "truncated-vectors": _truncate("vectors.npy"),
    "empty-vectors": _replace("vectors.npy", b""),
    "garbage-faiss": _replace("index.faiss", b"not a faiss index"),
    "truncated-chunks": _truncate("chunks.jsonl", 0.3),
    "unreadable-manifest": _replace("manifest.json", b"{"),
    "missing-manifest": lambda folder: (folder / "manifest.json").unlink(),
}


def _point_at_copy(settings: Settings, damage: Callable[[Path], None] | None) -> str:
    store = IndexStore(settings.index_home, settings.keep_builds)
    build_id = "20990101-000000-copy"
    shutil.copytree(store.current_path(), store.builds / build_id)
    if damage is not None:
        damage(store.builds / build_id)
    store.set_current(build_id)
    return build_id


def _assert_refused(r, *fragments: str) -> None:
    assert r.status_code == 503, r.text
    body = r.json()
    assert set(body) == {"error", "message"}
    assert "Traceback" not in r.text
    for f in fragments:
        assert f in body["message"], body


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_build_is_refused_at_reload_and_the_old_keeps_serving(settings: Settings, fake_encoder, name: str):
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        old = c.get("/readyz").json()["build"]
        _point_at_copy(settings, CORRUPTIONS[name])
        r = c.post("/admin/reload", headers=AUTH)
        if CORRUPTIONS[name] is None:
            assert r.status_code == 200, r.text  # (the copy's manifest still names the original build)
            return
        _assert_refused(r)
        assert c.get("/readyz").json()["build"] == old
        a = c.post("/v1/answer", json={"query": "退货运费谁出"})
        assert a.status_code == 200 and a.json()["trace"]["build"] == old


def test_build_for_another_model_is_refused_and_the_old_keeps_serving(
    settings: Settings, tiny_kb_dir: Path, fake_encoder
):
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        old = c.get("/readyz").json()["build"]
        other = FakeEncoder(dim=128, model_id="fake:other-model")
        store = IndexStore(settings.index_home, settings.keep_builds)
        summary = build_and_swap(load_kb(tiny_kb_dir, strict=False), other, store, settings.chunk_chars)
        assert store.current_id() == summary.build_id != old
        _assert_refused(c.post("/admin/reload", headers=AUTH), "fake:other-model")
        assert c.get("/readyz").json()["build"] == old
        assert c.post("/v1/answer", json={"query": "退货运费谁出"}).json()["trace"]["build"] == old


@pytest.mark.parametrize("name", ["truncated-vectors", "garbage-faiss", "unreadable-manifest"])
def test_start_on_a_corrupt_index_is_not_ready_and_says_why(settings: Settings, fake_encoder, name: str):
    good = IndexStore(settings.index_home).current_id()
    _point_at_copy(settings, CORRUPTIONS[name])
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        assert c.get("/healthz").status_code == 200  # the process is up …
        ready = c.get("/readyz")
        _assert_refused(ready)  # … but not ready, and says why
        assert ready.json()["error"] == "not_ready" and ready.json()["message"] != "starting"
        _assert_refused(c.post("/v1/answer", json={"query": "退货运费谁出"}), "kefu build")
        # a good build fixes it without a restart
        assert IndexStore(settings.index_home).rollback() == good
        r = c.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["build"] == good
        assert c.post("/v1/answer", json={"query": "退货运费谁出"}).status_code == 200
