"""Small helpers shared by every package's CLI: settings from the context, error edges."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

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
