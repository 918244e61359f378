"""The pages kefu serves (chat page, widget, offline docs): routes, headers, and that nothing is
loaded from outside. The browser itself is driven in tests/browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from indexer.store import IndexStore, write_calibration
from indexer.vectorstore import SHOP_ID
from kb.settings import Settings
from service.api import create_app
from service.web import PAGES, STATIC, chat_csp
from tests.fakes import FAKE_CAL


@pytest.fixture
def settings(tiny_settings: Settings, tiny_index) -> Settings:
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    return tiny_settings


@pytest.fixture
def client(settings: Settings, fake_encoder):
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        yield c


class Refs(HTMLParser):
    """Every URL a page refers to, its inline scripts, inline handlers and style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.handlers: list[str] = []
        self.styles: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "spec-url", "action", "poster", "data"):
            if a.get(name):
                self.urls.append(a[name] or "")
        self.handlers += [n for n in a if n.startswith("on")]
        if "style" in a:
            self.styles.append(tag)
        self._in_script = tag == "script"
        if tag == "style":
            self.styles.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def refs(html: str) -> Refs:
    r = Refs()
    r.feed(html)
    return r


PAGES_ROUTES = ["/", "/docs", "/redoc"]


# --- the pages ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PAGES_ROUTES)
def test_pages_load_only_local_assets_and_no_inline_script(client: TestClient, path: str):
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    page = refs(r.text)
    assert page.urls, "a page without assets"
    assert page.inline_scripts == [] and page.handlers == [] and page.styles == []
    for url in page.urls:
        # relative URLs only: no scheme, no //host, so a page works behind a path prefix and never
        # reaches another server
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", url, re.I), (path, url)
        got = client.get("/" + url.lstrip("/"))
        assert got.status_code == 200, (path, url)
    for word in ("cdn", "googleapis", "jsdelivr", "unpkg", "http://", "https://"):
        assert word not in r.text.lower(), (path, word)


def test_chat_page_has_a_strict_csp(client: TestClient):
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_allow_no_inline_script(client: TestClient, path: str):
    csp = client.get(path).headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert script_src.strip() == "script-src 'self'"
    assert "frame-ancestors 'self'" in csp


def test_frame_ancestors_setting_reaches_the_chat_page(settings: Settings, fake_encoder):
    s = settings.with_overrides(frame_ancestors=["'self'", "https://shop.example.com", "http://127.0.0.1:8080"])
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        csp = c.get("/").headers["content-security-policy"]
    assert csp.endswith("frame-ancestors 'self' https://shop.example.com http://127.0.0.1:8080")
    assert "frame-ancestors 'self'" in c.get("/docs").headers["content-security-policy"]  # docs stay unframed


@pytest.mark.parametrize(
    "value",
    ["https://a.example; script-src *", "https://a.example/path", "a\r\nSet-Cookie: x=1", "", "'unsafe-inline'"],
)
def test_frame_ancestors_refuses_what_is_not_a_source(value: str):
    with pytest.raises(ValidationError, match="KEFU_FRAME_ANCESTORS"):
        Settings(frame_ancestors=["'self'", value])


def test_frame_ancestors_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEFU_FRAME_ANCESTORS", '["\'self\'", "https://shop.example.com"]')
    s = Settings()
    assert s.frame_ancestors == ["'self'", "https://shop.example.com"]
    assert chat_csp(s.frame_ancestors).endswith("frame-ancestors 'self' https://shop.example.com")


def test_openapi_lists_feedback_and_no_page(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/feedback" in paths and "/v1/answer" in paths
    assert not {"/", "/docs", "/redoc", "/widget.js"} & set(paths)


# --- static files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/chat.js", "javascript"),
        ("/static/chat.css", "text/css"),
        ("/static/docs.js", "javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/vendor/swagger-ui-bundle.js", "javascript"),
        ("/static/vendor/swagger-ui.css", "text/css"),
        ("/static/vendor/redoc.standalone.js", "javascript"),
    ],
)
def test_static_assets(client: TestClient, path: str, kind: str):
    r = client.get(path)
    assert r.status_code == 200
    assert kind in r.headers["content-type"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"  # revalidated (ETag), never stale after an upgrade
    again = client.get(path, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    ["/static/vendor/swagger-ui-bundle.js", "/static/vendor/swagger-ui.css", "/static/vendor/redoc.standalone.js"],
)
def test_vendor_assets_name_no_cdn(client: TestClient, path: str):
    body = client.get(path).content
    for host in (b"cdn.", b"fonts.googleapis", b"fonts.gstatic", b"unpkg.com"):
        assert host not in body, (path, host)


def test_widget_js(client: TestClient):
    r = client.get("/widget.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "KefuWidget" in r.text and "data-kefu-url" in r.text


@pytest.mark.parametrize(
    "path", ["/static/../api.py", "/static/%2e%2e/__init__.py", "/static/nope.js", "/static/vendor/../x", "/index.html"]
)
def test_no_file_outside_the_assets(client: TestClient, path: str):
    r = client.get(path)
    assert r.status_code == 404
    assert "import" not in r.text


def test_html_is_only_served_with_its_csp():
    # The pages live outside the static folder, so no URL serves them without their policy.
    assert not list(STATIC.glob("*.html"))
    assert {p.name for p in PAGES.glob("*.html")} == {"chat.html", "docs.html", "redoc.html", "console.html"}


@pytest.mark.parametrize("name", ["chat.js", "widget.js", "docs.js"])
def test_scripts_never_write_markup(name: str):
    """Data reaches the page through textContent only: no HTML-parsing sink, no eval."""
    code = re.sub(r"/\*.*?\*/", "", (STATIC / name).read_text("utf-8"), flags=re.S)
    code = re.sub(r"(^|\s)//.*$", "", code, flags=re.M)  # comments may name the sinks they avoid
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "srcdoc"):
        assert sink not in code, (name, sink)


def test_pages_are_counted_in_metrics(client: TestClient):
    client.get("/")
    client.get("/widget.js")
    text = client.get("/metrics").text
    assert 'kefu_requests_total{path="/",status="200"}' in text
    assert 'kefu_requests_total{path="/widget.js",status="200"}' in text


@pytest.mark.parametrize("script", ["chat.js", "widget.js"])
def test_scripts_check_shop_ids_as_the_server_does(script: str):
    """The chat page and the widget refuse a malformed shop id before asking; their pattern is a
    copy of the server's (a browser cannot import it), so a change to one must reach the others."""
    source = (STATIC / script).read_text("utf-8")
    literals = re.findall(r"/(\^\[a-z0-9\][^/\n]*\$)/", source)
    assert literals == [SHOP_ID.pattern], literals
