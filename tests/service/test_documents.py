"""How answer units are shown: FAQ entries with their cites, clauses whole with their label,
article sections by the passage around the query's best sentence; GET /v1/entries/{id}'s body."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.build import build_and_swap
from indexer.index import Index
from indexer.store import IndexStore
from kb.loader import load_kb
from service.documents import (
    CiteView,
    UnitView,
    cites,
    depends_on_query,
    entry_json,
    resolve_unit,
    sentence_scores,
    view,
)
from service.pipeline.respond import Responder
from service.pipeline.retrieve import Candidate
from service.sessions import SessionStore

DEADLINE = (
    "七天无理由退货自签收次日起计算，满七日为止，请在期限内通过订单页面提交申请；"
    "运费按退货规范由买家承担，购买运费险的可以申请理赔。"
)
CITING_FAQ = f"""
category: 退货退款
entries:
  - id: refund-deadline
    category: 退货退款
    question: 七天无理由退货从哪天开始算？
    alt_questions: [七天从哪天算起, 退货期限怎么算, 签收后几天能退]
    answer: {DEADLINE}
    rules: [rules-return#第二条, rules-return#3]
"""
ARTICLE = """# 退款到账说明

退款成功后，款项会按原支付方式退回。

## 到账时间

余额支付的退款实时到账。银行卡支付的退款一般在一到三个工作日内到账。信用卡退款以发卡行处理为准，通常需要三到七个工作日。花呗退款会恢复相应额度。如果超过时间仍未到账，请联系银行查询。更多问题可以联系在线客服。
"""


@pytest.fixture
def index(tiny_kb_dir: Path, tiny_settings, fake_encoder) -> Index:
    (tiny_kb_dir / "faq" / "citing.yaml").write_text(CITING_FAQ, "utf-8")
    (tiny_kb_dir / "refund-help.md").write_text(ARTICLE, "utf-8")
    (tiny_kb_dir / "alternatives.yaml").write_text("alternatives:\n  rules-return.3: [质量问题退货运费谁出]\n", "utf-8")
    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, 40)
    return store.load_current(fake_encoder.model_id)


def _row(index: Index, unit: str, containing: str = "") -> int:
    return next(r for r in index.units[unit] if containing in index.chunks[r].text)


def test_an_faq_entry_shows_its_answer_and_the_clauses_it_cites(index):
    v = view(index, "refund-deadline", _row(index, "refund-deadline"), "七天从哪天开始算")
    assert (v.id, v.kind, v.doc_id, v.clause) == ("refund-deadline", "faq", "refund-deadline", None)
    assert v.section == "退货退款"
    assert v.title == "七天无理由退货从哪天开始算？" and v.text.startswith("七天无理由退货自签收次日起计算")
    assert v.cites == (
        CiteView("rules-return.2", "rules-return", "退货规范", 2, "《退货规范》第二条"),
        CiteView("rules-return.3", "rules-return", "退货规范", 3, "《退货规范》第三条"),
    )
    assert cites(index, "refund-seven-day") == ()  # an entry without cites
    assert cites(index, "no-such-entry") == ()


def test_a_clause_answers_whole_with_its_document_and_number(index):
    v = view(index, "rules-return.2", _row(index, "rules-return.2"), "退货申请期限")
    assert v == UnitView(
        "rules-return.2",
        "《退货规范》第二条",
        "第二条 买家应在签收次日起七日内提出无理由退货申请。逾期提出的，平台不予支持。",
        "rules",
        "rules-return",
        "退货规范 › 第一章 总则 › 第二条",
        2,
    )


def test_an_article_section_answers_with_the_sentences_around_the_best_match(index):
    unit = "refund-help.s2"
    assert index.doc_units[unit].label == "《退款到账说明》到账时间"
    row = _row(index, unit, "信用卡")
    v = view(index, unit, row, "信用卡退款多久到账")
    assert (v.kind, v.doc_id, v.title, v.clause) == ("doc", "refund-help", "《退款到账说明》到账时间", None)
    assert "信用卡退款以发卡行处理为准，通常需要三到七个工作日。" in v.text
    assert len(v.text) <= index.manifest.chunk_chars and v.text in index.doc_units[unit].text
    assert v.text.endswith(("。", "！", "？", "；"))  # whole sentences, never cut
    # a short section is shown whole
    first = view(index, "refund-help.s1", _row(index, "refund-help.s1"), "退款去哪了")
    assert first.text == "退款成功后，款项会按原支付方式退回。" and first.title == "《退款到账说明》"


def test_sentence_scores_favour_the_best_row_then_the_query_words(index):
    text = index.doc_units["refund-help.s2"].text
    scores = sentence_scores("信用卡退款", text, "信用卡退款以发卡行处理为准，通常需要三到七个工作日。")
    assert scores.index(max(scores)) == 2 and max(scores) > 1.0
    assert all(s < 1.0 for i, s in enumerate(scores) if i != 2)


def test_without_units_json_a_document_answers_with_its_row(index):
    bare = Index(
        index.manifest, index.vectors, index.vindex, index.chunks, index.anchors, index.anchor_labels, index.entries
    )
    row = _row(index, "rules-return.2")
    v = view(bare, "rules-return.2", row, "退货")
    assert (v.id, v.text, v.clause) == ("rules-return.2", index.chunks[row].text, None)
    assert entry_json(bare, "rules-return.2") is None


def test_entry_json_of_an_faq_entry_lists_its_alternatives_and_cites(index):
    e = entry_json(index, "refund-deadline")
    assert e is not None and e["kind"] == "faq" and e["question"] == "七天无理由退货从哪天开始算？"
    assert e["alternatives"] == ["七天从哪天算起", "退货期限怎么算", "签收后几天能退"]
    assert e["cites"][0] == {
        "id": "rules-return.2",
        "doc_id": "rules-return",
        "title": "退货规范",
        "clause": 2,
        "label": "《退货规范》第二条",
    }
    merged = entry_json(index, "refund-no-reason-return")  # an id merged into refund-seven-day
    assert merged is not None and merged["id"] == "refund-seven-day" and merged["cites"] == []


@pytest.mark.parametrize("name", ["rules-return.3", "rules-return#3", "rules-return#第三条"])
def test_entry_json_of_a_clause_by_its_id_or_as_a_cite(index, name):
    assert resolve_unit(index, name) == "rules-return.3"
    assert entry_json(index, name) == {
        "id": "rules-return.3",
        "kind": "rules",
        "title": "退货规范",
        "label": "《退货规范》第三条",
        "section": "退货规范 › 第二章 运费 › 第三条",
        "clause": 3,
        "clause_label": "第三条",
        "text": "第三条 无理由退货的运费由买家承担；商品存在质量问题的，运费由卖家承担。",
        "doc_id": "rules-return",
        "category": "退货退款",
        "questions": ["质量问题退货运费谁出"],  # from alternatives.yaml
    }


def test_entry_json_of_an_article_section_is_the_whole_section(index):
    e = entry_json(index, "refund-help.s2")
    assert e is not None and e["kind"] == "doc" and e["clause"] is None and e["clause_label"] is None
    assert e["questions"] == []
    assert e["text"] == index.doc_units["refund-help.s2"].text and "更多问题可以联系在线客服。" in e["text"]


@pytest.mark.parametrize("name", ["no-such-entry", "rules-return#9", "rules-return.9", "rules-return", "#"])
def test_entry_json_of_an_unknown_name_is_none(index, name):
    assert entry_json(index, name) is None


def test_an_item_is_rendered_once_per_unit_unless_its_passage_follows_the_query(index):
    """The responder keeps what an item shows for every unit whose view does not depend on the
    query: for every unit, row and query the kept item is the one rendered afresh, and a long
    section (a passage around the query's best sentence) is rendered for each query."""
    assert depends_on_query(index, "refund-help.s2")
    assert not any(depends_on_query(index, u) for u in ("refund-deadline", "rules-return.2", "refund-help.s1", "nope"))
    kept = Responder(index=index, sessions=SessionStore())
    passages = set()
    for query in ("信用卡退款多久到账", "余额支付的退款", "七天从哪天开始算"):
        for unit, rows in index.units.items():
            for row in rows:
                c = Candidate(unit, index.chunks[row].doc_id, 0.5, row)
                fresh = Responder(index=index, sessions=SessionStore()).item(c, query)
                assert kept.item(c, query).model_dump_json() == fresh.model_dump_json()
                if unit == "refund-help.s2":
                    passages.add(fresh.text)
    assert len(passages) > 1
    assert {unit for unit, _ in kept._shown} == set(index.units) - {"refund-help.s2"}
