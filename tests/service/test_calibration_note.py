"""One line on a build's calibration: `kefu build` prints it and keeps it in the manifest;
`kefu index info`, /readyz (``calibration_note``) and `kefu serve` give that same line."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service.selfcal
from indexer.build import describe_calibration
from indexer.index import Index
from indexer.store import IndexStore, calibration_note, write_calibration
from kb.settings import Settings
from kefu_cli import app
from service.api_state import readiness
from service.runtime import Runtime
from tests.fakes import FAKE_CAL

NOTE = "calibration: self-calibrated from the shipped prior alone (9 questions are too few to measure on) in 0.1 s"


@pytest.fixture
def data_dir(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_kb_dir: Path, fake_model) -> Path:
    """`kefu build` of the tiny KB with a stand-in self-calibration that says ``NOTE``."""
    data = tmp_path / "fresh"
    monkeypatch.setenv("KEFU_DATA_DIR", str(data))
    monkeypatch.setenv("KEFU_KB_DIR", str(tiny_kb_dir))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    cal = {**FAKE_CAL.to_json(), "origin": "self"}
    monkeypatch.setattr(service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (cal, NOTE))
    b = runner.invoke(app, ["build"])
    assert b.exit_code == 0, b.output
    assert NOTE in b.stdout
    return data


def test_index_info_and_an_unchanged_build_say_the_line_build_printed(runner: CliRunner, data_dir: Path):
    manifest = Index.read_manifest(IndexStore(data_dir / "index").current_path())
    assert manifest.calibration_note == NOTE
    info = runner.invoke(app, ["index", "info"])
    assert info.exit_code == 0, info.output
    [row] = [line for line in info.stdout.splitlines() if line.startswith("calibration ")]
    assert row.split(None, 1)[1] == NOTE.removeprefix("calibration: ")
    again = runner.invoke(app, ["build"])
    assert "up to date" in again.stdout and NOTE in again.stdout  # why, not only which
    listed = runner.invoke(app, ["index", "list"])
    assert listed.exit_code == 0 and "self" in listed.stdout  # the short provenance


def test_readyz_body_carries_the_line_next_to_the_short_value(data_dir: Path, fake_encoder):
    answerer = Runtime.create(Settings(), encoder=fake_encoder).answerer()
    body = readiness(answerer)
    assert body["calibration_note"] == NOTE
    assert body["calibration"] == describe_calibration(answerer.index.manifest.calibration or {})
    assert {"status", "build", "model", "entries", "calibrated"} <= set(body)
    json.dumps(body)  # plain JSON


def test_serve_prints_the_line_once_on_stderr(runner: CliRunner, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = runner.invoke(app, ["serve", "--port", str(port)])
    assert r.exit_code == 0, r.output
    assert r.stderr.count(NOTE) == 1 and NOTE not in r.stdout


def test_serve_without_a_build_says_so(runner: CliRunner, env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "empty"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = runner.invoke(app, ["serve", "--port", str(port)])
    assert r.exit_code == 0, r.output
    assert "calibration: no build to serve yet" in r.stderr and "kefu build" in r.stderr


def test_a_replaced_calibration_or_an_older_manifest_gets_a_composed_line(data_dir: Path):
    folder = IndexStore(data_dir / "index").current_path()
    write_calibration(folder, FAKE_CAL.to_json())  # as `kefu eval calibrate` does: the old line no longer holds
    m = Index.read_manifest(folder)
    assert m.calibration_note is None
    assert calibration_note(m) == describe_calibration(FAKE_CAL.to_json())
    raw = json.loads((folder / "manifest.json").read_text("utf-8"))
    raw.pop("calibration_note")  # a manifest an older kefu wrote
    (folder / "manifest.json").write_text(json.dumps(raw), "utf-8")
    assert calibration_note(Index.read_manifest(folder)) == describe_calibration(FAKE_CAL.to_json())
