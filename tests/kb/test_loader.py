"""The loader and `kefu kb check`: every format, every error as file:line: message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.errors import KBError
from kb.loader import load_kb
from kb.loadstate import question_key
from kb.schema import Replies
from kb.settings import BUNDLED_KB

ANSWER = (
    "在「我的淘宝」→「我的订单」找到订单，点击「退款/售后」，按页面提示选择退款原因并提交。"
    "卖家处理超时系统会自动同意，仍有问题可申请平台客服介入。"
)


def _faq(path: Path, entries: list[dict], category: str = "退货退款") -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"category": category, "entries": entries}, allow_unicode=True), "utf-8")
    return path


def _entry(i: str, **kw) -> dict:
    base = {
        "id": f"refund-{i}",
        "category": "退货退款",
        "question": f"问题{i}应该怎么处理才好？",
        "alt_questions": [f"说法一{i}", f"说法二{i}", f"说法三{i}"],
        "answer": ANSWER,
    }
    base.update(kw)
    return base


def test_bundled_kb_passes_and_meets_the_content_bar():
    kb = load_kb(BUNDLED_KB)
    assert len(kb.entries) >= 250
    assert len(kb.categories()) >= 14
    rules = [d for d in kb.documents if d.kind == "rules"]
    assert len(rules) >= 16
    assert all(len("".join(d.body.split())) >= 1500 for d in rules)
    assert all(len(e.alt_questions) >= 3 for e in kb.entries)
    assert kb.resources.userdict is not None and kb.resources.synonyms and kb.resources.out_of_scope


def test_content_hash_is_stable_and_content_sensitive(tmp_path: Path):
    _faq(tmp_path / "a.yaml", [_entry("a")])
    h1 = load_kb(tmp_path).content_hash
    assert load_kb(tmp_path).content_hash == h1
    _faq(tmp_path / "a.yaml", [_entry("a", answer=ANSWER + "补充说明。")])
    assert load_kb(tmp_path).content_hash != h1


def test_resources_are_the_kbs_own_else_bundled_and_part_of_the_hash(tmp_path: Path):
    _faq(tmp_path / "a.yaml", [_entry("a")])
    bundled = load_kb(tmp_path)
    assert dict(bundled.resources.files) == {
        name: BUNDLED_KB / "resources" / name
        for name in ("greetings.yaml", "synonyms.yaml", "out_of_scope.yaml", "sensitive.yaml", "userdict.txt")
    }
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "sensitive.yaml").write_text("shop:\n  - 店长亲自来\n", "utf-8")
    own = load_kb(tmp_path)
    assert dict(own.resources.files)["sensitive.yaml"] == tmp_path / "resources" / "sensitive.yaml"
    assert own.content_hash != bundled.content_hash  # the service reads these: a change is a new build


def test_a_kbs_own_greetings_may_name_the_questions_its_chat_suggests(tmp_path: Path):
    _faq(tmp_path / "a.yaml", [_entry("a")])
    assert load_kb(tmp_path).resources.examples == ()  # the bundled greetings name none: picked from the KB
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "greetings.yaml").write_text("greetings: [您好]\nexamples: [怎么泡茶, 包邮吗]\n", "utf-8")
    own = load_kb(tmp_path).resources
    assert (own.greetings, own.examples) == (("您好",), ("怎么泡茶", "包邮吗"))


def test_a_kbs_own_greetings_may_word_its_replies(tmp_path: Path):
    _faq(tmp_path / "a.yaml", [_entry("a")])
    assert load_kb(tmp_path).resources.replies == Replies()  # the bundled file words none: kefu's own
    (tmp_path / "resources").mkdir()
    text = "replies:\n  greeting: 'Hi! Ask me, e.g. {examples}'\n  handoff: ' An agent will be with you shortly. '\n"
    (tmp_path / "resources" / "greetings.yaml").write_text(text + "examples: [Do you ship abroad]\n", "utf-8")
    own = load_kb(tmp_path).resources
    assert own.replies == Replies(greeting="Hi! Ask me, e.g. {examples}", handoff="An agent will be with you shortly.")
    assert own.examples == ("Do you ship abroad",) and own.greetings == ()


KINDS = "greeting, closing, empty, clarify, clarify_order, handoff, merchant"


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        ("replies: [您好]", f"replies must be a mapping of {KINDS}"),
        ("replies:\n  goodbye: 再见", f"replies has no 'goodbye'; it takes {KINDS}"),
        ("replies:\n  handoff: ''", "replies.handoff must be a non-empty text"),
        ("replies:\n  clarify: [一, 二]", "replies.clarify must be a non-empty text"),
        ("replies:\n  handoff: '请稍候，例如{examples}'", "replies.handoff has {examples}, which only the greeting"),
    ],
)
def test_replies_that_cannot_be_said_are_refused(tmp_path: Path, replies: str, message: str):
    _faq(tmp_path / "a.yaml", [_entry("a")])
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "greetings.yaml").write_text(replies + "\n", "utf-8")
    with pytest.raises(KBError, match=re.escape(message)):
        load_kb(tmp_path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry("x", alt_questions=["一二三四", "五六七八"]), "alt_questions"),
        (_entry("x", answer="太短了"), "answer"),
        (_entry("x", id="Bad ID"), "readable slug"),
        (_entry("x", question="短"), "question"),
        (_entry("x", related=["refund-nope"]), "related id 'refund-nope' does not exist"),
        (_entry("x", replaces=["Old ID"]), "readable slug"),
        (_entry("x", replaces=["refund-ok"]), "replaces 'refund-ok', which still exists"),
        ({k: v for k, v in _entry("x").items() if k != "answer"}, "answer: Field required"),
    ],
)
def test_entry_problems_are_reported_with_file_and_line(tmp_path: Path, entry: dict, message: str):
    _faq(tmp_path / "faq.yaml", [_entry("ok"), entry])
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    assert any(p.startswith("faq.yaml:") and message in p for p in info.value.problems), info.value.problems


def test_merged_entries_keep_their_old_ids_as_aliases(tmp_path: Path):
    _faq(tmp_path / "a.yaml", [_entry("a", replaces=["refund-old", "refund-older"]), _entry("b")])
    kb = load_kb(tmp_path)
    assert kb.aliases == {"refund-old": "refund-a", "refund-older": "refund-a"}
    assert kb.entry("refund-old") is kb.entry("refund-a") is not None
    assert kb.entry("refund-b") is not None and kb.entry("refund-gone") is None


def test_merge_problems(tmp_path: Path):
    _faq(
        tmp_path / "a.yaml",
        [_entry("a", replaces=["refund-old"]), _entry("b", replaces=["refund-old"], related=["refund-old"])],
    )
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    text = "\n".join(info.value.problems)
    assert "'refund-b' replaces 'refund-old', which 'refund-a' replaces too" in text
    assert "related id 'refund-old' was merged into 'refund-a'; write 'refund-a'" in text


def test_an_empty_replaces_leaves_the_content_hash_alone(tmp_path: Path):
    """KBs that merge nothing keep the hash they had before the field existed (no stale index)."""
    _faq(tmp_path / "a.yaml", [_entry("a")])
    h1 = load_kb(tmp_path).content_hash
    _faq(tmp_path / "a.yaml", [_entry("a", replaces=[])])
    assert load_kb(tmp_path).content_hash == h1
    _faq(tmp_path / "a.yaml", [_entry("a", replaces=["refund-old"])])
    assert load_kb(tmp_path).content_hash != h1


def test_duplicate_ids_and_questions(tmp_path: Path):
    _faq(tmp_path / "a.yaml", [_entry("a")])
    _faq(
        tmp_path / "b.yaml",
        [_entry("a", question="另一个不同的问题呢？"), _entry("b", question="问题a应该怎么处理才好?")],
    )
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    text = "\n".join(info.value.problems)
    assert "duplicate id 'refund-a'" in text
    assert "duplicates one of 'refund-a'" in text  # same question up to punctuation width


def test_invalid_yaml_names_the_line(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("category: x\nentries:\n  - id: a\n   question: [oops\n", "utf-8")
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    assert info.value.problems[0].startswith("bad.yaml:")
    assert "invalid YAML" in info.value.problems[0]


def test_empty_kb_is_an_error(tmp_path: Path):
    with pytest.raises(KBError, match="empty"):
        load_kb(tmp_path)


def test_rules_front_matter_checked(tmp_path: Path):
    (tmp_path / "r.md").write_text("---\nid: rules-x\ntitle: 规则\n---\n\n# 规则\n\n第一条 内容。\n", "utf-8")
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    assert "r.md:1: front matter" in info.value.problems[0] and "category" in info.value.problems[0]


def test_strict_minimum_body_only_for_bundled_or_when_asked(tmp_path: Path):
    body = "第一条 本规则适用于所有订单，买家可在规定时间内申请退货。\n" * 3
    (tmp_path / "r.md").write_text(
        f"---\nid: rules-x\ntitle: 规则\ncategory: 退货退款\neffective: 2026-01-01\n---\n\n# 规则\n\n{body}", "utf-8"
    )
    assert len(load_kb(tmp_path).documents) == 1
    with pytest.raises(KBError, match="problem"):
        load_kb(tmp_path, strict=True)


def test_user_formats(tmp_path: Path):
    (tmp_path / "faq.csv").write_text(
        "question,answer,alt_questions,category\n怎么退货,在订单页申请退货,退货流程|怎么退,售后\n", "utf-8"
    )
    (tmp_path / "faq.tsv").write_text("question\tanswer\n运费谁出\t质量问题卖家承担\n", "utf-8")
    (tmp_path / "faq.jsonl").write_text(
        json.dumps(
            {"id": "j-1", "question": "发票怎么开", "answer": "订单页申请", "alt_questions": ["开票"]},
            ensure_ascii=False,
        )
        + "\n",
        "utf-8",
    )
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["question", "answer", "id"])
    ws.append(["怎么改地址", "发货前在订单页修改", "x-1"])
    wb.save(tmp_path / "faq.xlsx")
    (tmp_path / "guide.md").write_text("# 购物指南\n\n下单前请先确认收货地址和规格，付款后可在订单页查看。", "utf-8")
    (tmp_path / "notes.txt").write_text("售后服务说明：收到商品后七天内可申请无理由退货。", "utf-8")
    kb = load_kb(tmp_path)
    by_q = {e.question: e for e in kb.entries}
    assert by_q["怎么退货"].alt_questions == ("退货流程", "怎么退") and by_q["怎么退货"].category == "售后"
    assert by_q["运费谁出"].category == "faq"
    assert by_q["发票怎么开"].id == "j-1"
    assert by_q["怎么改地址"].id == "x-1"
    assert {d.title for d in kb.documents} == {"购物指南", "notes"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("f.csv", "question,answer\n怎么退货,\n", "f.csv:2: missing answer"),
        ("f.csv", "ask,say\n1,2\n", "header must name the columns"),
        ("f.jsonl", '{"question": "a", "answer": "b"}\nnot json\n', "f.jsonl:2: invalid JSON"),
        ("f.tsv", "question\tanswer\n\t答案\n", "f.tsv:2: missing question"),
    ],
)
def test_table_errors(tmp_path: Path, name: str, content: str, message: str):
    (tmp_path / name).write_text(content, "utf-8")
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_a_table_in_neither_utf8_nor_a_chinese_encoding_is_refused(tmp_path: Path):
    (tmp_path / "f.csv").write_bytes("question,answer\ncafé crème,très bon\n".encode("latin-1"))
    with pytest.raises(KBError) as info:
        load_kb(tmp_path)
    assert info.value.problems == ["f.csv:1: not UTF-8 text (byte 0xe9 on line 2), nor GBK or Big5; save it as UTF-8"]


def test_question_key_folds_width_and_punctuation():
    assert question_key("怎么退款？") == question_key("怎么退款?") == question_key(" 怎么 退款 ")


def test_cli_check_prints_counts_and_errors(tmp_path: Path):
    from kefu_cli import app

    ok = CliRunner().invoke(app, ["kb", "check", "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    assert data["entries"] >= 250 and data["categories"] >= 14

    _faq(tmp_path / "faq.yaml", [_entry("a", answer="短")])
    bad = CliRunner().invoke(app, ["kb", "check", str(tmp_path)])
    assert bad.exit_code == 3
    assert "faq.yaml:" in bad.output and "answer" in bad.output


def test_cli_check_says_what_the_chat_says_in_the_kbs_words(tmp_path: Path):
    from kefu_cli import app

    _faq(tmp_path / "a.yaml", [_entry("a")])
    plain = CliRunner().invoke(app, ["kb", "check", str(tmp_path)])
    assert plain.exit_code == 0 and "own replies" not in plain.output  # the bundled greetings word none
    (tmp_path / "resources").mkdir()
    said = "examples: [怎么泡茶]\nreplies:\n  greeting: 茶铺小二在，可以问我{examples}\n  handoff: 掌柜马上来\n"
    (tmp_path / "resources" / "greetings.yaml").write_text(said, "utf-8")
    r = CliRunner().invoke(app, ["kb", "check", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "the chat's own replies: greeting, handoff; it suggests asking: 怎么泡茶" in r.output
    data = json.loads(CliRunner().invoke(app, ["kb", "check", str(tmp_path), "--json"]).output)
    assert data["replies"] == {"greeting": "茶铺小二在，可以问我{examples}", "handoff": "掌柜马上来"}
    assert data["examples"] == ["怎么泡茶"]
