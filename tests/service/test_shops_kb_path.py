"""A shop remembers the KB path it was added with, a file or a folder, and rebuilds from exactly that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import service.selfcal
from kb.settings import Settings
from service.shops import Shops, rollback_kb_path
from tests.fakes import FAKE_CAL
from tests.service.conftest import write_shop_kb


@pytest.fixture(autouse=True)
def _fake_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    # the fake encoder's cosines get the fake-encoder thresholds, not a self-calibration
    monkeypatch.setattr(
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )


def _file_beside_a_broken_one(tmp_path: Path) -> Path:
    """``faq.csv`` in a folder that also holds a draft ``kefu kb check`` rejects."""
    folder = write_shop_kb(tmp_path / "downloads", "acme", "跑鞋")
    (folder / "draft.yaml").write_text("entries: [\n", "utf-8")
    return folder / "faq.csv"


def test_cli_add_with_a_file_keeps_the_file_and_rebuilds_from_it(env: Settings, runner, tmp_path: Path) -> None:
    from kefu_cli import app

    faq = _file_beside_a_broken_one(tmp_path)
    r = runner.invoke(app, ["shops", "add", "acme", "--kb", str(faq)])
    assert r.exit_code == 0, r.output
    [listed] = [json.loads(line) for line in runner.invoke(app, ["shops", "list", "--json"]).stdout.splitlines()]
    assert listed["kb_root"] == str(faq)  # the file, not its folder
    r = runner.invoke(app, ["shops", "rebuild", "acme", "--force"])
    assert r.exit_code == 0, r.output  # the draft beside it is not loaded


def test_a_relative_path_is_kept_absolute(tiny_settings: Settings, tiny_index, fake_encoder, tmp_path: Path) -> None:
    faq = _file_beside_a_broken_one(tmp_path)
    shops = Shops(tiny_settings, fake_encoder)
    try:
        shops.add("acme", Path("downloads/faq.csv"))  # the tests run in tmp_path
        assert shops.registry.require("acme").kb_root == str(faq)
    finally:
        shops.close()


def test_rollback_keeps_the_file_and_a_registry_naming_a_folder_still_rebuilds(
    tiny_settings: Settings, tiny_index, fake_encoder, tmp_path: Path
) -> None:
    faq = _file_beside_a_broken_one(tmp_path)
    shops = Shops(tiny_settings, fake_encoder)
    try:
        shops.add("acme", faq)
        shops.rebuild("acme", force=True)
        shops.rollback("acme")
        assert shops.registry.require("acme").kb_root == str(faq)
        # an older kefu registered the folder of a clean KB: it is rebuilt as a folder
        clean = write_shop_kb(tmp_path / "bobo", "bobo", "茶叶")
        shops.add("bobo", clean)
        assert shops.registry.require("bobo").kb_root == str(clean)
        assert shops.rebuild("bobo", force=True).entries > 0
    finally:
        shops.close()


def test_rollback_to_a_build_of_another_kb_names_that_kb() -> None:
    assert rollback_kb_path("/kb/acme/faq.csv", "/kb/acme") == "/kb/acme/faq.csv"
    assert rollback_kb_path("/kb/acme", "/kb/acme") == "/kb/acme"
    assert rollback_kb_path("/kb/new/faq.csv", "/kb/old") == "/kb/old"
