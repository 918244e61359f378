"""Served answers logged off the answer path: the answer queues its row, one thread writes them.

Every answer the API serves is logged (``AnswerLog``: what a 👍/👎 names, what `kefu stats` and
`kefu gaps` read). Written by the answering threads themselves, each insert was its own SQLite
transaction, and with several answers in flight they queued for the file's write lock: over HTTP
at 32 clients an answer spent about 0.3 ms there (docs/speed.md), holding one of the answers that
may run at once. Here a request only appends its row; one thread writes what has queued in one
transaction, at most ``FLUSH_S`` later. Tickets are still written by the answer itself: an agent
must find a handoff at once, and a crash must not lose one. A crash loses at most the last
``FLUSH_S`` of the answer log; a vote waits for its answer's row (``flush``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from service.schemas import Answer
from service.tickets import AnswerLog, LoggedAnswer

log = logging.getLogger("kefu.api")

FLUSH_S = 0.05  # how long a row may wait for the rows after it
FLUSH_TIMEOUT_S = 10.0  # a vote or a reader waits at most this long for the queued rows


class AnswerWriter:
    """Queues ``AnswerLog`` rows and writes them in batches from one thread (started here)."""

    def __init__(self, answers: AnswerLog, flush_s: float = FLUSH_S) -> None:
        self.answers = answers
        self.flush_s = flush_s
        self._pending: list[LoggedAnswer] = []
        self._queued = 0  # rows ever queued
        self._done = 0  # rows ever written (or dropped by a failed write, which is logged)
        self._urgent = False
        self._closed = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="kefu-answer-log", daemon=True)
        self._thread.start()

    def record(self, answer: Answer, shop: str | None = None) -> None:
        """Queue ``answer`` (served for ``shop``) for the log."""
        row = AnswerLog.row(answer, shop)
        with self._cv:
            if self._closed:  # after shutdown began: written at once rather than lost
                self.answers.insert([row])
                return
            self._pending.append(row)
            self._queued += 1
            if len(self._pending) == 1:
                self._cv.notify_all()

    def flush(self) -> None:
        """Return once every row queued before the call is written (or ``FLUSH_TIMEOUT_S`` passed)."""
        with self._cv:
            target = self._queued
            if self._done >= target:
                return
            self._urgent = True
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._done >= target, timeout=FLUSH_TIMEOUT_S)

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=FLUSH_TIMEOUT_S)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending and self._closed:
                    return
                # the rows that follow within flush_s go in the same transaction
                self._cv.wait_for(lambda: self._urgent or self._closed, timeout=self.flush_s)
                rows, self._pending, self._urgent = self._pending, [], False
            try:
                self.answers.insert(rows)
            except sqlite3.Error as exc:
                log.warning("%d answers not logged (their 👍/👎 will get 404): %s", len(rows), exc)
            with self._cv:
                self._done += len(rows)
                self._cv.notify_all()
