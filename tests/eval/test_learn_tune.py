"""`kefu learn tune` (eval/learn_tune.py): tune on the learned examples, compare with the served
build, keep the model only when it loses nothing beyond the tolerance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import eval.learn_tune as T
import indexer.tune
from eval.learn import learn
from eval.learn_guard import Checks, Comparison
from eval.learn_tune import tune_kb
from indexer.build import build_and_swap
from indexer.encoder import load_encoder
from indexer.encoders.library import SentenceTransformerEncoder
from indexer.store import IndexStore
from indexer.tune import TuneOptions
from kb import learn_files as F
from kb import learn_journal as J
from kb import learned as L
from kb.errors import ConfigError
from kb.loader import load_kb
from kb.schema import KnowledgeBase
from kb.settings import Settings
from tests.indexer.test_encoder import _tiny_st_model

ENTRY = "refund-seven-day"
OPTIONS = TuneOptions(epochs=1, batch_size=4, learning_rate=1e-3, scale=20.0)


def _messages(n: int, split: str, template: str) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        m = template.format(i)
        if F.split_of(m) == split:
            out.append(m)
        i += 1
    return out


@pytest.fixture
def tiny_st(tmp_path: Path, tiny_kb_dir: Path) -> tuple[Settings, SentenceTransformerEncoder]:
    """The tiny KB served by a build of a tiny real sentence-transformers model."""
    model = _tiny_st_model(tmp_path / "model", layers=1)
    s = Settings(kb_dir=tiny_kb_dir, data_dir=tmp_path / "data", model=str(model), model_cache=tmp_path / "cache")
    enc = load_encoder(s)
    build_and_swap(load_kb(tiny_kb_dir), enc, IndexStore(s.index_home, s.keep_builds), s.chunk_chars)
    return s, enc


def _attach(s: Settings) -> None:
    kb = load_kb(s.kb_dir)
    for split in ("dev", "test"):
        L.decide(kb, "attach", _messages(4, split, "买的第{}件衣服七天内还能退吗"), entry=ENTRY, who="op")
        L.decide(kb, "attach", _messages(4, split, "第{}个包裹怎么查物流"), entry="logistics-track", who="op")


def test_too_few_examples_say_how_many_and_what_to_do(tiny_st):
    s, enc = tiny_st
    with pytest.raises(ConfigError, match=r"0 answered dev examples.*needs 50.*kefu learn attach"):
        tune_kb(s, enc)


def test_a_model_that_is_not_sentence_transformers_cannot_be_tuned(tiny_settings: Settings, fake_encoder):
    with pytest.raises(ConfigError, match="cannot be tuned"):
        tune_kb(tiny_settings, fake_encoder)


def test_tune_compares_with_the_served_build_and_keeps_the_model(tiny_st, monkeypatch: pytest.MonkeyPatch):
    s, enc = tiny_st
    monkeypatch.setattr(T, "MIN_EXAMPLES", 4)
    _attach(s)  # pending: tuning learns from their examples, and builds the KB as it is
    built: list[set[str]] = []
    real_candidate = T.candidate

    def spy(rt: Any, kb: KnowledgeBase, *a: Any, **k: Any) -> Any:
        built.append({alt for e in kb.entries for alt in e.alt_questions})
        return real_candidate(rt, kb, *a, **k)

    monkeypatch.setattr(T, "candidate", spy)
    got = tune_kb(s, enc, Checks(tolerance=1.0), options=OPTIONS)
    pending = {m for st in J.states(s.kb_dir).values() for m in st.decision.messages}
    # the tuned model measured alone: the pending alternatives are `kefu learn`'s to apply or refuse
    assert len(built) == 1 and built[0] and not built[0] & pending
    assert got.kept and not got.refused and got.tuned.folder.is_dir()
    assert got.tuned.folder.parent == Path(s.model_cache) / "tuned" and got.tuned.examples == 8
    assert got.calibration[0].startswith("served build ")
    learned = next(c for c in got.comparisons if c.name == "learned test")
    assert learned.before is not None and learned.before.n_in == learned.after.n_in == 8
    record = J.read_journal(s.kb_dir)[-1]
    assert record["event"] == "tuned" and record["model"] == str(got.tuned.folder) and record["examples"] == 8
    assert all(st.status == "pending" for st in J.states(s.kb_dir).values())  # tuning applies nothing
    assert load_encoder(s.with_overrides(model=str(got.tuned.folder))).model_id == str(got.tuned.folder.resolve())
    assert [p for p in (Path(s.model_cache) / "onnx").glob("*") if got.tuned.folder.name in p.name]  # its graph


def test_a_tuned_model_that_loses_is_removed_with_its_graphs(tiny_st, monkeypatch: pytest.MonkeyPatch):
    s, enc = tiny_st
    monkeypatch.setattr(T, "MIN_EXAMPLES", 4)
    monkeypatch.setattr(Comparison, "losses", lambda self, tol: [f"{self.name}: hit@1 0.900 → 0.500"])
    _attach(s)
    graphs = set((Path(s.model_cache) / "onnx").glob("*"))
    exported: list[Path] = []
    real = T.load_encoder

    def load(st: Settings) -> SentenceTransformerEncoder:
        e = real(st)
        exported.extend(Path(st.model_cache).rglob("*"))
        return e

    monkeypatch.setattr(T, "load_encoder", load)
    got = tune_kb(s, enc, options=OPTIONS)
    assert {p for p in exported if got.tuned.folder.name in p.name}  # the candidate had its graphs
    assert not got.kept and got.refused and not got.tuned.folder.exists()
    assert set((Path(s.model_cache) / "onnx").glob("*")) == graphs  # the candidate's exported graphs went too
    assert J.read_journal(s.kb_dir)[-1]["event"] == "tuning refused"
    forced = tune_kb(s, enc, Checks(force=True), options=OPTIONS)
    assert forced.kept and forced.forced and forced.tuned.folder.is_dir()


def test_kefu_learn_tune_cli(tiny_st, monkeypatch: pytest.MonkeyPatch):
    from kefu_cli import app

    s, _ = tiny_st
    monkeypatch.setattr(T, "MIN_EXAMPLES", 4)
    monkeypatch.setattr(indexer.tune, "TuneOptions", lambda epochs: OPTIONS)
    for key, value in (
        ("DATA_DIR", s.data_dir),
        ("KB_DIR", s.kb_dir),
        ("MODEL", s.model),
        ("MODEL_CACHE", s.model_cache),
    ):
        monkeypatch.setenv(f"KEFU_{key}", str(value))
    runner = CliRunner()
    out = runner.invoke(app, ["learn", "tune"])
    assert out.exit_code == 2 and "0 answered dev examples" in out.output
    _attach(s)
    out = runner.invoke(app, ["learn", "tune", "--json", "--tolerance", "1"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["kept"] and Path(got["model"]).is_dir() and got["examples"] == 8
    assert [c["set"] for c in got["comparisons"]] == ["learned test"]
    out = runner.invoke(app, ["learn", "tune", "--tolerance", "1"])
    assert out.exit_code == 0 and f"KEFU_MODEL={got['model']}" in out.output.replace("\n", "")


def test_learn_with_the_kept_model_is_compared_with_the_build_of_the_model_before(tiny_st, monkeypatch):
    s, enc = tiny_st
    monkeypatch.setattr(T, "MIN_EXAMPLES", 4)
    _attach(s)
    got = tune_kb(s, enc, Checks(tolerance=1.0), options=OPTIONS)
    switched = s.with_overrides(model=str(got.tuned.folder))
    tuned_enc = load_encoder(switched)
    result = learn(switched, tuned_enc, Checks(tolerance=1.0))
    learned = next(c for c in result.comparisons if c.name == "learned test")
    assert result.shipped and learned.before is not None  # the tiny base model answered the "before"
    assert IndexStore(s.index_home, s.keep_builds).load_current(None).manifest.model_id == tuned_enc.model_id
    again = learn(switched, tuned_enc)
    assert again.nothing_to_do  # now the served build is of this KB and this model


def test_a_served_build_whose_model_is_gone_is_not_compared_with(tiny_st, tmp_path: Path, monkeypatch):
    s, enc = tiny_st
    other = _tiny_st_model(tmp_path / "other", layers=2)
    switched = s.with_overrides(model=str(other))
    other_enc = load_encoder(switched)
    shutil.rmtree(Path(enc.model_path))  # the model the served build was made with
    L.decide(
        load_kb(s.kb_dir), "attach", _messages(3, "test", "第{}个包裹怎么查物流"), entry="logistics-track", who="op"
    )
    said: list[str] = []
    result = learn(switched, other_enc, say=said.append)
    assert result.shipped and all(c.before is None for c in result.comparisons)
    assert any("cannot be opened here" in line for line in said)
