"""Run the answerer over labelled items and compute every metric of the report."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.dataset import EvalItem, resolve_labels, stable_hash
from eval.metrics import Ranked, auc, hit_at, mrr_at, ndcg_at, percentile, prf, recall_at
from service.answerer import Answerer
from service.policy import Features
from service.sessions import SessionStore

HANDOFF_REASONS = ("user_requested", "sensitive", "merchant", "needs_order", "low_confidence", "empty_query")


@dataclass
class ItemResult:
    """One labelled item asked: its ``Decision`` as the metrics and the calibration read it."""

    item: EvalItem
    decision: str
    reason: str | None
    ranking: list[Ranked]
    answered_id: str | None
    confidence: float | None  # None: decided by a rule before any search
    features: Features | None
    rule: str | None  # the rule that decided (its reason); None: the calibrated confidence did
    elapsed_ms: float
    used_context: bool = False

    @property
    def top1_correct(self) -> bool:
        return bool(self.ranking) and self.ranking[0].matches(self.item.relevant) is not None


@dataclass
class RunResult:
    results: list[ItemResult]
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def _ask(answerer: Answerer, item: EvalItem, session_id: str) -> ItemResult:
    """The item's decision (``Answerer.explain``: typed, unrounded, no ticket) and its latency."""
    started = time.perf_counter()
    d = answerer.explain(item.query, session_id=session_id)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    cands = d.candidates
    return ItemResult(
        item=item,
        decision=d.outcome,
        reason=d.reason,
        ranking=[Ranked(c.id, c.doc_id) for c in cands],
        answered_id=cands[0].id if d.outcome == "answer" and cands else None,
        confidence=d.confidence,
        features=d.features,
        rule=d.rule.reason if d.rule is not None else None,
        elapsed_ms=elapsed_ms,
        used_context=d.used_context,
    )


def run(
    answerer: Answerer, items: Sequence[EvalItem], progress: Callable[[int, int], None] | None = None
) -> list[ItemResult]:
    """Ask every item (after its context message, in a fresh session); labels naming a merged-away
    entry are read as its survivor (``resolve_labels``)."""
    out = []
    items = resolve_labels(items, answerer.index.aliases)
    for n, it in enumerate(items, 1):
        sid = SessionStore.new_id()
        if it.context:
            answerer.answer(it.context, session_id=sid)
        out.append(_ask(answerer, it, sid))
        if progress:
            progress(n, len(items))
    return out


def switch_pairs(items: Sequence[EvalItem]) -> list[tuple[EvalItem, EvalItem]]:
    """(previous, question) pairs: every in-scope question without context of its own, asked
    right after the next question of another category in a fixed shuffled order."""
    pool = sorted((it for it in items if it.in_scope and not it.context), key=lambda it: stable_hash(it.id))
    pairs = []
    for i, it in enumerate(pool):
        others = (pool[(i + j) % len(pool)] for j in range(1, len(pool)))
        prev = next((o for o in others if o.category != it.category), None)
        if prev is not None:
            pairs.append((prev, it))
    return pairs


def topic_switches(answerer: Answerer, alone: Sequence[ItemResult]) -> dict[str, float]:
    """A session changes topic: each in-scope question is asked right after an unrelated one
    (``switch_pairs``) and compared with the same question asked alone (``alone``, from
    ``run``). The labelled set's follow-ups show what session context buys; this shows what it
    costs when the shopper has moved on."""
    by_id = {r.item.id: r for r in alone}
    pairs = switch_pairs([r.item for r in alone])
    used = changed = right_to_wrong = wrong_answers = 0
    for prev, it in pairs:
        sid = SessionStore.new_id()
        answerer.answer(prev.query, session_id=sid)
        after, before = _ask(answerer, it, sid), by_id[it.id]
        used += after.used_context
        changed += after.ranking[:1] != before.ranking[:1]
        right_to_wrong += before.top1_correct and not after.top1_correct
        wrong_now = after.decision == "answer" and not after.top1_correct
        wrong_before = before.decision == "answer" and not before.top1_correct
        wrong_answers += wrong_now and not wrong_before
    n = len(pairs)
    return {
        "questions": n,
        "context_used": used,
        "top_changed": changed,
        "right_to_wrong": right_to_wrong,
        "new_wrong_answers": wrong_answers,
        "right_to_wrong_rate": round(right_to_wrong / n, 4) if n else 0.0,
    }


def _retrieval(results: list[ItemResult]) -> dict[str, float]:
    rs = [r for r in results if r.item.in_scope]
    if not rs:
        return {}
    n = len(rs)
    m = {
        "n": n,
        "hit@1": sum(hit_at(r.ranking, r.item.relevant, 1) for r in rs) / n,
        "hit@3": sum(hit_at(r.ranking, r.item.relevant, 3) for r in rs) / n,
        "hit@5": sum(hit_at(r.ranking, r.item.relevant, 5) for r in rs) / n,
        "hit@10": sum(hit_at(r.ranking, r.item.relevant, 10) for r in rs) / n,
        "mrr@10": sum(mrr_at(r.ranking, r.item.relevant, 10) for r in rs) / n,
        "ndcg@10": sum(ndcg_at(r.ranking, r.item.relevant, 10) for r in rs) / n,
    }
    for k in (1, 3, 5, 10):
        m[f"recall@{k}"] = sum(recall_at(r.ranking, r.item.relevant, k) for r in rs) / n
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def _decisions(results: list[ItemResult]) -> dict[str, Any]:
    n = len(results)
    in_scope = [r for r in results if r.item.in_scope]
    answered = [r for r in results if r.decision == "answer"]
    correct_answered = [r for r in answered if r.answered_id and r.item.in_scope and r.top1_correct]

    def expected_decision(r: ItemResult) -> str:
        return r.item.expect

    accuracy = sum(
        r.decision == expected_decision(r) and (r.decision != "answer" or r.top1_correct) for r in results
    ) / max(1, n)
    m: dict[str, Any] = {
        "n": n,
        "accuracy": round(accuracy, 4),
        "answered_precision": round(len(correct_answered) / len(answered), 4) if answered else 0.0,
        "coverage": round(sum(r.decision == "answer" for r in in_scope) / len(in_scope), 4) if in_scope else 0.0,
        "clarify_rate": round(sum(r.decision == "clarify" for r in results) / max(1, n), 4),
        "in_scope_clarify_rate": round(sum(r.decision == "clarify" for r in in_scope) / max(1, len(in_scope)), 4),
        "in_scope_handoff_rate": round(sum(r.decision == "handoff" for r in in_scope) / max(1, len(in_scope)), 4),
        "clarify_contains_answer": round(
            sum(r.decision == "clarify" and hit_at(r.ranking, r.item.relevant, 3) > 0 for r in in_scope)
            / max(1, sum(r.decision == "clarify" for r in in_scope)),
            4,
        ),
    }
    # Handoff as a binary classifier: expected handoff vs decided handoff.
    tp = sum(r.item.expect == "handoff" and r.decision == "handoff" for r in results)
    fp = sum(r.item.expect != "handoff" and r.decision == "handoff" for r in results)
    fn = sum(r.item.expect == "handoff" and r.decision != "handoff" for r in results)
    h = prf(tp, fp, fn)
    m.update({"handoff_precision": h["precision"], "handoff_recall": h["recall"], "handoff_f1": h["f1"]})
    per_reason = {}
    for reason in HANDOFF_REASONS:
        exp = [r for r in results if r.item.expect == "handoff" and r.item.reason == reason]
        got = [r for r in results if r.decision == "handoff" and r.reason == reason]
        tp_r = sum(r.reason == reason and r.decision == "handoff" for r in exp)
        if exp or got:
            per_reason[reason] = {**prf(tp_r, len(got) - tp_r, len(exp) - tp_r), "n": len(exp)}
            # "handed off at all" is what matters for safety; the reason label is secondary
            per_reason[reason]["handoff_recall_any_reason"] = round(
                sum(r.decision == "handoff" for r in exp) / max(1, len(exp)), 4
            )
    m["per_reason"] = per_reason
    oos = [r for r in results if r.item.reason == "low_confidence"]
    m["oos_handoff_recall"] = round(sum(r.decision == "handoff" for r in oos) / max(1, len(oos)), 4)
    m["oos_answered_rate"] = round(sum(r.decision == "answer" for r in oos) / max(1, len(oos)), 4)
    greet = [r for r in results if r.item.reason == "greeting"]
    if greet:
        m["greeting_accuracy"] = round(sum(r.reason == "greeting" for r in greet) / len(greet), 4)
    conf_in = [r.confidence for r in in_scope if r.confidence is not None and r.top1_correct]
    conf_out = [r.confidence for r in oos if r.confidence is not None]
    m["auc_in_vs_out"] = round(auc(conf_in, conf_out), 4) if conf_in and conf_out else None
    return m


def summarize(results: list[ItemResult], seconds: float) -> dict[str, Any]:
    lat = [r.elapsed_ms for r in results]
    m: dict[str, Any] = {"retrieval": _retrieval(results), "decisions": _decisions(results)}
    flat = {**m["retrieval"], **{k: v for k, v in m["decisions"].items() if not isinstance(v, dict)}}
    for reason, v in m["decisions"]["per_reason"].items():
        flat[f"handoff_recall_{reason}"] = v["recall"]
    flat["latency_p50_ms"] = round(percentile(lat, 50), 2)
    flat["latency_p95_ms"] = round(percentile(lat, 95), 2)
    m["headline"] = flat
    by_cat: dict[str, list[ItemResult]] = defaultdict(list)
    by_tag: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_cat[r.item.category].append(r)
        for t in r.item.tags or ("plain",):
            by_tag[t].append(r)
    m["by_category"] = {c: {**_retrieval(rs), **_brief(rs)} for c, rs in sorted(by_cat.items())}
    m["by_tag"] = {t: {**_retrieval(rs), **_brief(rs)} for t, rs in sorted(by_tag.items())}
    m["latency_ms"] = {"p50": flat["latency_p50_ms"], "p95": flat["latency_p95_ms"], "n": len(lat)}
    m["seconds"] = round(seconds, 2)
    return m


def _brief(rs: list[ItemResult]) -> dict[str, Any]:
    d = _decisions(rs)
    return {
        "n_all": len(rs),
        "accuracy": d["accuracy"],
        "coverage": d["coverage"],
        "answered_precision": d["answered_precision"],
        "handoff_recall": d["handoff_recall"],
    }


def evaluate(
    answerer: Answerer, items: Sequence[EvalItem], progress: Callable[[int, int], None] | None = None
) -> RunResult:
    t0 = time.perf_counter()
    results = run(answerer, items, progress)
    seconds = time.perf_counter() - t0
    return RunResult(results, seconds, summarize(results, seconds))
