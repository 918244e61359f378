"""Fixtures of the browser tests: a real ``kefu serve`` on a free loopback port, host pages of other
origins that embed the widget, and Debian's headless Chromium driven through Playwright.

The server is a subprocess running the ``kefu`` CLI (tests/browser/fake_serve.py swaps in the fake
encoder): it starts in about a second and answers the same way on every run. Each test gets a
fresh browser context (empty localStorage) whose every request is recorded; after the test, a
request to anything but 127.0.0.1, an uncaught page error, or a console error fails it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Response, sync_playwright

from indexer.build import build_and_swap
from indexer.encoder import FakeEncoder
from indexer.store import IndexStore, write_calibration
from kb.loader import load_kb
from kb.settings import Settings
from service import selfcal
from service.shops import Shops
from tests.browser.fake_serve import MODEL_ID
from tests.conftest import TINY_RULES
from tests.fakes import FAKE_CAL

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # the Makefile's variable of the same name
# Without the background-networking flags Chromium calls Google's services, which the closed
# network refuses (and no test request may leave the machine).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Read at import: the suite's autouse fixture clears KEFU_* variables before each test.
SCREENSHOTS = os.environ.get("KEFU_SCREENSHOTS") == "1"
SCREENSHOT_DIR = REPO / "docs" / "screenshots"
LOOPBACK = "127.0.0.1"


# The KB of the browser tests: answers with a numbered list, a rules document, and an answer that
# carries markup (it must show as text). With the fake encoder and FAKE_CAL, 「退款」 gets a clarify
# between the three refund entries and 「退钱」 a low-confidence handoff with suggestions.
def _entry(
    id_: str, category: str, question: str, alts: list[str], answer: str, rules: list[str] | None = None
) -> dict[str, object]:
    entry: dict[str, object] = {"id": id_, "category": category, "question": question, "alt_questions": alts}
    return {**entry, "answer": answer, **({"rules": rules} if rules else {})}


SHOP_FAQ = {
    "category": "退货退款",
    "entries": [
        _entry(
            "refund-seven-day",
            "退货退款",
            "七天无理由退货需要满足什么条件？",
            ["买了不想要了能退吗", "不喜欢可以退货吗", "七天内可以无理由退吗"],
            "签收次日起七天内，商品完好、不影响二次销售即可申请七天无理由退货。"
            "在「我的订单」找到订单，点击「退款/售后」提交申请，卖家超时未处理系统会自动同意。",
        ),
        _entry(
            "refund-shipping-fee",
            "退货退款",
            "退货的运费应该由谁来承担？",
            ["退货运费谁出", "寄回去的邮费谁付", "退货要自己出运费吗"],
            "七天无理由退货的运费一般由买家承担，购买了运费险的可以按保单获得赔付；"
            "因商品质量问题退货的运费由卖家承担，可在退款详情中上传凭证。",
            rules=["rules-return#3"],
        ),
        _entry(
            "refund-time",
            "退货退款",
            "退款多久能到账？",
            ["退款什么时候到", "钱什么时候退回来", "退款到账要几天"],
            "退款按原支付方式退回，到账时间如下：\n1. 余额支付：即时到账；\n2. 银行卡：1-7 个工作日；\n"
            "3. 信用卡：以发卡行为准，一般 3-15 个工作日。",
        ),
    ],
}
OTHER_FAQ = {
    "category": "物流配送",
    "entries": [
        _entry(
            "logistics-track",
            "物流配送",
            "怎么查看订单的物流信息？",
            ["包裹现在在哪里", "怎么查物流", "物流信息在哪看"],
            "打开「我的淘宝」→「我的订单」，找到对应订单点击「查看物流」，即可看到快递公司、运单号和最新的物流轨迹；"
            "长时间不更新可以联系卖家催促。",
        ),
        _entry(
            "html-in-answer",
            "物流配送",
            "商品详情页里的代码怎么显示？",
            ["详情页代码显示", "详情页脚本怎么写", "详情页的代码会执行吗"],
            '示例代码 <script>window.__kefuPwned = 1</script> 和 <img src=x onerror="window.__kefuPwned = 2"> '
            "在详情页中按原样显示，不会被执行。",
        ),
    ],
}


OUT_OF_SCOPE = "chitchat:\n  - 讲个笑话听听\n  - 今天天气怎么样\n  - 你叫什么名字\n"
# A shop on the platform (``?shop=tea``, the widget's data-kefu-shop): a small table of its own.
TEA_SHOP = "tea"
TEA_FAQ = (
    "question,answer,category\n"
    "茶叶怎么保存？,密封、避光、防潮保存，绿茶建议放冰箱冷藏。,保存\n"
    "茶叶有保质期吗？,绿茶十八个月，红茶和普洱保存得当可以长期存放。,保存\n"
    "下单后多久发货？,付款后四十八小时内从杭州发货，节假日顺延。,物流\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# --- pages of other sites that embed the widget -------------------------------------------------------------
HOST_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>示例小店</title><link rel="stylesheet" href="/host.css"></head>
<body><h1>示例小店 · 纯棉短袖T恤</h1><p>¥59.00 · 包邮 · 7天无理由退货</p><button>加入购物车</button>
{script}</body></html>"""
# Styles a careless site might have: they must not reach the widget (shadow DOM, all: initial).
HOST_CSS = (
    "body{font-family:sans-serif;margin:2rem;background:#fafafa} button{background:lime!important;font-size:40px}"
)


def _host_server(kefu: str) -> ThreadingHTTPServer:
    widget = f'<script src="{kefu}/widget.js" data-kefu-url="{kefu}"></script>'
    shop_widget = f'<script src="{kefu}/widget.js" data-kefu-url="{kefu}" data-kefu-shop="{TEA_SHOP}"></script>'

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            pages = {
                "/": ("text/html", HOST_PAGE.format(script=widget)),
                "/blank": ("text/html", HOST_PAGE.format(script="")),
                "/tea": ("text/html", HOST_PAGE.format(script=shop_widget)),  # a shop's own page
                "/host.css": ("text/css", HOST_CSS),
                "/favicon.ico": ("image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg"/>'),
            }
            if self.path not in pages:
                self.send_error(404)
                return
            kind, text = pages[self.path]
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            # A strict site: scripts only from itself and kefu, no inline style; the widget must cope.
            self.send_header(
                "Content-Security-Policy",
                f"default-src 'self'; script-src 'self' {kefu}; style-src 'self'; frame-src {kefu}; img-src 'self'",
            )
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the kefu server ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kefu:
    url: str  # http://127.0.0.1:PORT
    tickets_db: Path
    shop_url: str  # a site of another origin listed in KEFU_FRAME_ANCESTORS, embedding the widget
    stranger_url: str  # a site of another origin not listed there
    log: Path


def _build_index(root: Path) -> dict[str, str]:
    kb = root / "kb"
    (kb / "faq").mkdir(parents=True)
    (kb / "rules").mkdir()
    for name, faq in (("shop", SHOP_FAQ), ("other", OTHER_FAQ)):
        (kb / "faq" / f"{name}.yaml").write_text(yaml.safe_dump(faq, allow_unicode=True, sort_keys=False), "utf-8")
    (kb / "rules" / "rules-return.md").write_text(TINY_RULES, "utf-8")
    # The shop's own out-of-scope examples: the fake encoder matches characters, and the bundled ones
    # hold 退 and 钱 (房东不退, 多少钱), so 退钱 would read as off topic and show no suggestions.
    (kb / "resources").mkdir()
    (kb / "resources" / "out_of_scope.yaml").write_text(OUT_OF_SCOPE, "utf-8")
    data = root / "data"
    store = IndexStore(data / "index", 3)
    build_and_swap(load_kb(kb, strict=False), FakeEncoder(dim=128, model_id=MODEL_ID), store, 60)
    write_calibration(store.current_path(), FAKE_CAL.to_json())
    env = {"KEFU_KB_DIR": str(kb), "KEFU_DATA_DIR": str(data), "KEFU_MODEL": MODEL_ID, "KEFU_CHUNK_CHARS": "60"}
    tea = root / "tea" / "faq.csv"
    tea.parent.mkdir()
    tea.write_text(TEA_FAQ, "utf-8")
    # the fake encoder's thresholds for the shop too (its self-calibration is for real cosines)
    with mock.patch.object(selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake")):
        shops = Shops(Settings(kb_dir=kb, data_dir=data, model=MODEL_ID, chunk_chars=60), FakeEncoder(128, MODEL_ID))
        shops.add(TEA_SHOP, tea)
        shops.close()
    return env


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"kefu serve exited with {proc.returncode}:\n{log.read_text('utf-8', 'replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"kefu serve not ready after {timeout_s} s:\n{log.read_text('utf-8', 'replace')[-3000:]}")


@contextlib.contextmanager
def fake_serve(root: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """`kefu serve` on the fake encoder in a subprocess, ready, its output in ``root/serve.log``;
    yields its URL and stops it on exit. The cwd is a folder without a .env, so the developer's
    settings stay out."""
    url = f"http://{LOOPBACK}:{port}"
    log = root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.fake_serve", "serve", "--host", LOOPBACK, "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def kefu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kefu]:
    root = tmp_path_factory.mktemp("kefu-browser")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    env.update(_build_index(root))
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    shop, stranger = _host_server(url), _host_server(url)
    shop_url = f"http://{LOOPBACK}:{shop.server_address[1]}"
    env.update(
        {
            "KEFU_FRAME_ANCESTORS": json.dumps(["'self'", shop_url]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
    )
    try:
        with fake_serve(root, env, port):
            stranger_url = f"http://{LOOPBACK}:{stranger.server_address[1]}"
            yield Kefu(url, root / "data" / "tickets.db", shop_url, stranger_url, root / "serve.log")
    finally:
        shop.shutdown()
        stranger.shutdown()


# --- the browser -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (installs Debian's chromium) or set CHROMIUM")
    with sync_playwright() as pw:
        # launch() gives Chromium a fresh temporary profile (user-data dir) of its own, removed on close
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Tab:
    """A page in a fresh context, with what it did: every request URL, page errors, console errors."""

    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # responses with a 4xx/5xx status
    expected_console: tuple[str, ...] = ()  # fragments of console errors a test provokes on purpose


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """``open_tab(width=1280, height=800)`` → a Tab; checked and closed after the test."""
    contexts: list[BrowserContext] = []
    tabs: list[Tab] = []

    def make(width: int = 1280, height: int = 800) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
        contexts.append(context)
        tab = Tab(context.new_page())

        def on_response(r: Response) -> None:
            if r.status >= 400:
                tab.failed.append(f"{r.status} {r.url}")

        def on_console(m: ConsoleMessage) -> None:
            if m.type == "error":
                tab.console.append(m.text)

        def on_dialog(d: Dialog) -> None:  # alert() from injected markup would land here
            tab.errors.append(f"dialog: {d.message}")
            d.dismiss()

        context.on("request", lambda r: tab.requests.append(r.url))
        context.on("response", on_response)
        tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.page.on("console", on_console)
        tab.page.on("dialog", on_dialog)
        tabs.append(tab)
        return tab

    yield make
    try:
        for tab in tabs:
            outside = [u for u in tab.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
            outside = [u for u in outside if urlsplit(u).hostname != LOOPBACK]
            assert outside == [], f"requests left loopback: {outside}"
            assert tab.errors == [], f"page errors: {tab.errors}"
            assert tab.failed == [], f"failed responses: {tab.failed}"
            unexpected = [c for c in tab.console if not any(f in c for f in tab.expected_console)]
            assert unexpected == [], f"console errors: {unexpected}"
    finally:
        for context in contexts:
            context.close()


def screenshot(page: Page, name: str, full_page: bool = False) -> None:
    """Save docs/screenshots/NAME.png when KEFU_SCREENSHOTS=1 (palette PNG: small enough for the repo)."""
    if not SCREENSHOTS:
        return
    from PIL import Image

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(full_page=full_page)
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    img.save(SCREENSHOT_DIR / f"{name}.png", optimize=True)
