"""The real-traffic table's metrics, against hand-computed values."""

from __future__ import annotations

import pytest

from eval.traffic import TrafficLabel, TrafficOutcome, load_labels, summarize, traffic_markdown


def _o(scope, decision, answered=None, options=(), relevant=(), reason=None, elliptical=False, label_reason=None):
    lab = TrafficLabel("s" * 32, 0, "dev", scope, "answer", label_reason, tuple(relevant), elliptical)
    return TrafficOutcome(lab, decision, reason, answered, tuple(options))


def test_summarize_hand_computed():
    outcomes = [
        _o("in", "answer", answered="a", relevant=["a"]),  # right answer
        _o("in", "answer", answered="b", relevant=["a"], elliptical=True),  # wrong answer
        _o("in", "clarify", options=["c", "a"], relevant=["a"], reason="ambiguous", elliptical=True),
        _o("in", "handoff", relevant=["a"], reason="low_confidence"),  # needless handoff
        _o("order", "answer", answered="x"),
        _o("order", "handoff", reason="needs_order"),
        _o("out", "handoff", reason="low_confidence"),
        _o("out", "clarify", reason="greeting", label_reason="greeting"),
        _o("out", "handoff", reason="low_confidence", label_reason="greeting"),  # 没有了，谢谢 handed off
    ]
    t = summarize(outcomes)
    assert t.messages == 9 and t.in_scope == 4
    assert t.answer_rate == pytest.approx(3 / 9)
    assert t.answered_precision == pytest.approx(1 / 3)
    assert t.right_answer_or_option == pytest.approx(2 / 4)
    assert t.needless_handoff == pytest.approx(1 / 4)
    assert t.order_answered == pytest.approx(1 / 2)
    assert t.out_answered == 0.0  # the greeting is not counted as out of scope
    assert t.clarify_rate == pytest.approx(1 / 9)  # greetings' polite reply is not a clarify
    assert t.clarify_has_right == 1.0
    assert t.elliptical_right == pytest.approx(1 / 2)
    assert t.greeting_right == pytest.approx(1 / 2)
    md = traffic_markdown({"dev": t.to_json()})
    assert len(md) == 3 and md[2].startswith("| dev | 9 | 4 | 0.333 | 0.333 |") and md[2].endswith("| 0.500 |")
    older = {k: v for k, v in t.to_json().items() if k != "greeting_right"}
    assert traffic_markdown({"dev": older})[2].endswith("| – |")  # a traffic.json of an older kefu


def test_bundled_traffic_labels_load():
    labels = load_labels()
    assert len(labels) >= 400 and {lab.split for lab in labels} == {"dev", "test"}
