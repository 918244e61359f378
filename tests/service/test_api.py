"""The HTTP API on the tiny KB and the fake encoder (TestClient runs the lifespan)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_and_swap
from indexer.index import Index
from indexer.store import IndexStore, calibration_note
from kb.loader import load_kb
from kb.settings import Settings
from service.api import create_app
from service.sessions_store import SessionFile
from tests.service.conftest import DOCUMENTED_KEYS, TOKEN, _assert_error

EXTRA_FAQ = """
category: 发票
entries:
  - id: invoice-{n}
    category: 发票
    question: 怎么申请开具电子发票{n}？
    alt_questions: [发票怎么开{n}, 我要开发票{n}, 电子发票在哪里申请{n}]
    answer: >-
      在「我的订单」找到对应订单，点击「申请开票」，填写抬头和税号后提交；
      卖家开具后电子发票会发送到订单详情页，也可以在「发票管理」中下载。第{n}版。
"""


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _new_build(settings: Settings, tiny_kb_dir: Path, fake_encoder, n: int) -> str:
    """Build a changed KB (one more FAQ entry) into the same index home; returns the build id."""
    kb = tiny_kb_dir.parent / f"kb{n}"
    shutil.copytree(tiny_kb_dir, kb)
    (kb / "faq" / "invoice.yaml").write_text(EXTRA_FAQ.format(n=n), "utf-8")
    store = IndexStore(settings.index_home, settings.keep_builds)
    summary = build_and_swap(load_kb(kb, strict=False), fake_encoder, store, settings.chunk_chars)
    assert not summary.unchanged
    return summary.build_id


# --- happy path ---------------------------------------------------------------------------------------
def test_answer_happy_path(client: TestClient):
    r = client.post("/v1/answer", json={"query": "七天无理由退货需要满足什么条件？"})
    assert r.status_code == 200
    data = r.json()
    assert set(data) >= DOCUMENTED_KEYS
    assert data["decision"] == "answer" and data["reason"] is None and data["handoff"] is None
    top = data["answers"][0]
    assert set(top) == {"id", "title", "text", "score", "source", "cites"}
    assert set(top["source"]) == {"doc_id", "section", "kind", "owner", "clause"}  # owner: platform or shop
    assert top["id"] == "refund-seven-day" and top["source"]["kind"] == "faq"
    assert len(data["answers"]) == 3  # KEFU_TOP_K default
    assert r.headers["x-content-type-options"] == "nosniff"


def test_answer_top_k_and_session(client: TestClient):
    r = client.post("/v1/answer", json={"query": "七天无理由退货需要满足什么条件？", "top_k": 1})
    assert len(r.json()["answers"]) == 1
    sid = r.json()["session_id"]
    r2 = client.post("/v1/answer", json={"query": "那运费呢", "session_id": sid})
    assert r2.status_code == 200
    assert r2.json()["session_id"] == sid
    assert r2.json()["trace"]["used_context"] is True


def test_several_workers_share_sessions(settings: Settings, fake_encoder):
    """With --workers > 1 a follow-up may reach another worker process: two apps stand in for two."""
    several = settings.with_overrides(workers=2)
    with (
        TestClient(create_app(several, encoder=fake_encoder)) as one,
        TestClient(create_app(several, encoder=fake_encoder)) as other,
    ):
        sid = one.post("/v1/answer", json={"query": "七天无理由退货需要满足什么条件？"}).json()["session_id"]
        follow = other.post("/v1/answer", json={"query": "那运费呢", "session_id": sid}).json()
        assert follow["trace"]["used_context"] is True
    assert (several.data_dir / "sessions.db").is_file()
    with TestClient(create_app(settings, encoder=fake_encoder)) as single:  # one worker: in memory
        assert not isinstance(single.app.state.kefu.runtime.sessions, SessionFile)  # type: ignore[attr-defined]


def test_handoff_over_http_and_admin_handoffs(client: TestClient):
    r = client.post("/v1/answer", json={"query": "转人工，我电话13812345678"})
    assert r.status_code == 200
    data = r.json()
    assert (data["decision"], data["reason"]) == ("handoff", "user_requested")
    ticket_id = data["handoff"]["ticket_id"]
    listed = client.get("/admin/handoffs", headers=_auth(), params={"reason": "user_requested"})
    assert listed.status_code == 200
    [t] = listed.json()["tickets"]
    assert t["id"] == ticket_id
    assert "13812345678" not in t["query"] and "[手机号]" in t["query"]


def test_health_and_ready(client: TestClient, settings: Settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["build"] == IndexStore(settings.index_home).current_id()
    assert body["entries"] == 3 and body["calibrated"] is True
    # the line `kefu index info` and `kefu serve` give: the manifest's, or one composed for it
    manifest = Index.read_manifest(IndexStore(settings.index_home).current_path())
    assert body["calibration_note"] == calibration_note(manifest)


def test_welcome_suggests_the_kbs_own_questions(client: TestClient):
    """What the chat page opens with: a question of each of the tiny KB's categories, also in
    the greeting reply, never another KB's examples."""
    body = client.get("/v1/welcome").json()
    assert body["examples"] == ["退货的运费应该由谁来承担", "怎么查看订单的物流信息"]
    assert body["message"] == client.post("/v1/answer", json={"query": "你好"}).json()["message"]
    assert all(q in body["message"] for q in body["examples"]) and "退款多久到账" not in body["message"]


# --- not ready -------------------------------------------------------------------------------------------
def test_without_an_index_the_app_starts_but_is_not_ready(tmp_path: Path, fake_encoder):
    s = Settings(data_dir=tmp_path / "empty", model="fake:hash-128")
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        assert c.get("/healthz").status_code == 200
        _assert_error(c.get("/readyz"), 503, "kefu build")
        _assert_error(c.post("/v1/answer", json={"query": "退款多久到账"}), 503, "kefu build")
        _assert_error(c.get("/v1/entries/refund-seven-day"), 503, "kefu build")
        _assert_error(c.get("/v1/welcome"), 503, "kefu build")
        assert c.get("/metrics").status_code == 200


def test_index_built_after_start_is_picked_up_by_reload(
    tmp_path: Path, tiny_settings: Settings, tiny_kb_dir: Path, fake_encoder
):
    s = tiny_settings.with_overrides(admin_token=TOKEN)
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        assert c.get("/readyz").status_code == 503
        build = _new_build(s, tiny_kb_dir, fake_encoder, 1)
        r = c.post("/admin/reload", headers=_auth())
        assert r.status_code == 200 and r.json()["build"] == build
        assert c.get("/readyz").json()["build"] == build
        assert c.post("/v1/answer", json={"query": "发票怎么开1"}).status_code == 200


# --- bad input: precise 4xx JSON errors, never 500 -------------------------------------------------------------
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("kwargs", "status", "fragments"),
    [
        ({"content": b"", "headers": JSON}, 422, ["body"]),
        ({"content": b"{bad json", "headers": JSON}, 422, ["not valid JSON"]),
        ({"content": b"null", "headers": JSON}, 422, ["body"]),
        ({"json": ["a list"]}, 422, ["body"]),
        ({"json": {}}, 422, ["query", "required"]),
        ({"json": {"query": 123}}, 422, ["query", "string"]),
        ({"json": {"query": None}}, 422, ["query"]),
        ({"json": {"query": "退款", "top_k": "x"}}, 422, ["top_k", "integer"]),
        ({"json": {"query": "退款", "top_k": 10000}}, 422, ["top_k", "10"]),
        ({"json": {"query": "退款", "top_k": 0}}, 422, ["top_k"]),
        ({"json": {"query": "退款", "foo": 1}}, 422, ["foo", "Extra"]),
        ({"json": {"query": "退款", "session_id": "bad id!"}}, 422, ["session_id"]),
        ({"json": {"query": "退" * 501}}, 422, ["500"]),
        ({"json": {"query": "x" * 20_000}}, 413, ["16384"]),
        ({"content": b"query=x", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 422, ["body"]),
    ],
)
def test_bad_requests_get_precise_json_errors(client: TestClient, kwargs: dict, status: int, fragments: list[str]):
    _assert_error(client.post("/v1/answer", **kwargs), status, *fragments)


@pytest.mark.parametrize("body", [b'{"query": "\xff\xfe\xfa"}', b"\xff\xfe\x00\x01"])
def test_invalid_utf8_is_a_client_error(client: TestClient, body: bytes):
    r = client.post("/v1/answer", content=body, headers=JSON)
    assert 400 <= r.status_code < 500
    assert set(r.json()) == {"error", "message"}


def test_invalid_utf8_error_is_precise(client: TestClient):
    r = client.post("/v1/answer", content=b'{"query": "\xff\xfe"}', headers=JSON)
    _assert_error(r, 422, "UTF-8")


def test_oversized_body_is_rejected_before_parsing(client: TestClient, settings: Settings):
    body = b'{"query": "' + b"a" * settings.max_body_bytes + b'"}'
    _assert_error(client.post("/v1/answer", content=body, headers=JSON), 413, str(settings.max_body_bytes))


@pytest.mark.parametrize("query", ["\x00\x01\x07退货运费谁出\x1b", "😀😀😀", "🙏", "\u202e退款\u200b"])
def test_control_characters_and_emoji_get_a_decision(client: TestClient, query: str):
    r = client.post("/v1/answer", json={"query": query})
    assert r.status_code == 200
    assert r.json()["decision"] in {"answer", "clarify", "handoff"}
    assert r.json()["query"] == query


def test_script_tags_are_never_echoed_raw(client: TestClient):
    q = "<script>alert(1)</script>"
    r = client.post("/v1/answer", json={"query": q})
    assert r.status_code == 200
    assert b"<script>" not in r.content and b"</script>" not in r.content
    assert r.json()["query"] == q  # escaping is lossless JSON
    err = client.get("/v1/entries/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert err.status_code == 404 and b"<script>" not in err.content


# --- admin ------------------------------------------------------------------------------------------------------
def test_admin_endpoints_are_404_without_a_configured_token(tiny_settings: Settings, tiny_index, fake_encoder):
    with TestClient(create_app(tiny_settings, encoder=fake_encoder)) as c:
        _assert_error(c.post("/admin/reload", headers=_auth()), 404, "KEFU_ADMIN_TOKEN")
        _assert_error(c.get("/admin/handoffs", headers=_auth()), 404, "KEFU_ADMIN_TOKEN")


@pytest.mark.parametrize(
    "headers",
    [{}, _auth("wrong"), _auth(TOKEN + "x"), {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
)
def test_admin_endpoints_need_the_right_token(client: TestClient, headers: dict):
    r = client.post("/admin/reload", headers=headers)
    _assert_error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    _assert_error(client.get("/admin/handoffs", headers=headers), 401)


def test_admin_endpoints_with_the_right_token(client: TestClient):
    r = client.post("/admin/reload", headers=_auth())
    assert r.status_code == 200 and r.json()["status"] == "reloaded"
    h = client.get("/admin/handoffs", headers=_auth(), params={"limit": 5})
    assert h.status_code == 200 and h.json() == {"tickets": []}


def test_reload_swaps_to_a_newer_build(client: TestClient, settings: Settings, tiny_kb_dir: Path, fake_encoder):
    old = client.get("/readyz").json()["build"]
    assert client.get("/v1/entries/invoice-7").status_code == 404
    new = _new_build(settings, tiny_kb_dir, fake_encoder, 7)
    assert new != old
    assert client.get("/readyz").json()["build"] == old  # nothing changes until reload
    r = client.post("/admin/reload", headers=_auth())
    assert r.status_code == 200 and r.json()["build"] == new
    ready = client.get("/readyz").json()
    assert ready["build"] == new and ready["entries"] == 4
    assert client.get("/v1/entries/invoice-7").status_code == 200


def test_failed_reload_keeps_serving_the_old_build(client: TestClient, settings: Settings):
    old = client.get("/readyz").json()["build"]
    (settings.index_home / "current").write_text("20990101-000000-missing\n", "utf-8")
    r = client.post("/admin/reload", headers=_auth())
    _assert_error(r, 503, "20990101-000000-missing")
    assert client.get("/readyz").json()["build"] == old
    assert client.post("/v1/answer", json={"query": "退货运费谁出"}).status_code == 200


def test_reload_under_load_drops_no_request(settings: Settings, tiny_kb_dir: Path, fake_encoder):
    s = settings.with_overrides(rate_limit_per_minute=0)
    queries = ["七天无理由退货需要满足什么条件？", "退货运费谁出", "转人工", "我的快递到哪了", "发票怎么开1"]
    statuses: list[int] = []
    served_by: set[str] = set()
    lock = threading.Lock()
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        start = threading.Barrier(5)

        def load(n: int) -> None:
            start.wait()
            for i in range(30):
                r = c.post("/v1/answer", json={"query": queries[(n + i) % len(queries)]})
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        served_by.add(r.json()["trace"]["build"])

        def wait_for(n: int) -> None:
            """Reload only once ``n`` responses are in, so each reload lands while requests remain."""
            deadline = time.monotonic() + 60
            while True:
                with lock:
                    if len(statuses) >= n:
                        return
                assert time.monotonic() < deadline, "the load threads stalled"
                time.sleep(0.002)

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        start.wait()
        first = c.get("/readyz").json()["build"]
        builds = []
        for n in range(3):
            builds.append(_new_build(s, tiny_kb_dir, fake_encoder, n + 1))
            wait_for(20 * (n + 1))
            r = c.post("/admin/reload", headers=_auth())
            assert r.status_code == 200 and r.json()["build"] == builds[-1]
        for t in threads:
            t.join(60)
        assert c.get("/readyz").json()["build"] == builds[-1]
    assert len(statuses) == 120
    assert [st for st in statuses if st != 200] == []
    assert first in served_by and served_by <= {first, *builds}


# --- rate limit, metrics, CORS ------------------------------------------------------------------------------------
def test_rate_limit(settings: Settings, fake_encoder):
    s = settings.with_overrides(rate_limit_per_minute=5)
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        for _ in range(5):
            assert c.post("/v1/answer", json={"query": "退货运费谁出"}).status_code == 200
        r = c.post("/v1/answer", json={"query": "退货运费谁出"})
        _assert_error(r, 429, "5 requests per minute")
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/healthz").status_code == 200  # only /v1/ is limited
        assert c.get("/readyz").status_code == 200


def test_metrics(client: TestClient):
    client.post("/v1/answer", json={"query": "七天无理由退货需要满足什么条件？"})
    client.post("/v1/answer", json={"query": "转人工"})
    client.post("/v1/answer", json={"query": 1})
    text = client.get("/metrics").text
    assert 'kefu_requests_total{path="/v1/answer",status="200"} 2.0' in text
    assert 'kefu_requests_total{path="/v1/answer",status="422"} 1.0' in text
    assert 'kefu_decisions_total{decision="answer",reason="none"} 1.0' in text
    assert 'kefu_decisions_total{decision="handoff",reason="user_requested"} 1.0' in text
    assert "kefu_answer_seconds" in text
    # micro-batching is observable: every encoder call and its size
    values = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("kefu_encoder_batch")}
    calls = values["kefu_encoder_batch_texts_count"]
    assert calls >= 1
    assert values["kefu_encoder_batch_texts_sum"] >= calls  # at least one text per call
    assert values["kefu_encoder_batch_seconds_count"] == calls


def test_no_cors_header_without_configured_origins(client: TestClient):
    r = client.post("/v1/answer", json={"query": "退货运费谁出"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    pre = client.options(
        "/v1/answer", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in pre.headers


def test_cors_header_for_configured_origins(settings: Settings, fake_encoder):
    s = settings.with_overrides(cors_origins=["https://shop.example"])
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        ok = c.post("/v1/answer", json={"query": "退货运费谁出"}, headers={"Origin": "https://shop.example"})
        assert ok.headers["access-control-allow-origin"] == "https://shop.example"
        other = c.post("/v1/answer", json={"query": "退货运费谁出"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_rate_limited_response_keeps_cors_headers(settings: Settings, fake_encoder):
    s = settings.with_overrides(cors_origins=["https://shop.example"], rate_limit_per_minute=1)
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        origin = {"Origin": "https://shop.example"}
        assert c.post("/v1/answer", json={"query": "退款"}, headers=origin).status_code == 200
        r = c.post("/v1/answer", json={"query": "退款"}, headers=origin)
        assert r.status_code == 429
        assert r.headers.get("access-control-allow-origin") == "https://shop.example"


def test_openapi_is_served(client: TestClient):
    spec = client.get("/openapi.json").json()
    assert "/v1/answer" in spec["paths"]
    assert json.dumps(spec)  # serialisable
