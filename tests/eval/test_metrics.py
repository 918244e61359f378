"""Retrieval and decision metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from eval.metrics import Ranked, auc, hit_at, mrr_at, ndcg_at, percentile, prf, recall_at


def R(*ids: str) -> list[Ranked]:
    """Rank list; 'doc#n' ids belong to document 'doc', other ids are their own document."""
    return [Ranked(i, i.split("#")[0]) for i in ids]


RANKING = R("x", "a", "y", "b", "z")


def test_matches_by_id_or_doc_id():
    assert Ranked("rules-return#3", "rules-return").matches(["rules-return"]) == "rules-return"
    assert Ranked("rules-return#3", "rules-return").matches(["rules-return#3"]) == "rules-return#3"
    assert Ranked("rules-return#3", "rules-return").matches(["rules-other"]) is None
    assert Ranked("a", "a").matches([]) is None


@pytest.mark.parametrize(("k", "expected"), [(1, 0.0), (2, 1.0), (5, 1.0)])
def test_hit_at(k: int, expected: float):
    assert hit_at(RANKING, ["a"], k) == expected


def test_hit_at_empty():
    assert hit_at([], ["a"], 3) == 0.0
    assert hit_at(RANKING, [], 3) == 0.0


@pytest.mark.parametrize(("k", "expected"), [(1, 0.0), (2, 0.5), (3, 0.5), (4, 1.0), (10, 1.0)])
def test_recall_at_multi_relevant(k: int, expected: float):
    assert recall_at(RANKING, ["a", "b"], k) == pytest.approx(expected)


def test_recall_at_counts_each_relevant_once():
    assert recall_at(RANKING, ["a", "a", "b"], 2) == pytest.approx(0.5)  # duplicates in relevant
    # two chunks of one relevant document are one hit
    assert recall_at(R("doc#1", "doc#2"), ["doc", "other"], 2) == pytest.approx(0.5)
    assert recall_at(RANKING, [], 5) == 0.0
    assert recall_at([], ["a"], 5) == 0.0


@pytest.mark.parametrize(
    ("relevant", "k", "expected"),
    [(["a"], 10, 1 / 2), (["b"], 10, 1 / 4), (["a", "b"], 10, 1 / 2), (["b"], 3, 0.0), (["q"], 10, 0.0)],
)
def test_mrr_at(relevant: list[str], k: int, expected: float):
    assert mrr_at(RANKING, relevant, k) == pytest.approx(expected)


def test_mrr_via_doc_id():
    assert mrr_at(R("faq-x", "rules-return#2", "rules-return#5"), ["rules-return"]) == pytest.approx(0.5)


def test_ndcg_two_relevant_at_ranks_2_and_4():
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at(RANKING, ["a", "b"], 10) == pytest.approx(dcg / idcg)


def test_ndcg_values():
    assert ndcg_at(R("a", "b"), ["a", "b"]) == pytest.approx(1.0)
    assert ndcg_at(RANKING, ["a"]) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(RANKING, ["b"], 3) == 0.0  # beyond the cut-off
    # ideal DCG is capped at k: one relevant in the top-1 of three relevant is perfect at k=1
    assert ndcg_at(R("a"), ["a", "b", "c"], 1) == pytest.approx(1.0)
    assert ndcg_at(RANKING, []) == 0.0
    assert ndcg_at([], ["a"]) == 0.0


def test_ndcg_gains_a_document_once():
    # two chunks of 'doc' at ranks 1 and 2: gain once; 'other' at 3
    ranking = R("doc#1", "doc#2", "other")
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at(ranking, ["doc", "other"]) == pytest.approx(dcg / idcg)
    assert ndcg_at(ranking, ["doc", "doc"]) == pytest.approx(1.0)  # duplicate relevant ids


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        (3, 1, 2, {"precision": 0.75, "recall": 0.6, "f1": 0.6667}),
        (5, 0, 0, {"precision": 1.0, "recall": 1.0, "f1": 1.0}),
        (0, 4, 3, {"precision": 0.0, "recall": 0.0, "f1": 0.0}),
        (0, 0, 0, {"precision": 0.0, "recall": 0.0, "f1": 0.0}),
        (1, 2, 0, {"precision": 0.3333, "recall": 1.0, "f1": 0.5}),
    ],
)
def test_prf(tp: int, fp: int, fn: int, expected: dict[str, float]):
    assert prf(tp, fp, fn) == expected


def test_auc_with_ties():
    # pairs: 0.9>0.5, 0.9>0.1, 0.5=0.5 (half), 0.5>0.1 → 3.5 / 4
    assert auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)
    assert auc([1.0], [0.0]) == 1.0
    assert auc([0.0], [1.0]) == 0.0
    assert auc([0.3, 0.3], [0.3]) == pytest.approx(0.5)


def test_auc_empty_is_nan():
    assert math.isnan(auc([], [0.1]))
    assert math.isnan(auc([0.1], []))


def test_percentile():
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48.0)
    assert percentile([7], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_a_clause_label_is_hit_by_that_clause_only():
    """Rules-slice labels name a clause unit (doc.5): another clause of the same document, or an
    FAQ entry on the topic, is a miss; a label naming the whole document is hit by any of its clauses."""
    ranking = [Ranked("refund-seven-day", "refund-seven-day"), Ranked("rules-return.4", "rules-return")]
    assert hit_at(ranking, ["rules-return.5"], 3) == 0.0
    assert mrr_at([*ranking, Ranked("rules-return.5", "rules-return")], ["rules-return.5"]) == pytest.approx(1 / 3)
    assert hit_at(ranking, ["rules-return"], 2) == 1.0 and hit_at(ranking, ["rules-return"], 1) == 0.0
