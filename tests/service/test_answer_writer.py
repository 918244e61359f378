"""AnswerWriter: served answers queued off the answer path and written in batches by one thread."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.answer_writer import AnswerWriter
from service.schemas import Answer
from service.tickets import AnswerLog, LoggedAnswer


def _answer(i: int) -> Answer:
    return Answer(
        query=f"退款多久到账 {i}，电话13812345678",
        normalized_query=f"退款多久到账 {i}",
        decision="handoff",
        reason="low_confidence",
        answers=[],
        session_id=f"S{i}",
        answer_id=f"a{i:04d}",
        elapsed_ms=1.0,
        trace={"confidence": 0.2},
    )


class Counting(AnswerLog):
    """An AnswerLog that counts its write transactions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def insert(self, rows: Sequence[LoggedAnswer]) -> None:
        self.batches.append(len(rows))
        super().insert(rows)


def test_rows_written_in_batches_and_readable_after_flush(tmp_path: Path):
    log = Counting(tmp_path / "t.db")
    writer = AnswerWriter(log, flush_s=0.2)
    for i in range(50):
        writer.record(_answer(i))
    writer.flush()
    rows = log.list(limit=100)
    assert len(rows) == 50 and sum(log.batches) == 50
    assert len(log.batches) < 5  # not one transaction per answer
    assert "13812345678" not in rows[0].query  # masked as AnswerLog.record masks
    writer.close()


def test_flush_returns_at_once_when_nothing_is_queued(tmp_path: Path):
    writer = AnswerWriter(AnswerLog(tmp_path / "t.db"), flush_s=5.0)
    t0 = time.perf_counter()
    writer.flush()
    assert time.perf_counter() - t0 < 0.5
    writer.close()


def test_flush_does_not_wait_out_the_batch_window(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    writer = AnswerWriter(log, flush_s=5.0)
    writer.record(_answer(1))
    t0 = time.perf_counter()
    writer.flush()  # a vote right after its answer
    assert time.perf_counter() - t0 < 2.0 and log.get("a0001") is not None
    writer.close()


def test_close_writes_what_is_queued_and_later_rows_go_straight_in(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    writer = AnswerWriter(log, flush_s=5.0)
    for i in range(3):
        writer.record(_answer(i))
    writer.close()
    assert log.count() == 3
    writer.record(_answer(9))  # an answer finishing during shutdown is not lost
    assert log.get("a0009") is not None


def test_a_failed_write_is_logged_and_does_not_stop_the_writer(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    log = AnswerLog(tmp_path / "t.db")
    writer = AnswerWriter(log, flush_s=0.01)
    writer.record(_answer(1))
    writer.flush()
    with caplog.at_level(logging.WARNING, logger="kefu.api"):
        writer.record(_answer(1))  # the same answer id again: the insert fails
        writer.flush()
    assert "not logged" in caplog.text
    writer.record(_answer(2))
    writer.flush()
    assert log.get("a0002") is not None and log.count() == 2
    writer.close()


def test_many_threads_lose_nothing(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    writer = AnswerWriter(log, flush_s=0.01)

    def serve(k: int) -> None:
        for i in range(k * 100, k * 100 + 100):
            writer.record(_answer(i))

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    assert log.count() == 400
    writer.close()


def test_insert_is_all_or_nothing(tmp_path: Path):
    log = AnswerLog(tmp_path / "t.db")
    row = AnswerLog.row(_answer(1))
    with pytest.raises(sqlite3.IntegrityError):
        log.insert([row, LoggedAnswer(**{**row.__dict__, "answer_id": "other"}), row])
    assert log.count() == 0
