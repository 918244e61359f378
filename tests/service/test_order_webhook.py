"""The order webhook: the payload a needs_order handoff posts, failures that cost at most the timeout
and a warning, and its settings."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from indexer.index import Index
from kb.errors import ConfigError
from kb.settings import Settings
from kefu_cli import app
from service.answerer import Answerer
from service.runtime import Runtime
from service.webhook import OrderEvent, OrderWebhook
from tests.fakes import FAKE_CAL


# --- the webhook ---------------------------------------------------------------------------------
@dataclass
class Hook:
    """A local order system: records each POST, replies ``status`` after ``delay`` seconds."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.bodies.append(json.loads(body))
            state.headers.append(self.headers["Content-Type"])
            state.release.wait(state.delay)  # set at teardown: a sleeping handler ends at once
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, *args: Any) -> None:  # the client gave up first: expected here
            pass

    server = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/orders?token=s3cret"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _answerer(tiny_settings: Settings, tiny_index: Index, fake_encoder: Any, **overrides: Any) -> Answerer:
    """Built by the runtime from settings, as the service builds it; warmed up."""
    rt = Runtime.create(tiny_settings.with_overrides(**overrides), encoder=fake_encoder)
    a = rt.answerer(index=tiny_index)
    a.calibration = FAKE_CAL
    a.answer("退货运费谁出")  # first-use index work stays out of the timings
    return a


def test_needs_order_posts_the_payload(hook: Hook, tiny_settings: Settings, tiny_index: Index, fake_encoder: Any):
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url)
    assert answerer.webhook is not None
    a = answerer.answer("我的快递到哪了", session_id="S-hook")
    assert (a.decision, a.reason) == ("handoff", "needs_order") and a.handoff is not None
    assert hook.bodies == [
        {
            "query": "我的快递到哪了",
            "normalized_query": a.normalized_query,
            "session_id": "S-hook",
            "intent": "needs_order",
            "ticket_id": a.handoff.ticket_id,
            "suggestions": [s.id for s in a.suggestions],
        }
    ]
    assert hook.bodies[0]["suggestions"][0] == "logistics-track"
    assert hook.headers == ["application/json; charset=utf-8"]
    assert a.trace["webhook"] == "delivered (200)"


def test_other_decisions_post_nothing(hook: Hook, tiny_settings: Settings, tiny_index: Index, fake_encoder: Any):
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url)
    for query in ("怎么查物流", "转人工", "今天天气怎么样"):
        assert answerer.answer(query).reason != "needs_order"
    assert hook.bodies == []


def _assert_failure_is_harmless(answerer: Answerer, caplog: pytest.LogCaptureFixture, limit_s: float) -> str:
    """The answer is the one without a webhook, within ``limit_s``; the failure is one warning."""
    with caplog.at_level(logging.WARNING, logger="kefu.webhook"):
        t0 = time.perf_counter()
        a = answerer.answer("我的快递到哪了")
        took = time.perf_counter() - t0
    assert took < limit_s, took
    assert (a.decision, a.reason) == ("handoff", "needs_order")
    assert a.suggestions and a.suggestions[0].id == "logistics-track" and a.handoff is not None
    [record] = [r for r in caplog.records if r.name == "kefu.webhook"]
    assert record.levelno == logging.WARNING and a.handoff.ticket_id in record.getMessage()
    assert "s3cret" not in record.getMessage()  # the URL's query string stays out of the log
    assert a.trace["webhook"].startswith("failed: ")
    return record.getMessage()


MARGIN_S = 0.5  # answering itself on the fake encoder takes a few milliseconds


def test_a_slow_webhook_costs_at_most_its_timeout(
    hook: Hook, tiny_settings: Settings, tiny_index: Index, fake_encoder: Any, caplog: pytest.LogCaptureFixture
):
    hook.delay = 5.0
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url, order_webhook_timeout_s=0.3)
    t0 = time.perf_counter()
    message = _assert_failure_is_harmless(answerer, caplog, 0.3 + MARGIN_S)
    assert time.perf_counter() - t0 >= 0.3  # it did wait for the reply, up to the timeout
    # the caller's wait and urllib's socket timeout are both 0.3 s: either may report it first
    assert "no reply within 0.3 s" in message or "timed out" in message
    assert len(hook.bodies) == 1  # it was sent


def test_a_refused_connection_is_logged(
    tiny_settings: Settings, tiny_index: Index, fake_encoder: Any, caplog: pytest.LogCaptureFixture
):
    with socket.socket() as s:  # a port nobody listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/orders?token=s3cret"
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=url, order_webhook_timeout_s=1.0)
    message = _assert_failure_is_harmless(answerer, caplog, 1.0 + MARGIN_S)
    assert "Refused" in message or "refused" in message


@pytest.mark.parametrize("status", [500, 404, 302])
def test_a_non_2xx_reply_is_logged(
    hook: Hook,
    tiny_settings: Settings,
    tiny_index: Index,
    fake_encoder: Any,
    caplog: pytest.LogCaptureFixture,
    status: int,
):
    hook.status = status
    answerer = _answerer(tiny_settings, tiny_index, fake_encoder, order_webhook=hook.url)
    assert f"HTTP {status}" in _assert_failure_is_harmless(answerer, caplog, 1.0 + MARGIN_S)


def test_no_webhook_by_default(tiny_answerer: Answerer) -> None:
    assert Settings().order_webhook is None and tiny_answerer.webhook is None
    assert Settings().order_webhook_timeout_s == 1.0


@pytest.mark.parametrize(
    "env",
    [
        {"KEFU_ORDER_WEBHOOK": "ftp://orders.example/hook"},
        {"KEFU_ORDER_WEBHOOK": "file:///etc/passwd"},
        {"KEFU_ORDER_WEBHOOK": "http://"},
        {"KEFU_ORDER_WEBHOOK_TIMEOUT_S": "0"},
        {"KEFU_ORDER_WEBHOOK_TIMEOUT_S": "30"},
    ],
)
def test_bad_webhook_settings_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="order_webhook"):
        Settings()


def test_webhook_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_ORDER_WEBHOOK", " https://orders.internal/kefu ")
    monkeypatch.setenv("KEFU_ORDER_WEBHOOK_TIMEOUT_S", "0.5")
    s = Settings()
    assert (s.order_webhook, s.order_webhook_timeout_s) == ("https://orders.internal/kefu", 0.5)


@pytest.mark.parametrize(("url", "timeout"), [("file:///tmp/x", 1.0), ("http://h/x", 0.0), ("http://h/x", 60.0)])
def test_webhook_refuses_bad_arguments(url: str, timeout: float) -> None:
    with pytest.raises(ConfigError, match="KEFU_ORDER_WEBHOOK"):
        OrderWebhook(url, timeout)


def test_event_json_is_the_documented_payload() -> None:
    body = json.loads(OrderEvent("订单号:1", "订单号:1", "S1", "T1", ("a", "b")).to_json())
    assert body == {
        "query": "订单号:1",
        "normalized_query": "订单号:1",
        "session_id": "S1",
        "intent": "needs_order",
        "ticket_id": "T1",
        "suggestions": ["a", "b"],
    }


def test_a_cli_try_out_tells_the_webhook_only_with_record(
    hook: Hook, runner: CliRunner, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_ORDER_WEBHOOK", hook.url)
    tried = runner.invoke(app, ["ask", "--json", "我的快递到哪了"])
    assert tried.exit_code == 0 and json.loads(tried.stdout)["reason"] == "needs_order"
    assert hook.bodies == []  # a question tried from the command line is not a shopper waiting
    recorded = runner.invoke(app, ["ask", "--json", "--record", "我的快递到哪了"])
    assert recorded.exit_code == 0 and len(hook.bodies) == 1
