"""A ticket writer killed with SIGKILL mid-stream: the database stays intact and loses nothing it committed.

The child process writes tickets as fast as it can and, after each ``TicketStore.create`` returns
(the INSERT is committed: the store runs in autocommit mode), appends the ticket id to a report
file. The parent kills it (SIGKILL: no cleanup, no atexit, no checkpoint) while writes are still
flowing, several times on the same database with growing streams, so a kill can also land while
the WAL is being checkpointed. After each kill: ``PRAGMA integrity_check`` is ok, every reported
id is stored, at most the one unreported in-flight ticket is extra, and a fresh store writes again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.tickets import TicketStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

REPO = Path(__file__).resolve().parents[2]
# ~2 KB per ticket, so a few thousand writes pass the WAL auto-checkpoint (1000 pages)
CHILD = """
import sys
from pathlib import Path
from service.tickets import TicketStore

db, report, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
store = TicketStore(db)
cands = [{"id": f"entry-{i}", "score": 0.5, "note": "候选" * 40} for i in range(8)]
with report.open("a", encoding="utf-8", buffering=1) as out:  # line-buffered: one write() per id
    out.write("ready\\n")
    i = 0
    while True:
        t = store.create(f"{tag}-{i} 我要转人工，电话13812345678 " + "退" * 300, "user_requested", f"S{tag}", cands)
        out.write(t.id + "\\n")  # only after the commit returned
        i += 1
"""


def _reported(report: Path) -> list[str]:
    """Complete lines only: a line cut by the kill is not a report."""
    if not report.exists():
        return []
    text = report.read_text("utf-8")
    lines = text.split("\n")[:-1]  # the piece after the last newline is incomplete (or empty)
    return [line for line in lines if line and line != "ready"]


def _kill_mid_stream(db: Path, report: Path, tag: str, after: int) -> list[str]:
    """Start a writer, SIGKILL it once ``after`` commits are reported, return the reported ids."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(report), tag], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while len(_reported(report)) < after:
            assert proc.poll() is None, f"the writer exited early with {proc.returncode}"
            assert time.monotonic() < deadline, f"the writer reported {len(_reported(report))} of {after} writes"
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it never pauses between writes
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return _reported(report)


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_sigkill_mid_write_loses_no_committed_ticket(tmp_path: Path):
    db = tmp_path / "tickets.db"
    TicketStore(db)  # the schema exists before the writers start, as in the service
    committed: set[str] = set()
    for round_, after in enumerate([20, 400, 3000]):
        report = tmp_path / f"report-{round_}.txt"
        ids = _kill_mid_stream(db, report, f"R{round_}", after)
        assert len(ids) >= after and len(set(ids)) == len(ids)
        committed |= set(ids)

        assert _integrity(db) == "ok"
        store = TicketStore(db)  # a new store opens the crashed database (WAL recovery)
        stored = {t.id for t in store.list(limit=100_000)}  # every row parses, candidates included
        missing = committed - stored
        assert not missing, f"round {round_}: {len(missing)} committed tickets lost, e.g. {sorted(missing)[:3]}"
        # at most the one ticket per kill that was committed but not yet reported
        assert len(stored) - len(committed) <= round_ + 1

        t = store.create("崩溃后还能写吗", "low_confidence", "S-after", [])
        assert store.count() == len(stored) + 1
        assert store.list(limit=1)[0] == t
        committed.add(t.id)

    assert _integrity(db) == "ok"


def test_tickets_written_by_a_killed_writer_are_complete_and_masked(tmp_path: Path):
    db = tmp_path / "tickets.db"
    ids = _kill_mid_stream(db, tmp_path / "report.txt", "M", 50)
    rows = sqlite3.connect(db).execute("SELECT id, query, reason, candidates FROM tickets").fetchall()
    by_id = {r[0]: r for r in rows}
    for tid in ids:
        _, query, reason, candidates = by_id[tid]
        assert reason == "user_requested"
        assert "13812345678" not in query and "[手机号]" in query
        assert len(json.loads(candidates)) == 8  # no half-written row


def test_wal_mode_persists_across_reopen_and_crash(tmp_path: Path):
    db = tmp_path / "tickets.db"
    first = TicketStore(db)
    first.create("q", "low_confidence", None, [])
    del first
    # a plain connection never asks for WAL: what it reports is what the file says
    plain = sqlite3.connect(db)
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plain.close()

    _kill_mid_stream(db, tmp_path / "report.txt", "W", 20)
    plain = sqlite3.connect(db)
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plain.close()
    reopened = TicketStore(db)
    assert reopened._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reopened._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
