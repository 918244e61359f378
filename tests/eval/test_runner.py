"""runner.summarize on hand-made results, and run() on the tiny answerer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from eval.dataset import EvalItem
from eval.metrics import Ranked
from eval.runner import ItemResult, evaluate, run, summarize, switch_pairs, topic_switches

RULES = ("user_requested", "sensitive", "needs_order", "empty_query", "greeting")


def R(*ids: str) -> list[Ranked]:
    return [Ranked(i, i) for i in ids]


def res(
    iid: str,
    expect: str,
    reason: str | None,
    relevant: tuple[str, ...],
    decision: str,
    got_reason: str | None,
    ranking: list[Ranked],
    ms: float,
    category: str = "退货退款",
    tags: tuple[str, ...] = (),
    confidence: float | None = 0.5,
) -> ItemResult:
    item = EvalItem(iid, f"q-{iid}", relevant, expect, reason, tags, category)
    answered = ranking[0].id if decision == "answer" and ranking else None
    rule = got_reason if got_reason in RULES else None
    return ItemResult(item, decision, got_reason, ranking, answered, confidence, None, rule, ms)


@pytest.fixture
def results() -> list[ItemResult]:
    return [
        # in scope
        res("1", "answer", None, ("a",), "answer", None, R("a", "x"), 10, confidence=0.9),  # right answer
        res("2", "answer", None, ("b",), "answer", None, R("c", "b"), 20, confidence=0.8),  # wrong answer
        res("3", "answer", None, ("d",), "clarify", "ambiguous", R("x", "d"), 30, tags=("typo",)),
        res("4", "answer", None, ("e",), "handoff", "low_confidence", R("e"), 40, category="物流配送"),
        # out of scope
        res("5", "handoff", "low_confidence", (), "handoff", "low_confidence", R("a"), 50, confidence=0.2),
        res("6", "handoff", "low_confidence", (), "answer", None, R("a"), 60, confidence=0.85),
        # rule handoffs
        res("7", "handoff", "user_requested", (), "handoff", "user_requested", R("a"), 70),
        res("8", "handoff", "sensitive", (), "handoff", "low_confidence", R("a"), 80),
        res("9", "handoff", "sensitive", (), "answer", None, R("a"), 90),
    ]


def test_decision_metrics_hand_computed(results: list[ItemResult]):
    d = summarize(results, 1.5)["decisions"]
    assert d["n"] == 9
    assert d["coverage"] == 0.5  # 2 of 4 in-scope answered
    assert d["answered_precision"] == 0.25  # answered: 1 (right), 2 (wrong top-1), 6 and 9 (not in scope)
    assert d["accuracy"] == 0.4444  # 1, 5, 7, 8
    # handoff as a classifier: tp = 5, 7, 8; fp = 4; fn = 6, 9
    assert (d["handoff_precision"], d["handoff_recall"], d["handoff_f1"]) == (0.75, 0.6, 0.6667)
    assert d["clarify_rate"] == 0.1111 and d["in_scope_clarify_rate"] == 0.25
    assert d["in_scope_handoff_rate"] == 0.25
    assert d["clarify_contains_answer"] == 1.0  # item 3 has 'd' at rank 2
    assert d["oos_handoff_recall"] == 0.5 and d["oos_answered_rate"] == 0.5
    # in-scope correct confidences [0.9, 0.5 (item 4)] vs OOS [0.2, 0.85]: 3 of 4 pairs
    assert d["auc_in_vs_out"] == 0.75


def test_per_reason_hand_computed(results: list[ItemResult]):
    pr = summarize(results, 1.0)["decisions"]["per_reason"]
    assert set(pr) == {"user_requested", "sensitive", "low_confidence"}  # no empty_query anywhere
    assert pr["user_requested"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "n": 1,
        "handoff_recall_any_reason": 1.0,
    }
    # sensitive: expected 8, 9; none handed off *as* sensitive; 8 was handed off for another reason
    assert pr["sensitive"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "n": 2,
        "handoff_recall_any_reason": 0.5,
    }
    # low_confidence: expected 5, 6; decided 4, 5, 8 → tp 1, fp 2, fn 1
    assert pr["low_confidence"] == {
        "precision": 0.3333,
        "recall": 0.5,
        "f1": 0.4,
        "n": 2,
        "handoff_recall_any_reason": 0.5,
    }


def test_retrieval_and_headline(results: list[ItemResult]):
    m = summarize(results, 2.345)
    r = m["retrieval"]
    assert r["n"] == 4
    assert r["hit@1"] == 0.5 and r["hit@3"] == 1.0
    assert r["mrr@10"] == 0.75  # 1, 1/2, 1/2, 1
    assert r["recall@1"] == 0.5 and r["recall@10"] == 1.0
    h = m["headline"]
    assert h["coverage"] == 0.5 and h["handoff_recall"] == 0.6
    assert h["handoff_recall_user_requested"] == 1.0 and h["handoff_recall_sensitive"] == 0.0
    assert h["latency_p50_ms"] == 50.0
    assert m["latency_ms"] == {"p50": 50.0, "p95": 86.0, "n": 9}
    assert m["seconds"] == 2.35


def test_breakdowns(results: list[ItemResult]):
    m = summarize(results, 1.0)
    assert set(m["by_category"]) == {"退货退款", "物流配送"}
    assert m["by_category"]["物流配送"]["n_all"] == 1
    assert m["by_category"]["物流配送"]["coverage"] == 0.0
    assert set(m["by_tag"]) == {"plain", "typo"}
    assert m["by_tag"]["typo"]["n_all"] == 1 and m["by_tag"]["plain"]["n_all"] == 8


def test_empty_results():
    m = summarize([], 0.0)
    assert m["retrieval"] == {}
    assert m["decisions"]["n"] == 0 and m["decisions"]["coverage"] == 0.0
    assert m["decisions"]["auc_in_vs_out"] is None
    assert m["latency_ms"]["n"] == 0


def test_run_on_the_tiny_answerer(tiny_answerer):
    items = [
        EvalItem("i1", "七天无理由退货需要满足什么条件？", ("refund-seven-day",), "answer", None, (), "退货退款"),
        EvalItem("i2", "转人工", (), "handoff", "user_requested", (), "客服渠道"),
        EvalItem(
            "i3",
            "那运费呢",
            ("refund-shipping-fee",),
            "answer",
            None,
            ("elliptical",),
            "退货退款",
            "退货要自己出运费吗",
        ),
    ]
    # a label naming an entry merged into refund-seven-day (its `replaces`) counts the survivor
    items.append(replace(items[0], id="i4", relevant=("refund-no-reason-return",)))
    seen: list[tuple[int, int]] = []
    out = run(tiny_answerer, items, lambda n, total: seen.append((n, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert out[0].ranking[0].id == "refund-seven-day" and out[0].top1_correct
    assert out[3].item.relevant == ("refund-seven-day",) and out[3].top1_correct
    assert (out[1].decision, out[1].reason, out[1].rule) == ("handoff", "user_requested", "user_requested")
    assert (out[1].confidence, out[1].ranking) == (None, [])  # decided before any search
    assert out[0].rule is None and out[0].confidence is not None
    assert out[2].features is not None and out[2].features.top1 > 0
    rr = evaluate(tiny_answerer, items)
    assert rr.metrics["retrieval"]["n"] == 3
    assert rr.metrics["decisions"]["per_reason"]["user_requested"]["recall"] == 1.0


class _SessionFake:
    """Answers from a table; the 'sticky' questions, asked after another one, take that one's
    top entry (a topic switch gone wrong)."""

    def __init__(self, table: dict[str, tuple[str, str]], sticky: set[str]) -> None:
        from types import SimpleNamespace

        self.table, self.sticky = table, sticky
        self.last: dict[str | None, str] = {}
        self.index = SimpleNamespace(aliases={})  # no merged entries

    def answer(self, query: str, session_id: str | None = None, top_k: int | None = None) -> Any:
        self.last[session_id] = query  # what a session remembers (the context message)
        return None

    def explain(self, query: str, session_id: str | None = None, history: Any = None) -> Any:
        from types import SimpleNamespace

        top, decision = self.table[query]
        prev = self.last.get(session_id)
        used = prev is not None and query in self.sticky
        if prev is not None and used:
            top, decision = self.table[prev][0], "answer"
        cands = (SimpleNamespace(id=top, doc_id=top),)
        return SimpleNamespace(
            outcome=decision, reason=None, candidates=cands, confidence=0.5, features=None, rule=None, used_context=used
        )


def _items() -> list[EvalItem]:
    def it(iid: str, cat: str, rel: str, expect: str = "answer", context: str | None = None) -> EvalItem:
        return EvalItem(iid, f"q{iid}", (rel,) if rel else (), expect, None, (), cat, context)

    return [
        it("1", "A", "a1"),
        it("2", "A", "a2"),
        it("3", "B", "b3"),
        it("4", "B", "b4"),
        it("5", "B", "b5", context="前一句"),  # has its own context: not probed
        it("6", "C", "", expect="handoff"),  # out of scope: not probed
    ]


def test_switch_pairs_cross_categories_once_each_and_deterministically():
    items = _items()
    pairs = switch_pairs(items)
    assert sorted(q.id for _, q in pairs) == ["1", "2", "3", "4"]
    assert all(prev.category != q.category for prev, q in pairs)
    assert all(prev.in_scope and not prev.context for prev, _ in pairs)
    assert [(p.id, q.id) for p, q in switch_pairs(list(reversed(items)))] == [(p.id, q.id) for p, q in pairs]
    assert switch_pairs([i for i in items if i.category == "A"]) == []  # nothing unrelated to ask first


def test_topic_switches_counted_by_hand():
    table = {"q1": ("a1", "answer"), "q2": ("a2", "clarify"), "q3": ("x", "answer"), "q4": ("b4", "answer")}
    fake = _SessionFake(table, sticky={"q1", "q3"})
    items = [i for i in _items() if i.in_scope and not i.context]
    alone = run(fake, items)  # type: ignore[arg-type]
    got = topic_switches(fake, alone)  # type: ignore[arg-type]
    # q1 (right alone) takes a B question's entry: changed, right → wrong, a new wrong answer.
    # q3 (wrong alone) takes an A question's entry: changed, still wrong, not a new wrong answer.
    assert got == {
        "questions": 4,
        "context_used": 2,
        "top_changed": 2,
        "right_to_wrong": 1,
        "new_wrong_answers": 1,
        "right_to_wrong_rate": 0.25,
    }
