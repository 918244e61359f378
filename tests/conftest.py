"""Shared fixtures: settings isolated from the developer's environment, the real model once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kb.settings import Settings


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KEFU_* variable or .env of the developer leaks into a test."""
    for key in list(os.environ):
        if key.startswith("KEFU_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The real model cache (shared with `make serve`, so it is converted once per machine)."""
    return Settings().model_cache


@pytest.fixture(scope="session")
def builtin_model(model_cache: Path):
    from indexer.model.builtin import prepare_builtin

    return prepare_builtin("builtin:multilingual-e5-small", model_cache)
