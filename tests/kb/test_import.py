"""Tables exported from other systems: any id, short answers, duplicates settled and counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kb.errors import KBError
from kb.loader import load_kb
from kb.schema import SLUG, FAQEntry, KnowledgeBase, entry_slug

HEADER = "id,question,answer,category,alt_questions\n"
LONG = (
    "拍下后四十八小时内发货，节假日顺延；预售商品以详情页写明的时间为准，"
    "超时未发货可申请赔付，也可在订单页催促卖家尽快安排。"
)


def _entry(kb: KnowledgeBase, name: str) -> FAQEntry:
    found = kb.entry(name)
    assert found is not None, name
    return found


def _csv(folder: Path, *rows: str, name: str = "export.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(HEADER + "".join(r + "\n" for r in rows), "utf-8")
    return folder


# --- slugs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("original", "slug"),
    [
        ("1024", "1024"),  # already a slug: kept as it is
        ("refund-a", "refund-a"),
        ("退货-01", "01-5e950f9e"),
        ("常见问题_12", "12-670f24cb"),
        ("a.b c", "a-b-c-f725a298"),
        ("Q 12", "q-12-3b8fc432"),
        ("常见问题", "id-0adb1147"),
        ("ABC", "abc-3c01bdbb"),
        ("１０２４", "1024-b63cf4db"),  # full width: readable, but not the same id as "1024"
        ("7", "7"),  # one character is a slug too
    ],
)
def test_entry_slug_is_stable_and_url_safe(original: str, slug: str):
    """Pinned values: a derived slug is part of URLs and labelled sets, so it must never drift."""
    assert entry_slug(original) == slug
    assert SLUG.match(slug)


def test_entry_slug_keeps_distinct_ids_distinct():
    originals = ["a b", "a_b", "a.b", "A B", "a-b", "a/b", "退货a b", "换货a b"]
    assert len({entry_slug(o) for o in originals}) == len(originals)
    long = entry_slug("超长的编号" + "x" * 200)
    assert len(long) <= 50 and re.fullmatch(r"x+-[0-9a-f]{8}", long)


# --- ids of every kind ---------------------------------------------------------------------------------
def test_ids_of_every_kind_load_and_keep_their_original(tmp_path: Path):
    ids = ["1024", "退货-01", "常见问题_12", "a.b c", "v2.1", "售后/换货"]
    rows = [f"{i},第{n}个问题怎么办,答{n},售后," for n, i in enumerate(ids)]
    rows[1] = '退货-01,"退货要多久到账","原路退回，一般三天",售后,'
    kb = load_kb(_csv(tmp_path, *rows))
    assert kb.report.ids_mapped == 5  # all but "1024"
    by_source = {e.source_id or e.id: e for e in kb.entries}
    assert set(by_source) == set(ids)
    assert by_source["1024"].id == "1024" and by_source["1024"].source_id is None
    for original in ids:
        e = by_source[original]
        assert SLUG.match(e.id) and e.id == entry_slug(original)
        assert _entry(kb, original) is e and _entry(kb, e.id) is e  # both names reach it
    assert kb.entry("退货-02") is None


def test_jsonl_and_xlsx_ids_that_are_numbers(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"id": 88, "question": "会员怎么开通", "answer": "在我的页面开通"}, ensure_ascii=False) + "\n",
        "utf-8",
    )
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["ID", "Question", "Answer"])  # headers in any case
    ws.append([3.0, "积分能换什么", "积分商城兑换优惠券"])  # a whole number that came out as a float
    wb.save(tmp_path / "b.xlsx")
    kb = load_kb(tmp_path)
    assert _entry(kb, "88").question == "会员怎么开通"
    assert _entry(kb, "3").id == "3" and _entry(kb, "3").source_id is None  # 3.0 read as "3", a slug


def test_changed_original_id_changes_the_content_hash(tmp_path: Path):
    """source_id is content: an index built before the table's ids changed must not look current."""
    h1 = load_kb(_csv(tmp_path, "退货-01,退货要多久到账,三天,售后,")).content_hash
    h2 = load_kb(_csv(tmp_path, "退货-02,退货要多久到账,三天,售后,")).content_hash
    assert h1 != h2


# --- duplicate ids ----------------------------------------------------------------------------------------
def test_duplicate_ids_are_made_unique_and_the_first_keeps_the_name(tmp_path: Path):
    kb = load_kb(
        _csv(
            tmp_path,
            "1024,优惠券怎么领取,领券中心领取,优惠,",
            "1024,优惠券过期了还能用吗,过期不能使用,优惠,",
            "1024-2,满减活动怎么算,按实付金额计算,优惠,",  # a row literally called what the duplicate would become
        )
    )
    ids = [e.id for e in kb.entries]
    assert ids == ["1024", "1024-3", "1024-2"]
    assert _entry(kb, "1024").question == "优惠券怎么领取"
    assert _entry(kb, "1024-2").question == "满减活动怎么算"
    assert _entry(kb, "1024-3").source_id == "1024"
    [note] = [n for n in kb.report.notes if n.kind == "id_made_unique"]
    assert str(note).startswith("export.csv:3: id '1024' is already used at export.csv:2")
    assert kb.report.counts()["ids_made_unique"] == 1


def test_derived_slug_that_clashes_with_a_real_id(tmp_path: Path):
    """A row whose own id is the slug another row's id derives to keeps it; the other moves aside."""
    kb = load_kb(
        _csv(
            tmp_path,
            "退货-01,退货要多久到账,三天,售后,",
            f"{entry_slug('退货-01')},换货怎么申请,订单页申请,售后,",
        )
    )
    assert _entry(kb, entry_slug("退货-01")).question == "换货怎么申请"
    assert _entry(kb, "退货-01").question == "退货要多久到账"
    assert _entry(kb, "退货-01").id == entry_slug("退货-01") + "-2"


def test_imported_id_that_a_curated_entry_uses_moves_aside(tmp_path: Path):
    _csv(tmp_path, "ship-time,什么时候发货呀,尽快,物流,", "ship-old,包邮吗,满99包邮,物流,")
    entry = {
        "id": "ship-time",
        "question": "下单后多久能发货？",
        "alt_questions": ["几天发货", "什么时候发出", "多久寄出"],
        "answer": LONG,
        "replaces": ["ship-old"],
    }
    (tmp_path / "z.yaml").write_text(yaml.safe_dump({"category": "物流", "entries": [entry]}, allow_unicode=True))
    kb = load_kb(tmp_path)
    assert _entry(kb, "ship-time").answer == LONG  # the curated entry keeps its id and its alias
    assert _entry(kb, "ship-old").answer == LONG
    assert {e.id for e in kb.entries} == {"ship-time", "ship-time-2", "ship-old-2"}


# --- duplicate questions -----------------------------------------------------------------------------------
def test_repeated_questions_are_merged_into_the_first_row(tmp_path: Path):
    kb = load_kb(
        _csv(
            tmp_path,
            "A1,iPhone怎么退货？,寄回仓库即可,售后,苹果手机能退吗",
            "B2,ｉｐｈｏｎｅ 怎么退货!,联系客服处理,售后,苹果手机能退吗|手机退货流程",
            "C3,发票怎么开,订单页申请,发票,",
        )
    )
    assert [e.question for e in kb.entries] == ["iPhone怎么退货？", "发票怎么开"]
    first = _entry(kb, "A1")
    assert first.answer == "寄回仓库即可"  # the first answer is kept
    assert first.alt_questions == ("苹果手机能退吗", "ｉｐｈｏｎｅ 怎么退货!", "手机退货流程")
    assert first.replaces == (entry_slug("B2"),)
    assert _entry(kb, "B2") is first and _entry(kb, entry_slug("B2")) is first  # the merged row's names still reach it
    kinds = [n.kind for n in kb.report.notes]
    assert kinds == ["merged", "answer_differs"]
    assert str(kb.report.notes[0]).startswith("export.csv:3: question 'ｉｐｈｏｎｅ 怎么退货!' repeats")
    assert kb.report.counts()["duplicates_merged"] == 1


def test_same_answer_merges_without_an_answer_warning(tmp_path: Path):
    kb = load_kb(_csv(tmp_path, "a1,怎么改地址,订单页修改,订单,", "a2,怎么改地址？,订单页修改,订单,"))
    assert len(kb.entries) == 1 and [n.kind for n in kb.report.notes] == ["merged"]


def test_an_alternative_another_entry_already_has_is_dropped(tmp_path: Path):
    kb = load_kb(
        _csv(
            tmp_path,
            "a1,怎么修改收货地址,订单页修改,订单,地址填错了怎么办",
            "a2,发票怎么开,订单页申请,发票,地址填错了怎么办|开票入口在哪",
        )
    )
    assert _entry(kb, "a2").alt_questions == ("开票入口在哪",)
    [note] = kb.report.notes
    assert note.kind == "alt_dropped" and "already belongs to 'a1' (export.csv:2)" in str(note)


def test_a_row_repeating_a_curated_question_merges_into_the_curated_entry(tmp_path: Path):
    """The curated YAML entry wins even when the table is loaded first."""
    _csv(tmp_path, "7,下单后多久能发货,很快,物流,", name="a.csv")
    entry = {
        "id": "ship-time",
        "question": "下单后多久能发货？",
        "alt_questions": ["几天发货", "什么时候发出", "多久寄出"],
        "answer": LONG,
    }
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"category": "物流", "entries": [entry]}, allow_unicode=True))
    kb = load_kb(tmp_path)
    [e] = kb.entries
    assert e.id == "ship-time" and e.answer == LONG and e.replaces == (entry_slug("7"),)
    assert _entry(kb, "7") is e


# --- short answers and skipped rows ------------------------------------------------------------------------
def test_short_answers_are_accepted_and_counted(tmp_path: Path):
    kb = load_kb(_csv(tmp_path, "s1,包邮吗,包邮,物流,", f"s2,多久发货,{LONG},物流,"))
    assert kb.report.short_answers == 1
    assert load_kb(tmp_path, strict=True).report.short_answers == 1  # strict is about curated YAML


def test_rows_without_question_or_answer_are_skipped_with_why(tmp_path: Path):
    kb = load_kb(_csv(tmp_path, "r1,包邮吗,包邮,物流,", ",,,,", "r3,积分怎么查,,会员,", "r4,,只有答案,会员,"))
    assert [e.id for e in kb.entries] == ["r1"]
    assert kb.report.skipped_by_reason() == {"empty row": 1, "missing answer": 1, "missing question": 1}
    assert [str(n).split(";")[0] for n in kb.report.notes] == [
        "export.csv:3: empty row",
        "export.csv:4: missing answer",
        "export.csv:5: missing question",
    ]
    assert kb.report.rows_read == 4


def test_bad_input_is_still_an_error_with_file_and_line(tmp_path: Path):
    (tmp_path / "f.jsonl").write_text('{"question": "包邮吗", "answer": "包邮"}\n{"question": 1,\n', "utf-8")
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    assert info.value.problems == ["f.jsonl:2: invalid JSON: Expecting property name enclosed in double quotes"]


# --- strict mode keeps the curated rules --------------------------------------------------------------------
def test_strict_refuses_what_lenient_settles(tmp_path: Path):
    _csv(
        tmp_path,
        "退货-01,退货要多久到账,三天,售后,",
        "dup,怎么改地址,订单页修改,订单,",
        "dup,运费谁出,卖家承担,物流,",
        "d4,怎么改地址？,订单页修改,订单,",
        "r5,积分怎么查,,会员,",
    )
    assert [e.id for e in load_kb(tmp_path).entries] == [entry_slug("退货-01"), "dup", "dup-2"]
    with pytest.raises(KBError) as info:
        load_kb(tmp_path, strict=True)
    assert sorted(info.value.problems) == [
        "export.csv:2: id '退货-01' is not a readable slug (lowercase letters, digits and hyphens); "
        f"rename it, or load without --strict to map it to {entry_slug('退货-01')!r}",
        "export.csv:4: duplicate id 'dup' (first at export.csv:3)",
        "export.csv:5: entry 'd4': question '怎么改地址？' duplicates one of 'dup'",
        "export.csv:6: missing answer; fill in the question and answer columns or delete the row",
    ]


def test_curated_yaml_keeps_its_rules_outside_strict(tmp_path: Path):
    entry = {"id": "Bad ID", "question": "下单后多久能发货？", "alt_questions": ["几天发货"], "answer": "很快"}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"category": "物流", "entries": [entry]}, allow_unicode=True))
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    [problem] = info.value.problems
    assert problem.startswith("f.yaml:") and "readable slug" in problem and "answer" in problem


def test_a_kb_without_tables_reports_nothing(tiny_kb_dir: Path):
    kb = load_kb(tiny_kb_dir)
    assert kb.report.rows_read == 0 and not kb.report.notes and not any(kb.report.counts().values())
    assert all(e.source_id is None for e in kb.entries)


# --- `kefu kb check` ---------------------------------------------------------------------------------------------
@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return _csv(
        tmp_path / "kb",
        "退货-01,退货要多久到账,三天,售后,",
        "1024,怎么改地址,订单页修改,订单,",
        "1024,怎么改地址？,联系客服,订单,",
        f"x-1,多久发货,{LONG},物流,",
        "r5,积分怎么查,,会员,",
    )


def test_cli_check_reports_what_it_changed(export_dir: Path):
    from kefu_cli import app

    r = CliRunner().invoke(app, ["kb", "check", str(export_dir)])
    assert r.exit_code == 0, r.output
    out = re.sub(r"\s+", " ", r.output)
    assert "imported 5 table rows" in out
    for line in (
        "1 ids mapped to slugs",
        "1 duplicate ids made unique",
        "1 duplicate questions merged",
        "1 merged rows with a different answer (first kept)",
        "0 alternative questions dropped",
        "2 short answers accepted (under 60 characters)",
        "1 rows skipped: 1 missing answer",
    ):
        assert line in out, out
    assert "warning: export.csv:4: id '1024' is already used at export.csv:3" in out
    assert "warning: export.csv:6: missing answer" in out


def test_cli_check_json_and_strict(export_dir: Path):
    from kefu_cli import app

    r = CliRunner().invoke(app, ["kb", "check", str(export_dir), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)["import"]
    assert report["rows_read"] == 5 and report["ids_mapped"] == 1 and report["duplicates_merged"] == 1
    assert report["ids_made_unique"] == 1 and report["short_answers_accepted"] == 2 and report["rows_skipped"] == 1
    assert report["skipped"] == {"missing answer": 1} and len(report["warnings"]) == 4

    strict = CliRunner().invoke(app, ["kb", "check", str(export_dir), "--strict"])
    assert strict.exit_code == 3
    out = re.sub(r"\s+", " ", strict.output)
    assert "export.csv:2: id '退货-01' is not a readable slug" in out
    assert "export.csv:4: duplicate id '1024'" in out
