"""Hypothesis properties of the decision policy and of ``Answerer.answer`` on the tiny KB.

Policy: for any finite evidence and any valid calibration (thresholds in order, with or without
logistic weights) confidence stays in [0, 1], ``decide`` names exactly one decision and never
moves down when confidence goes up. Answerer: for arbitrary text the only exception is
``InputError``, every result is exactly one decision, ``handoff`` is set iff the decision is
handoff, and answers are best first.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kb.errors import ConfigError, InputError
from kb.settings import MAX_TOP_K
from service import schemas
from service.answerer import Answerer
from service.policy import FEATURES, Calibration, Features, decide
from service.schemas import Answer
from tests.fakes import FAKE_CAL

DECISIONS = ("handoff", "clarify", "answer")  # in order of confidence
RANK = {d: i for i, d in enumerate(DECISIONS)}
HANDOFF_REASONS = set(schemas.HANDOFF_REASONS)
CLARIFY_REASONS = {"ambiguous", "greeting"}

finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0)
features = st.builds(Features, *([finite] * len(FEATURES)))
# evidence as the answerer produces it: cosines, margins, shares and a log length, all small
realistic = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@st.composite
def calibrations(draw: st.DrawFn, weighted: bool | None = None) -> Calibration:
    """A calibration that passes validation; logistic weights with a positive scale, or none."""
    lo, hi = sorted((draw(unit), draw(unit)))
    if weighted is None:
        weighted = draw(st.booleans())
    if not weighted:
        return Calibration(answer_at=hi, clarify_at=lo, source="hypothesis")
    n = len(FEATURES)
    weight = st.floats(min_value=-20.0, max_value=20.0)
    return Calibration(
        answer_at=hi,
        clarify_at=lo,
        weights=draw(st.lists(weight, min_size=n, max_size=n)),
        bias=draw(st.floats(min_value=-20.0, max_value=20.0)),
        mean=draw(st.lists(st.floats(min_value=-10.0, max_value=10.0), min_size=n, max_size=n)),
        scale=draw(st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=n, max_size=n)),
        source="hypothesis-logistic",
    )


# --- the policy ----------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(f=features, cal=calibrations(weighted=True))
def test_logistic_confidence_is_a_probability(f: Features, cal: Calibration):
    c = cal.confidence(f)
    assert isinstance(c, float)
    assert 0.0 <= c <= 1.0


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(f=features, cal=calibrations(weighted=False))
def test_uncalibrated_confidence_is_the_raw_top1(f: Features, cal: Calibration):
    assert cal.confidence(f) == f.top1


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(f=features, cal=calibrations())
def test_decide_names_exactly_one_decision_matching_the_thresholds(f: Features, cal: Calibration):
    c = cal.confidence(f)
    d = decide(c, cal)
    assert d in DECISIONS
    assert (d == "answer") == (c >= cal.answer_at)
    assert (d == "handoff") == (c < cal.clarify_at)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(a=finite, b=finite, cal=calibrations())
def test_decide_is_monotone_in_confidence(a: float, b: float, cal: Calibration):
    lo, hi = sorted((a, b))
    assert RANK[decide(lo, cal)] <= RANK[decide(hi, cal)]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    values=st.lists(realistic, min_size=len(FEATURES), max_size=len(FEATURES)),
    which=st.sampled_from(FEATURES),
    step=st.floats(min_value=0.0, max_value=1e3),
    cal=calibrations(weighted=True),
)
def test_more_evidence_for_a_positively_weighted_feature_never_lowers_confidence(
    values: list[float], which: str, step: float, cal: Calibration
):
    i = FEATURES.index(which)
    assert cal.weights is not None
    sign = math.copysign(1.0, cal.weights[i])
    before = Features(*values)
    moved = list(values)
    moved[i] += sign * step
    after = Features(*moved)
    assert cal.confidence(after) >= cal.confidence(before) - 1e-12
    assert RANK[decide(cal.confidence(after), cal)] >= RANK[decide(cal.confidence(before), cal)]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(values=st.lists(realistic, min_size=len(FEATURES), max_size=len(FEATURES)), cal=calibrations(weighted=True))
def test_json_round_trip_keeps_confidence(values: list[float], cal: Calibration):
    f = Features(*values)
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    assert again.confidence(f) == cal.confidence(f)


def _logistic_on_top1() -> Calibration:
    """Confidence from top1 alone (weight 1); the other features carry weight 0."""
    weights = [1.0 if name == "top1" else 0.0 for name in FEATURES]
    return Calibration(
        answer_at=0.8, clarify_at=0.5, weights=weights, bias=-3.0, mean=[0.0] * 7, scale=[0.5] * 7, source="t"
    )


@pytest.mark.parametrize(
    "f",
    [
        Features(top1=math.nan, question_top1=0, margin=0, anchor_gap=0, votes=0, bigram_overlap=0, length=0),
        # finite, on a feature whose weight is 0: (1e308 - 0) / 0.5 overflows, 0 · inf is NaN
        Features(top1=0.0, question_top1=1e308, margin=0, anchor_gap=0, votes=0, bigram_overlap=0, length=0),
    ],
    ids=["nan-evidence", "zero-weight-overflow"],
)
def test_undefined_evidence_never_yields_an_answer(f: Features):
    cal = _logistic_on_top1()
    baseline = cal.confidence(Features(0.0, 0, 0, 0, 0, 0, 0))  # top1 = 0: sigmoid(-3) ≈ 0.047
    assert decide(baseline, cal) == "handoff"
    assert decide(cal.confidence(f), cal) == "handoff"


@pytest.mark.parametrize(
    ("mean", "scale"),
    [([0.0] * 3, [1.0] * 7), ([0.0] * 7, [1.0] * 8), ([0.0] * 7, [0.0] * 7)],
    ids=["short-mean", "long-scale", "zero-scale"],
)
def test_malformed_mean_or_scale_is_a_config_error(mean: list[float], scale: list[float]):
    with pytest.raises(ConfigError):
        Calibration(weights=[1.0] * len(FEATURES), mean=mean, scale=scale)


# --- the answerer on arbitrary text ------------------------------------------------------------------------
@pytest.fixture
def answerer(tiny_answerer: Answerer) -> Answerer:
    tiny_answerer.calibration = FAKE_CAL
    return tiny_answerer


ANSWERER_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# some text the KB knows, so "answer" and "clarify" are reached too, not only handoffs
KNOWN = ["七天无理由退货需要满足什么条件？", "退货运费谁出", "我的快递到哪了", "转人工", "你好", "那运费呢"]
queries = st.one_of(
    st.text(max_size=500),
    st.sampled_from(KNOWN),
    st.tuples(st.sampled_from(KNOWN), st.text(max_size=40)).map("".join),
)
top_ks = st.one_of(st.none(), st.integers(min_value=-2, max_value=25))
sessions = st.one_of(st.none(), st.sampled_from(["S-prop-1", "S-prop-2"]))


def _check_answer(answerer: Answerer, query: str, a: Answer) -> None:
    assert a.decision in DECISIONS
    assert (a.handoff is not None) == (a.decision == "handoff")
    assert a.query == query
    if a.decision == "answer":
        assert a.reason is None and a.answers
    elif a.decision == "clarify":
        assert a.reason in CLARIFY_REASONS
    else:
        assert a.handoff is not None
        assert a.reason in HANDOFF_REASONS and a.handoff.ticket_id and a.handoff.message
    known_ids = set(answerer.index.entries) | set(answerer.index.units)
    assert {item.id for item in a.answers} <= known_ids  # answers come from the KB only
    json.loads(a.model_dump_json())  # what the API sends: serialisable


@ANSWERER_SETTINGS
@given(query=queries, top_k=top_ks, session_id=sessions)
def test_answer_on_arbitrary_text(answerer: Answerer, query: str, top_k: int | None, session_id: str | None):
    try:
        a = answerer.answer(query, session_id=session_id, top_k=top_k)
    except InputError:
        assert top_k is not None and not 1 <= top_k <= MAX_TOP_K  # text of ≤ 500 characters is never refused
        return
    _check_answer(answerer, query, a)
    if top_k is not None and a.decision == "answer":
        assert len(a.answers) <= top_k


@pytest.mark.parametrize("mode", ["dense", "rrf", "lexical", "weighted"])
def test_answers_follow_the_ranking_for_arbitrary_text(answerer: Answerer, mode: str):
    """Answers are best first by the retrieval ranking; in dense mode that is also by score
    (fused modes rank by the fused key while ``score`` stays the answer's cosine)."""
    answerer.options = dataclasses.replace(answerer.options, retrieval=mode)

    @ANSWERER_SETTINGS
    @given(query=queries, top_k=st.one_of(st.none(), st.integers(min_value=1, max_value=MAX_TOP_K)))
    def run(query: str, top_k: int | None) -> None:
        a = answerer.answer(query, top_k=top_k)
        ranked = [c["id"] for c in a.trace.get("candidates", [])]
        if a.decision != "handoff" and a.answers:
            assert [i.id for i in a.answers] == ranked[: len(a.answers)]
        if mode == "dense":
            scores = [item.score for item in a.answers]
            assert scores == sorted(scores, reverse=True), (query, a.decision, [(i.id, i.score) for i in a.answers])

    run()


@settings(ANSWERER_SETTINGS, max_examples=20)
@given(query=st.text(min_size=501, max_size=700))
def test_text_over_the_limit_is_only_ever_an_input_error(answerer: Answerer, query: str):
    assume(len(query) > answerer.options.max_query_chars)
    with pytest.raises(InputError, match="500"):
        answerer.answer(query)


@pytest.mark.parametrize(
    "query",
    ["\ud800", "转人工\ud800", "今天天气怎么样\udc00", "七天无理由退货需要满足什么条件？\ud800"],
    ids=["empty-query-handoff", "user-requested-handoff", "low-confidence-handoff", "answer"],
)
def test_lone_surrogates_are_an_input_error_or_a_decision(answerer: Answerer, query: str):
    try:
        a = answerer.answer(query)
    except InputError:
        return
    _check_answer(answerer, query, a)
