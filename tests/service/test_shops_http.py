"""Shops over HTTP (answers, unknown shops, shop tokens scoping admin) and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import service.selfcal
from indexer.store import IndexStore, write_calibration
from kb.settings import Settings
from service.shops import Shops
from tests.fakes import FAKE_CAL
from tests.service.conftest import ENTRIES, write_shop_kb

# --- over HTTP ---------------------------------------------------------------------------------------
TOKEN = "global-s3cret"


@pytest.fixture
def http(tiny_settings: Settings, tiny_index, fake_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fastapi.testclient import TestClient

    from service.api import create_app

    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    monkeypatch.setattr(
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )
    settings = tiny_settings.with_overrides(admin_token=TOKEN)
    shops = Shops(settings, fake_encoder)
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    bobo = write_shop_kb(tmp_path / "bobo", "bobo", "茶叶")
    (bobo / "resources").mkdir()  # the questions its chat suggests, chosen by the shop
    said = "examples: [茶叶怎么泡才好喝]\n"
    said += "replies:\n  greeting: 茶铺小二在，想问{examples}吗\n  handoff: 茶铺掌柜这就来\n"
    (bobo / "resources" / "greetings.yaml").write_text(said, "utf-8")
    shops.add("bobo", bobo)
    tokens = {shop: shops.registry.new_token(shop) for shop in ("acme", "bobo")}
    shops.close()
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        yield c, tokens


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_answer_for_a_shop_over_http(http) -> None:
    c, _ = http
    r = c.post("/v1/answer", json={"query": "跑鞋5号有没有赠品？", "shop": "acme"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "answer"
    assert body["answers"][0]["id"] == "acme-5" and body["answers"][0]["source"]["owner"] == "shop"
    plain = c.post("/v1/answer", json={"query": "七天无理由退货需要满足什么条件？"}).json()
    assert plain["answers"][0]["source"]["owner"] == "platform"
    person = c.post("/v1/answer", json={"query": "转人工"}).json()
    assert person["handoff"]["route"] == "platform"  # every handoff without a shop
    shop_person = c.post("/v1/answer", json={"query": "转人工", "shop": "acme"}).json()
    assert shop_person["handoff"]["route"] == "shop"


def test_unknown_or_unsafe_shop_is_a_clear_4xx(http) -> None:
    c, _ = http
    r = c.post("/v1/answer", json={"query": "多久发货", "shop": "ghost"})
    assert r.status_code == 404 and "kefu shops add ghost" in r.json()["message"]
    r = c.post("/v1/answer", json={"query": "多久发货", "shop": "../acme"})
    assert r.status_code == 422 and "shop" in r.json()["message"]


def test_a_shops_chat_opens_with_its_own_questions(http) -> None:
    c, _ = http
    acme = c.get("/v1/welcome", params={"shop": "acme"}).json()
    assert acme["examples"] and all(q.startswith("跑鞋") for q in acme["examples"])
    assert acme["message"] == c.post("/v1/answer", json={"query": "你好", "shop": "acme"}).json()["message"]
    bobo = c.get("/v1/welcome", params={"shop": "bobo"}).json()
    assert (bobo["examples"], bobo["message"]) == (["茶叶怎么泡才好喝"], "茶铺小二在，想问“茶叶怎么泡才好喝”吗")
    assert c.post("/v1/answer", json={"query": "你好", "shop": "bobo"}).json()["message"] == bobo["message"]
    bobo_person = c.post("/v1/answer", json={"query": "转人工", "shop": "bobo"}).json()["handoff"]
    assert (bobo_person["route"], bobo_person["message"]) == ("shop", "茶铺掌柜这就来")  # the shop's own words
    acme_person = c.post("/v1/answer", json={"query": "转人工", "shop": "acme"}).json()["handoff"]
    assert acme_person["message"] != "茶铺掌柜这就来"
    platform = c.get("/v1/welcome").json()["examples"]
    assert platform and not any(q.startswith(("跑鞋", "茶叶")) for q in platform)
    shop_answer = c.post("/v1/answer", json={"query": "跑鞋5号有没有赠品？", "shop": "acme"}).json()
    vote = {"answer_id": shop_answer["answer_id"], "session_id": shop_answer["session_id"], "vote": "up"}
    assert c.post("/v1/feedback", json=vote).status_code == 200  # a shop's answers take votes too
    r = c.get("/v1/welcome", params={"shop": "ghost"})
    assert r.status_code == 404 and "kefu shops add ghost" in r.json()["message"]
    r = c.get("/v1/welcome", params={"shop": "../acme"})
    assert r.status_code == 422 and "shop" in r.json()["message"]


def test_shop_tokens_scope_admin(http) -> None:
    c, tokens = http
    acme = c.post("/v1/answer", json={"query": "转人工", "shop": "acme"}).json()["handoff"]["ticket_id"]
    bobo = c.post("/v1/answer", json={"query": "转人工", "shop": "bobo"}).json()["handoff"]["ticket_id"]
    platform = c.post("/v1/answer", json={"query": "转人工"}).json()["handoff"]["ticket_id"]

    def seen(headers: dict[str, str], **params: str) -> set[str]:
        r = c.get("/admin/handoffs", headers=headers, params=params)
        assert r.status_code == 200, r.text
        return {t["id"] for t in r.json()["tickets"]}

    assert seen(_bearer(TOKEN)) >= {acme, bobo, platform}
    assert seen(_bearer(TOKEN), shop="bobo") == {bobo}
    assert seen(_bearer(tokens["acme"])) == {acme}
    got = c.get("/admin/handoffs", headers=_bearer(tokens["acme"])).json()["tickets"][0]
    assert (got["shop"], got["route"]) == ("acme", "shop")
    assert c.get("/admin/handoffs", headers=_bearer(tokens["acme"]), params={"shop": "bobo"}).status_code == 403
    assert c.post("/admin/reload", headers=_bearer(tokens["acme"])).status_code == 403
    assert c.get("/admin/handoffs", headers=_bearer("kshop_wrong")).status_code == 401
    assert c.post("/admin/reload", headers=_bearer(TOKEN)).status_code == 200


# --- the CLI -------------------------------------------------------------------------------------------
def test_cli_add_list_token_remove(env: Settings, runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kefu_cli import app

    monkeypatch.setattr(
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )
    kb = write_shop_kb(tmp_path / "acme", "acme", "跑鞋")
    r = runner.invoke(app, ["shops", "add", "acme", "--kb", str(kb)])
    assert r.exit_code == 0, r.output
    assert "shop acme: build" in r.output and f"{ENTRIES} entries" in r.output
    r = runner.invoke(app, ["shops", "list", "--json"])
    assert r.exit_code == 0 and '"id": "acme"' in r.output
    r = runner.invoke(app, ["shops", "token", "acme"])
    assert r.exit_code == 0 and r.output.startswith("kshop_")
    bad = runner.invoke(app, ["shops", "add", "Bad Shop", "--kb", str(kb)])
    assert bad.exit_code == 2 and "safe slug" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["shops", "add", "empty", "--kb", str(empty)])
    assert r.exit_code == 3 and "fails `kefu kb check`" in r.output
    r = runner.invoke(app, ["shops", "rebuild", "ghost"])
    assert r.exit_code == 6 and "no shop 'ghost'" in r.output
    r = runner.invoke(app, ["handoffs", "list", "--shop", "acme"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ask", "--shop", "acme", "--json", "跑鞋5号有没有赠品？"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["answers"][0]["id"] == "acme-5" and got["answers"][0]["source"]["owner"] == "shop"
    assert got["trace"]["shop"] == "acme"
    r = runner.invoke(app, ["ask", "--shop", "acme", "-"], input="七天无理由退货需要满足什么条件？\n转人工\n")
    assert r.exit_code == 0 and r.output.splitlines()[1].startswith("handoff\tuser_requested"), r.output
    r = runner.invoke(app, ["chat", "--shop", "acme"], input="跑鞋5号有没有赠品？\n/quit\n")
    assert r.exit_code == 0 and "例如“跑鞋" in r.output and "acme-5" in r.output, r.output  # its questions, its answer
    r = runner.invoke(app, ["ask", "--shop", "ghost", "多久发货"])
    assert r.exit_code == 6 and "no shop 'ghost'" in r.output
    r = runner.invoke(app, ["ask", "--shop", "Bad Shop", "多久发货"])
    assert r.exit_code == 2 and "safe slug" in r.output
    r = runner.invoke(app, ["shops", "remove", "acme"])
    assert r.exit_code == 0 and "removed" in r.output
