"""Progress lines for output that is not a terminal (kb/clikit.py)."""

from __future__ import annotations

import io

from kb.clikit import LogProgress, progress_display


def test_log_progress_prints_counts_at_most_every_interval_and_once_at_the_end() -> None:
    out = io.StringIO()
    with LogProgress(out, every_s=3600) as bar:
        task = bar.add_task("embedding texts", total=None)
        for done in range(0, 1001, 100):
            bar.update(task, completed=done, total=1000)
        bar.update(task, completed=1000, total=1000)  # finished: not printed twice
    assert out.getvalue().splitlines() == ["embedding texts: 1,000/1,000"]


def test_log_progress_with_no_interval_prints_each_update_and_unknown_totals() -> None:
    out = io.StringIO()
    bar = LogProgress(out, every_s=0)
    a = bar.add_task("fit")
    bar.update(a, completed=5)
    bar.update(a, completed=7, total=10)
    assert out.getvalue().splitlines() == ["fit: 5", "fit: 7/10"]


def test_progress_goes_to_lines_when_stderr_is_not_a_terminal() -> None:
    assert isinstance(progress_display(), LogProgress)  # pytest captures stderr
