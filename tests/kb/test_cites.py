"""Clause numbers, FAQ cites of rules clauses (checked with file:line), and answers whose numbers
differ from the clause they cite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.cites import number_mismatches, quantities
from kb.clauses import Cite, clause_label, cn_number, cn_numeral, document_parts, parse_cite
from kb.errors import KBError
from kb.loader import load_kb
from kb.schema import Document, Source

RULES = """---
id: rules-return
title: 退货规范
category: 退货退款
effective: 2026-01-01
---

# 退货规范

## 第一章 总则

第一条 为保障消费者权益，制定本规范。本规范适用于平台上的全部交易。

第二条 买家应在签收次日起七日内提出无理由退货申请。卖家应在48小时内处理。

## 第二章 运费

第十二条 无理由退货的运费由买家承担，运费险最高赔付25元。
"""
ANSWER = (
    "签收次日起七天内可以申请无理由退货，卖家会在48小时内处理；"
    "运费由买家承担，买了运费险的最高赔付25元，可在订单页查看。"
)


def _faq(rules: str, answer: str = ANSWER, entry_id: str = "refund-seven-day") -> str:
    return f"""
category: 退货退款
entries:
  - id: {entry_id}
    category: 退货退款
    question: 七天无理由退货需要满足什么条件？
    alt_questions: [买了不想要了能退吗, 不喜欢可以退货吗, 七天内可以无理由吗]
    answer: {answer}
    rules: {rules}
"""


def _kb_dir(root: Path, rules: str, answer: str = ANSWER) -> Path:
    (root / "faq").mkdir(parents=True)
    (root / "rules").mkdir()
    (root / "rules" / "rules-return.md").write_text(RULES, "utf-8")
    (root / "faq" / "refund.yaml").write_text(_faq(rules, answer), "utf-8")
    return root


# --- numerals and cites ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("一", 1),
        ("十", 10),
        ("十二", 12),
        ("二十", 20),
        ("二十五", 25),
        ("九十九", 99),
        ("一百", 100),
        ("一百零五", 105),
        ("一百一十", 110),
        ("两百", 200),
        ("12", 12),
        ("五五", None),
        ("百", None),
        ("十百", None),
        ("条", None),
        ("", None),
    ],
)
def test_cn_number(text: str, value: int | None):
    assert cn_number(text) == value


def test_cn_numeral_writes_what_cn_number_reads():
    for n in range(1, 1000):
        assert cn_number(cn_numeral(n)) == n
    labels = ["第五条", "第十条", "第十二条", "第二十条", "第一百零五条"]
    assert [clause_label(n) for n in (5, 10, 12, 20, 105)] == labels
    with pytest.raises(ValueError):
        cn_numeral(1000)


@pytest.mark.parametrize(
    ("text", "cite"),
    [
        ("rules-return#5", Cite("rules-return", 5)),
        ("rules-return#第五条", Cite("rules-return", 5)),
        ("rules-return#第十二条", Cite("rules-return", 12)),
        ("rules-return # 第12条", Cite("rules-return", 12)),
        ("rules-return#五", Cite("rules-return", 5)),
    ],
)
def test_parse_cite(text: str, cite: Cite):
    assert parse_cite(text) == cite
    assert str(cite) == f"rules-return#{cite.clause}" and cite.unit_id == f"rules-return.{cite.clause}"


@pytest.mark.parametrize("text", ["rules-return", "rules-return#", "rules-return#第零条", "#5", "rules-return#甲"])
def test_parse_cite_refuses(text: str):
    with pytest.raises(ValueError, match="like 'rules-coupons#5'"):
        parse_cite(text)


def test_document_parts_number_clauses_in_chinese():
    doc = Document("rules-return", "退货规范", "退货退款", RULES.split("---\n", 2)[2], Source("rules/r.md"))
    assert [(p.key, p.clause) for p in document_parts(doc)] == [("1", 1), ("2", 2), ("12", 12)]


# --- the loader ------------------------------------------------------------------------------------
def test_cites_are_normalised_and_kept(tmp_path: Path):
    kb = load_kb(_kb_dir(tmp_path, "[rules-return#第二条, rules-return#12, rules-return#2]"), strict=False)
    assert kb.entries[0].rules == ("rules-return#2", "rules-return#12")  # normalised, repeats dropped


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            "[rules-return#3]",
            "cites 'rules-return#3', but 《退货规范》 (rules/rules-return.md) has no 第三条 "
            "(its clauses: 第一条–第十二条)",
        ),
        ("[rules-nope#1]", "there is no document 'rules-nope' (rules documents: rules-return)"),
        ("[rules-return]", "must be a document id and a clause number"),
    ],
)
def test_an_unknown_cite_in_curated_yaml_is_an_error_at_its_line(tmp_path: Path, rules: str, message: str):
    with pytest.raises(KBError) as exc:
        load_kb(_kb_dir(tmp_path, rules), strict=False)
    [problem] = exc.value.problems
    assert problem.startswith("faq/refund.yaml:4: entry 'refund-seven-day'")
    assert message in problem


def test_a_cite_of_a_document_without_clauses(tmp_path: Path):
    root = _kb_dir(tmp_path, "[help#1]")
    (root / "help.md").write_text("# 帮助\n退款一般三个工作日内原路退回。", "utf-8")
    with pytest.raises(KBError) as exc:
        load_kb(root, strict=False)
    assert "《帮助》 (help.md) has no numbered clauses" in exc.value.problems[0]


TABLE = "id,question,answer,rules\n"


def _table(root: Path, cell: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "rules").mkdir(exist_ok=True)
    (root / "rules" / "rules-return.md").write_text(RULES, "utf-8")
    (root / "faq.csv").write_text(TABLE + f'q1,七天无理由怎么退,签收七天内申请,"{cell}"\n', "utf-8")
    return root


def test_a_table_rules_column_is_split_and_checked(tmp_path: Path):
    kb = load_kb(_table(tmp_path, "rules-return#2 | rules-return#第十二条"))
    assert kb.entries[0].rules == ("rules-return#2", "rules-return#12")
    assert not kb.report.notes


def test_unknown_or_malformed_cites_in_a_table_are_dropped_with_a_warning(tmp_path: Path):
    kb = load_kb(_table(tmp_path, "rules-return#2|rules-return#9|第五条"))
    assert kb.entries[0].rules == ("rules-return#2",)
    assert kb.report.counts()["cites_dropped"] == 2
    notes = [str(n) for n in kb.report.notes]
    assert any(n.startswith("faq.csv:2: entry 'q1' cites 'rules-return#9'") and n.endswith("; dropped") for n in notes)
    assert any("'第五条' must be a document id and a clause number" in n for n in notes)


def test_unknown_cites_in_a_table_are_errors_in_strict_mode(tmp_path: Path):
    with pytest.raises(KBError) as exc:
        load_kb(_table(tmp_path, "rules-return#9"), strict=True)
    assert any("faq.csv:2: entry 'q1' cites 'rules-return#9'" in p for p in exc.value.problems)


def test_the_kb_hash_changes_only_for_entries_that_cite(tmp_path: Path):
    plain = tmp_path / "plain"
    _kb_dir(plain, "[]")
    citing = tmp_path / "citing"
    _kb_dir(citing, "[rules-return#2]")
    without = load_kb(plain, strict=False).content_hash
    (plain / "faq" / "refund.yaml").write_text(_faq("[]").replace("    rules: []\n", ""), "utf-8")
    assert load_kb(plain, strict=False).content_hash == without  # an empty list is no field at all
    assert load_kb(citing, strict=False).content_hash != without


def test_a_clause_number_used_twice_is_a_problem_in_a_curated_kb(tmp_path: Path):
    root = _kb_dir(tmp_path, "[]")
    long_clause = "第三条 " + "规范的内容足够长。" * 200  # a curated document has at least 1,500 characters
    doubled = RULES + "\n第二条 重复的条款编号。\n\n" + long_clause + "\n"
    (root / "rules" / "rules-return.md").write_text(doubled, "utf-8")
    load_kb(root, strict=False)  # a user's document: a warning, its second 第二条 becomes a section
    with pytest.raises(KBError) as exc:
        load_kb(root, strict=True)
    assert any("clause number(s) used more than once: 第二条" in p for p in exc.value.problems)


# --- numbers -----------------------------------------------------------------------------------------
def test_quantities_reads_numbers_with_units():
    got = quantities("签收次日起7天内，3-5个工作日到账，满七日为止，最高赔付25元，百分之十，30%，48小时，一年")
    assert got == {"天": {7.0}, "个工作日": {3.0, 5.0}, "元": {25.0}, "%": {10.0, 30.0}, "小时": {48.0}, "年": {1.0}}
    # ordinals, dates and years are not periods
    assert quantities("第二天发货，5月1日起，2026年执行") == {}


def test_answers_that_agree_with_their_clauses_pass(tmp_path: Path):
    kb = load_kb(_kb_dir(tmp_path, "[rules-return#2, rules-return#12]"), strict=False)
    assert number_mismatches(kb) == []


def test_an_answer_whose_number_differs_from_its_clause_is_flagged(tmp_path: Path):
    answer = ANSWER.replace("七天", "十五天").replace("25元", "30元")
    kb = load_kb(_kb_dir(tmp_path, "[rules-return#2, rules-return#12]", answer), strict=False)
    got = {m.unit: m for m in number_mismatches(kb)}
    assert set(got) == {"天", "元"}
    assert (got["天"].answer, got["天"].clause, got["天"].cites) == (("15天",), ("7天",), ("rules-return#2",))
    assert str(got["元"]) == (
        "faq/refund.yaml:4: entry 'refund-seven-day' says 30元 where 《退货规范》第十二条 (rules-return#12) says 25元"
    )


def test_numbers_in_units_the_clause_does_not_state_are_not_judged(tmp_path: Path):
    kb = load_kb(_kb_dir(tmp_path, "[rules-return#12]"), strict=False)  # 第十二条 states 元 only
    assert number_mismatches(kb) == []


def test_kb_check_prints_and_lists_mismatches(tmp_path: Path):
    from kefu_cli import app

    answer = ANSWER.replace("48小时", "24小时")
    root = _kb_dir(tmp_path, "[rules-return#2]", answer)
    out = CliRunner().invoke(app, ["kb", "check", str(root)])
    assert out.exit_code == 0, out.output
    assert "1 entries cite 1 rules clauses" in out.output
    assert "warning: faq/refund.yaml:4: entry 'refund-seven-day' says 24小时 where 《退货规范》第二条" in out.output
    data = json.loads(CliRunner().invoke(app, ["kb", "check", str(root), "--json"]).output)
    assert data["cites"] == 1 and data["entries_citing"] == 1
    assert data["number_mismatches"] == [
        {
            "entry": "refund-seven-day",
            "source": "faq/refund.yaml:4",
            "unit": "小时",
            "cites": ["rules-return#2"],
            "answer_numbers": ["24小时"],
            "clause_numbers": ["48小时"],
        }
    ]


def test_the_bundled_faq_cites_its_rules_and_agrees_with_them() -> None:
    """Every cite of the bundled KB names a clause that exists (the loader refuses others in
    curated YAML), and no answer states a number its clause contradicts."""
    from kb.cites import number_mismatches
    from kb.loader import load_kb
    from kb.settings import BUNDLED_KB

    kb = load_kb(BUNDLED_KB, log_changes=False)
    citing = [e for e in kb.entries if e.rules]
    assert len(citing) >= 160
    assert number_mismatches(kb) == []
