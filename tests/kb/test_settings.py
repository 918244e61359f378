"""Settings precedence: CLI flag > environment > .env > default."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from kb.settings import DEFAULT_MODEL, Settings


def test_default_model_is_builtin():
    assert Settings().model == DEFAULT_MODEL


def test_dotenv_beats_default(tmp_path: Path):
    (tmp_path / ".env").write_text("KEFU_TOP_K=7\nKEFU_MODEL=from-dotenv\n")
    s = Settings()
    assert s.top_k == 7 and s.model == "from-dotenv"


def test_env_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".env").write_text("KEFU_TOP_K=7\n")
    monkeypatch.setenv("KEFU_TOP_K", "9")
    assert Settings().top_k == 9


def test_flag_beats_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEFU_MODEL", "from-env")
    s = Settings().with_overrides(model="from-flag", kb_dir=None)
    assert s.model == "from-flag"
    assert Settings().with_overrides(model=None).model == "from-env"


def test_cli_flag_reaches_the_settings(monkeypatch: pytest.MonkeyPatch):
    from kb.clikit import settings_of
    from kefu_cli import app

    seen: dict[str, str] = {}

    @app.command("_probe", hidden=True)
    def probe(ctx: typer.Context) -> None:
        seen["model"] = settings_of(ctx).model

    monkeypatch.setenv("KEFU_MODEL", "from-env")
    result = CliRunner().invoke(app, ["--model", "from-flag", "_probe"])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "from-flag"


def test_invalid_value_names_the_field(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEFU_TOP_K", "0")
    with pytest.raises(ValidationError, match="top_k"):
        Settings()


def test_derived_paths(tmp_path: Path):
    s = Settings(data_dir=tmp_path)
    assert s.index_home == tmp_path / "index"
    assert s.tickets_path == tmp_path / "tickets.db"
    assert Settings(data_dir=tmp_path, index_dir=tmp_path / "x").index_home == tmp_path / "x"


def test_query_runtime_is_an_enum_with_a_readable_error(monkeypatch: pytest.MonkeyPatch):
    from kb.errors import ConfigError
    from kb.modes import QueryRuntime

    assert Settings().query_runtime is QueryRuntime.ONNX and Settings().query_runtime == "onnx"
    monkeypatch.setenv("KEFU_QUERY_RUNTIME", "torch")
    assert Settings().query_runtime is QueryRuntime.TORCH
    monkeypatch.setenv("KEFU_QUERY_RUNTIME", "tensorrt")
    with pytest.raises(ValidationError, match=r"query_runtime[\s\S]*'onnx' or 'torch'"):
        Settings()
    with pytest.raises(ConfigError, match="query runtime 'tensorrt' is unknown; allowed: onnx, torch"):
        QueryRuntime.parse("tensorrt")
