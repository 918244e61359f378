"""GET /v1/entries: FAQ entries, merged ids and rules chunks, and an imported table's entries by slug
or original id."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_and_swap
from indexer.store import IndexStore
from kb.loader import load_kb
from kb.schema import entry_slug
from kb.settings import Settings
from service.api import create_app
from tests.service.conftest import _assert_error, _calibrate


def test_entries(client: TestClient):
    r = client.get("/v1/entries/refund-seven-day")
    assert r.status_code == 200
    e = r.json()
    assert e["id"] == "refund-seven-day" and e["kind"] == "faq" and e["category"] == "退货退款"
    assert e["related"] == ["refund-shipping-fee"] and e["replaces"] == ["refund-no-reason-return"]
    # an entry merged into another keeps its old id as a name for the survivor
    assert client.get("/v1/entries/refund-no-reason-return").json() == e
    chunk = client.get("/v1/entries/rules-return%231")
    assert chunk.status_code == 200 and chunk.json()["doc_id"] == "rules-return"
    _assert_error(client.get("/v1/entries/no-such-entry"), 404, "no-such-entry")


IMPORTED_CSV = """id,question,answer,category
1024,优惠券怎么领取,领券中心领取,优惠
退货-01,退货多久能到账,原路退回，一般三个工作日,售后
a.b c,发票怎么开,订单页申请开票,发票
售后/换货,换货怎么申请,订单页申请换货,售后
常见问题_12,优惠券怎么领取？,联系客服领取,优惠
1024,会员积分怎么查,我的页面查看,会员
"""


@pytest.fixture
def imported_client(tmp_path: Path, fake_encoder):
    """The API over an index of a CSV export whose ids are not slugs (and repeat)."""
    kb = tmp_path / "export"
    kb.mkdir()
    (kb / "faq.csv").write_text(IMPORTED_CSV, "utf-8")
    s = Settings(kb_dir=kb, data_dir=tmp_path / "data", model="fake:hash-128", chunk_chars=60)
    store = IndexStore(s.index_home, s.keep_builds)
    build_and_swap(load_kb(kb), fake_encoder, store, s.chunk_chars)
    _calibrate(s)
    with TestClient(create_app(s, encoder=fake_encoder)) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "slug", "question"),
    [
        ("1024", "1024", "优惠券怎么领取"),  # the first of two rows called 1024 keeps the id
        ("1024-2", "1024-2", "会员积分怎么查"),  # the second one made unique
        ("%E9%80%80%E8%B4%A7-01", entry_slug("退货-01"), "退货多久能到账"),  # the original id, URL-encoded
        (entry_slug("退货-01"), entry_slug("退货-01"), "退货多久能到账"),  # the slug
        ("a.b%20c", entry_slug("a.b c"), "发票怎么开"),
        ("%E5%94%AE%E5%90%8E%2F%E6%8D%A2%E8%B4%A7", entry_slug("售后/换货"), "换货怎么申请"),  # a slash in the id
        ("常见问题_12", "1024", "优惠券怎么领取"),  # a row merged into the first with the same question
    ],
)
def test_entries_of_an_imported_table_by_slug_or_original_id(
    imported_client: TestClient, path: str, slug: str, question: str
):
    r = imported_client.get(f"/v1/entries/{path}")
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["question"]) == (slug, question)


def test_unknown_original_id_is_a_clear_404(imported_client: TestClient):
    _assert_error(imported_client.get("/v1/entries/%E9%80%80%E8%B4%A7-02"), 404, "退货-02", "imported table")
