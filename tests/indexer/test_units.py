"""Document units in a build: a clause of several rows is one unit, stored whole in units.json,
scored like an FAQ entry's rows; FAQ entries carry their cites; an older build is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.build import build_and_swap
from indexer.chunking import DocUnit
from indexer.folder import FORMAT_VERSION, EntryInfo
from indexer.index import Index
from indexer.lexical import char_bigrams, jaccard
from indexer.normalize import normalize
from indexer.store import IndexStore
from indexer.units import ANSWER_WEIGHT
from kb.errors import IndexMismatchError
from kb.loader import load_kb
from tests.indexer.oracle import unit_rule

CLAUSE_ONE = (
    "第一条 买家应在签收次日起七日内提出无理由退货申请。逾期提出的，平台不予支持。"
    "卖家应在四十八小时内处理申请。卖家超时未处理的，系统自动同意退货申请。"
)
LONG_RULES = f"""---
id: rules-long
title: 长条款规范
category: 退货退款
effective: 2026-01-01
---

# 长条款规范

## 第一章 总则

本章说明适用范围。本规范适用于平台全部交易。

{CLAUSE_ONE}

第二条 运费由买家承担。
"""
DEADLINE = (
    "七天无理由退货自签收次日起计算，满七日为止，请在期限内通过订单页面提交申请；"
    "卖家会在四十八小时内处理您的退货申请，超时未处理的系统会自动同意。"
)
CITING_FAQ = f"""
category: 退货退款
entries:
  - id: refund-deadline
    category: 退货退款
    question: 七天无理由退货从哪天开始算？
    alt_questions: [七天从哪天算起, 退货期限怎么算, 签收后几天能退]
    answer: {DEADLINE}
    rules: [rules-long#第一条, rules-long#1, rules-long#2]
"""


@pytest.fixture
def units_index(tiny_kb_dir: Path, tiny_settings, fake_encoder) -> Index:
    (tiny_kb_dir / "rules" / "rules-long.md").write_text(LONG_RULES, "utf-8")
    (tiny_kb_dir / "faq" / "citing.yaml").write_text(CITING_FAQ, "utf-8")
    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, 30)
    return store.load_current(fake_encoder.model_id)


def test_a_long_clause_is_one_unit_of_several_rows(units_index):
    rows = units_index.units["rules-long.1"]
    assert len(rows) >= 3
    assert {units_index.chunks[r].doc_id for r in rows} == {"rules-long"}
    assert all(units_index.chunks[r].section == "长条款规范 › 第一章 总则 › 第一条" for r in rows)
    intro = units_index.units["rules-long.s1"]
    assert [units_index.chunks[r].text for r in intro] == ["本章说明适用范围。本规范适用于平台全部交易。"]


def test_units_json_holds_each_unit_whole(units_index):
    u = units_index.doc_units["rules-long.1"]
    assert u == DocUnit(
        "rules-long.1",
        "rules-long",
        "rules",
        "长条款规范",
        "退货退款",
        "长条款规范 › 第一章 总则 › 第一条",
        1,
        CLAUSE_ONE,
    )
    assert u.label == "《长条款规范》第一条"
    assert set(units_index.doc_units) == set(units_index.units) - set(units_index.entries)
    saved = json.loads((units_index.folder / "units.json").read_text("utf-8"))
    assert saved["rules-long.s1"]["clause"] is None


def test_entries_carry_their_normalised_cites(units_index):
    assert units_index.entries["refund-deadline"].rules == ("rules-long#1", "rules-long#2")
    assert units_index.entries["refund-seven-day"].rules == ()
    e = units_index.entries["refund-deadline"]
    assert EntryInfo.from_json(json.loads(json.dumps(vars(e)))) == e


def test_a_clause_of_several_rows_scores_its_best_row_as_every_unit_does(units_index, fake_encoder):
    """A document unit has no question rows: its score is its best row's cosine (the rule an FAQ
    entry's answer side follows), the same in the per-unit and the vectorised scoring."""
    q = fake_encoder.encode_queries([normalize("卖家超时未处理怎么办")])[0]
    cos = units_index.vectors @ q
    rows = units_index.units["rules-long.1"]
    score, q_side, best = unit_rule(units_index, rows, cos[rows], ANSWER_WEIGHT)
    assert score == pytest.approx(float(cos[rows].max()), abs=1e-6) and q_side == score
    assert best == rows[int(np.argmax(cos[rows]))]
    layout = units_index._layout
    scores, _, _ = layout.scores(np.append(cos, -np.inf).astype(np.float32), ANSWER_WEIGHT)
    assert scores[layout.position["rules-long.1"]] == pytest.approx(score, abs=1e-6)
    found = {u.unit_id: u for u in units_index.search_units(q, k_units=50, k_vectors=len(cos))}
    assert found["rules-long.1"].best_chunk == best
    assert found["rules-long.1"].votes == len(rows)  # every row of the unit counts as a vote


def test_a_build_of_the_previous_format_is_refused_and_rebuilt(units_index, tiny_kb_dir, tiny_settings, fake_encoder):
    folder = units_index.folder
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    manifest["format_version"] = FORMAT_VERSION - 1
    (folder / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(IndexMismatchError, match="run `kefu build`"):
        Index.load(folder, fake_encoder.model_id)
    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    again = build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, 30)
    assert not again.unchanged  # same KB, but the old build is not reused
    assert Index.load(store.current_path(), fake_encoder.model_id).manifest.format_version == FORMAT_VERSION


def test_an_index_copy_without_units_has_none(units_index):
    copy = Index(
        units_index.manifest,
        units_index.vectors,
        units_index.vindex,
        units_index.chunks,
        units_index.anchors,
        units_index.anchor_labels,
        units_index.entries,
    )
    assert copy.doc_units == {}


def test_a_document_unit_enters_the_ranker_pool_as_its_best_row(units_index, fake_encoder):
    """Coverage and votes of a clause of several rows are those of one row, not of their sum: a
    long section must not outvote a short one by length. FAQ entries keep their whole-unit values."""
    from indexer.pool import POOL_FEATURES

    text = "买家应在签收次日起七日内提出无理由退货申请卖家超时未处理"
    q = fake_encoder.encode_queries([normalize(text)])[0]
    pool = units_index.candidate_pool(q, normalize(text), 100)
    col = {f: i for i, f in enumerate(POOL_FEATURES)}
    by_unit = {u.unit_id: (u, row) for u, row in zip(pool.units, pool.x, strict=True)}
    unit, row = by_unit["rules-long.1"]
    assert row[col["cover_unit"]] == row[col["cover_answer"]] < 1.0  # no one row holds every bigram
    assert row[col["votes"]] == pytest.approx(np.log1p(min(unit.votes, 1)))
    entry, erow = by_unit["refund-deadline"]
    assert erow[col["votes"]] == pytest.approx(np.log1p(entry.votes))
    whole = units_index.lexical_evidence(normalize(text)).cover_unit[units_index._layout.position["rules-long.1"]]
    assert whole > row[col["cover_answer"]]  # the rows together would cover more: the case guarded


@pytest.mark.parametrize("text", ["运费险赔付上限多少", "退货运费谁出", "完全无关的内容", ""])
def test_text_overlap_is_question_jaccard_for_entries_and_query_cover_for_passages(units_index, text):
    """Oracle: an FAQ entry's overlap is the best Jaccard of its question-side rows; a clause has
    no question row, so it is the share of the query's bigrams its best row holds."""
    text = normalize(text)
    grams = char_bigrams(text)
    row_jaccard = units_index.bigram_jaccard(text)
    entry = "refund-deadline"
    questions = [r for r in units_index.units[entry] if units_index.chunks[r].kind in ("question", "alt")]
    assert units_index.text_overlap(entry, text, row_jaccard) == max(
        jaccard(grams, units_index.norm_bigrams[r]) for r in questions
    )
    clause = units_index.units["rules-long.1"]
    want = max(len(grams & units_index.norm_bigrams[r]) for r in clause) / len(grams) if grams else 0.0
    assert units_index.text_overlap("rules-long.1", text, row_jaccard) == pytest.approx(want)
    assert units_index.text_overlap("no-such-unit", text, row_jaccard) == 0.0
