"""BM25 over characters: the postings fast path against a whole-matrix oracle."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.lexical import BigramPostings, LexicalIndex, char_bigrams, char_terms, jaccard

TEXTS = [
    "七天无理由退货需要满足什么条件",
    "退货的运费应该由谁来承担",
    "怎么查看订单的物流信息",
    "快递三天没有更新物流了",
    "88vip会员怎么取消自动续费",
    "",
    "退款退款退款",
]


def _oracle(index: LexicalIndex, query: str) -> np.ndarray:
    """The textbook form: the weighted term matrix times the query's idf vector."""
    q = np.zeros(index.matrix.shape[1])
    for term in set(char_terms(query)):
        j = index.vocab.get(term)
        if j is not None:
            q[j] = index.idf[j]
    return np.asarray(index.matrix @ q).ravel()


@pytest.mark.parametrize(
    "query",
    ["退货运费谁出", "物流", "退款退款", "88VIP", "vip续费", "完全无关的字眼", "", "？！", "退"],
)
def test_scores_equal_the_matrix_product(query: str):
    index = LexicalIndex(TEXTS)
    got = index.scores(query)
    assert got.shape == (len(TEXTS),) and got.dtype == np.float64
    np.testing.assert_allclose(got, _oracle(index, query), rtol=1e-12, atol=1e-12)


def test_scores_on_random_texts_equal_the_oracle():
    rng = np.random.default_rng(7)
    alphabet = list("退款物流快递运费订单发票会员优惠券七天无理由售后")
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 30)))) for _ in range(200)]
    index = LexicalIndex(texts)
    for _ in range(50):
        query = "".join(rng.choice(alphabet, size=int(rng.integers(1, 12))))
        np.testing.assert_allclose(index.scores(query), _oracle(index, query), rtol=1e-12, atol=1e-12)


def test_the_best_match_ranks_first():
    index = LexicalIndex(TEXTS)
    assert int(np.argmax(index.scores("退货运费谁承担"))) == 1


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("退款多久", "退款多久", 1.0), ("退款多久", "多久退款", 2 / 4), ("退款", "物流", 0.0), ("", "退款", 0.0)],
)
def test_jaccard_of_bigrams_hand_computed(a: str, b: str, expected: float):
    assert jaccard(char_bigrams(a), char_bigrams(b)) == pytest.approx(expected)


@pytest.mark.parametrize("query", ["", "退", "退货", "运费谁出呢", "zzz 没有的字"])
def test_bigram_postings_count_like_set_intersections(query):
    texts = ["退货运费谁出", "运费险怎么赔", "", "退货退款", "退"]
    sets = [char_bigrams(t) for t in texts]
    postings = BigramPostings(sets)
    grams = char_bigrams(query)
    assert postings.counts(grams).tolist() == [len(grams & s) for s in sets]


def test_bigram_postings_of_nothing():
    assert BigramPostings([]).counts({"退货"}).tolist() == []
