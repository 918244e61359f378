"""/docs and /redoc render from kefu's own files, and no page of kefu makes a request off the machine."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Kefu

pytestmark = pytest.mark.browser


def test_swagger_ui_and_redoc_render_offline(open_tab, kefu: Kefu):
    tab = open_tab()
    page = tab.page
    page.goto(f"{kefu.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("kefu 客服 API")
    expect(page.locator(".swagger-ui .opblock-summary-path").filter(has_text="/v1/feedback")).to_have_count(1)
    page.goto(f"{kefu.url}/redoc")
    expect(page.locator("h1").first).to_contain_text("kefu 客服 API")
    expect(page.get_by_text("/v1/feedback").first).to_be_attached()
    paths = {urlsplit(u).path for u in tab.requests}
    assert {"/static/vendor/swagger-ui-bundle.js", "/static/vendor/redoc.standalone.js", "/openapi.json"} <= paths
    # CSP violations are console errors, and the fixture fails the test on any


def test_no_request_leaves_loopback(open_tab, kefu: Kefu):
    """Every page, asset, API call and frame of a session, docs and widget included, stays on 127.0.0.1."""
    tab = open_tab()
    page = tab.page
    page.goto(kefu.url)
    page.get_by_label("输入您的问题").fill("七天无理由退货需要满足什么条件？")
    page.get_by_role("button", name="发送").click()
    expect(page.locator("#log .card.answer")).to_have_count(1)
    page.locator("#log .card.answer").get_by_role("button", name="有帮助").click()
    expect(page.locator("#log .card.answer .thanks")).to_have_text("感谢您的反馈！")
    for path in ("/docs", "/redoc"):
        page.goto(kefu.url + path)
        page.wait_for_load_state("networkidle")
    page.goto(kefu.shop_url)
    page.locator("[data-kefu-widget] button").click()
    expect(page.frame_locator("[data-kefu-widget] iframe").locator("#q")).to_be_visible()
    page.wait_for_load_state("networkidle")

    hosts = {urlsplit(u).hostname for u in tab.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, sorted(set(tab.requests))
    assert len(tab.requests) >= 15  # pages, scripts, styles, API calls and the frame were all seen
    assert not [u for u in tab.requests if urlsplit(u).scheme not in ("http", "data", "blob", "about")], tab.requests
