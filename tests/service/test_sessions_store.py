"""SessionFile (``kefu ask --session`` across invocations): the in-memory store's turns, TTL and
bounds in a SQLite file that concurrent processes share; and the CLI reading a session back."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import service.selfcal
import service.sessions_store as store_mod
from kb.errors import ConfigError
from kb.settings import Settings
from kefu_cli import app
from service.sessions import MAX_TURNS, Turn
from service.sessions_store import SessionFile, sessions_path
from tests.fakes import FAKE_CAL
from tests.service.conftest import write_shop_kb


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def time(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(store_mod, "time", SimpleNamespace(time=c.time))
    return c


def test_turns_outlive_the_store_object(tmp_path: Path):
    path = tmp_path / "data" / "sessions.db"
    first = SessionFile(path)
    first.add("S1", Turn("退货运费谁出", message="退货运费谁出？"))
    first.close()
    again = SessionFile(path)  # as the next `kefu ask` opens it
    assert again.last("S1") == Turn("退货运费谁出", message="退货运费谁出？")
    again.add("S1", Turn("那运费呢", order=True))
    assert again.turns("S1") == (Turn("退货运费谁出", message="退货运费谁出？"), Turn("那运费呢", order=True))
    assert again.messages("S1") == ("退货运费谁出？", "那运费呢")
    assert again.last("S2") is None and len(again) == 1


def test_the_file_holds_masked_text_only(tmp_path: Path):
    path = tmp_path / "sessions.db"
    store = SessionFile(path)
    store.add("S1", Turn("手机号13812345678收不到验证码", message="我手机号 138 1234 5678 收不到验证码"))
    store.add("S1", Turn("那邮箱a.b@example.com呢"))
    store.close()
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("sessions.db-*"))
    for secret in ("13812345678", "138 1234 5678", "a.b@example.com"):
        assert secret.encode() not in raw
    again = SessionFile(path)
    assert again.turns("S1") == (
        Turn("手机号[手机号]收不到验证码", message="我手机号 [手机号] 收不到验证码"),
        Turn("那邮箱[邮箱]呢"),
    )


def test_ttl_as_the_memory_store(tmp_path: Path, clock: Clock):
    s = SessionFile(tmp_path / "s.db", ttl_s=60)
    s.add("S1", Turn("q"))
    clock.t += 60  # exactly at the TTL: still alive
    assert s.last("S1") == Turn("q")
    clock.t += 0.001
    assert s.last("S1") is None and len(s) == 0
    s.add("S1", Turn("q2"))  # an expired session starts afresh
    assert s.turns("S1") == (Turn("q2"),)


def test_expired_sessions_are_deleted_and_the_size_is_bounded(tmp_path: Path, clock: Clock):
    s = SessionFile(tmp_path / "s.db", ttl_s=60, max_sessions=2)
    s.add("old", Turn("o"))
    clock.t += 61
    s.add("A", Turn("a"))
    count = s._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    assert count == 1  # the expired one is gone from the file, not only hidden
    clock.t += 1
    s.add("B", Turn("b"))
    clock.t += 1
    s.add("A", Turn("a2"))  # A is now the most recently written
    clock.t += 1
    s.add("C", Turn("c"))
    assert len(s) == 2 and s.last("B") is None
    assert s.last("A") == Turn("a2") and s.last("C") == Turn("c")


def test_a_session_keeps_its_last_turns(tmp_path: Path):
    s = SessionFile(tmp_path / "s.db")
    for i in range(MAX_TURNS + 5):
        s.add("S1", Turn(str(i)))
    assert [t.query for t in s.turns("S1")] == [str(i) for i in range(5, MAX_TURNS + 5)]


def test_scopes_are_apart(tmp_path: Path):
    shops, platform = SessionFile(tmp_path / "s.db", scope="shops"), SessionFile(tmp_path / "s.db")
    shops.add("S1", Turn("shop"))
    assert platform.last("S1") is None and shops.last("S1") == Turn("shop")


def test_concurrent_adds_are_not_lost(tmp_path: Path):
    path = tmp_path / "s.db"
    SessionFile(path)  # the schema, before the writers race

    def writer(name: str) -> None:
        own = SessionFile(path)  # a connection of its own, as another process has
        for i in range(MAX_TURNS // 2):
            own.add("S1", Turn(f"{name}{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sorted(t.query for t in SessionFile(path).turns("S1"))
    assert got == sorted(f"{n}{i}" for n in "ab" for i in range(MAX_TURNS // 2))


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path):
    bad = tmp_path / "sessions.db"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match="delete the file"):
        SessionFile(bad).add("S1", Turn("q"))


# --- the CLI ---------------------------------------------------------------------------------------
def _ask(runner: CliRunner, *args: str) -> dict:
    r = runner.invoke(app, ["ask", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_ask_session_continues_across_invocations(runner: CliRunner, env: Settings):
    first = _ask(runner, "--session", "S999", "七天无理由退货需要满足什么条件？")
    assert first["session_id"] == "S999" and first["decision"] == "answer"
    follow = _ask(runner, "--session", "S999", "那运费呢")  # a new process in real use: a new Runtime here
    assert follow["trace"]["used_context"] is True
    assert follow["trace"]["retrieval_text"].startswith("七天无理由退货需要满足什么条件")
    other = _ask(runner, "--session", "S1000", "那运费呢")
    assert other["trace"]["used_context"] is False


def test_ask_without_session_keeps_nothing(runner: CliRunner, env: Settings):
    _ask(runner, "七天无理由退货需要满足什么条件？")
    assert not sessions_path(env).exists()


def test_ask_session_in_a_shop(runner: CliRunner, env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )
    r = runner.invoke(app, ["shops", "add", "acme", "--kb", str(write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))])
    assert r.exit_code == 0, r.output
    _ask(runner, "--shop", "acme", "--session", "S7", "七天无理由退货需要满足什么条件？")
    follow = _ask(runner, "--shop", "acme", "--session", "S7", "那运费呢")
    assert follow["trace"]["used_context"] is True
    kept = {s: SessionFile.at(env, s).turns("S7") for s in ("shops", "shops-platform", "platform")}
    assert len(kept["shops"]) == len(kept["shops-platform"]) == 2 and kept["platform"] == ()


def test_session_help_says_what_it_does(runner: CliRunner):
    r = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "200"})
    assert "sessions.db" in r.stdout
