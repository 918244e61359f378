"""Small helpers shared by every package's CLI: settings from the context, error edges."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from kb.errors import KefuError
from kb.settings import Settings

# Rich wraps at 80 columns when output is not a terminal; piped tables stay whole instead.
PIPE_WIDTH = 240
console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)

F = TypeVar("F", bound=Callable[..., Any])


def settings_of(ctx: typer.Context) -> Settings:
    """The one Settings object built by the ``kefu`` callback (or a fresh one when run alone)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


def edge(fn: F) -> F:
    """Turn a KefuError into a one-line message on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KefuError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            problems = getattr(exc, "problems", None) or []
            for p in problems[:50]:
                err_console.print(f"  {p}", highlight=False, soft_wrap=True)
            if len(problems) > 50:
                err_console.print(f"  … and {len(problems) - 50} more", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]


LOG_EVERY_S = 5.0  # when progress goes to a log: often enough to show life, rarely enough to stay readable


class LogProgress:
    """Progress as counts on stderr, one line every few seconds: for output that is not a terminal,
    where a live bar prints nothing. Same ``add_task``/``update`` calls as rich's ``Progress``."""

    def __init__(self, stream: TextIO | None = None, every_s: float = LOG_EVERY_S) -> None:
        self._stream = stream
        self._every_s = every_s
        self._tasks: dict[TaskID, list[Any]] = {}  # id -> [description, completed, total, last printed, finished]

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **_: Any) -> TaskID:
        task = TaskID(len(self._tasks))
        self._tasks[task] = [description, 0, total, time.monotonic(), False]
        return task

    def update(
        self, task: TaskID, completed: float | None = None, total: float | None = None, visible: bool = True, **_: Any
    ) -> None:
        state = self._tasks[task]
        if completed is not None:
            state[1] = completed
        if total is not None:
            state[2] = total
        done = state[2] is not None and state[1] >= state[2]
        now = time.monotonic()
        if state[4] or not (done or now - state[3] >= self._every_s):
            return
        state[3], state[4] = now, done
        of = f"/{int(state[2]):,}" if state[2] is not None else ""
        print(f"{state[0]}: {int(state[1]):,}{of}", file=self._stream or sys.stderr, flush=True)


def progress_display(*columns: Any) -> Progress | LogProgress:
    """A live bar of counts on a terminal (stderr), else :class:`LogProgress` lines."""
    if not err_console.is_terminal:
        return LogProgress()
    return Progress(
        *(columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())),
        console=err_console,
        transient=True,
    )
