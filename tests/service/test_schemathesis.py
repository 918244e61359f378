"""Property-based fuzzing of the HTTP API against its own OpenAPI schema (schemathesis, in-process ASGI).

Every operation of the schema gets generated requests that fit it (positive) and that do not
(negative: wrong types, missing fields, out-of-range values …); no response may be a 5xx or
carry a traceback. /admin/* is fuzzed with the right token, a wrong one and none, and on an app
where admin is switched off. The app runs on the tiny index with the fake encoder; its lifespan is
owned by a ``TestClient`` context (start-up and shutdown exactly once per test) and schemathesis
reaches the same app object in-process, without a socket.

schemathesis' pytest plugin (``schemathesis.pytest.from_fixture``) fails on pytest 9
(``Function`` has no ``_nodeid``), so the strategies are driven with plain ``@given``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from indexer.store import write_calibration
from kb.settings import Settings
from service.api import create_app
from tests.fakes import FAKE_CAL

TOKEN = "fuzz-admin-token"
OPERATIONS = [
    ("POST", "/v1/answer"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/entries/{entry_id}"),
    ("GET", "/v1/welcome"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/admin/reload"),
    ("GET", "/admin/handoffs"),
    ("GET", "/admin/gaps"),
    ("POST", "/admin/gaps/{gap_id}/resolve"),
    ("POST", "/admin/handoffs/{ticket_id}/resolve"),
    ("GET", "/admin/decisions"),
    ("POST", "/admin/decisions/{decision_id}/undo"),
    ("GET", "/admin/stats"),
]
# Negative generation needs something to break: a body or a typed parameter (a path string cannot be).
WITH_INPUT = [
    ("POST", "/v1/answer"),
    ("POST", "/v1/feedback"),
    ("GET", "/admin/handoffs"),
    ("GET", "/admin/gaps"),
    ("POST", "/admin/gaps/{gap_id}/resolve"),
    ("POST", "/admin/handoffs/{ticket_id}/resolve"),
    ("POST", "/admin/decisions/{decision_id}/undo"),
    ("GET", "/admin/stats"),
]
CASES = [(m, p, "positive") for m, p in OPERATIONS] + [(m, p, "negative") for m, p in WITH_INPUT]
ADMIN_CASES = [c for c in CASES if c[1].startswith("/admin/")]
BOUNDED = settings(
    max_examples=50,  # per operation and mode
    derandomize=True,  # the same examples on every run
    database=None,  # no replay of examples saved by an earlier run
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
AUTH_VARIANTS = {
    "no token": {},
    "right token": {"Authorization": f"Bearer {TOKEN}"},
    "wrong token": {"Authorization": f"Bearer {TOKEN}x"},
}


def _lifespan_elsewhere(app: Any) -> Any:
    """The app as schemathesis sees it: lifespan messages are acknowledged, not run a second time."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    return asgi


@dataclass
class Fuzzable:
    schema: Any  # schemathesis' view of the app (its operations and strategies)
    client: TestClient  # the same app, for hand-written raw requests


def _fuzzable(settings_: Settings, fake_encoder) -> Iterator[Fuzzable]:
    app = create_app(settings_, encoder=fake_encoder)
    with TestClient(app) as client:  # runs the lifespan: encoder, index and tickets loaded once
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text  # not ready would be 503 everywhere
        yield Fuzzable(schemathesis.openapi.from_asgi("/openapi.json", _lifespan_elsewhere(app)), client)


@pytest.fixture
def fuzz_settings(tiny_settings: Settings, tiny_index) -> Settings:
    write_calibration(tiny_index.folder, FAKE_CAL.to_json())
    return tiny_settings.with_overrides(rate_limit_per_minute=0)  # 0 = no rate limit: no 429 noise


@pytest.fixture
def api(fuzz_settings: Settings, fake_encoder) -> Iterator[Fuzzable]:
    yield from _fuzzable(fuzz_settings.with_overrides(admin_token=TOKEN), fake_encoder)


@pytest.fixture
def api_admin_off(fuzz_settings: Settings, fake_encoder) -> Iterator[Fuzzable]:
    yield from _fuzzable(fuzz_settings, fake_encoder)


def _check(response: Any, case: Any, label: str) -> None:
    where = f"{label}: {case.method} {case.formatted_path} query={case.query} body={case.body!r}"
    assert response.status_code < 500, f"{where} → {response.status_code}: {response.text[:300]}"
    # schemathesis also sends string constants it finds in the source (this file's included), and
    # the API echoes input (query, session_id, entry id): only a trace the request did not carry counts
    sent = json.dumps([case.body, case.query, case.path_parameters], ensure_ascii=False, default=str)
    if "Traceback" not in sent:
        assert "Traceback" not in response.text, where
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "message"}, where


def _fuzz(schema: Any, method: str, path: str, mode: str, each: Any) -> int:
    strategy = schema[path][method].as_strategy(GenerationMode(mode))
    seen = []

    @BOUNDED
    @given(case=strategy)
    def run(case: Any) -> None:
        seen.append(case)
        each(case)

    run()
    return len(seen)


def test_the_fuzzed_operations_are_all_the_operations(api: Fuzzable):
    """A new endpoint must be added to OPERATIONS, so it cannot escape the fuzzing."""
    listed = {(op.ok().method.upper(), op.ok().path) for op in api.schema.get_all_operations()}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_operation_answers_5xx(api: Fuzzable, method: str, path: str, mode: str):
    def each(case: Any) -> None:
        if path.startswith("/admin/"):
            for label, headers in AUTH_VARIANTS.items():
                r = case.call(headers=headers)
                _check(r, case, label)
                if label != "right token":
                    assert r.status_code in {401, 422}, r.text  # refused, never served
        else:
            _check(case.call(), case, mode)

    assert _fuzz(api.schema, method, path, mode, each) > 0


@pytest.mark.parametrize(("method", "path", "mode"), ADMIN_CASES)
def test_admin_off_answers_404_never_5xx(api_admin_off: Fuzzable, method: str, path: str, mode: str):
    def each(case: Any) -> None:
        r = case.call(headers=AUTH_VARIANTS["right token"])
        _check(r, case, "admin off")
        assert r.status_code in {404, 422}, r.text

    assert _fuzz(api_admin_off.schema, method, path, mode, each) > 0


CONTENT_TYPES = ["application/json", "application/json; charset=latin-1", "text/plain", "", "multipart/form-data"]


def test_raw_bytes_never_answer_5xx(api: Fuzzable):
    """Below the schema: arbitrary bytes (invalid UTF-8, truncated JSON, NULs) under assorted content types."""
    prefixes = st.sampled_from([b"", b'{"query": "', b'{"query": ', b"[", b'{"query": "\\u'])

    @BOUNDED
    @given(prefix=prefixes, raw=st.binary(max_size=300), content_type=st.sampled_from(CONTENT_TYPES))
    def run(prefix: bytes, raw: bytes, content_type: str) -> None:
        body = prefix + raw
        r = api.client.post("/v1/answer", content=body, headers={"content-type": content_type})
        assert r.status_code < 500, (body, content_type, r.text)
        assert "Traceback" not in r.text
        if r.status_code >= 400:
            assert set(r.json()) == {"error", "message"}, r.text

    run()


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "\\ud800"}',  # empty-query handoff
        '{"query": "转人工\\udc00"}'.encode(),  # user-requested handoff
        '{"query": "七天无理由退货需要满足什么条件？\\ud800"}'.encode(),  # a confident answer
    ],
    ids=["empty-query", "handoff", "answer"],
)
def test_lone_surrogate_escape_is_a_client_error(api: Fuzzable, body: bytes):
    r = api.client.post("/v1/answer", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
