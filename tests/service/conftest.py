"""Fixtures of the service tests: the CLI with the fake encoder patched in for the real model."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import indexer.encoder
import service.runtime
from indexer.store import IndexStore, write_calibration
from kb.settings import Settings
from tests.fakes import FAKE_CAL


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, fake_encoder):
    """Every place the CLI may load the model gets the fake encoder instead."""
    monkeypatch.setattr(indexer.encoder, "load_encoder", lambda settings: fake_encoder)
    monkeypatch.setattr(service.runtime, "load_encoder", lambda settings: fake_encoder)
    return fake_encoder


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tiny_settings: Settings, tiny_index, fake_model) -> Settings:
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    monkeypatch.setenv("KEFU_DATA_DIR", str(tiny_settings.data_dir))
    monkeypatch.setenv("KEFU_KB_DIR", str(tiny_settings.kb_dir))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    return tiny_settings
