"""A setting that is not allowed, from a flag or a KEFU_ variable: one line naming it, the value and
what is allowed, exit 2 (never a pydantic traceback)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kb.errors import ConfigError
from kb.settings import MAX_TOP_K, Settings, allowed
from kefu_cli import app


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"KEFU_TOP_K": "99"}, ["KEFU_TOP_K=99", "an integer from 1 to 10"]),
        ({"KEFU_PORT": "abc"}, ["KEFU_PORT=abc", "an integer from 1 to 65535"]),
        ({"KEFU_INDEX_KIND": "annoy"}, ["KEFU_INDEX_KIND=annoy", "one of flat, hnsw, ivf"]),
        ({"KEFU_QUERY_INT8": "maybe"}, ["KEFU_QUERY_INT8=maybe", "true or false"]),
        ({"KEFU_SELF_OOS_SHARE": "2"}, ["KEFU_SELF_OOS_SHARE=2", "> 0.0 and < 1.0"]),
        ({"KEFU_CORS_ORIGINS": "https://a.example"}, ["KEFU_CORS_ORIGINS", "JSON list"]),
        ({"KEFU_ORDER_WEBHOOK": "ftp://x"}, ["KEFU_ORDER_WEBHOOK must be an http:// or https:// URL"]),
    ],
)
def test_a_bad_variable_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragments):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    r = CliRunner().invoke(app, ["stats"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "ValidationError" not in r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ")
    for f in fragments:
        assert f in line, line


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["build", "--kind", "banana", "--kb", "X"], ["--kind banana", "one of flat, hnsw, ivf"]),
        (["serve", "--port", "70000"], ["--port 70000", "an integer from 1 to 65535"]),
        (["serve", "--host", "127.0.0.1", "--port", "0"], ["--port 0", "from 1 to 65535"]),
        (["--model", " ", "stats"], ["--model", "KEFU_MODEL is empty"]),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args: list[str], fragments: list[str]):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    [line] = r.stderr.strip().splitlines()
    for f in fragments:
        assert f in line, line


def test_overrides_refuse_with_a_config_error_naming_the_flag():
    with pytest.raises(ConfigError, match=r"^--port 70000 is not allowed: use an integer from 1 to 65535$"):
        Settings().with_overrides(port=70000)
    with pytest.raises(ConfigError, match="KEFU_BATCH_SIZE=0"):  # a setting no flag sets: its variable
        Settings().with_overrides(batch_size=0)


def test_load_keeps_good_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEFU_TOP_K", str(MAX_TOP_K))
    assert Settings.load().top_k == MAX_TOP_K


def test_allowed_describes_each_kind_of_setting():
    assert allowed("top_k") == "an integer from 1 to 10"
    assert allowed("microbatch_max") == "an integer from 1 to 512"  # int | None: the int
    assert allowed("vector_store") == "one of faiss, milvus"
    assert allowed("max_body_bytes") == "an integer ≥ 256"
    assert allowed("host") is None and allowed("nosuch") is None
