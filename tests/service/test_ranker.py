"""The learned ranker: hand-computed scores and probabilities, fitting, validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from indexer.pool import POOL_FEATURES, CandidatePool
from indexer.units import UnitHit
from kb.errors import ConfigError
from service.ranker import Group, Ranker, fit_ranker

F = len(POOL_FEATURES)


def _pool(x: list[list[float]]) -> CandidatePool:
    units = [UnitHit(f"u{i}", 0.9 - 0.01 * i, i, i, 0.9, 1) for i in range(len(x))]
    full = np.zeros((len(x), F))
    full[:, : len(x[0])] = np.array(x)
    return CandidatePool(units, full)


def _ranker(
    weights: tuple[float, ...], mean: tuple[float, ...] | None = None, scale: tuple[float, ...] | None = None
) -> Ranker:
    names = POOL_FEATURES[: len(weights)]
    return Ranker(names, weights, mean or (0.0,) * len(weights), scale or (1.0,) * len(weights))


def test_scores_and_probabilities_by_hand():
    # score = w·(x − mean)/scale: u0 = 2·(0.5−0.5)/0.5 − 1·(1−0)/1 = −1; u1 = 2·(1−0.5)/0.5 − 0 = 2
    r = _ranker((2.0, -1.0), (0.5, 0.0), (0.5, 1.0))
    pool = _pool([[0.5, 1.0], [1.0, 0.0]])
    assert r.scores(pool.x).tolist() == pytest.approx([-1.0, 2.0])
    out = r.rerank(pool)
    assert [u.unit_id for u in out.units] == ["u1", "u0"]
    assert [u.rank for u in out.units] == [0, 1]
    p1 = 1 / (1 + math.exp(-3.0))
    assert out.probs == pytest.approx([p1, 1 - p1])


def test_equal_scores_keep_the_fused_order():
    out = _ranker((1.0,)).rerank(_pool([[0.3], [0.3], [0.3]]))
    assert [u.unit_id for u in out.units] == ["u0", "u1", "u2"]
    assert out.probs == pytest.approx([1 / 3] * 3)


def test_an_empty_pool_reranks_to_nothing():
    out = _ranker((1.0,)).rerank(CandidatePool([], np.zeros((0, F))))
    assert out.units == [] and out.probs == []


def test_json_round_trip():
    r = _ranker((1.5, -0.25), (0.1, 0.2), (1.0, 2.0))
    back = Ranker.from_json(r.to_json())
    assert back == r
    x = _pool([[0.2, 0.4], [0.9, 0.1]]).x
    assert back.scores(x).tolist() == r.scores(x).tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ("dense", "nope")}, "'nope'"),
        ({"features": ()}, "none"),
        ({"weights": (1.0,)}, "one weight, mean and scale per feature"),
        ({"weights": (1.0, math.nan)}, "finite"),
        ({"scale": (1.0, 0.0)}, "positive"),
        ({"pool": 1}, "pool=1"),
    ],
)
def test_constructor_names_the_bad_value(kwargs, message):
    base = {"features": ("dense", "question"), "weights": (1.0, 1.0), "mean": (0.0, 0.0), "scale": (1.0, 1.0)}
    with pytest.raises(ConfigError, match=message):
        Ranker(**{**base, **kwargs})


def test_malformed_json_is_a_config_error():
    with pytest.raises(ConfigError, match="kefu eval calibrate"):
        Ranker.from_json({"features": ["dense"]})


def _groups(n: int, seed: int = 0) -> list[Group]:
    """The relevant candidate has the highest cover_unit; dense is noise."""
    rng = np.random.default_rng(seed)
    out = []
    col = POOL_FEATURES.index("cover_unit")
    for _ in range(n):
        x = rng.normal(size=(8, F))
        rel = np.zeros(8, dtype=bool)
        best = int(rng.integers(8))
        x[best, col] = x[:, col].max() + 1.0
        rel[best] = True
        out.append(Group(x, rel))
    return out


def test_fit_learns_which_feature_decides():
    r = fit_ranker(_groups(200))
    assert r.meta["converged"] and r.meta["queries"] == 200
    w = dict(zip(r.features, r.weights, strict=True))
    assert max(w, key=lambda k: abs(w[k])) == "cover_unit" and w["cover_unit"] > 0
    held_out = _groups(100, seed=1)
    top1 = [bool(g.relevant[np.argmax(r.scores(g.x))]) for g in held_out]
    assert sum(top1) >= 95


def test_fit_weights_queries():
    """A heavily weighted group that contradicts the rest pulls the weight its way."""
    groups = _groups(50)
    col = POOL_FEATURES.index("cover_unit")
    contrary = []
    for g in _groups(50, seed=2):
        rel = np.zeros_like(g.relevant)
        rel[int(np.argmin(g.x[:, col]))] = True
        contrary.append(Group(g.x, rel, 10.0))
    w_plain = dict(zip(POOL_FEATURES, fit_ranker(groups).weights, strict=True))["cover_unit"]
    w_mixed = dict(zip(POOL_FEATURES, fit_ranker(groups + contrary).weights, strict=True))["cover_unit"]
    assert w_plain > 0 > w_mixed


def test_fit_skips_groups_that_teach_nothing_and_refuses_too_few():
    useless = [Group(np.zeros((3, F)), np.zeros(3, dtype=bool)), Group(np.zeros((2, F)), np.ones(2, dtype=bool))]
    with pytest.raises(ConfigError, match="only 19 training queries"):
        fit_ranker(_groups(19) + useless * 10)
    assert fit_ranker(_groups(20) + useless).meta["queries"] == 20


def test_a_cited_clause_goes_first_only_when_it_leads_by_the_margin_and_documents_follow_faq_entries():
    # scores by hand: u0 (FAQ) 1.0; u1, u2 (documents an FAQ entry in the pool cites) 1.8, 2.5;
    # u3 (a document nobody in the pool cites) 1.2. Margin 1, for the first place: 1.0, 0.8, 1.5,
    # 1.2 → u2; after it every document is held back: 1.0, 0.8, 0.2 → u0, u1, u3
    x = [[1.0], [1.8], [2.5], [1.2]]
    r = dataclasses.replace(_ranker((1.0,)), doc_margin=1.0)
    base = _pool(x)
    pool = CandidatePool(base.units, base.x, np.array([0.0, 1.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert [u.unit_id for u in r.rerank(pool).units] == ["u2", "u0", "u1", "u3"]
    p = np.exp([1.0, 0.8, 1.5, 1.2])
    assert r.rerank(pool).probs == pytest.approx((p[[2, 0, 1, 3]] / p.sum()).tolist())
    # a clause no candidate cites takes the first place on its score (1.2 against the FAQ's 1.0);
    # cited, it would need 2.0
    three = _pool([[1.0], [1.8], [1.2]])
    uncited = CandidatePool(three.units, three.x, np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    assert [u.unit_id for u in r.rerank(uncited).units] == ["u2", "u0", "u1"]
    cited = CandidatePool(three.units, three.x, np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    assert [u.unit_id for u in r.rerank(cited).units] == ["u0", "u1", "u2"]
    assert [u.unit_id for u in _ranker((1.0,)).rerank(pool).units] == ["u2", "u1", "u3", "u0"]  # no margin
    assert [u.unit_id for u in r.rerank(base).units] == ["u2", "u1", "u3", "u0"]  # kinds not known: no margin
    back = Ranker.from_json(r.to_json())
    assert back.doc_margin == 1.0 and "doc_margin" not in _ranker((1.0,)).to_json()
    with pytest.raises(ConfigError, match="doc_margin"):
        dataclasses.replace(r, doc_margin=-0.5)


def _question_pool(scores: list[float], questions: list[float]) -> CandidatePool:
    """A pool whose first feature is the score the ranker reads and whose question column is given."""
    x = np.zeros((len(scores), F))
    x[:, 0] = scores
    x[:, POOL_FEATURES.index("question")] = questions
    units = [UnitHit(f"u{i}", 0.9, i, i, q, 1) for i, q in enumerate(questions)]
    return CandidatePool(units, x)


def test_a_decisive_question_match_goes_first():
    r = dataclasses.replace(_ranker((1.0,)), question_lead=0.01)
    # the ranker prefers u0; u2's question cosine leads u1's (the next best) by 0.02 > 0.01
    out = r.rerank(_question_pool([0.9, 0.5, 0.1], [0.80, 0.85, 0.87]))
    assert [u.unit_id for u in out.units] == ["u2", "u0", "u1"]
    assert [u.rank for u in out.units] == [0, 1, 2]
    # its probability is still its own softmax share (the confidence reads the first's)
    s = np.array([0.9, 0.5, 0.1])
    p = np.exp(s) / np.exp(s).sum()
    assert out.probs == pytest.approx([p[2], p[0], p[1]])
    # a lead of 0.005 decides nothing: the ranker's order stands
    assert [u.unit_id for u in r.rerank(_question_pool([0.9, 0.5, 0.1], [0.80, 0.865, 0.87])).units] == [
        "u0",
        "u1",
        "u2",
    ]
    # without a lead the question column is one feature among others
    plain = _ranker((1.0,)).rerank(_question_pool([0.9, 0.5, 0.1], [0.80, 0.85, 0.87]))
    assert [u.unit_id for u in plain.units] == ["u0", "u1", "u2"]


def test_the_best_question_match_is_kept_among_the_first_few():
    """question_within=3: the candidate with the best question cosine goes third when the scores put
    it lower (the clarify options and suggestions hold it); where it already is in the first three,
    or with question_within 0, the ranker's order stands."""
    r = dataclasses.replace(_ranker((1.0,)), question_within=3)
    # scores order u0 u1 u2 u3 u4; u4 has the best question cosine
    out = r.rerank(_question_pool([0.9, 0.8, 0.7, 0.6, 0.5], [0.80, 0.81, 0.82, 0.83, 0.86]))
    assert [u.unit_id for u in out.units] == ["u0", "u1", "u4", "u2", "u3"]
    assert [u.rank for u in out.units] == [0, 1, 2, 3, 4]
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    p = np.exp(s) / np.exp(s).sum()
    assert out.probs == pytest.approx(p[[0, 1, 4, 2, 3]].tolist())  # each its own share
    second = r.rerank(_question_pool([0.9, 0.8, 0.7, 0.6], [0.80, 0.86, 0.82, 0.83]))
    assert [u.unit_id for u in second.units] == ["u0", "u1", "u2", "u3"]  # already second
    assert [
        u.unit_id for u in _ranker((1.0,)).rerank(_question_pool([0.9, 0.8, 0.7, 0.6], [0.8, 0.8, 0.8, 0.9])).units
    ] == [
        "u0",
        "u1",
        "u2",
        "u3",
    ]
    # with a decisive lead as well, the lead decides the first and nothing else moves
    both = dataclasses.replace(r, question_lead=0.01)
    assert [u.unit_id for u in both.rerank(_question_pool([0.9, 0.8, 0.7, 0.6], [0.80, 0.81, 0.82, 0.86])).units] == [
        "u3",
        "u0",
        "u1",
        "u2",
    ]
    back = Ranker.from_json(r.to_json())
    assert back.question_within == 3 and "question_within" not in _ranker((1.0,)).to_json()
    for bad in (-1, 21):
        with pytest.raises(ConfigError, match="question_within"):
            dataclasses.replace(_ranker((1.0,)), question_within=bad)


def test_question_lead_round_trips_and_is_checked():
    r = dataclasses.replace(_ranker((1.0,)), question_lead=0.01)
    assert Ranker.from_json(r.to_json()).question_lead == 0.01
    assert "question_lead" not in _ranker((1.0,)).to_json()  # older readers see what they saw
    for bad in (-0.1, 1.0, math.nan):
        with pytest.raises(ConfigError, match="question_lead"):
            dataclasses.replace(_ranker((1.0,)), question_lead=bad)
