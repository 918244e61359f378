"""Table files that are damaged, misnamed or shaped unlike one plain sheet: one clear problem each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from typer.testing import CliRunner

from kb.errors import KBError
from kb.loader import load_kb
from kb.schema import SLUG, entry_slug

LONG = "拍下后四十八小时内发货，节假日顺延；预售商品以详情页写明的时间为准，超时未发货可申请赔付。"


def _problems(path: Path, strict: bool | None = None) -> list[str]:
    with pytest.raises(KBError) as info:
        load_kb(path, strict=strict)
    return info.value.problems


def _workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


# --- 1. files that are not what their name says ----------------------------------------------------------
def _real_xlsx_bytes(tmp_path: Path) -> bytes:
    rows = [["question", "answer"], *[[f"问题{i}怎么处理？", LONG] for i in range(30)]]
    return _workbook(tmp_path / "real.xlsx", {"Sheet1": rows}).read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("fake.xlsx", b"hello\n", "not a readable Excel workbook"),
        ("old.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "old Excel .xls"),
        ("bin.csv", b"question,answer\n\x00\x01\x02\x03,abc\n", "binary file"),
        ("book.csv", b"PK\x03\x04" + b"\x00" * 50, "name it .xlsx"),
        ("u16.tsv", "question\tanswer\n怎么退货\t申请\n".encode("utf-16"), "UTF-16"),
        ("deep.jsonl", b"[" * 100_000 + b"\n", "nested too deeply"),
    ],
)
def test_a_damaged_or_misnamed_table_is_one_problem_not_a_crash(tmp_path: Path, name: str, content: bytes, says: str):
    (tmp_path / name).write_bytes(content)
    [problem] = _problems(tmp_path)
    assert problem.startswith(f"{name}:1: ") and says in problem, problem


def test_a_truncated_or_corrupt_workbook_is_one_problem(tmp_path: Path):
    data = _real_xlsx_bytes(tmp_path)
    (tmp_path / "real.xlsx").unlink()
    for cut in (len(data) // 3, len(data) - 30):
        (tmp_path / "cut.xlsx").write_bytes(data[:cut])
        [problem] = _problems(tmp_path)
        assert problem.startswith("cut.xlsx:1: not a readable Excel workbook") and "save it again" in problem
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 40] = b"\xff" * 40  # inside a compressed part
    (tmp_path / "cut.xlsx").write_bytes(bytes(damaged))
    [problem] = _problems(tmp_path)
    assert problem.startswith("cut.xlsx:1: not a readable Excel workbook"), problem


def test_cli_names_the_fake_workbook_and_exits_3(tmp_path: Path):
    from kefu_cli import app

    (tmp_path / "fake.xlsx").write_text("hello\n", "utf-8")
    r = CliRunner().invoke(app, ["kb", "check", str(tmp_path / "fake.xlsx")])
    assert r.exit_code == 3, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "fake.xlsx:1: not a readable Excel workbook" in r.output


def test_a_jsonl_line_that_is_not_an_object_is_a_problem_for_that_line(tmp_path: Path):
    lines = [{"question": "包邮吗", "answer": "包邮"}, [1, 2], "text", 5]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    assert _problems(tmp_path) == [f"f.jsonl:{n}: each line must be a JSON object" for n in (2, 3, 4)]


# --- 2. workbooks with several sheets ----------------------------------------------------------------------
def test_every_sheet_of_a_workbook_is_read_named_by_its_sheet(tmp_path: Path):
    _workbook(
        tmp_path / "faq.xlsx",
        {
            "退货": [["question", "answer"], ["怎么退货", LONG], ["退款多久到账", LONG]],
            "空白": [],
            "物流": [
                ["id", "Question", "Answer", "category"],
                ["ship-1", "多久发货", LONG, "发货"],
                [None, "包邮吗", LONG],
            ],
        },
    )
    kb = load_kb(tmp_path)
    by_q = {e.question: e for e in kb.entries}
    assert set(by_q) == {"怎么退货", "退款多久到账", "多久发货", "包邮吗"}
    assert by_q["怎么退货"].category == "退货" and by_q["包邮吗"].category == "物流"
    assert by_q["多久发货"].category == "发货"  # a category column still wins
    # The first sheet keeps the ids a one-sheet workbook gives; later sheets' ids carry their position.
    assert by_q["怎么退货"].id == "faq-xlsx-2" and by_q["包邮吗"].id == "faq-xlsx-3-3"
    assert str(kb.sources["faq-xlsx-3-3"]) == "faq.xlsx[物流]:3"


def test_a_one_sheet_workbook_is_read_as_before(tmp_path: Path):
    _workbook(
        tmp_path / "faq.xlsx", {"Sheet1": [["question", "answer"], ["怎么退货", LONG]], "Sheet2": [], "Sheet3": []}
    )
    [e] = load_kb(tmp_path).entries
    assert (e.id, e.category) == ("faq-xlsx-2", "faq")
    assert str(load_kb(tmp_path).sources[e.id]) == "faq.xlsx:2"


def test_a_sheet_without_the_columns_is_a_problem_naming_it(tmp_path: Path):
    _workbook(
        tmp_path / "faq.xlsx",
        {"退货": [["question", "answer"], ["怎么退货", LONG]], "说明": [["本表由客服部维护"], ["请勿修改"]]},
    )
    [problem] = _problems(tmp_path)
    assert problem.startswith("faq.xlsx[说明]:1: ") and "sheet 说明" in problem and "question and answer" in problem


def test_a_hidden_sheet_is_not_read(tmp_path: Path):
    path = _workbook(tmp_path / "faq.xlsx", {"退货": [["question", "answer"], ["怎么退货", LONG]], "lookup": [["x"]]})
    from openpyxl import load_workbook

    wb = load_workbook(path)
    wb["lookup"].sheet_state = "hidden"
    wb.save(path)
    [e] = load_kb(tmp_path).entries
    assert e.category == "faq"


# --- 3. a missing or misspelled column: said once ------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("typo.csv", "id,question,answr\n1,怎么退货？,七天内申请\n2,怎么换货？,订单页申请\n", "answer is missing"),
        ("nocol.csv", "id,question\n1,怎么退货\n2,怎么换货\n", "answer is missing"),
        ("semi.csv", "question;answer\n怎么退货;七天内申请\n", "separated by ';'"),
        ("typo.tsv", "Question\tAnwser\n怎么退货\t七天内申请\n", "answer is missing"),
    ],
)
def test_a_missing_answer_column_is_one_problem_naming_what_was_found(
    tmp_path: Path, name: str, content: str, says: str
):
    (tmp_path / name).write_text(content, "utf-8")
    for strict in (False, True):
        [problem] = _problems(tmp_path, strict)
        assert problem.startswith(f"{name}:1: header must name the columns question and answer"), problem
        assert says in problem and "optional: alt_questions, category, id, rules" in problem
    if name == "typo.csv":
        assert "found: id, question, answr" in problem and "answr → answer?" in problem


def test_a_jsonl_without_an_answer_key_is_one_problem(tmp_path: Path):
    rows = [{"id": 1, "question": "怎么退货", "answr": "七天内"}, {"id": 2, "question": "怎么换货", "answr": "订单页"}]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    [problem] = _problems(tmp_path)
    assert problem.startswith("f.jsonl:1: no line has the key answer") and "found: id, question, answr" in problem


def test_a_workbook_without_an_answer_column_is_one_problem(tmp_path: Path):
    _workbook(tmp_path / "faq.xlsx", {"Sheet1": [["question", "说明"], ["怎么退货", LONG], ["怎么换货", LONG]]})
    [problem] = _problems(tmp_path)
    assert problem.startswith("faq.xlsx:1: header must name the columns") and "found: question, 说明" in problem
    assert "(or 问题 and 答案;" in problem


# --- 4. other systems' column names ---------------------------------------------------------------------------
def test_chinese_column_names_of_other_systems_exports_are_read(tmp_path: Path):
    (tmp_path / "export.csv").write_text(
        f"编号,标准问题,相似问题,答案,问题分类,备注\n退-01,怎么退货？,退货流程|怎样退货,{LONG},售后,老客户常问\n",
        "utf-8",
    )
    (tmp_path / "more.jsonl").write_text(
        json.dumps({"问题": "怎么换货？", "回答": LONG, "类目": "售后"}, ensure_ascii=False) + "\n", "utf-8"
    )
    kb = load_kb(tmp_path)
    by_q = {e.question: e for e in kb.entries}
    e = by_q["怎么退货？"]
    assert (e.source_id, e.category, e.alt_questions, e.answer) == ("退-01", "售后", ("退货流程", "怎样退货"), LONG)
    assert by_q["怎么换货？"].category == "售后"
    report = kb.report
    assert report.counts()["columns_ignored"] == 1
    [note] = [str(n) for n in report.notes if n.kind == "column_ignored"]
    assert note.startswith("export.csv:1: column '备注' not read")


def test_a_chinese_header_kefu_does_not_know_gets_a_hint(tmp_path: Path):
    (tmp_path / "f.csv").write_text(f"客户提问,标准解答\n怎么退货,{LONG}\n", "utf-8")
    [problem] = _problems(tmp_path)
    assert "客户提问 → question?" in problem and "标准解答 → answer?" in problem


def test_two_columns_naming_the_same_field_are_one_problem(tmp_path: Path):
    (tmp_path / "f.csv").write_text(f"问题,标准问题,答案\n怎么退货,退货怎么办,{LONG}\n", "utf-8")
    for strict in (False, True):
        [problem] = _problems(tmp_path, strict)
        assert problem == (
            "f.csv:1: columns 问题 and 标准问题 both name question: keep one of each (rename or delete the others)"
        )


# --- 5. one-character ids are slugs -----------------------------------------------------------------------------
def test_single_character_ids_are_slugs(tmp_path: Path):
    assert SLUG.match("7") and SLUG.match("a") and SLUG.match("12") and SLUG.match("a-1")
    assert not SLUG.match("-") and not SLUG.match("a-") and not SLUG.match("A") and not SLUG.match("")
    assert entry_slug("7") == "7"
    rows = "".join(f"{i},第{i}个问题怎么办,{LONG}\n" for i in ("1", "9", "12"))
    (tmp_path / "faq.csv").write_text("id,question,answer\n" + rows, "utf-8")
    assert [e.id for e in load_kb(tmp_path, strict=True).entries] == ["1", "9", "12"]
    assert all(e.source_id is None for e in load_kb(tmp_path).entries)


def test_learned_alternatives_under_an_old_one_character_slug_still_apply(tmp_path: Path):
    """Before one-character ids were slugs, row "7" was called "7-<hash>"; kefu learn wrote that name."""
    (tmp_path / "faq.csv").write_text(f"id,question,answer\n7,积分怎么查,{LONG}\n", "utf-8")
    old = f"7-{hashlib.sha1(b'7').hexdigest()[:8]}"
    (tmp_path / "alternatives.yaml").write_text(f"alternatives:\n  {old}: [我的积分在哪看]\n", "utf-8")
    [e] = load_kb(tmp_path).entries
    assert e.id == "7" and e.alt_questions == ("我的积分在哪看",)
