"""The console's admin API and page: auth on every endpoint, gaps and their resolution (one decision
per item, even with concurrent operators), undo, tickets, stats (per shop, and a shop's token),
/metrics, masking, and the page's CSP."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.store import IndexStore, write_calibration
from kb.learn_journal import append_journal, states
from kb.learned import plan_apply, write_plan
from kb.loader import load_kb
from kb.settings import Settings
from service import gaps as gaps_mod
from service import gaps_resolve
from service.api import create_app
from service.schemas import Answer, AnswerItem, HandoffInfo, SourceRef
from service.shops_api import ShopsState
from service.tickets import AnswerLog, FeedbackStore, TicketStore
from service.web import PAGES, STATIC
from tests.fakes import FAKE_CAL
from tests.service.test_web import refs

TOKEN = "console-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHONE = "13812345678"
EMAIL = "buyer@example.com"
# (method, path, json body) of every endpoint this module adds; {gap}, {ticket} and {decision} are filled in
ENDPOINTS = [
    ("GET", "/admin/gaps", None),
    ("POST", "/admin/gaps/{gap}/resolve", {"action": "dismiss"}),
    ("POST", "/admin/handoffs/{ticket}/resolve", {"action": "dismiss"}),
    ("GET", "/admin/decisions", None),
    ("POST", "/admin/decisions/{decision}/undo", {"who": "小王"}),
    ("GET", "/admin/stats", None),
]
PLATFORM_ONLY = [e for e in ENDPOINTS if e[1] != "/admin/stats"]  # a shop's token reads its own stats


@pytest.fixture
def settings(tiny_settings: Settings, tiny_index) -> Settings:
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    return tiny_settings.with_overrides(admin_token=TOKEN)


@pytest.fixture
def client(settings: Settings, fake_encoder):
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        yield c


def _handoff(query: str, session: str) -> Answer:
    item = AnswerItem(
        id="refund-shipping-fee", title="退货的运费应该由谁来承担？", text="……", score=0.41,
        source=SourceRef(doc_id="refund-shipping-fee", section="退货退款", kind="faq"),
    )  # fmt: skip
    return Answer(
        query=query, normalized_query=query, decision="handoff", reason="low_confidence", suggestions=[item],
        handoff=HandoffInfo(ticket_id="T1", message="转人工"), session_id=session, elapsed_ms=4.0,
        trace={"confidence": 0.12},
    )  # fmt: skip


def seed(settings: Settings) -> str:
    """Low-confidence handoffs logged as the service logs them: one question asked three times (one
    with a phone number), one with an email, and a needs_order handoff that is no gap. Returns a
    ticket id."""
    log = AnswerLog(settings.tickets_path)
    for i, q in enumerate(["能开专票吗", "能开专票吗？", f"能开专票吗 {PHONE}"]):
        log.record(_handoff(q, f"S{i}"))
    log.record(_handoff(f"邮箱{EMAIL}收不到发票", "S9"))
    order = _handoff("帮我查下订单", "S8").model_copy(update={"reason": "needs_order"})
    log.record(order)
    t = TicketStore(settings.tickets_path).create(f"我的手机是{PHONE}，能开专票吗", "low_confidence", "S1", [])
    return t.id


def _paths(client: TestClient) -> dict[str, str]:
    gaps = client.get("/admin/gaps", headers=AUTH).json()["gaps"]
    return {"gap": gaps[0]["id"] if gaps else "Gnone", "ticket": "Tnone", "decision": "Dnone"}


# --- auth -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_needs_the_token(client: TestClient, settings: Settings, method: str, path: str, body):
    seed(settings)
    url = path.format(**_paths(client))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        r = client.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (url, headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert states(settings.kb_dir) == {}  # nothing was resolved on the way


def _shop_token(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Headers of shop-a's token (the registry is not needed for the scope)."""
    real = ShopsState.admin_scope
    monkeypatch.setattr(
        ShopsState, "admin_scope", lambda self, auth: "shop-a" if auth == "Bearer shop-token" else real(self, auth)
    )
    return {"Authorization": "Bearer shop-token"}


@pytest.mark.parametrize(("method", "path", "body"), PLATFORM_ONLY)
def test_a_shops_token_is_refused(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, method: str, path: str, body
):
    seed(settings)
    url = path.format(**_paths(client))
    r = client.request(method, url, json=body, headers=_shop_token(monkeypatch))
    assert r.status_code == 403, r.text
    assert "KEFU_ADMIN_TOKEN" in r.json()["message"]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_admin_off_without_a_token(tiny_settings: Settings, tiny_index, fake_encoder, method: str, path: str, body):
    with TestClient(create_app(tiny_settings, encoder=fake_encoder)) as c:
        r = c.request(method, path.format(gap="G1", ticket="T1", decision="D1"), json=body, headers=AUTH)
    assert r.status_code == 404 and "disabled" in r.json()["message"]


# --- gaps -----------------------------------------------------------------------------------------------------------
def test_gaps_are_clustered_masked_and_exclude_rule_handoffs(client: TestClient, settings: Settings):
    seed(settings)
    r = client.get("/admin/gaps", params={"since": "1d"}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["messages"] == 4  # the needs_order handoff is not counted
    top = body["gaps"][0]
    assert top["size"] == 2 and top["kinds"] == {"low_confidence": 2} and top["examples"] == ["能开专票吗"]
    assert {n["id"] for n in top["nearest"]} <= {"refund-seven-day", "refund-shipping-fee", "logistics-track"}
    assert all(isinstance(n["score"], float) for n in top["nearest"])
    assert PHONE not in r.text and EMAIL not in r.text
    assert "[手机号]" in r.text and "[邮箱]" in r.text
    assert client.get("/admin/gaps", params={"since": "nonsense"}, headers=AUTH).status_code == 422
    assert client.get("/admin/gaps", params={"limit": 0}, headers=AUTH).status_code == 422


def test_resolving_a_gap_records_a_decision_and_the_gap_leaves_the_list(client: TestClient, settings: Settings):
    seed(settings)
    gap = client.get("/admin/gaps", headers=AUTH).json()["gaps"][0]
    r = client.post(
        f"/admin/gaps/{gap['id']}/resolve",
        json={"action": "attach", "entry": "refund-shipping-fee", "who": "小王"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    d = r.json()["decision"]
    assert (d["action"], d["entry"], d["who"], d["messages"], d["status"]) == (
        "attach", "refund-shipping-fee", "小王", 1, "pending",
    )  # fmt: skip
    (s,) = states(settings.kb_dir).values()
    assert s.decision.messages == ("能开专票吗",)
    after = client.get("/admin/gaps", headers=AUTH).json()
    assert gap["id"] not in {g["id"] for g in after["gaps"]} and after["decided"] == 2
    again = client.post(f"/admin/gaps/{gap['id']}/resolve", json={"action": "dismiss"}, headers=AUTH)
    assert again.status_code == 404 and "no open gap" in again.json()["message"]
    listed = client.get("/admin/decisions", headers=AUTH).json()
    assert [x["id"] for x in listed["decisions"]] == [d["id"]] and listed["last_learn"] is None
    loss = "learned test: hit@1 0.6 → 0.5"
    refusal = {"event": "refused", "who": "ops", "at": "2026-12-07T10:00:00Z", "losses": [loss]}
    append_journal(settings.kb_dir, {**refusal, "pulling": [d["id"]], "comparisons": []})
    last = client.get("/admin/decisions", headers=AUTH).json()["last_learn"]
    assert last == {**refusal, "build": None, "pulling": [d["id"]]}


def test_concurrent_operators_resolve_a_gap_once(client: TestClient, settings: Settings):
    seed(settings)
    gap = client.get("/admin/gaps", headers=AUTH).json()["gaps"][0]
    start = threading.Barrier(4)
    codes: list[int] = []

    def operator(n: int) -> None:
        start.wait()
        r = client.post(
            f"/admin/gaps/{gap['id']}/resolve", json={"action": "out_of_scope", "who": f"op{n}"}, headers=AUTH
        )
        codes.append(r.status_code)

    threads = [threading.Thread(target=operator, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # one decision; the others were told someone was first (409), or no longer saw the gap (404)
    assert sorted(codes).count(200) == 1 and set(codes) <= {200, 404, 409}, codes
    assert len([s for s in states(settings.kb_dir).values() if s.status != "undone"]) == 1


def test_a_race_inside_decide_is_a_409(client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch):
    """Both operators saw the gap; the second reaches kb/learned.py after the first decided."""
    seed(settings)
    gap = client.get("/admin/gaps", headers=AUTH).json()["gaps"][0]
    real_find = gaps_mod.find
    ops = client.app.state.kefu_ops  # type: ignore[attr-defined]
    seen = real_find(ops.gaps(0.0, 2e9, None), gap["id"])
    monkeypatch.setattr("service.console.find", lambda report, gid: seen)  # as if listed before the first decision
    first = client.post(f"/admin/gaps/{gap['id']}/resolve", json={"action": "dismiss"}, headers=AUTH)
    second = client.post(f"/admin/gaps/{gap['id']}/resolve", json={"action": "new_entry"}, headers=AUTH)
    assert first.status_code == 200 and second.status_code == 409, second.text
    assert "already resolved" in second.json()["message"]


def test_resolve_validates_the_request(client: TestClient, settings: Settings):
    seed(settings)
    gid = _paths(client)["gap"]
    url = f"/admin/gaps/{gid}/resolve"
    assert client.post(url, json={"action": "confirm"}, headers=AUTH).status_code == 422
    assert client.post(url, json={"action": "dismiss", "extra": 1}, headers=AUTH).status_code == 422
    assert client.post(url, json={"action": "attach"}, headers=AUTH).status_code == 400  # no entry
    r = client.post(url, json={"action": "attach", "entry": "no-such-entry"}, headers=AUTH)
    assert r.status_code == 404 and "no FAQ entry" in r.json()["message"]
    assert client.post("/admin/gaps/Gmissing/resolve", json={"action": "dismiss"}, headers=AUTH).status_code == 404
    assert states(settings.kb_dir) == {}


def test_a_kb_the_server_cannot_write_is_refused(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    seed(settings)
    gid = _paths(client)["gap"]
    real = gaps_resolve.os.access
    root = Path(settings.kb_dir)
    monkeypatch.setattr(gaps_resolve.os, "access", lambda p, mode: False if Path(p) == root else real(p, mode))
    r = client.post(f"/admin/gaps/{gid}/resolve", json={"action": "dismiss"}, headers=AUTH)
    assert r.status_code == 400 and "not writable" in r.json()["message"]


# --- undo -----------------------------------------------------------------------------------------------------------
def test_undo_withdraws_a_pending_decision_and_the_gap_comes_back(client: TestClient, settings: Settings):
    seed(settings)
    gap = client.get("/admin/gaps", headers=AUTH).json()["gaps"][0]
    d = client.post(f"/admin/gaps/{gap['id']}/resolve", json={"action": "dismiss"}, headers=AUTH).json()["decision"]
    r = client.post(f"/admin/decisions/{d['id']}/undo", json={"who": "小李"}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["decision"]["id"], body["decision"]["status"], body["reverted"]) == (d["id"], "undone", False)
    assert states(settings.kb_dir)[d["id"]].status == "undone"
    assert gap["id"] in {g["id"] for g in client.get("/admin/gaps", headers=AUTH).json()["gaps"]}  # open again
    listed = client.get("/admin/decisions", headers=AUTH).json()["decisions"]
    assert [(x["id"], x["status"]) for x in listed] == [(d["id"], "undone")]
    again = client.post(f"/admin/decisions/{d['id']}/undo", headers=AUTH)  # no body: who defaults to console
    assert again.status_code == 409 and "already undone" in again.json()["message"]
    missing = client.post("/admin/decisions/Dnope/undo", json={}, headers=AUTH)
    assert missing.status_code == 404 and "kefu learn status" in missing.json()["message"]
    assert client.post(f"/admin/decisions/{d['id']}/undo", json={"who": 1}, headers=AUTH).status_code == 422


def test_undo_reverts_an_applied_decision_as_the_cli_does(client: TestClient, settings: Settings):
    tid = seed(settings)
    root = Path(settings.kb_dir)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    r = client.post(f"/admin/handoffs/{tid}/resolve", json={"action": "out_of_scope"}, headers=AUTH)
    d = r.json()["decision"]
    plan = plan_apply(load_kb(root))  # what `kefu learn` writes and records
    write_plan(root, plan)
    (change,) = plan.changes
    append_journal(root, {"event": "applied", "decision": d["id"], "who": "t", "at": "t", "change": change.to_json()})
    assert (root / "learned.jsonl").is_file()
    r = client.post(f"/admin/decisions/{d['id']}/undo", json={"who": "小李"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["reverted"] is True, r.text
    assert not (root / "learned.jsonl").exists()  # the labelled examples it wrote are gone
    assert all(p.read_bytes() == data for p, data in before.items())
    events = [s for s in states(root).values()]
    assert [(s.decision.id, s.status) for s in events] == [(d["id"], "undone")]


# --- tickets --------------------------------------------------------------------------------------------------------
def test_resolving_a_ticket(client: TestClient, settings: Settings):
    tid = seed(settings)
    r = client.post(
        f"/admin/handoffs/{tid}/resolve", json={"action": "attach", "entry": "refund-seven-day"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["item"] == f"ticket:{tid}" and PHONE not in r.text
    again = client.post(f"/admin/handoffs/{tid}/resolve", json={"action": "dismiss"}, headers=AUTH)
    assert again.status_code == 409
    missing = client.post("/admin/handoffs/Tnope/resolve", json={"action": "dismiss"}, headers=AUTH)
    assert missing.status_code == 404
    decisions = client.get("/admin/decisions", headers=AUTH).json()["decisions"]
    assert decisions[0]["item"] == f"ticket:{tid}" and PHONE not in decisions[0]["example"]
    handoffs = client.get("/admin/handoffs", headers=AUTH)
    assert PHONE not in handoffs.text  # the queue the console shows


# --- stats and /metrics ---------------------------------------------------------------------------------------------
def test_stats(client: TestClient, settings: Settings):
    seed(settings)
    r = client.get("/admin/stats", params={"since": "1d", "gaps": 2}, headers=AUTH)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["total"]["answers"] == 5 and s["total"]["handoff"] == 5
    assert s["total"]["handoff_reasons"] == {"low_confidence": 4, "needs_order": 1}
    assert s["total"]["rates"]["handoff"] == 1.0 and s["total"]["handoff_rates"]["needs_order"] == 0.2
    assert s["unserved"] == {"low_confidence": 4, "abandoned_clarify": 0, "voted_down": 0}
    assert s["calibration"]["build"] and s["calibration"]["origin"] in ("labelled", "self", "shipped", "default")
    assert len(s["top_gaps"]) == 2 and s["days"][-1]["answers"] == 5
    assert PHONE not in r.text and EMAIL not in r.text
    assert client.get("/admin/stats", params={"gaps": 0}, headers=AUTH).json()["top_gaps"] is None


def _seed_shops(settings: Settings) -> None:
    """Two answers in shop-a (one handoff, one 👎 answer), one in shop-b, on top of ``seed``'s five."""
    log = AnswerLog(settings.tickets_path)
    log.record(_handoff("跑鞋有赠品吗", "A1"), shop="shop-a")
    answered = _handoff("跑鞋多久发货", "A2").model_copy(update={"decision": "answer", "reason": None})
    voted = log.record(answered, shop="shop-a")
    FeedbackStore(settings.tickets_path).vote(voted.answer_id, "A2", "down")
    log.record(_handoff("茶叶多久发货", "B1"), shop="shop-b")


def test_stats_of_one_shop(client: TestClient, settings: Settings):
    seed(settings)
    _seed_shops(settings)
    every = client.get("/admin/stats", params={"since": "1d", "gaps": 0}, headers=AUTH).json()
    assert every["shop"] is None and every["total"]["answers"] == 8
    r = client.get("/admin/stats", params={"since": "1d", "shop": "shop-a"}, headers=AUTH)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["shop"] == "shop-a" and (s["total"]["answers"], s["total"]["answer"], s["total"]["down"]) == (2, 1, 1)
    assert s["unserved"] == {"low_confidence": 1, "abandoned_clarify": 0, "voted_down": 1}
    assert s["top_gaps"] is None  # clustered against the platform's KB: not a shop's
    assert s["calibration"] is None  # shop-a is not registered here: no build to read it from
    assert client.get("/admin/stats", params={"shop": "../a"}, headers=AUTH).status_code == 422


def test_a_shops_token_sees_its_own_stats_only(client: TestClient, settings: Settings, monkeypatch):
    seed(settings)
    _seed_shops(settings)
    shop = _shop_token(monkeypatch)
    own = client.get("/admin/stats", params={"since": "1d"}, headers=shop)
    assert own.status_code == 200, own.text
    assert own.json()["shop"] == "shop-a" and own.json()["total"]["answers"] == 2
    assert client.get("/admin/stats", params={"shop": "shop-a"}, headers=shop).json()["total"]["answers"] == 2
    other = client.get("/admin/stats", params={"shop": "shop-b"}, headers=shop)
    assert other.status_code == 403 and "shop-b" in other.json()["message"]


def test_metrics_export_the_stats(client: TestClient, settings: Settings):
    seed(settings)
    client.get("/admin/stats", headers=AUTH)
    text = client.get("/metrics").text
    assert 'kefu_window_answers{decision="handoff",reason="low_confidence",window="1d"} 4.0' in text
    assert 'kefu_window_decision_rate{decision="handoff",window="1d"} 1.0' in text
    assert 'kefu_window_handoff_rate{reason="needs_order",window="1d"} 0.2' in text
    assert 'kefu_window_unserved_messages{kind="low_confidence",window="1d"} 4.0' in text
    assert 'kefu_requests_total{path="/admin/stats",status="200"} 1.0' in text


# --- the page -------------------------------------------------------------------------------------------------------
def test_console_page_has_the_strict_csp_and_is_never_framed(client: TestClient):
    r = client.get("/console")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    page = refs(r.text)
    assert page.inline_scripts == [] and page.handlers == [] and page.styles == []
    for url in page.urls:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", url, re.I), url
        assert client.get("/" + url.lstrip("/")).status_code == 200, url
    for word in ("cdn", "http://", "https://"):
        assert word not in r.text.lower()
    # the login form posts (a GET form would put the token in the URL if the script failed to load)
    assert re.search(r'<form id="login" method="post"', r.text)
    assert 'type="password"' in r.text


def test_console_script_writes_no_markup_and_keeps_the_token_out_of_urls():
    code = re.sub(r"/\*.*?\*/", "", (STATIC / "console.js").read_text("utf-8"), flags=re.S)
    code = re.sub(r"(^|\s)//.*$", "", code, flags=re.M)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "srcdoc"):
        assert sink not in code, sink
    assert "localStorage" not in code  # the token is the tab's, not the browser's
    assert "sessionStorage" in code and '"Bearer " + token' in code
    assert not re.search(r"[?&]token=", code)
    assert (PAGES / "console.html").is_file() and not list(STATIC.glob("*.html"))
