# ruff: noqa: E501  (Chinese FAQ fixtures read better unwrapped)
"""Resolutions that teach (kb/learned.py): decisions, write-back to YAML or the sidecar, drafts,
the journal, undo, one live decision per item, the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kb import learn_files as F
from kb import learn_journal as J
from kb import learned as L
from kb.errors import ConfigError, NotFoundError
from kb.loader import load_kb

BLOCK_FAQ = """# a comment the write-back must keep
category: 退货退款
entries:
  - id: refund-seven-day
    category: 退货退款
    question: 七天无理由退货需要满足什么条件？
    alt_questions:
      - 买了不想要了能退吗
      - 不喜欢可以退货吗
      - "七天内可以无理由退吗"   # quoted, with a comment
    answer: 签收次日起七天内，商品完好、不影响二次销售即可申请七天无理由退货。在「我的订单」找到订单，点击「退款/售后」提交申请，卖家超时未处理系统会自动同意退款。
  - id: refund-shipping-fee
    category: 退货退款
    question: 退货的运费应该由谁来承担？
    alt_questions:
      - 退货运费谁出
      - 寄回去的邮费谁付
      - 退货要自己出运费吗
    answer: 七天无理由退货的运费一般由买家承担，购买了运费险的可以按保单获得赔付；因商品质量问题退货的运费由卖家承担，可在退款详情中上传凭证。
"""
TABLE = "id,question,answer,category\nq1,怎么开发票,在订单页申请发票即可，电子发票会发到邮箱,发票\nq2,多久发货,付款后48小时内发货,物流\n"
DEV_MESSAGES = ["拆了包装还能退吗", "不合适可以七天退吗", "东西不想要了可以退吗亲", "七天无理由怎么算的呀"]


def _dev(n: int, prefix: str) -> list[str]:
    """``n`` messages that all land in the dev split (so they become alternatives)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        m = f"{prefix}第{i}个问题能退吗"
        if F.split_of(m) == "dev":
            out.append(m)
        i += 1
    return out


@pytest.fixture
def yaml_kb(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    (root / "faq").mkdir(parents=True)
    (root / "faq" / "refund.yaml").write_text(BLOCK_FAQ, "utf-8")
    return root


@pytest.fixture
def csv_kb(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "faq.csv").write_text(TABLE, "utf-8")
    return root


def test_attach_writes_alternatives_into_the_yaml_keeping_its_formatting(yaml_kb: Path):
    kb = load_kb(yaml_kb)
    msgs = _dev(2, "衣服")
    L.decide(kb, "attach", msgs, entry="refund-seven-day", who="alice")
    plan = L.plan_apply(kb)
    assert plan.alternatives == 2 and set(plan.files) == {"faq/refund.yaml", "learned.jsonl"}
    L.write_plan(yaml_kb, plan)
    text = (yaml_kb / "faq" / "refund.yaml").read_text("utf-8")
    assert text.startswith("# a comment the write-back must keep") and "# quoted, with a comment" in text
    assert text.replace(f"      - {msgs[0]}\n      - {msgs[1]}\n", "") == BLOCK_FAQ  # only two lines added
    entry = load_kb(yaml_kb).entry("refund-seven-day")
    assert entry is not None and entry.alt_questions[-2:] == tuple(msgs)
    examples = F.read_examples(yaml_kb)
    assert [(e.query, e.expect, e.relevant, e.split) for e in examples] == [
        (m, "answer", ("refund-seven-day",), "dev") for m in msgs
    ]


def test_held_out_short_and_taken_messages_are_examples_but_not_alternatives(yaml_kb: Path):
    kb = load_kb(yaml_kb)
    test_msg = next(m for m in (f"测试留出{i}能退吗" for i in range(100)) if F.split_of(m) == "test")
    short = next(m for m in ("退吧", "退呀", "退哦", "退啦", "可退") if F.split_of(m) == "dev")
    taken = "退货运费谁出"  # already an alternative of refund-shipping-fee
    L.decide(kb, "attach", [test_msg, short, taken], entry="refund-seven-day")
    (change,) = L.plan_apply(kb).changes
    assert change.alternatives == ()
    why = dict(change.skipped)
    assert why[test_msg] == "held out as a test example"
    assert "shorter than" in why[short]
    assert why[taken] == "already a question of 'refund-shipping-fee'"
    assert len(change.examples) == 3


def test_examples_only_keeps_every_message_out_of_the_kb_files_but_an_interrupted_runs(csv_kb: Path):
    before = (csv_kb / "faq.csv").read_bytes()
    kb = load_kb(csv_kb)
    first, second = _dev(2, "发票")
    d = L.decide(kb, "attach", [first, second], entry="q1")
    plan = L.plan_apply(kb, alternatives=False)
    (change,) = plan.changes
    assert change.alternatives == () and dict(change.skipped) == {first: L.EXAMPLES_ONLY, second: L.EXAMPLES_ONLY}
    assert len(change.examples) == 2 and set(plan.files) == {"learned.jsonl"}  # no sidecar, the table untouched
    # a run that announced `first` as an alternative and died: finishing it keeps that row
    J.append_journal(
        csv_kb,
        {
            "event": "applying",
            "decision": d.id,
            "change": {**change.to_json(), "alternatives": [["q1", first, "alternatives.yaml"]]},
        },
    )
    (resumed,) = L.plan_apply(load_kb(csv_kb), alternatives=False).changes
    assert [a[1] for a in resumed.alternatives] == [first] and dict(resumed.skipped) == {second: L.EXAMPLES_ONLY}
    assert (csv_kb / "faq.csv").read_bytes() == before


def test_a_table_kb_gets_a_sidecar_and_its_file_is_never_rewritten(csv_kb: Path):
    before = (csv_kb / "faq.csv").read_bytes()
    kb = load_kb(csv_kb)
    msgs = _dev(2, "发票")
    L.decide(kb, "attach", msgs, entry="q1")
    L.decide(kb, "out_of_scope", ["你们老板是谁"])
    L.decide(kb, "new_entry", ["能开增值税专票吗", "专票怎么开"], category="发票")
    L.write_plan(csv_kb, L.plan_apply(kb))
    assert (csv_kb / "faq.csv").read_bytes() == before
    assert yaml.safe_load((csv_kb / "alternatives.yaml").read_text("utf-8")) == {"alternatives": {"q1": msgs}}
    again = load_kb(csv_kb)  # the journal, learned.jsonl, sidecar and drafts are not FAQ content
    assert len(again.entries) == 2 and again.entry("q1").alt_questions == tuple(msgs)  # type: ignore[union-attr]
    assert again.content_hash != kb.content_hash
    (draft,) = F.list_drafts(csv_kb)
    assert draft.question == "能开增值税专票吗" and draft.messages == 2 and draft.path.startswith("drafts/")
    stub = yaml.safe_load((csv_kb / draft.path).read_text("utf-8"))
    assert stub["entries"][0]["category"] == "发票" and stub["entries"][0]["answer"] == ""
    oos = [e for e in F.read_examples(csv_kb) if e.expect == "handoff"]
    assert [e.query for e in oos] == ["你们老板是谁"]
    assert json.loads((csv_kb / "learned.jsonl").read_text("utf-8").splitlines()[-1])["reason"] == "low_confidence"


def test_kb_check_lists_drafts(csv_kb: Path):
    from typer.testing import CliRunner

    from kefu_cli import app

    L.decide(load_kb(csv_kb), "new_entry", ["能开增值税专票吗"])
    L.write_plan(csv_kb, L.plan_apply(load_kb(csv_kb)))
    out = CliRunner().invoke(app, ["kb", "check", str(csv_kb), "--json"])
    assert out.exit_code == 0, out.output
    (d,) = json.loads(out.stdout)["drafts"]
    assert d["question"] == "能开增值税专票吗"


def test_a_sidecar_naming_a_deleted_row_is_skipped_not_fatal(csv_kb: Path):
    (csv_kb / "alternatives.yaml").write_text(
        "alternatives:\n  gone: [这个条目已经删了]\n  q2: [什么时候发货呢]\n", "utf-8"
    )
    kb = load_kb(csv_kb)
    assert kb.entry("q2").alt_questions == ("什么时候发货呢",)  # type: ignore[union-attr]


def test_the_same_item_cannot_be_decided_twice_until_undone(yaml_kb: Path):
    kb = load_kb(yaml_kb)
    first = L.decide(kb, "attach", DEV_MESSAGES, entry="refund-seven-day", who="alice")
    with pytest.raises(ConfigError, match=r"already resolved .* by alice"):
        L.decide(kb, "dismiss", list(reversed(DEV_MESSAGES)), who="bob")  # same messages, another order
    L.undo(kb, first.id, who="alice")
    second = L.decide(kb, "dismiss", DEV_MESSAGES, who="bob")
    st = J.states(yaml_kb)
    assert st[first.id].status == "undone" and st[second.id].status == "pending"
    events = [r["event"] for r in J.read_journal(yaml_kb)]
    assert events == ["decided", "undone", "decided"]
    assert all(r["who"] and r["at"] for r in J.read_journal(yaml_kb))


def test_undo_of_an_applied_decision_removes_what_it_wrote(yaml_kb: Path, csv_kb: Path):
    for root, entry in ((yaml_kb, "refund-seven-day"), (csv_kb, "q1")):
        original = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        kb = load_kb(root)
        d = L.decide(kb, "attach", _dev(3, "撤销"), entry=entry)
        plan = L.plan_apply(kb)
        L.write_plan(root, plan)
        (change,) = plan.changes
        J.append_journal(
            root, {"event": "applied", "decision": d.id, "who": "t", "at": "t", "change": change.to_json()}
        )
        L.undo(load_kb(root), d.id)
        for p, data in original.items():
            assert p.read_bytes() == data, p
        assert not (root / "alternatives.yaml").exists() and not (root / "learned.jsonl").exists()
        assert load_kb(root).content_hash == kb.content_hash
        with pytest.raises(ConfigError, match="already undone"):
            L.undo(kb, d.id)


def test_bad_decisions_are_refused(yaml_kb: Path):
    kb = load_kb(yaml_kb)
    with pytest.raises(NotFoundError):
        L.decide(kb, "attach", ["能退吗能退吗"], entry="no-such-entry")
    with pytest.raises(ConfigError, match="needs the entry"):
        L.decide(kb, "attach", ["能退吗能退吗"])
    with pytest.raises(ConfigError, match="no messages"):
        L.decide(kb, "dismiss", ["  "])
    with pytest.raises(NotFoundError):
        L.undo(kb, "Dnope")


def test_a_ticket_is_resolved_by_its_masked_message(yaml_kb: Path, tmp_path: Path):
    from service.tickets import TicketStore

    db = tmp_path / "tickets.db"
    t = TicketStore(db).create("我的手机13812345678收不到退款能退吗", "low_confidence", "S1", [])
    d = L.decide(load_kb(yaml_kb), "out_of_scope", L.ticket_messages(db, t.id), ticket=t.id)
    assert d.item == f"ticket:{t.id}" and "13812345678" not in d.messages[0]
    with pytest.raises(ConfigError, match="already resolved"):
        L.decide(load_kb(yaml_kb), "dismiss", L.ticket_messages(db, t.id), ticket=t.id)
    with pytest.raises(NotFoundError):
        L.ticket_messages(db, "Tmissing")


def test_the_lock_is_exclusive_and_files_are_replaced_whole(yaml_kb: Path):
    with J.kb_lock(yaml_kb), pytest.raises(ConfigError, match="busy"), J.kb_lock(yaml_kb, wait_s=0):
        pass
    with J.kb_lock(yaml_kb, wait_s=0):  # released
        pass
    target = yaml_kb / "x.txt"
    J.atomic_write(target, "新内容")
    assert target.read_text("utf-8") == "新内容"
    assert [p.name for p in yaml_kb.iterdir() if p.name.endswith(".tmp")] == []
    J.atomic_write(target, None)
    assert not target.exists()


def test_yaml_edits_refuse_what_they_cannot_do_exactly():
    flow = "entries:\n  - id: a-b\n    alt_questions: [一二三四, 五六七八]\n"
    assert F.yaml_add_alternative(flow, "a-b", "新的问题啊") is None  # flow lists go to the sidecar
    assert F.yaml_add_alternative(BLOCK_FAQ, "missing", "新的问题啊") is None
    added = F.yaml_add_alternative(BLOCK_FAQ, "refund-shipping-fee", "运费: 谁出？")  # needs quoting
    assert added is not None
    assert F.yaml_remove_alternative(added, "refund-shipping-fee", "运费: 谁出？") == BLOCK_FAQ


RULES_DOC = """---
id: rules-return
title: 退货规范
category: 退货退款
effective: 2026-01-01
---

# 退货规范

第一条 为保障消费者权益，制定本规范。

第二条 买家应在签收次日起七日内提出无理由退货申请。逾期提出的，平台不予支持。
"""


def test_messages_attach_to_a_rules_clause_through_the_sidecar_and_undo_restores_it(yaml_kb: Path):
    (yaml_kb / "rules").mkdir()
    (yaml_kb / "rules" / "rules-return.md").write_text(RULES_DOC, "utf-8")
    curated = "# questions for our clauses, by clause id\nalternatives:\n  rules-return.2:\n  - 签收第八天还能退吗\n"
    (yaml_kb / "alternatives.yaml").write_text(curated, "utf-8")
    kb = load_kb(yaml_kb)
    target = kb.target("rules-return.2")
    assert target is not None and (target.id, target.category) == ("rules-return.2", "退货退款")
    assert kb.target("rules-return.9") is None
    msgs = _dev(2, "逾期")
    d = L.decide(kb, "attach", [*msgs, "签收第八天还能退吗"], entry="rules-return.2")
    plan = L.plan_apply(kb)
    L.write_plan(yaml_kb, plan)
    (change,) = plan.changes
    assert [(e, t) for e, t, _ in change.alternatives] == [("rules-return.2", m) for m in msgs]
    assert dict(change.skipped)["签收第八天还能退吗"] == "already a question of this entry"
    text = (yaml_kb / "alternatives.yaml").read_text("utf-8")
    assert text.startswith("# questions for our clauses, by clause id\n")
    (doc,) = load_kb(yaml_kb).documents
    assert doc.questions_of("rules-return.2") == ("签收第八天还能退吗", *msgs)
    assert {ex.relevant for ex in F.read_examples(yaml_kb)} == {("rules-return.2",)}
    J.append_journal(yaml_kb, {"event": "applied", "decision": d.id, "who": "t", "at": "t", "change": change.to_json()})
    L.undo(load_kb(yaml_kb), d.id)
    assert yaml.safe_load((yaml_kb / "alternatives.yaml").read_text("utf-8")) == yaml.safe_load(curated)
    with pytest.raises(NotFoundError, match="document clause/section"):
        L.decide(kb, "attach", ["无关的问题"], entry="rules-return.9")
