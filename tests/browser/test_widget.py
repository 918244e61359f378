"""widget.js on sites of other origins: a bubble that opens the chat page in an iframe where the
site is listed in KEFU_FRAME_ANCESTORS, and a frame the browser refuses where it is not."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Kefu, screenshot

pytestmark = pytest.mark.browser

GLOBALS_JS = "Object.getOwnPropertyNames(window)"


def bubble(page: Page):
    return page.locator("[data-kefu-widget] button")  # Playwright's CSS reaches into the (open) shadow root


def test_widget_opens_the_chat_on_another_site(open_tab, kefu: Kefu):
    tab = open_tab()
    page = tab.page
    page.goto(f"{kefu.shop_url}/blank")  # the same site without the snippet
    before = set(page.evaluate(GLOBALS_JS))
    page.goto(kefu.shop_url)
    page.wait_for_function("() => window.KefuWidget !== undefined")
    assert set(page.evaluate(GLOBALS_JS)) - before == {"KefuWidget"}  # one namespaced object, nothing else

    button = bubble(page)
    expect(button).to_have_text("💬 在线客服")
    expect(button).to_have_attribute("aria-expanded", "false")
    # the site's `button {background: lime !important}` does not reach the widget
    assert button.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(194, 65, 12)"
    frame_element = page.locator("[data-kefu-widget] iframe")
    expect(frame_element).to_have_count(0)  # nothing loaded from kefu before the shopper asks

    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(frame_element).to_be_visible()
    assert frame_element.get_attribute("src") == f"{kefu.url}/?embed=1"
    chat = page.frame_locator("[data-kefu-widget] iframe")
    chat.get_by_label("输入您的问题").fill("退货运费谁出")
    chat.get_by_role("button", name="发送").click()
    card = chat.locator("#log .card.answer")
    expect(card).to_have_count(1)
    expect(card.locator(".q")).to_have_text("退货的运费应该由谁来承担？")
    screenshot(page, "widget")

    # the chat's own × closes the panel (a message from our frame), the bubble reopens it as it was
    chat.get_by_role("button", name="关闭客服窗口").click()
    expect(frame_element).to_be_hidden()
    assert page.evaluate("window.KefuWidget.isOpen()") is False
    button.click()
    expect(frame_element).to_be_visible()
    expect(chat.locator("#log .card.answer")).to_have_count(1)
    button.click()
    expect(frame_element).to_be_hidden()

    # the page's requests went to the site and to kefu, both on loopback (checked again after the test)
    origins = {u.split("/")[2] for u in tab.requests}
    assert origins == {kefu.shop_url.split("/")[2], kefu.url.split("/")[2]}, tab.requests


def test_a_shops_widget_opens_that_shops_chat(open_tab, kefu: Kefu):
    page = open_tab().page
    page.goto(f"{kefu.shop_url}/tea")  # the snippet with data-kefu-shop="tea"
    bubble(page).click()
    frame_element = page.locator("[data-kefu-widget] iframe")
    assert frame_element.get_attribute("src") == f"{kefu.url}/?embed=1&shop=tea"
    chat = page.frame_locator("[data-kefu-widget] iframe")
    expect(chat.locator("#log .msg.welcome button.example")).to_have_text(["茶叶有保质期吗", "下单后多久发货"])
    chat.get_by_label("输入您的问题").fill("茶叶怎么保存")
    chat.get_by_role("button", name="发送").click()
    expect(chat.locator("#log .card.answer .q")).to_have_text("茶叶怎么保存？")


def test_widget_on_a_phone_takes_the_whole_screen(open_tab, kefu: Kefu):
    page = open_tab(375, 740).page
    page.goto(kefu.shop_url)
    bubble(page).click()
    frame_element = page.locator("[data-kefu-widget] iframe")
    expect(frame_element).to_be_visible()
    box = frame_element.bounding_box()
    assert box is not None and (box["width"], box["height"]) == (375, 740), box
    expect(bubble(page)).to_be_hidden()  # under the full-screen chat; its × closes it
    chat = page.frame_locator("[data-kefu-widget] iframe")
    chat.get_by_role("button", name="关闭客服窗口").click()
    expect(frame_element).to_be_hidden()
    expect(bubble(page)).to_be_visible()


def test_a_site_not_listed_in_frame_ancestors_gets_no_chat(open_tab, kefu: Kefu):
    tab = open_tab()
    tab.expected_console = ("frame-ancestors",)  # Chromium says it refused the frame
    page = tab.page
    page.goto(kefu.stranger_url)
    bubble(page).click()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("frame-ancestors" in c for c in tab.console):
        page.wait_for_timeout(50)
    assert any("frame-ancestors" in c for c in tab.console), tab.console
    for frame in page.frames[1:]:
        assert frame.locator("#q").count() == 0, frame.url  # the chat page never rendered there
