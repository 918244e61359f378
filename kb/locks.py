"""One exclusive lock file per folder, across processes (the kernel's ``flock``: it goes with a
crashed process). Builds of an index home and changes to a KB folder both take one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path, busy: Callable[[str], Exception], wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``path`` locked for the block, waiting up to ``wait_s`` for another holder; then raise
    ``busy(holder)`` (holder: "pid N" as the other process wrote it). No lock where the platform has
    no ``fcntl`` (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with path.open("a+", encoding="utf-8") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    raise busy(f.read().strip() or "another process") from None
                time.sleep(0.1)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
