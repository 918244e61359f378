"""Edges a new user meets: the top_k range served (1–10), the reply to an empty message, one set of
API error codes (documented), query parameters checked as 422, entry suggestions from the served
build, HEAD wherever GET works, and `kefu ask -` reporting bad lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import service.console  # noqa: F401  (its exceptions join the tree before the codes are checked)
from kb.errors import InputError, KefuError
from kb.settings import MAX_TOP_K, Settings
from kefu_cli import app
from service.answerer import Answerer, empty_reply
from service.api_guard import ERROR_CODES, HTTP_CODES, error_code
from service.pipeline.retrieve import CANDIDATE_UNITS
from service.schemas import AnswerRequest
from tests.service.conftest import TOKEN, _assert_error

AUTH = {"Authorization": f"Bearer {TOKEN}"}
API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SERVICE = Path(__file__).resolve().parents[2] / "service"


# --- 2. top_k: what is accepted is what can be served -----------------------------------------------
def test_the_top_k_bound_is_what_retrieval_serves():
    assert MAX_TOP_K == CANDIDATE_UNITS
    assert AnswerRequest.model_json_schema()["properties"]["top_k"]["anyOf"][0]["maximum"] == MAX_TOP_K
    assert Settings.model_fields["top_k"].metadata[1].le == MAX_TOP_K


def test_top_k_over_the_bound_is_refused_everywhere(answerer: Answerer, client: TestClient, runner: CliRunner, env):
    assert len(answerer.answer("七天无理由退货需要满足什么条件？", top_k=MAX_TOP_K).answers) <= MAX_TOP_K
    with pytest.raises(InputError, match="top_k=11 is not allowed: use 1 to 10"):
        answerer.answer("七天无理由退货需要满足什么条件？", top_k=MAX_TOP_K + 1)
    body = _assert_error(client.post("/v1/answer", json={"query": "退款", "top_k": 11}), 422, "top_k", "10")
    assert body["error"] == "invalid_request"
    r = runner.invoke(app, ["ask", "--top-k", "11", "退款"])
    assert r.exit_code == 2 and "--top-k" in r.output


# --- 3. an empty message: asked for its question, no person promised -----------------------------------
@pytest.mark.parametrize("query", ["   ", "😀", "？？？", ""])
def test_an_empty_message_is_asked_for_its_question(client: TestClient, query: str):
    data = client.post("/v1/answer", json={"query": query}).json()
    assert (data["decision"], data["reason"]) == ("handoff", "empty_query")  # as before
    assert data["handoff"]["ticket_id"] == "-"
    said = data["handoff"]["message"]
    assert said == empty_reply(("退货的运费应该由谁来承担", "怎么查看订单的物流信息"))
    assert "人工" not in said and "客服接入" not in said and "稍候" not in said  # nobody is coming
    assert "输入" in said and "问题" in said  # it asks for the question


def test_a_real_handoff_still_promises_a_person(client: TestClient):
    data = client.post("/v1/answer", json={"query": "转人工"}).json()
    assert data["reason"] == "user_requested" and "人工" in data["handoff"]["message"]


# --- 4. one documented set of snake_case codes ---------------------------------------------------------
def _documented() -> dict[str, set[int]]:
    """The codes of docs/api.md's error table, each with its statuses."""
    text = API_MD.read_text("utf-8")
    table = text[text.index("## Errors and limits") :]
    out: dict[str, set[int]] = {}
    for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", table, flags=re.M):
        out.setdefault(code, set()).add(int(status))
    return out


def _subclasses(cls: type[KefuError]) -> list[type[KefuError]]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_every_error_code_is_snake_case_and_documented_with_its_status():
    documented = _documented()
    for cls in _subclasses(KefuError):
        code = error_code(cls("x"))
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code), (cls, code)
        assert cls.http_status in documented.get(code, set()), (cls.__name__, code, cls.http_status)
    for status, code in HTTP_CODES.items():
        assert status in documented.get(code, set()), (status, code)
    # the codes the service writes by hand (the guard, /readyz, 401) are in the table too
    written = set()
    for path in SERVICE.glob("*.py"):
        written |= set(re.findall(r'(?:error|reply)\(\s*(\d{3}),\s*"([a-z_]+)"', path.read_text("utf-8")))
    assert written and all(int(s) in documented.get(c, set()) for s, c in written), written
    assert set(documented) == set(ERROR_CODES.values()) | set(HTTP_CODES.values()) | {c for _, c in written}


def test_errors_carry_codes_not_class_names(client: TestClient):
    assert _assert_error(client.get("/v1/entries/nosuch"), 404)["error"] == "not_found"
    assert _assert_error(client.get("/no/such/path"), 404)["error"] == "not_found"
    r = client.get("/v1/answer")
    assert _assert_error(r, 405)["error"] == "method_not_allowed" and r.headers["allow"] == "POST"
    fb = client.post("/v1/feedback", json={"answer_id": "A0123456789abcdef", "session_id": "S1", "vote": "up"})
    assert _assert_error(fb, 404)["error"] == "not_found"


@pytest.mark.parametrize("path", ["/admin/stats", "/admin/gaps"])
def test_a_bad_since_is_a_422_about_the_query_parameter(client: TestClient, path: str):
    body = _assert_error(client.get(path, params={"since": "banana"}, headers=AUTH), 422, "since", "banana")
    assert body["error"] == "invalid_request"
    assert "--since" not in body["message"] and "query parameter since" in body["message"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/admin/handoffs", {"limit": -1}),
        ("/admin/handoffs", {"limit": 0}),
        ("/admin/handoffs", {"limit": 501}),
        ("/admin/handoffs", {"limit": "x"}),
        ("/admin/gaps", {"limit": -1}),
        ("/admin/decisions", {"limit": -1}),
        ("/admin/stats", {"gaps": -1}),
    ],
)
def test_limits_are_validated(client: TestClient, path: str, params: dict):
    body = _assert_error(client.get(path, params=params, headers=AUTH), 422, next(iter(params)))
    assert body["error"] == "invalid_request"


def test_a_good_limit_still_lists(client: TestClient):
    client.post("/v1/answer", json={"query": "转人工"})
    r = client.get("/admin/handoffs", params={"limit": 1}, headers=AUTH)
    assert r.status_code == 200 and len(r.json()["tickets"]) == 1


# --- 5. suggestions from the served build ------------------------------------------------------------
def test_an_unknown_entry_suggests_the_served_builds_ids(client: TestClient):
    index = client.app.state.kefu.answerer.index  # type: ignore[attr-defined]
    served = {*index.entries, *index.doc_units}

    def offered(path: str) -> list[str]:
        message = _assert_error(client.get(path), 404)["message"]
        assert "refund-seven-day-conditions" not in message and "rules-seven-day-return" not in message  # bundled
        return re.findall(r"'([^']+)'", message)[1:]  # after the id asked for

    near = offered("/v1/entries/refund-seven-days")
    assert near[0] == "refund-seven-day" and set(near) <= served  # nearest by spelling first
    examples = offered("/v1/entries/nosuch")  # nothing near: an id of each kind this build has
    assert len(examples) == 2 and set(examples) <= served
    assert any(i in index.entries for i in examples) and any(i in index.doc_units for i in examples)


# --- 6. HEAD wherever GET works -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/widget.js", "/console", "/docs", "/static/chat.js"])
def test_head_works_wherever_get_does(client: TestClient, path: str):
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200, path
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))


def test_head_on_a_post_route_is_still_405(client: TestClient):
    r = client.head("/v1/answer")
    assert r.status_code == 405 and r.content == b""


# --- 8. `kefu ask -`: bad lines numbered, in the API's words, and a failing exit ------------------------
def test_batch_reports_each_bad_line_and_fails_after_the_others(runner: CliRunner, env, client: TestClient):
    stdin = "\n".join(
        [
            "七天无理由退货需要满足什么条件？",
            "{not json",
            '{"query": "退款", "top_k": 99}',
            "",
            "转人工",
        ]
    )
    r = runner.invoke(app, ["ask", "--json", "-"], input=stdin + "\n")
    assert r.exit_code == 2, r.output
    rows = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [row.get("line") for row in rows] == [None, 2, 3, None]  # answered lines, errors in between
    assert rows[0]["decision"] == "answer" and rows[3]["reason"] == "user_requested"
    api_bad_json = client.post("/v1/answer", content=b"{not json", headers={"content-type": "application/json"})
    assert rows[1]["error"] == api_bad_json.json()["message"] == "body is not valid JSON (send UTF-8 JSON)"
    api_top_k = client.post("/v1/answer", json={"query": "退款", "top_k": 99})
    assert rows[2]["error"] == api_top_k.json()["message"]
    assert "2 input line(s) failed (line 2, 3)" in r.stderr


def test_a_clean_batch_still_exits_0(runner: CliRunner, env):
    r = runner.invoke(app, ["ask", "-"], input="七天无理由退货需要满足什么条件？\n转人工\n")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 2
