"""`kefu chat` opens handoff tickets as `kefu ask` does: only with --record."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from kefu_cli import app


def _tickets(runner: CliRunner) -> list[dict]:
    r = runner.invoke(app, ["handoffs", "list", "--json"])
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_chat_opens_no_ticket_without_record(runner: CliRunner, env):
    r = runner.invoke(app, ["chat"], input="转人工\n/quit\n")
    assert r.exit_code == 0, r.output
    assert "user_requested" in r.stdout and "no ticket opened" in r.stdout
    assert _tickets(runner) == []


def test_chat_with_record_opens_the_ticket(runner: CliRunner, env):
    r = runner.invoke(app, ["chat", "--record"], input="转人工\n/quit\n")
    assert r.exit_code == 0, r.output
    [ticket] = _tickets(runner)
    assert ticket["reason"] == "user_requested" and f"ticket {ticket['id']}" in r.stdout


def test_record_reads_the_same_in_ask_and_chat():
    import typer

    group: Any = typer.main.get_command(app)

    def record(command: str) -> tuple[object, ...]:
        [option] = [p for p in group.commands[command].params if p.name == "record"]
        return tuple(option.opts), option.default, option.help

    assert record("chat") == record("ask")
    assert record("chat")[1] is False  # a try-out opens no ticket unless asked to
