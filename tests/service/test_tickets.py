"""TicketStore: create/list/count, masking, filters, restarts, concurrent writers, WAL."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kb.errors import ConfigError
from service.tickets import TicketStore

CANDS = [{"id": "refund-seven-day", "score": 0.8123}, {"id": "rules-return#2", "score": 0.5}]


def test_create_list_count(tmp_path: Path):
    store = TicketStore(tmp_path / "t.db")
    assert store.count() == 0
    assert store.list() == []
    t = store.create("退款多久到账", "low_confidence", "S1", CANDS)
    assert t.id.startswith("T") and len(t.id) == 17
    assert store.count() == 1
    [got] = store.list()
    assert got == t
    assert got.candidates == CANDS
    j = got.to_json()
    assert set(j) == {"id", "created", "session_id", "query", "reason", "candidates", "history"}
    assert j["history"] == []  # nothing before it (tests/service/test_tickets_history.py)
    assert j["session_id"] == "S1" and j["reason"] == "low_confidence"


def test_list_is_newest_first_and_limited(tmp_path: Path):
    store = TicketStore(tmp_path / "t.db")
    made = [store.create(f"问题{i}", "low_confidence", None, []) for i in range(5)]
    listed = store.list(limit=3)
    assert len(listed) == 3
    assert [t.created for t in listed] == sorted((t.created for t in made), reverse=True)[:3]
    assert {t.id for t in listed} <= {t.id for t in made}
    with pytest.raises(ConfigError):
        store.list(limit=0)


def test_personal_data_is_masked_before_storing(tmp_path: Path):
    path = tmp_path / "t.db"
    store = TicketStore(path)
    t = store.create("我电话13812345678，邮箱 a.b@example.com，订单20261125001", "user_requested", "S1", [])
    assert "13812345678" not in t.query and "a.b@example.com" not in t.query
    assert "[手机号]" in t.query and "[邮箱]" in t.query and "20261125001" in t.query
    raw = sqlite3.connect(path).execute("SELECT query FROM tickets").fetchone()[0]
    assert "13812345678" not in raw and raw == t.query


def test_reason_filter(tmp_path: Path):
    store = TicketStore(tmp_path / "t.db")
    for reason in ["sensitive", "user_requested", "sensitive", "low_confidence"]:
        store.create("q", reason, None, [])
    assert {t.reason for t in store.list(reason="sensitive")} == {"sensitive"}
    assert len(store.list(reason="sensitive")) == 2
    assert store.list(reason="empty_query") == []
    assert len(store.list(reason=None)) == 4


def test_tickets_survive_a_restart(tmp_path: Path):
    path = tmp_path / "sub" / "dir" / "t.db"  # folders are created
    first = TicketStore(path)
    t = first.create("转人工", "user_requested", "S9", CANDS)
    del first
    second = TicketStore(path)
    assert second.count() == 1
    assert second.list()[0] == t


def test_wal_mode_is_on(tmp_path: Path):
    path = tmp_path / "t.db"
    TicketStore(path).create("q", "low_confidence", None, [])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unwritable_folder_is_a_config_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x", "utf-8")
    with pytest.raises(ConfigError, match="KEFU_TICKETS_DB"):
        TicketStore(blocker / "t.db")


def test_concurrent_threads_lose_no_ticket(tmp_path: Path):
    store = TicketStore(tmp_path / "t.db")
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(25):
                store.create(f"线程{n}-{i}", "low_confidence", f"S{n}", [{"id": "x", "score": 0.1}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 200
    queries = {t.query for t in store.list(limit=500)}
    assert queries == {f"线程{n}-{i}" for n in range(8) for i in range(25)}


def _write_tickets(path: str, n: int) -> None:
    store = TicketStore(Path(path))
    for i in range(25):
        store.create(f"进程{n}-{i}", "sensitive", f"P{n}", [])


def in_processes(target: Callable[[str, int], None], path: Path, n: int = 4) -> list[int | None]:
    """Run ``target(str(path), i)`` for i < n in spawned processes at once; their exit codes."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=(str(path), i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [p.exitcode for p in procs]


def test_concurrent_processes_lose_no_ticket(tmp_path: Path):
    path = tmp_path / "t.db"
    TicketStore(path)  # schema created once up front, as the service does
    assert in_processes(_write_tickets, path) == [0, 0, 0, 0]
    store = TicketStore(path)
    assert store.count() == 100
    assert {t.query for t in store.list(limit=500)} == {f"进程{n}-{i}" for n in range(4) for i in range(25)}
