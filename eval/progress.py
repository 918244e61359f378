"""Progress lines for long loops: every call on a terminal, else a line every few seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

TICK_S = 5.0  # progress line interval when the output is not a terminal
Say = Callable[[str], None]


class Ticker:
    """Progress for long loops: every call on a terminal, else a line every ``TICK_S`` seconds."""

    def __init__(self, say: Say, label: str) -> None:
        self.say, self.label = say, label
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= (0.5 if self.tty else TICK_S):
            self.last = now
            self.say(f"{self.label}: {done:,}/{total:,}")
